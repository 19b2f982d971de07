"""Posterior alignment between each focal group and the reference population.

A focal group (a language model, a persona, a sub-population) is *aligned* with the
reference population when items that are hard for the reference are equally hard
for the group. In the joint multi-group IRT model (see DESIGN.md) the difficulty of
item ``i`` for focal group ``g`` is

.. math::

    b_{gi} = b_i + s_{gi}, \\qquad s_{gi} = \\texttt{dif\\_shift}[g, i],

so every posterior draw of ``(b, s)`` gives one value of each alignment metric:

- ``pearson``: :math:`r_g = \\mathrm{corr}_i(b_i, b_i + s_{gi})`, the Pearson
  correlation over items between reference and group difficulties;
- ``spearman``: the same on the ranks of the difficulties along the item axis;
- ``dif_scale``: :math:`\\tau_g`, the scale of the DIF shifts (``dif_scale[g]``;
  for a fit without it, the sample sd of :math:`s_{g\\cdot}` over items);
- ``invariant_share``: :math:`\\mathrm{var}_i(b) / (\\mathrm{var}_i(b) + \\mathrm{var}_i(s_g))`,
  the share of the group's item-difficulty variance that it shares with the reference.
  When the shifts are uncorrelated with the difficulties, ``pearson`` is about the square
  root of ``invariant_share``.

Because the metrics are computed per draw, their posteriors carry the full estimation
uncertainty; nothing is attenuated by noise in point estimates (contrast
:func:`naive_alignment`, the classical approach of correlating separately estimated
difficulties).

All computations are vectorised over chains, draws and focal groups.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import arviz as az
import numpy as np
import pandas as pd
import xarray as xr
from scipy import stats

from bayes_align.results import as_idata

__all__ = [
    "DISCRIMINATION_METRICS",
    "METRICS",
    "Alignment",
    "AlignmentComparison",
    "alignment",
    "alignment_draws",
    "compare_alignment",
]

#: Alignment metrics in the order they are reported.
METRICS = ("pearson", "spearman", "dif_scale", "invariant_share")
#: Extra metrics of fits with non-uniform DIF (``dif_discrimination=True``).
DISCRIMINATION_METRICS = ("discrimination_pearson", "discrimination_dif_scale")
#: Metrics for which larger means better aligned (the DIF scales are the opposite).
_HIGHER_IS_ALIGNED = {
    "pearson": True,
    "spearman": True,
    "invariant_share": True,
    "dif_scale": False,
    "discrimination_pearson": True,
    "discrimination_dif_scale": False,
}


def _require_dif_posterior(idata: az.InferenceData) -> xr.Dataset:
    """The posterior group, checked to hold ``difficulty`` and ``dif_shift``."""
    if "posterior" not in idata.groups():
        raise ValueError("the fit has no posterior group; fit the model before computing alignment")
    posterior = idata.posterior
    missing = [name for name in ("difficulty", "dif_shift") if name not in posterior]
    if missing:
        raise ValueError(
            f"the posterior lacks {missing}: alignment needs a fit with a DIF term; refit with "
            "dif='normal' or dif='horseshoe' (a dif='none' fit assumes perfect alignment)"
        )
    shift = posterior["dif_shift"]
    if shift.dims[-2:] != ("focal_group", "item") or posterior["difficulty"].dims[-1] != "item":
        raise ValueError(
            "expected dif_shift with dims (..., focal_group, item) and difficulty with dims "
            f"(..., item); got {shift.dims} and {posterior['difficulty'].dims}"
        )
    if shift.sizes["item"] < 3:
        raise ValueError(
            f"alignment correlations need at least 3 items, the fit has {shift.sizes['item']}"
        )
    return posterior


def _masked_pearson(x: np.ndarray, y: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Pearson correlation along the last axis over the entries where ``mask`` is True.

    With :math:`m_i \\in \\{0, 1\\}`, :math:`\\bar x = \\sum_i m_i x_i / \\sum_i m_i` and
    :math:`r = \\sum_i m_i (x_i - \\bar x)(y_i - \\bar y) / \\sqrt{\\sum_i m_i (x_i - \\bar x)^2
    \\sum_i m_i (y_i - \\bar y)^2}`; NaN where either side has zero variance. ``x``, ``y``
    and ``mask`` broadcast against each other.
    """
    x = np.where(mask, x, 0.0)  # excluded entries may be NaN
    y = np.where(mask, y, 0.0)
    n = mask.sum(axis=-1, keepdims=True)
    xc = np.where(mask, x - x.sum(axis=-1, keepdims=True) / n, 0.0)
    yc = np.where(mask, y - y.sum(axis=-1, keepdims=True) / n, 0.0)
    num = (xc * yc).sum(axis=-1)
    den = np.sqrt((xc**2).sum(axis=-1) * (yc**2).sum(axis=-1))
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _masked_var(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Population variance along the last axis over the entries where ``mask`` is True."""
    x = np.where(mask, x, 0.0)
    n = mask.sum(axis=-1, keepdims=True)
    centred = np.where(mask, x - x.sum(axis=-1, keepdims=True) / n, 0.0)
    return (centred**2).sum(axis=-1) / n[..., 0]


def identified_mask(idata: az.InferenceData, groups: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Boolean ``(focal_group, item)`` mask of the pairs whose DIF the data identify.

    False for the ``[item, group]`` pairs listed (as JSON) in
    ``idata.attrs["dif_unidentified"]`` by :func:`bayes_align.fit`: items a group did not
    answer (or answered without variation), whose shift is pure prior.
    """
    raw = idata.attrs.get("dif_unidentified") if hasattr(idata, "attrs") else None
    if isinstance(raw, bytes):
        raw = raw.decode()
    if isinstance(raw, str):
        raw = json.loads(raw) if raw.strip() else []
    pairs = {(str(pair[0]), str(pair[1])) for pair in (raw or [])}
    return np.array([[(str(i), str(g)) not in pairs for i in items] for g in groups], dtype=bool)


def _select_items(shift: xr.DataArray, items: Sequence[str] | None) -> xr.DataArray:
    """``shift`` restricted to the item labels ``items`` (None: all items)."""
    if items is None:
        return shift
    if isinstance(items, str):
        raise ValueError("items must be a list of item labels, not a single string")
    wanted = [str(i) for i in items]
    known = set(shift["item"].to_numpy().astype(str))
    unknown = [i for i in wanted if i not in known]
    if unknown:
        raise ValueError(f"items {unknown[:10]} are not items of the fit")
    if len(set(wanted)) < 3:
        raise ValueError(
            f"alignment correlations need at least 3 items, items= names {len(set(wanted))}"
        )
    return shift.sel(item=list(dict.fromkeys(wanted)))


def alignment_draws(fit: Any, items: Sequence[str] | None = None) -> xr.Dataset:
    """Per-draw alignment metrics of every focal group.

    Parameters
    ----------
    fit
        A :class:`~bayes_align.inference.Fit` or ``InferenceData`` whose posterior holds
        ``difficulty`` (``item``) and ``dif_shift`` (``focal_group, item``).
    items
        Item labels to compute the metrics over (e.g. held-out items); None: all items.
        ``dif_scale`` is the fitted scale of the group's shifts over all items unless the
        fit has none, in which case it is the sd of the shifts over ``items``.

    Returns
    -------
    ``xarray.Dataset`` with the variables of :data:`METRICS` (and, for fits with
    non-uniform DIF, :data:`DISCRIMINATION_METRICS`: the correlation over items of the
    reference and group log-discriminations ``log a_i`` and ``log a_i + lambda_gi``, and
    the scale of ``lambda``), each with dims ``(chain, draw, focal_group)``.
    """
    idata = as_idata(fit)
    posterior = _require_dif_posterior(idata)
    shift_da = _select_items(posterior["dif_shift"], items).transpose(
        "chain", "draw", "focal_group", "item"
    )
    difficulty = (
        posterior["difficulty"].sel(item=shift_da["item"]).transpose("chain", "draw", "item")
    ).to_numpy()
    shift = shift_da.to_numpy()
    mask = identified_mask(
        idata, shift_da["focal_group"].to_numpy(), shift_da["item"].to_numpy()
    )  # (focal_group, item)
    too_few = mask.sum(axis=-1) < 3
    if too_few.any():
        names = list(shift_da["focal_group"].to_numpy()[too_few])
        raise ValueError(
            f"focal group(s) {names} have fewer than 3 items with identified DIF; alignment "
            "correlations need at least 3 items answered by both the group and the reference"
        )
    reference = np.broadcast_to(difficulty[:, :, None, :], shift.shape)
    group = reference + shift  # (chain, draw, focal_group, item)

    pearson = _masked_pearson(reference, group, mask)
    excluded = ~np.broadcast_to(mask, shift.shape)
    spearman = _masked_pearson(
        stats.rankdata(np.where(excluded, np.nan, reference), axis=-1, nan_policy="omit"),
        stats.rankdata(np.where(excluded, np.nan, group), axis=-1, nan_policy="omit"),
        mask,
    )
    var_difficulty = _masked_var(reference, mask)
    var_shift = _masked_var(shift, mask)
    invariant_share = var_difficulty / (var_difficulty + var_shift)
    if "dif_scale" in posterior:
        dif_scale = posterior["dif_scale"].transpose("chain", "draw", "focal_group").to_numpy()
    else:
        n_items = mask.sum(axis=-1)
        dif_scale = np.sqrt(var_shift * n_items / (n_items - 1))

    values = {
        "pearson": pearson,
        "spearman": spearman,
        "dif_scale": np.asarray(dif_scale, dtype=float),
        "invariant_share": invariant_share,
    }
    if "dif_log_discrimination" in posterior and "discrimination" in posterior:
        lam = posterior["dif_log_discrimination"].sel(item=shift_da["item"]).transpose(
            "chain", "draw", "focal_group", "item").to_numpy()
        log_a = np.log(posterior["discrimination"].sel(item=shift_da["item"]).transpose(
            "chain", "draw", "item").to_numpy())
        log_a = np.broadcast_to(log_a[:, :, None, :], lam.shape)
        values["discrimination_pearson"] = _masked_pearson(log_a, log_a + lam, mask)
        values["discrimination_dif_scale"] = posterior["dif_log_discrimination_scale"].transpose(
            "chain", "draw", "focal_group").to_numpy().astype(float)
    coords = {
        "chain": shift_da["chain"].to_numpy(),
        "draw": shift_da["draw"].to_numpy(),
        "focal_group": shift_da["focal_group"].to_numpy(),
    }
    dims = ("chain", "draw", "focal_group")
    return xr.Dataset({name: (dims, value) for name, value in values.items()}, coords=coords)


def _summarise(draws: xr.Dataset, prob: float) -> pd.DataFrame:
    """Tidy (group, metric, mean, sd, hdi_low, hdi_high) table of a draws Dataset."""
    hdi = az.hdi(draws, hdi_prob=prob)
    mean = draws.mean(("chain", "draw"))
    n_draws = draws.sizes["chain"] * draws.sizes["draw"]
    sd = (
        draws.std(("chain", "draw"), ddof=1)
        if n_draws > 1
        else draws.mean(("chain", "draw")) * np.nan
    )
    groups = draws["focal_group"].to_numpy().astype(str)
    metrics = list(draws.data_vars)
    stacked = {
        "mean": np.stack([mean[m].to_numpy() for m in metrics], axis=1),
        "sd": np.stack([sd[m].to_numpy() for m in metrics], axis=1),
        "hdi_low": np.stack([hdi[m].sel(hdi="lower").to_numpy() for m in metrics], axis=1),
        "hdi_high": np.stack([hdi[m].sel(hdi="higher").to_numpy() for m in metrics], axis=1),
    }  # each (group, metric): rows come out group-major
    return pd.DataFrame(
        {
            "group": np.repeat(groups, len(metrics)),
            "metric": np.tile(metrics, len(groups)),
            **{name: value.ravel() for name, value in stacked.items()},
        }
    )


@dataclass(frozen=True)
class Alignment:
    """Posterior alignment of each focal group with the reference.

    Attributes
    ----------
    table
        Tidy DataFrame with columns ``group, metric, mean, sd, hdi_low, hdi_high``
        (one row per focal group and metric of :data:`METRICS`, plus
        :data:`DISCRIMINATION_METRICS` for fits with non-uniform DIF).
    draws
        ``xarray.Dataset`` with one variable per metric, dims ``(chain, draw, focal_group)``.
    prob
        Mass of the highest-density intervals.
    reference_group
        Label of the reference group (``None`` when the fit does not record it).
    """

    table: pd.DataFrame
    draws: xr.Dataset
    prob: float
    reference_group: str | None = None

    def wide(self) -> pd.DataFrame:
        """One row per focal group, one column ``<metric>`` (posterior mean) per metric."""
        return self.table.pivot(index="group", columns="metric", values="mean").reindex(
            index=self.draws["focal_group"].to_numpy().astype(str), columns=list(self.draws.data_vars)
        )

    def __str__(self) -> str:
        ref = f" with reference {self.reference_group!r}" if self.reference_group else ""
        head = f"Posterior alignment{ref} ({self.prob:.0%} HDI)"
        return head + "\n" + self.table.to_string(index=False, float_format=lambda v: f"{v:.3f}")


def _check_prob(prob: float) -> None:
    if not 0 < prob < 1:
        raise ValueError(f"prob must lie strictly between 0 and 1, got {prob}")


def alignment(fit: Any, prob: float = 0.9, items: Sequence[str] | None = None) -> Alignment:
    """Posterior alignment of every focal group with the reference population.

    For each focal group ``g`` and posterior draw, with reference difficulties
    :math:`b_i` and group difficulties :math:`b_i + s_{gi}` (``s = dif_shift``):

    - ``pearson`` :math:`= \\mathrm{corr}_i(b_i, b_i + s_{gi})`,
    - ``spearman``: the Pearson correlation of the ranks over items (ranks along the item
      axis, so it is vectorised over draws),
    - ``dif_scale`` :math:`= \\tau_g` (the sd of the shifts for fits without ``dif_scale``),
    - ``invariant_share`` :math:`= \\mathrm{var}_i(b) / (\\mathrm{var}_i(b) + \\mathrm{var}_i(s_g))`.

    Sums over items run over the items whose DIF the data identify for that group (see
    :func:`identified_mask`). 1 means perfect alignment for the correlations and the
    invariant share, 0 for ``dif_scale``. The table summarises each metric by its posterior mean, sd and
    ``prob`` highest-density interval.

    Parameters
    ----------
    fit
        A :class:`~bayes_align.inference.Fit` or ``InferenceData`` with a DIF term.
    prob
        Mass of the HDI, in (0, 1).
    items
        Item labels to compute the metrics over, e.g. items held out from tuning an LM
        (:func:`bayes_align.protocol.split_items`); None (default): every item.
    """
    _check_prob(prob)
    idata = as_idata(fit)
    draws = alignment_draws(idata, items=items)
    if draws.sizes["chain"] * draws.sizes["draw"] < 2:
        warnings.warn(
            "the fit has a single draw (a MAP fit?): the alignment metrics are point "
            "estimates without uncertainty (sd is NaN, the HDI collapses to the point); "
            "fit with method='nuts' or 'svi' for intervals",
            UserWarning,
            stacklevel=2,
        )
    reference = idata.attrs.get("reference_group") if hasattr(idata, "attrs") else None
    return Alignment(
        table=_summarise(draws, prob),
        draws=draws,
        prob=prob,
        reference_group=None if reference is None else str(reference),
    )


@dataclass(frozen=True)
class AlignmentComparison:
    """Pairwise posterior comparison and ranking of focal groups on one alignment metric.

    Attributes
    ----------
    metric
        The metric compared (one of :data:`METRICS`).
    pairwise
        DataFrame with columns ``group, other, prob_better``: the posterior probability
        that ``group`` is better aligned than ``other`` (higher ``pearson`` / ``spearman`` /
        ``invariant_share``, lower ``dif_scale``), for every ordered pair.
    ranking
        DataFrame with columns ``group, mean, expected_rank, rank_low, rank_high, prob_best``
        sorted by expected rank (1 = best aligned); ``rank_low``/``rank_high`` is the
        equal-tailed ``prob`` interval of the rank.
    prob
        Mass of the rank intervals.
    """

    metric: str
    pairwise: pd.DataFrame
    ranking: pd.DataFrame
    prob: float

    def matrix(self) -> pd.DataFrame:
        """``pairwise`` as a square matrix: row ``g``, column ``h`` = P(g better aligned than h)."""
        groups = list(self.ranking["group"])
        return self.pairwise.pivot(index="group", columns="other", values="prob_better").reindex(
            index=groups, columns=groups
        )

    def __str__(self) -> str:
        fmt = lambda v: f"{v:.3f}"  # noqa: E731
        return (
            f"Ranking of focal groups by {self.metric} (1 = best aligned, {self.prob:.0%} rank interval)\n"
            + self.ranking.to_string(index=False, float_format=fmt)
            + "\n\nP(row better aligned than column)\n"
            + self.matrix().to_string(float_format=fmt, na_rep="-")
        )


def compare_alignment(
    fit: Any, metric: str = "pearson", prob: float = 0.9, items: Sequence[str] | None = None
) -> AlignmentComparison:
    """Which focal groups are better aligned than which, with posterior probabilities.

    With :math:`m_g^{(s)}` the metric of group ``g`` in posterior draw ``s`` (sign-flipped
    for ``dif_scale`` so that larger is always better aligned):

    - ``prob_better[g, h]`` :math:`= \\frac1S \\sum_s [m_g^{(s)} > m_h^{(s)}]`;
    - the rank of ``g`` in draw ``s`` is :math:`1 + \\sum_h [m_h^{(s)} > m_g^{(s)}]`; the
      table reports its posterior mean (``expected_rank``), its equal-tailed ``prob``
      interval and ``prob_best`` = P(rank = 1).

    ``items`` restricts the metrics to those item labels (see :func:`alignment`).
    Raises ``ValueError`` for an unknown metric or a fit with fewer than two focal groups.
    """
    if metric not in _HIGHER_IS_ALIGNED:
        raise ValueError(f"unknown metric {metric!r}; choose one of {tuple(_HIGHER_IS_ALIGNED)}")
    _check_prob(prob)
    all_draws = alignment_draws(fit, items=items)
    if metric not in all_draws:
        raise ValueError(f"metric {metric!r} needs a fit with dif_discrimination=True")
    draws = all_draws[metric]
    groups = draws["focal_group"].to_numpy().astype(str)
    if len(groups) < 2:
        raise ValueError(
            f"comparing alignment needs at least two focal groups, the fit has {list(groups)}"
        )
    values = draws.transpose("chain", "draw", "focal_group").to_numpy().reshape(-1, len(groups))
    score = values if _HIGHER_IS_ALIGNED[metric] else -values
    better = score[:, :, None] > score[:, None, :]  # (draws, g, h)
    prob_better = better.mean(axis=0)
    rank = 1 + (score[:, None, :] > score[:, :, None]).sum(axis=-1)  # (draws, g)
    tail = (1 - prob) / 2
    rows_g, rows_h = np.nonzero(~np.eye(len(groups), dtype=bool))
    pairwise = pd.DataFrame(
        {
            "group": groups[rows_g],
            "other": groups[rows_h],
            "prob_better": prob_better[rows_g, rows_h],
        }
    )
    ranking = pd.DataFrame(
        {
            "group": groups,
            "mean": values.mean(axis=0),
            "expected_rank": rank.mean(axis=0),
            "rank_low": np.quantile(rank, tail, axis=0, method="inverted_cdf"),
            "rank_high": np.quantile(rank, 1 - tail, axis=0, method="inverted_cdf"),
            "prob_best": (rank == 1).mean(axis=0),
        }
    )
    ranking = ranking.sort_values("expected_rank", kind="stable").reset_index(drop=True)
    return AlignmentComparison(metric=metric, pairwise=pairwise, ranking=ranking, prob=prob)
