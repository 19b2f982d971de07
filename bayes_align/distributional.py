"""Classical distributional-alignment numbers for opinion items: TV and KL, bootstrap, baseline.

For an LM cell (model, method, steering, attribute, group, item) reporting option
probabilities ``q_k`` and the human group's counts ``c_k`` (``n = sum_k c_k``)::

    h_k = c_k / n,    p_k = q_k / sum_j q_j      (renormalize=True; q as reported otherwise)
    TV(h, p) = 1/2 sum_k |h_k - p_k|,    KL(h || p) = sum_k h_k log(h_k / p_k)

with ``k`` over every answer text of the item in ``OpinionData.options``: every text
present in the human counts, ``Refused`` included (as Meister et al. compute it) unless
the data were loaded with ``drop_refused=True``, in which case it is left out of both
distributions and both are renormalised. An answer the group never chose has
``h_k = 0``; an answer the LM was not offered has ``p_k = 0`` (an unsteered LM
distribution, offered one group's answers, is compared with every group). Reported
mass on letters beyond the group's answers is left out and reported (``unmapped_mass``).

Intervals (:func:`bootstrap_mean`). The paper's interval (its public code,
``eval_utils.compute_one``) resamples the per-(item, group) TVs of a series with
replacement (1000 resamples) and takes the 2.5 and 97.5 percentiles of the resampled
means: ``unit="cells"``, the default. Cells of one item are correlated across groups,
so ``unit="items"`` resamples whole items (a cluster bootstrap). ``resample_human=True``
in :func:`tv_summary` adds the human sampling noise: each resample also redraws every
group's counts, ``c* ~ Multinomial(n, c / n)``, and recomputes the TVs (this widens the
interval and shifts it up, since noise in ``h`` raises TV on average). The point
estimate is always the observed mean; the paper reported the mean of the resampled
means and half the interval's width.

Human-to-human baseline (:func:`human_split_baseline`): a group's respondents split at
random into halves of ``floor(n / 2)`` and ``ceil(n / 2)`` (a multivariate
hypergeometric draw from its counts); the TV between the halves' distributions, averaged
over splits. Halves are noisier than the whole sample, so this is a generous reference.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bayes_align.classical import kl_divergence, total_variation
from bayes_align.opinions import UNSTEERED, LMDistributions, OpinionData

__all__ = [
    "STATUSES",
    "AlignedDistributions",
    "aligned_distributions",
    "bootstrap_mean",
    "human_split_baseline",
    "plot_tv_summary",
    "tv_summary",
    "tv_table",
]

STATUSES = {
    "ok": "TV and KL computed",
    "no_human": "the group has no respondents for the item (or no counts at all)",
    "unmapped": "the LM's letters could not be mapped to answers (their group had no counts)",
    "mapping_mismatch": "the result file's expected_results disagree with the human counts",
    "parse_failure": "the LM reported no probability mass on the item's answers",
}
"""Meaning of the ``status`` column of :func:`tv_table`; TV and KL are NaN unless ``ok``."""

_SERIES = ("model", "method", "steering")
_TV_COLUMNS = ["model", "method", "steering", "attribute", "group", "item", "tv", "kl",
               "n_human", "lm_mass", "unmapped_mass", "status"]


@dataclass(frozen=True)
class AlignedDistributions:
    """Rows of :func:`tv_table` with the arrays behind them.

    ``table``: the :func:`tv_table` rows; ``human_cell`` int64 ``(n_rows,)``: the human
    cell of each row (-1 where missing); ``lm_cell`` int64 ``(n_rows,)``: the row of
    ``lm.cells`` it compares; ``lm_probs`` ``(n_rows, K_max)``: ``p_k`` by option column
    (zeros after the item's last option and on rows that are not ``ok``); ``ok`` bool.
    """

    table: pd.DataFrame
    human_cell: np.ndarray
    lm_cell: np.ndarray
    lm_probs: np.ndarray
    ok: np.ndarray


def _lm_matrix(human: OpinionData, lm: LMDistributions) -> tuple[np.ndarray, np.ndarray]:
    """``(n_lm_cells, K_max)`` reported probabilities by option column, and unmapped mass."""
    probs = lm.probabilities
    value = pd.to_numeric(probs["probability"], errors="coerce").to_numpy(np.float64)
    negative = value < 0
    if negative.any():
        raise ValueError(f"negative LM probabilities:\n{probs.loc[negative].head(10).to_string()}")
    value = np.nan_to_num(value, nan=0.0)
    item = lm.cells["item"].to_numpy()[probs["cell"].to_numpy()]
    k = (pd.DataFrame({"item": item, "option": probs["option"].to_numpy()})
         .merge(human.option_index(), on=["item", "option"], how="left")["k"].to_numpy())
    mapped = ~np.isnan(k)
    dropped = human.refused_dropped & (probs["option"] == human.refused).to_numpy()
    cell = probs["cell"].to_numpy()
    matrix = np.zeros((len(lm.cells), human.counts.shape[1]))
    np.add.at(matrix, (cell[mapped], k[mapped].astype(np.int64)), value[mapped])
    unmapped = np.bincount(cell[~mapped & ~dropped], weights=value[~mapped & ~dropped],
                           minlength=len(lm.cells))
    return matrix, unmapped


def aligned_distributions(
    human: OpinionData,
    lm: LMDistributions,
    renormalize: bool = True,
    unsteered_groups: Iterable[tuple[str, str]] | None = None,
) -> AlignedDistributions:
    """Every LM cell beside its human group's counts (see :func:`tv_table` for the arguments)."""
    cells = lm.cells.reset_index(drop=True)
    reported, unmapped = _lm_matrix(human, lm)
    steered = cells["attribute"] != UNSTEERED
    if unsteered_groups is None:
        pairs = cells.loc[steered, ["attribute", "group"]].drop_duplicates()
        unsteered_groups = list(pairs.itertuples(index=False, name=None)) or list(human.groups)
    targets = pd.DataFrame(list(unsteered_groups), columns=["attribute", "group"])
    rows = pd.concat(
        [
            cells.loc[steered].reset_index(names="lm_cell"),
            cells.loc[~steered].drop(columns=["attribute", "group"]).reset_index(names="lm_cell")
            .merge(targets, how="cross"),
        ],
        ignore_index=True,
    ).sort_values(["lm_cell", "attribute", "group"], kind="stable", ignore_index=True)
    lookup = human.cells().set_index(["item", "attribute", "group"])["cell"]
    human_cell = (lookup.reindex(pd.MultiIndex.from_frame(rows[["item", "attribute", "group"]]))
                  .fillna(-1).to_numpy(np.int64))
    lm_cell = rows["lm_cell"].to_numpy()

    has_human = human_cell >= 0
    counts = np.where(has_human[:, None], np.nan_to_num(human.counts[human_cell]), 0.0)
    n_human = counts.sum(axis=1)
    mass = reported.sum(axis=1)[lm_cell]
    with np.errstate(invalid="ignore", divide="ignore"):
        h = counts / n_human[:, None]
        p = reported[lm_cell] / mass[:, None] if renormalize else reported[lm_cell]
    mapping = rows["mapping"].to_numpy()
    status = np.select(
        [~has_human | (n_human <= 0), mapping == "no_human", mapping == "mismatch", ~(mass > 0)],
        ["no_human", "unmapped", "mapping_mismatch", "parse_failure"],
        default="ok",
    )
    ok = status == "ok"
    tv = np.full(len(rows), np.nan)
    kl = np.full(len(rows), np.nan)
    tv[ok] = total_variation(h[ok], p[ok])
    with np.errstate(divide="ignore"):
        kl[ok] = kl_divergence(h[ok], p[ok])
    table = rows[["model", "method", "steering", "attribute", "group", "item"]].assign(
        tv=tv, kl=kl, n_human=n_human, lm_mass=mass, unmapped_mass=unmapped[lm_cell], status=status
    )
    return AlignedDistributions(table=table[_TV_COLUMNS], human_cell=human_cell, lm_cell=lm_cell,
                                lm_probs=np.where(ok[:, None], p, 0.0), ok=ok)


def tv_table(
    human: OpinionData,
    lm: LMDistributions,
    renormalize: bool = True,
    unsteered_groups: Iterable[tuple[str, str]] | None = None,
) -> pd.DataFrame:
    """TV and KL between every LM cell and its human group (see the module docstring).

    Parameters
    ----------
    human : the human counts (``drop_refused`` decides whether ``Refused`` counts).
    lm : LM distributions on the same items.
    renormalize : divide the LM's probabilities by their sum over the item's answers
        (default). ``False`` uses them as reported, as the paper's code did (its log-prob
        distributions are top-20 token probabilities and need not sum to one).
    unsteered_groups : the ``(attribute, group)`` pairs an unsteered distribution is
        compared with; default: the groups of the table's steered cells (every human
        group when there are none).

    Returns
    -------
    DataFrame ``model, method, steering, attribute, group, item, tv, kl, n_human,
    lm_mass, unmapped_mass, status`` (``STATUSES``), one row per LM cell and group.
    ``lm_mass`` is the reported mass on the item's answers, ``unmapped_mass`` on letters
    beyond the group's answers. KL is ``inf`` where the LM gives 0 to a chosen answer.
    """
    return aligned_distributions(human, lm, renormalize, unsteered_groups).table


def _human_replicates(
    human: OpinionData, aligned: AlignedDistributions, n_boot: int, rng: np.random.Generator,
    max_elements: float = 2e7,
) -> np.ndarray:
    """``(n_boot, n_rows)`` TVs with every human cell's counts redrawn per replicate."""
    rows = np.flatnonzero(aligned.ok)
    out = np.full((n_boot, len(aligned.table)), np.nan)
    if len(rows) == 0:
        return out
    cells, inverse = np.unique(aligned.human_cell[rows], return_inverse=True)
    counts = np.rint(np.nan_to_num(human.counts[cells]))
    n = counts.sum(axis=1).astype(np.int64)
    shares = counts / n[:, None]
    p = aligned.lm_probs[rows]
    chunk = max(1, int(max_elements // (len(rows) * counts.shape[1])))
    for start in range(0, n_boot, chunk):
        size = min(chunk, n_boot - start)
        draws = rng.multinomial(n, shares, size=(size, len(cells))) / n[None, :, None]
        out[start:start + size, rows] = total_variation(draws[:, inverse], p[None])
    return out


def bootstrap_mean(
    table: pd.DataFrame,
    value: str = "tv",
    by: Sequence[str] = _SERIES,
    unit: str = "cells",
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    replicates: np.ndarray | None = None,
) -> pd.DataFrame:
    """Mean of ``table[value]`` per ``by`` series with a percentile bootstrap interval.

    ``unit="cells"`` resamples rows (the paper's procedure), ``"items"`` resamples items
    (all rows of an item together; needs an ``item`` column). ``replicates`` ``(n_boot,
    len(table))`` replaces the values in resample ``b`` by ``replicates[b]`` (e.g. TVs
    recomputed on redrawn human counts). Rows with a non-finite value are left out and
    counted in ``n_missing``.

    Returns
    -------
    DataFrame ``*by, n_cells, n_items, n_missing, mean, low, high`` (``low``/``high``:
    the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the resampled means).
    """
    if unit not in ("cells", "items"):
        raise ValueError(f"unit must be 'cells' or 'items', got {unit!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    by = list(by)
    missing = [c for c in [value, *by, *(["item"] if unit == "items" else [])] if c not in table.columns]
    if missing:
        raise ValueError(f"columns {missing} not in the table (columns: {list(table.columns)})")
    if replicates is not None and np.shape(replicates) != (n_boot, len(table)):
        raise ValueError(f"replicates must have shape (n_boot, n_rows) = {(n_boot, len(table))}, "
                         f"got {np.shape(replicates)}")
    values = table[value].to_numpy(np.float64)
    valid = np.isfinite(values)
    series = (table.groupby(by, sort=False, dropna=False).ngroup().to_numpy() if by
              else np.zeros(len(table), dtype=np.int64))
    items = table["item"].to_numpy() if "item" in table.columns else None
    rng = np.random.default_rng(seed)
    quantiles = [(1 - level) / 2, (1 + level) / 2]
    out = []
    for s in range(int(series.max()) + 1 if len(series) else 0):
        in_series = series == s
        rows = np.flatnonzero(in_series & valid)
        labels = table.iloc[np.flatnonzero(in_series)[0]][by].to_dict() if by else {}
        record = {**labels, "n_cells": len(rows),
                  "n_items": len(set(items[rows])) if items is not None else np.nan,
                  "n_missing": int((in_series & ~valid).sum()),
                  "mean": np.nan, "low": np.nan, "high": np.nan}
        if len(rows):
            if unit == "cells":
                unit_of = np.arange(len(rows))
            else:
                unit_of = pd.factorize(items[rows])[0]
            n_units = int(unit_of.max()) + 1
            size = np.bincount(unit_of, minlength=n_units).astype(np.float64)
            draw = rng.integers(0, n_units, size=(n_boot, n_units))
            if replicates is None:
                sums = np.bincount(unit_of, weights=values[rows], minlength=n_units)
                numerator = sums[draw].sum(axis=1)
            else:
                sums = replicates[:, rows]
                if unit == "items":
                    sums = sums @ (unit_of[:, None] == np.arange(n_units)).astype(np.float64)
                numerator = np.take_along_axis(sums, draw, axis=1).sum(axis=1)
            means = numerator / size[draw].sum(axis=1)
            record.update(mean=values[rows].mean(), low=np.quantile(means, quantiles[0]),
                          high=np.quantile(means, quantiles[1]))
        out.append(record)
    return pd.DataFrame(out, columns=[*by, "n_cells", "n_items", "n_missing", "mean", "low", "high"])


def tv_summary(
    human: OpinionData,
    lm: LMDistributions,
    by: Sequence[str] = _SERIES,
    renormalize: bool = True,
    unsteered_groups: Iterable[tuple[str, str]] | None = None,
    unit: str = "cells",
    n_boot: int = 1000,
    level: float = 0.95,
    resample_human: bool = False,
    seed: int = 0,
) -> pd.DataFrame:
    """Mean TV per ``by`` series (default model x method x steering) with its interval.

    :func:`tv_table` followed by :func:`bootstrap_mean` (``unit``, ``n_boot``, ``level``,
    ``seed``); ``resample_human`` also redraws the human counts in every resample (see
    the module docstring). Columns: ``*by, n_cells, n_items, n_missing, mean, low, high``.
    """
    aligned = aligned_distributions(human, lm, renormalize, unsteered_groups)
    replicates = None
    if resample_human:
        replicates = _human_replicates(human, aligned, n_boot, np.random.default_rng([seed, 1]))
    return bootstrap_mean(aligned.table, "tv", by, unit, n_boot, level, seed, replicates)


def human_split_baseline(
    human: OpinionData,
    n_splits: int = 100,
    min_respondents: int = 20,
    groups: Iterable[tuple[str, str]] | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """TV between two random halves of each group's respondents, per (item, group) cell.

    Each split draws ``floor(n / 2)`` respondents without replacement from the cell's
    counts (a multivariate hypergeometric draw, option by option); the other respondents
    form the second half. ``tv`` is the mean over ``n_splits`` splits, ``tv_sd`` their
    standard deviation. Cells with fewer than ``min_respondents`` respondents (or none)
    are reported (``status`` ``too_few_respondents`` / ``no_respondents``), not split.
    Counts are rounded to integers. ``groups`` restricts the ``(attribute, group)`` pairs.

    Returns
    -------
    DataFrame ``attribute, group, item, n_human, tv, tv_sd, status``.
    """
    if n_splits < 2:
        raise ValueError(f"n_splits must be at least 2, got {n_splits}")
    if min_respondents < 2:
        raise ValueError(f"min_respondents must be at least 2, got {min_respondents}")
    cells = human.cells()
    selected = np.ones(len(cells), dtype=bool)
    if groups is not None:
        wanted = set(map(tuple, groups))
        selected = np.array([(a, g) in wanted for a, g in zip(cells["attribute"], cells["group"], strict=True)])
    counts = np.rint(np.nan_to_num(human.counts)).astype(np.int64)
    n = counts.sum(axis=1)
    eligible = selected & (n >= min_respondents)
    c = counts[eligible]
    total = np.broadcast_to(n[eligible], (n_splits, len(c))).copy()
    first_size = n[eligible] // 2
    to_draw = np.broadcast_to(first_size, (n_splits, len(c))).copy()
    first = np.zeros((n_splits, *c.shape), dtype=np.int64)
    rng = np.random.default_rng(seed)
    for k in range(c.shape[1]):
        good = np.broadcast_to(c[:, k], total.shape)
        first[..., k] = rng.hypergeometric(good, total - good, to_draw)
        total = total - good
        to_draw = to_draw - first[..., k]
    second = c[None] - first
    tv = total_variation(first / first_size[None, :, None], second / (n[eligible] - first_size)[None, :, None])
    table = cells.loc[selected, ["attribute", "group", "item"]].assign(
        n_human=n[selected].astype(np.float64), tv=np.nan, tv_sd=np.nan,
        status=np.where(n[selected] == 0, "no_respondents",
                        np.where(n[selected] < min_respondents, "too_few_respondents", "ok")),
    )
    ok_rows = np.flatnonzero(eligible[selected])
    table.iloc[ok_rows, table.columns.get_loc("tv")] = tv.mean(axis=0)
    table.iloc[ok_rows, table.columns.get_loc("tv_sd")] = tv.std(axis=0, ddof=1)
    return table.reset_index(drop=True)


def plot_tv_summary(summary: pd.DataFrame, baseline: pd.DataFrame | None = None, title: str | None = None):
    """Mean TV with intervals: one panel per steering, one row per model, one colour per method.

    ``summary`` is a :func:`tv_summary` table (columns ``model, method, steering, mean,
    low, high``); ``baseline`` an optional one-row :func:`bootstrap_mean` table (e.g. of
    :func:`human_split_baseline`), drawn as a grey band. Returns the matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    missing = [c for c in ("model", "method", "steering", "mean", "low", "high") if c not in summary.columns]
    if missing:
        raise ValueError(f"summary lacks the columns {missing}")
    steerings = list(dict.fromkeys(summary["steering"]))
    models = list(dict.fromkeys(summary["model"]))
    methods = list(dict.fromkeys(summary["method"]))
    fig, axes = plt.subplots(1, len(steerings), sharex=True, sharey=True, squeeze=False,
                             figsize=(3.6 * len(steerings) + 1.6, 0.55 * len(models) + 1.6))
    offsets = (np.arange(len(methods)) - (len(methods) - 1) / 2) * min(0.8 / max(len(methods), 1), 0.2)
    for ax, steering in zip(axes[0], steerings, strict=True):
        part = summary.loc[summary["steering"] == steering]
        if baseline is not None and len(baseline):
            row = baseline.iloc[0]
            ax.axvspan(row["low"], row["high"], color="0.85", zorder=0)
            ax.axvline(row["mean"], color="0.5", lw=1, zorder=0,
                       label="human split-half" if steering == steerings[0] else None)
        for j, method in enumerate(methods):
            rows = part.loc[part["method"] == method]
            if rows.empty:
                continue
            y = np.array([models.index(m) for m in rows["model"]]) + offsets[j]
            mean = rows["mean"].to_numpy()
            ax.errorbar(mean, y, xerr=[mean - rows["low"].to_numpy(), rows["high"].to_numpy() - mean],
                        fmt="o", ms=4, capsize=2, color=f"C{j}",
                        label=method if steering == steerings[0] else None)
        ax.set_title(f"steering: {steering}")
        ax.set_xlabel("mean total variation")
        ax.grid(axis="x", alpha=0.3)
    axes[0, 0].set_yticks(range(len(models)), models)
    axes[0, 0].invert_yaxis()
    fig.legend(loc="upper center", ncol=len(methods) + 1, frameon=False, bbox_to_anchor=(0.5, 1.0))
    fig.suptitle(title or "LM vs human opinion distributions (lower is closer); 95% bootstrap intervals",
                 y=1.06, fontsize=10)
    fig.tight_layout()
    return fig
