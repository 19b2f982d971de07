"""Scoring backends behind one request interface (:class:`Backend`): local
``transformers`` (default), an OpenAI-compatible server, and offline ``vllm.LLM``.

:func:`load_backend` builds the backend a model YAML asks for; :func:`as_backend` also
accepts an already loaded :class:`~bayes_align.scoring.LM` or backend.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .base import Backend, LabelScores, MissingLabelError, Prompt
from .http import HTTPRequestError, post_json

__all__ = [
    "Backend",
    "HTTPRequestError",
    "LabelScores",
    "MissingLabelError",
    "Prompt",
    "as_backend",
    "load_backend",
    "post_json",
]


def load_backend(source: str | Path | Mapping[str, Any] | Any) -> Backend:
    """The backend of a model YAML (path), mapping or :class:`LMConfig`."""
    from ..lm import load_lm, load_lm_config

    config = load_lm_config(source)
    if config.backend == "openai":
        from .openai import OpenAIBackend

        return OpenAIBackend(config)
    if config.backend == "vllm":
        from .vllm import VLLMBackend

        return VLLMBackend(config)
    from .transformers import TransformersBackend

    return TransformersBackend(load_lm(config))


def as_backend(lm: Any) -> Backend:
    """A backend from a backend, a loaded LM, or anything :func:`load_backend` takes."""
    from ..lm import LM

    if isinstance(lm, LM):
        from .transformers import TransformersBackend

        return TransformersBackend(lm)
    if isinstance(lm, Backend):
        return lm
    return load_backend(lm)
