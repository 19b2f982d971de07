"""What every peer returns, and the data coding shared by the Stan and PyMC models."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bayes_align.data import ResponseData


@dataclass
class PeerResult:
    """Posterior draws of the item parameters plus timings.

    ``draws`` maps ``difficulty`` (chain, draw, item), ``discrimination`` (chain, draw,
    item) and, with DIF, ``dif_shift`` (chain, draw, focal, item) to arrays.
    ``setup_s`` is compile / model build time, ``sample_s`` the sampling (warm-up
    included) wall time. ``extra`` holds anything tool specific.
    """

    tool: str
    draws: dict[str, np.ndarray]
    setup_s: float
    sample_s: float
    divergences: int = 0
    chain_method: str = ""
    extra: dict = field(default_factory=dict)


def group_codes(data: ResponseData) -> tuple[np.ndarray, np.ndarray, int]:
    """Person and observation group codes with 0 = reference and 1..F = focal groups
    in the order of ``data.focal_groups``."""
    ref = data.reference_index
    code_of_group = np.zeros(data.n_groups, dtype=np.int64)
    f = 1
    for g in range(data.n_groups):
        if g != ref:
            code_of_group[g] = f
            f += 1
    person_code = code_of_group[np.asarray(data.person_group)]
    obs_code = person_code[np.asarray(data.person_idx)]
    return person_code, obs_code, data.n_groups - 1
