"""Names and dims of the model's posterior variables and data, with the user's labels."""

from __future__ import annotations

from typing import Any

import numpy as np

from bayes_align.combined import CombinedData
from bayes_align.model.inputs import ModelInputs
from bayes_align.model.spec import ModelSpec


def posterior_dims(spec: ModelSpec, inputs: ModelInputs) -> dict[str, list[str]]:
    """Posterior variable -> dims: exactly the variables stored in ``idata.posterior``."""
    dims = {"difficulty": ["item"], "group_mean": ["group"], "group_sd": ["group"]}
    if inputs.n_persons:
        dims["theta"] = ["person"]
    if spec.has_discrimination:
        dims["discrimination"] = ["item"]
    if spec.irt == "3pl":
        dims["guessing"] = ["item"]
    if spec.irt == "grm":
        dims["step"] = ["item", "cutpoint"]
    if spec.dif != "none" and inputs.n_focal:
        dims["dif_shift"] = ["focal_group", "item"]
        dims["dif_scale"] = ["focal_group"]
    if spec.dif_discrimination and inputs.n_focal:
        dims["dif_log_discrimination"] = ["focal_group", "item"]
        dims["dif_log_discrimination_scale"] = ["focal_group"]
    if inputs.row_kind == "nominal" and inputs.n_slots:
        dims["distractor_intercept"] = ["item", "option"]
        if spec.distractor_slopes:
            dims["distractor_slope"] = ["item", "option"]
        if spec.distractor_dif and inputs.n_focal:
            dims["dif_distractor"] = ["focal_group", "item", "option"]
            dims["dif_distractor_scale"] = ["focal_group"]
    return dims


def coords(data: CombinedData, inputs: ModelInputs) -> dict[str, Any]:
    """Coordinates of every dim, with the user's labels."""
    return {
        "item": list(data.items),
        "person": list(data.persons),
        "group": list(data.groups),
        "focal_group": list(data.focal_groups),
        "obs": np.arange(data.n_units),
        "row": np.arange(data.n_rows),
        "category": np.arange(inputs.row_counts.shape[1]),
        "option": np.arange(inputs.option_is_key.shape[1]),
        "cutpoint": np.arange(max(inputs.max_categories - 1, 1)),
    }
