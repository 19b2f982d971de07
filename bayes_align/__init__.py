"""bayes_align: Bayesian psychometric alignment of language models with human populations.

The public API is loaded lazily, so ``import bayes_align`` stays cheap and the LM
scoring extras (torch, transformers) are only imported when used.

Data flow: load -> (score LMs) -> ResponseData -> fit -> posterior -> alignment /
DIF / compare -> report. See DESIGN.md for the names every module relies on.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "ResponseData": "bayes_align.data",
    "simulate": "bayes_align.simulate",
    "ModelSpec": "bayes_align.models",
    "fit": "bayes_align.inference",
    "Fit": "bayes_align.inference",
    "load_fit": "bayes_align.inference",
    "alignment": "bayes_align.alignment",
    "compare_alignment": "bayes_align.alignment",
    "naive_alignment": "bayes_align.alignment",
    "dif_screen": "bayes_align.dif",
    "mantel_haenszel": "bayes_align.dif",
    "compare_models": "bayes_align.compare",
    "load_naep": "bayes_align.naep",
    "classical_table": "bayes_align.classical",
    "AggregatedData": "bayes_align.aggregated",
    "fit_aggregated": "bayes_align.aggregated",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'bayes_align' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
