"""bayes_align: Bayesian psychometric alignment of language models with human populations.

Data flow: load -> (score LMs) -> ResponseData -> fit -> posterior -> alignment /
DIF / compare -> report. See DESIGN.md for the names every module relies on.

The modelling API is imported eagerly (several functions share their module's name,
e.g. ``bayes_align.alignment``, and an eager import keeps the function, not the
module, on the package). The LM scoring extras (torch, transformers) live in
``bayes_align.scoring`` and are only imported from there.
"""

from __future__ import annotations

__version__ = "0.1.0"

from bayes_align.aggregated import AggregatedData  # noqa: E402
from bayes_align.alignment import alignment, compare_alignment  # noqa: E402
from bayes_align.classical import classical_table  # noqa: E402
from bayes_align.combined import CombinedData, combine  # noqa: E402
from bayes_align.compare import compare_models  # noqa: E402
from bayes_align.data import ResponseData  # noqa: E402
from bayes_align.dif import dif_screen, mantel_haenszel  # noqa: E402
from bayes_align.distributional_alignment import distributional_alignment  # noqa: E402
from bayes_align.inference import fit, fit_aggregated  # noqa: E402
from bayes_align.model.spec import ModelSpec, Priors  # noqa: E402
from bayes_align.naep import load_naep  # noqa: E402
from bayes_align.naep_alignment import naep_alignment  # noqa: E402
from bayes_align.naive import naive_alignment  # noqa: E402
from bayes_align.predictive import posterior_predictive, prior_predictive  # noqa: E402
from bayes_align.protocol import (  # noqa: E402
    control_table,
    controls,
    lm_ensemble,
    sample_size_study,
    split_items,
)
from bayes_align.results import Fit, load_fit  # noqa: E402
from bayes_align.sensitivity import prior_sensitivity  # noqa: E402
from bayes_align.simulate import simulate  # noqa: E402

__all__ = [
    "AggregatedData",
    "CombinedData",
    "Fit",
    "ModelSpec",
    "Priors",
    "ResponseData",
    "__version__",
    "alignment",
    "classical_table",
    "compare_alignment",
    "combine",
    "compare_models",
    "control_table",
    "controls",
    "dif_screen",
    "distributional_alignment",
    "fit",
    "fit_aggregated",
    "load_fit",
    "lm_ensemble",
    "load_naep",
    "mantel_haenszel",
    "naep_alignment",
    "naive_alignment",
    "posterior_predictive",
    "prior_predictive",
    "prior_sensitivity",
    "sample_size_study",
    "simulate",
    "split_items",
]
