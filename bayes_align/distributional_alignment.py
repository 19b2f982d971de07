"""Distributional alignment of opinions: posterior alignment beside the classical TV.

:func:`distributional_alignment` fits one graded IRT model per (attribute, target
group) (:mod:`bayes_align.opinion_model`: the target human group is the reference,
every LM condition compared with it a focal group) and reads, per LM x expression
method x steering x group, the posterior of the alignment metrics of
:func:`bayes_align.alignment`, e.g.

    pearson_g = corr_i(b_i, b_i + s_gi)

(``b_i``: the target group's location of item ``i`` on the latent scale, ``s_gi``: how
far group ``g``'s answers sit from it at equal latent position), beside the mean total
variation of the same comparisons with its bootstrap interval
(:mod:`bayes_align.distributional`). The two answer different questions: TV measures
how far each answer distribution is from the group's, item by item, shape included;
``pearson`` measures whether the LM places the items where the group does relative to
one another, net of an overall shift (the group mean) and of the answer scale's steps
that all groups share, with the human sampling noise and the LM's effective sample
size in its interval.

Pooled summaries. Fits of different targets are independent, so their posterior draws
pair up by index: the mean over target groups of a metric in draw ``s`` is a draw from
the posterior of the pooled metric. :meth:`DistributionalAlignment.summary` and
:meth:`DistributionalAlignment.compare` use that; within one fit the draws are the
joint posterior, so differences between conditions compared with the same target keep
their correlation.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import arviz as az
import numpy as np
import pandas as pd
import xarray as xr

from bayes_align.alignment import alignment as posterior_alignment
from bayes_align.distributional import bootstrap_mean, tv_table
from bayes_align.inference import fit as fit_model
from bayes_align.opinion_model import (
    DEFAULT_LM_N,
    OpinionFitData,
    opinion_fit_data,
    target_groups,
)
from bayes_align.opinions import LMDistributions, OpinionData, lm_distributions_from_frame

__all__ = [
    "ALIGNMENT_COLUMNS",
    "DistributionalAlignment",
    "distributional_alignment",
]

ALIGNMENT_COLUMNS = ["model", "method", "steering", "attribute", "group", "metric", "mean", "sd",
                     "hdi_low", "hdi_high"]
"""Columns of :attr:`DistributionalAlignment.alignment` (``alignment.csv``)."""

_CONDITION = ["model", "method", "steering"]
_ROW = [*_CONDITION, "attribute", "group"]
_HIGHER_IS_ALIGNED = {"pearson": True, "spearman": True, "invariant_share": True, "dif_scale": False}


def _hdi(draws: np.ndarray, prob: float) -> tuple[np.ndarray, np.ndarray]:
    """Highest-density interval of each row of ``draws`` ``(n, S)``."""
    if draws.shape[0] == 0:
        return np.zeros(0), np.zeros(0)
    hdi = az.hdi(xr.DataArray(draws[:, None, :], dims=("series", "chain", "draw")), hdi_prob=prob)
    values = hdi[next(iter(hdi.data_vars))] if isinstance(hdi, xr.Dataset) else hdi
    return values.sel(hdi="lower").to_numpy(), values.sel(hdi="higher").to_numpy()


@dataclass(frozen=True)
class DistributionalAlignment:
    """Posterior alignment and TV per LM condition and target group.

    Attributes
    ----------
    alignment : ``model, method, steering, attribute, group, metric, mean, sd, hdi_low,
        hdi_high`` (:data:`ALIGNMENT_COLUMNS`): the posterior of every metric of
        :func:`bayes_align.alignment` per LM condition and target group.
    human_alignment : the same for the other human groups of the attribute compared with
        each target (``model`` ``"human"``, ``steering`` the other group's name).
    table : one row per LM condition and target group: the posterior
        ``<metric>_mean, _sd, _low, _high`` of ``metric``, ``n_items`` (in the fit),
        ``n_identified`` (items in the alignment correlations), the posterior means of
        ``group_mean`` (overall shift from the target on the latent scale) and
        ``group_sd`` (1 unless fitted with ``aggregated_sd=None``), and the TV ``tv_mean,
        tv_low, tv_high, tv_cells`` (every answer text, as the paper computes it).
    tv : :func:`~bayes_align.distributional.tv_table` rows of the fitted targets.
    excluded : LM comparisons (``model, method, steering, attribute, group, item``) not in
        the Bayesian data, with ``reason`` (:data:`bayes_align.opinion_model.REASONS`).
    datasets, fits : per ``(attribute, group)`` target, the :class:`OpinionFitData` and the Fit.
    draws : per metric, one row per LM condition and target (``model, method, steering,
        attribute, group``) with its posterior draws in ``draws`` (a 1-D array; the same
        length in every fit), which :meth:`summary` and :meth:`compare` pool.
    metric, prob : the metric of ``table`` and the figure, the HDI mass.
    level, tv_unit, n_boot, seed : the TV bootstrap's settings.
    """

    alignment: pd.DataFrame
    human_alignment: pd.DataFrame
    table: pd.DataFrame
    tv: pd.DataFrame
    excluded: pd.DataFrame
    datasets: Mapping[tuple[str, str], OpinionFitData]
    fits: Mapping[tuple[str, str], Any]
    draws: Mapping[str, pd.DataFrame]
    metric: str
    prob: float
    level: float
    tv_unit: str
    n_boot: int
    seed: int

    # ------------------------------------------------------------------ pooled draws
    def _draw_matrix(self, metric: str) -> tuple[pd.DataFrame, np.ndarray]:
        frame = self.draws[metric]
        keys = frame[_ROW].reset_index(drop=True)
        return keys, np.stack(frame["draws"].to_numpy()) if len(frame) else np.zeros((0, 0))

    def summary(self, by: Sequence[str] = tuple(_CONDITION), metric: str | None = None) -> pd.DataFrame:
        """Posterior of the metric pooled over the other columns, beside the pooled TV.

        Per ``by`` series (default model x method x steering), the posterior mean, sd and
        HDI of the metric averaged over the series' (target group, ...) rows, draw by
        draw, and the mean TV over the same comparisons with its bootstrap interval.
        Columns: ``*by, n_rows, mean, sd, hdi_low, hdi_high, tv_mean, tv_low, tv_high, tv_cells``.
        """
        metric = metric or self.metric
        by = list(by)
        keys, draws = self._draw_matrix(metric)
        codes, series = pd.factorize(pd.MultiIndex.from_frame(keys[by]))
        rows = []
        pooled = np.stack([draws[codes == s].mean(axis=0) for s in range(len(series))]) if len(series) else draws
        low, high = _hdi(pooled, self.prob)
        for s, labels in enumerate(series):
            rows.append({**dict(zip(by, labels, strict=True)), "n_rows": int((codes == s).sum()),
                         "mean": pooled[s].mean(), "sd": pooled[s].std(ddof=1),
                         "hdi_low": low[s], "hdi_high": high[s]})
        out = pd.DataFrame(rows, columns=[*by, "n_rows", "mean", "sd", "hdi_low", "hdi_high"])
        tv = self._fitted_tv()
        tv_summary = bootstrap_mean(tv, "tv", by=by, unit=self.tv_unit, n_boot=self.n_boot,
                                    level=self.level, seed=self.seed)
        tv_summary = tv_summary.rename(columns={"mean": "tv_mean", "low": "tv_low", "high": "tv_high",
                                                "n_cells": "tv_cells"})
        return out.merge(tv_summary[[*by, "tv_mean", "tv_low", "tv_high", "tv_cells"]], on=by, how="left")

    def _fitted_tv(self) -> pd.DataFrame:
        """TV rows of the (condition, target) pairs that have a posterior."""
        fitted = self.alignment.loc[self.alignment["metric"] == self.metric, _ROW].drop_duplicates()
        return self.tv.merge(fitted, on=_ROW, how="inner")

    def compare(
        self,
        factor: str = "method",
        by: Sequence[str] = ("model", "steering"),
        metric: str | None = None,
        credible: float = 0.95,
    ) -> pd.DataFrame:
        """Which level of ``factor`` beats which, within each ``by`` series, paired.

        For levels ``a`` and ``b`` of ``factor`` (e.g. two expression methods) in one
        ``by`` series (e.g. one model x steering), over the (target group, ...) rows both
        have: the posterior of ``mean(m_a) - mean(m_b)`` draw by draw (``diff_mean``,
        ``diff_low``, ``diff_high``: its HDI) and ``prob_better`` = P(``a`` better
        aligned than ``b``) (higher metric, lower ``dif_scale``); beside it the paired TV
        difference ``tv_a - tv_b`` over the items both have (negative: ``a`` closer), with
        its bootstrap interval (whole items resampled). ``posterior_credible``:
        ``prob_better`` at least ``credible`` or at most ``1 - credible``;
        ``tv_credible``: the TV interval excludes 0.
        """
        metric = metric or self.metric
        by = list(by)
        if factor in by or factor not in _CONDITION + ["attribute", "group"]:
            raise ValueError(f"factor must be one of {_ROW} and not in by={by}, got {factor!r}")
        pooled_over = [c for c in _ROW if c not in by and c != factor]
        keys, draws = self._draw_matrix(metric)
        sign = 1.0 if _HIGHER_IS_ALIGNED[metric] else -1.0
        tv = self._fitted_tv()
        tv_ok = tv.loc[np.isfinite(tv["tv"])]
        out = []
        for labels, part in keys.groupby(by, sort=False) if by else [((), keys)]:
            labels = labels if isinstance(labels, tuple) else (labels,)
            for a, b in combinations(list(dict.fromkeys(part[factor])), 2):
                rows_a = part.loc[part[factor] == a].reset_index(names="row")
                rows_b = part.loc[part[factor] == b].reset_index(names="row")
                pairs = (rows_a.merge(rows_b, on=pooled_over, suffixes=("_a", "_b")) if pooled_over
                         else rows_a.merge(rows_b, how="cross", suffixes=("_a", "_b")))
                if pairs.empty:
                    continue
                diff = sign * (draws[pairs["row_a"]].mean(axis=0) - draws[pairs["row_b"]].mean(axis=0))
                low, high = _hdi(diff[None, :], self.prob)
                ends = sorted((sign * low[0], sign * high[0]))
                record = {**dict(zip(by, labels, strict=True)), "a": a, "b": b, "n_rows": len(pairs),
                          "diff_mean": sign * diff.mean(), "diff_low": ends[0], "diff_high": ends[1],
                          "prob_better": float((diff > 0).mean())}
                record.update(self._tv_difference(tv_ok, by, labels, factor, a, b, pooled_over))
                out.append(record)
        columns = [*by, "a", "b", "n_rows", "diff_mean", "diff_low", "diff_high", "prob_better",
                   "tv_cells", "tv_diff", "tv_diff_low", "tv_diff_high"]
        result = pd.DataFrame(out, columns=columns)
        result["posterior_credible"] = (result["prob_better"] >= credible) | (result["prob_better"] <= 1 - credible)
        result["tv_credible"] = (result["tv_diff_low"] > 0) | (result["tv_diff_high"] < 0)
        return result

    def _tv_difference(self, tv: pd.DataFrame, by, labels, factor, a, b, pooled_over) -> dict:
        mask = np.ones(len(tv), dtype=bool)
        for column, value in zip(by, labels, strict=True):
            mask &= (tv[column] == value).to_numpy()
        part = tv.loc[mask]
        match = [*pooled_over, "item"]
        paired = part.loc[part[factor] == a, [*match, "tv"]].merge(
            part.loc[part[factor] == b, [*match, "tv"]], on=match, suffixes=("_a", "_b"))
        if paired.empty:
            return {"tv_cells": 0, "tv_diff": np.nan, "tv_diff_low": np.nan, "tv_diff_high": np.nan}
        paired["diff"] = paired["tv_a"] - paired["tv_b"]
        boot = bootstrap_mean(paired, "diff", by=(), unit="items", n_boot=self.n_boot, level=self.level,
                              seed=self.seed).iloc[0]
        return {"tv_cells": int(boot["n_cells"]), "tv_diff": boot["mean"], "tv_diff_low": boot["low"],
                "tv_diff_high": boot["high"]}

    # ----------------------------------------------------------------------- figure
    def plot(self, metric: str | None = None, title: str | None = None):
        """TV (top) and the pooled posterior metric (bottom) per model, method and steering.

        One column per steering method, one row of points per model, one colour per
        expression method; TV with its bootstrap interval, the metric with its HDI,
        pooled over the target groups. The grey lines in the lower panels are the
        posterior metric of the attribute's other human groups against each target
        (mean per attribute): LM conditions to the right of an attribute's line are closer
        to its targets than another group of that attribute is. Returns the Figure.
        """
        import matplotlib.pyplot as plt

        metric = metric or self.metric
        summary = self.summary(metric=metric)
        if summary.empty:
            fig, ax = plt.subplots(figsize=(6, 1.5))
            ax.text(0.5, 0.5, "no LM condition had enough usable items for a posterior\n"
                    "(see DistributionalAlignment.excluded)", ha="center", va="center")
            ax.axis("off")
            return fig
        steerings = list(dict.fromkeys(summary["steering"]))
        models = list(dict.fromkeys(summary["model"]))
        methods = list(dict.fromkeys(summary["method"]))
        fig, axes = plt.subplots(2, len(steerings), sharex="row", sharey=True, squeeze=False,
                                 figsize=(3.8 * len(steerings) + 1.8, 2 * (0.5 * len(models) + 1.2)))
        offsets = (np.arange(len(methods)) - (len(methods) - 1) / 2) * min(0.8 / max(len(methods), 1), 0.18)
        human = (self.human_alignment.loc[self.human_alignment["metric"] == metric]
                 .groupby("attribute", sort=False)["mean"].mean())
        panels = (("tv_mean", "tv_low", "tv_high", f"mean total variation ({100 * self.level:g}% bootstrap)"),
                  ("mean", "hdi_low", "hdi_high", f"posterior {metric} ({100 * self.prob:g}% HDI)"))
        for row, (centre, low, high, label) in enumerate(panels):
            for ax, steering in zip(axes[row], steerings, strict=True):
                part = summary.loc[summary["steering"] == steering]
                for j, method in enumerate(methods):
                    rows = part.loc[part["method"] == method]
                    if rows.empty:
                        continue
                    y = np.array([models.index(m) for m in rows["model"]]) + offsets[j]
                    x = rows[centre].to_numpy()
                    ax.errorbar(x, y, xerr=[x - rows[low].to_numpy(), rows[high].to_numpy() - x], fmt="o",
                                ms=4, capsize=2, color=f"C{j}",
                                label=method if (row == 0 and steering == steerings[0]) else None)
                if row == 1:
                    for k, (attribute, value) in enumerate(human.items()):
                        ax.axvline(value, color="0.5", lw=1, ls=("-", "--", ":", "-.")[k % 4], zorder=0,
                                   label=f"other {attribute} groups" if steering == steerings[0] else None)
                ax.set_xlabel(label, fontsize=8)
                ax.grid(axis="x", alpha=0.3)
                if row == 0:
                    ax.set_title(f"steering: {steering}")
        for ax in axes[:, 0]:
            ax.set_yticks(range(len(models)), models)
        axes[0, 0].invert_yaxis()
        handles, labels = [], []
        for ax in axes[:, 0]:
            h, lab = ax.get_legend_handles_labels()
            handles += h
            labels += lab
        fig.legend(handles, labels, loc="upper center", ncol=len(labels), frameon=False,
                   bbox_to_anchor=(0.5, 1.02))
        fig.suptitle(title or "LM vs human opinion distributions: TV (lower is closer) and posterior "
                     "alignment (higher is closer), pooled over target groups", y=1.06, fontsize=10)
        fig.tight_layout()
        return fig


def _as_lm(human: OpinionData, lm_tables) -> LMDistributions:
    parts = [lm_tables] if isinstance(lm_tables, (LMDistributions, pd.DataFrame)) else list(lm_tables)
    if not parts:
        raise ValueError("lm_tables is empty: give LMDistributions or long tables of LM distributions")
    converted = [p if isinstance(p, LMDistributions) else lm_distributions_from_frame(p, human) for p in parts]
    return LMDistributions.concat(converted)


def _identified_items(fit, data: OpinionFitData) -> pd.Series:
    """Items per focal group label in the fit whose DIF the data identify."""
    idata = fit.idata if hasattr(fit, "idata") else fit
    pairs = {tuple(p) for p in json.loads(idata.attrs.get("dif_unidentified", "[]"))}
    rows = data.rows.loc[data.rows["label"] != data.reference]
    identified = [(item, label) not in pairs for item, label in zip(rows["item"], rows["label"], strict=True)]
    return pd.Series(identified, index=rows.index).groupby(rows["label"]).sum()


def distributional_alignment(
    human: OpinionData,
    lm_tables: LMDistributions | pd.DataFrame | Sequence[LMDistributions | pd.DataFrame],
    *,
    targets: Sequence[tuple[str, str]] | None = None,
    lm_n: float | Mapping[str, float | str] = DEFAULT_LM_N,
    human_groups: bool | Sequence[str] = True,
    metric: str = "pearson",
    method: str = "svi",
    prob: float = 0.9,
    renormalize: bool = True,
    tv_unit: str = "cells",
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    progress: bool = True,
    fit_options: Mapping[str, Any] | None = None,
) -> DistributionalAlignment:
    """Posterior alignment and TV of every LM condition with every group it was steered to.

    Parameters
    ----------
    human : the human counts (:func:`bayes_align.opinions.load_opinions`).
    lm_tables : LM distributions: :class:`LMDistributions` (e.g. the paper's outputs via
        :func:`~bayes_align.opinions.load_lm_results`), long tables as
        :func:`~bayes_align.opinions.lm_distributions_from_frame` reads them (e.g.
        :func:`bayes_align.scoring.option_table` of ``score``), or a list of both.
    targets : the ``(attribute, group)`` references, one fit each (default: every group
        an LM was steered to; unsteered distributions are compared with each target).
    lm_n, human_groups : see :func:`bayes_align.opinion_model.opinion_fit_data`.
    metric : the metric of ``table``, ``summary`` and the figure (any of
        :func:`bayes_align.alignment`'s; all are in ``alignment``).
    method : ``"svi"`` (default; mean-field variational posterior, fast, intervals
        somewhat too narrow) or ``"nuts"`` (exact up to Monte Carlo error, slower).
    prob : HDI mass. ``renormalize, tv_unit, n_boot, level`` : the TV side
        (:func:`~bayes_align.distributional.tv_table`, :func:`~bayes_align.distributional.bootstrap_mean`).
    seed : seeds the fits and the bootstrap. progress : a bar over the fits and each fit's own.
    fit_options : more keyword arguments of :func:`bayes_align.fit` (e.g. ``draws``,
        ``n_nodes``, ``learning_rate``, ``chains``). The model is ``grm`` with
        ``dif="normal"``; every fit has the same number of draws.
    """
    from tqdm.auto import tqdm

    if metric not in _HIGHER_IS_ALIGNED:
        raise ValueError(f"metric must be one of {list(_HIGHER_IS_ALIGNED)}, got {metric!r}")
    lm = _as_lm(human, lm_tables)
    targets = list(map(tuple, targets)) if targets is not None else target_groups(lm, human)
    unknown = [t for t in targets if t not in set(human.groups)]
    if unknown:
        raise ValueError(f"targets {unknown} are not human groups; groups: {list(human.groups)}")
    options = {"model": "grm", "dif": "normal", "method": method, "seed": seed, "progress_bar": progress,
               **dict(fit_options or {})}

    datasets, fits, alignments, humans, locations = {}, {}, [], [], []
    draws: dict[str, list[pd.DataFrame]] = {m: [] for m in _HIGHER_IS_ALIGNED}
    for attribute, target in tqdm(targets, desc="opinion fits", unit="fit", disable=not progress):
        data = opinion_fit_data(human, lm, attribute, target, lm_n=lm_n, human_groups=human_groups)
        datasets[attribute, target] = data
        if data.lm_groups.empty:
            continue
        fitted = fit_model(data.data, **options)
        fits[attribute, target] = fitted
        result = posterior_alignment(fitted, prob=prob)
        groups = data.groups.set_index("label")
        table = result.table.join(groups[["kind", "model", "method", "steering"]], on="group")
        table = table.rename(columns={"group": "label"}).assign(attribute=attribute, group=target)
        alignments.append(table.loc[table["kind"] == "lm"])
        humans.append(table.loc[table["kind"] == "human"])
        lm_labels = groups.index[groups["kind"] == "lm"]
        posterior = fitted.idata.posterior
        location = pd.DataFrame({
            name: posterior[name].mean(("chain", "draw")).to_series().reindex(lm_labels).to_numpy()
            for name in ("group_mean", "group_sd")
        }, index=lm_labels)
        locations.append(location.assign(attribute=attribute, group=target).reset_index(names="label"))
        for name in _HIGHER_IS_ALIGNED:
            values = result.draws[name].sel(focal_group=list(lm_labels))
            matrix = values.transpose("focal_group", "chain", "draw").to_numpy().reshape(len(lm_labels), -1)
            info = groups.loc[lm_labels, _CONDITION].reset_index(drop=True)
            draws[name].append(info.assign(attribute=attribute, group=target, draws=list(matrix)))

    empty = pd.DataFrame(columns=[*ALIGNMENT_COLUMNS, "label"])
    long = pd.concat(alignments, ignore_index=True) if alignments else empty
    human_long = pd.concat(humans, ignore_index=True) if humans else empty
    draw_tables = {m: (pd.concat(v, ignore_index=True) if v else pd.DataFrame(columns=[*_ROW, "draws"]))
                   for m, v in draws.items()}
    tv = tv_table(human, lm, renormalize=renormalize, unsteered_groups=targets)
    tv = tv.merge(pd.DataFrame(targets, columns=["attribute", "group"]), on=["attribute", "group"])
    excluded = (pd.concat([d.excluded for d in datasets.values()], ignore_index=True) if datasets
                else pd.DataFrame(columns=[*_ROW, "item", "reason"]))

    wide = long.loc[long["metric"] == metric, [*_ROW, "label", "mean", "sd", "hdi_low", "hdi_high"]]
    wide = wide.rename(columns={"mean": f"{metric}_mean", "sd": f"{metric}_sd",
                                "hdi_low": f"{metric}_low", "hdi_high": f"{metric}_high"})
    counts = []
    for (attribute, target), data in datasets.items():
        if (attribute, target) not in fits:
            continue
        identified = _identified_items(fits[attribute, target], data)
        g = data.groups.loc[data.groups["kind"] == "lm", ["label", "n_items"]]
        counts.append(g.assign(attribute=attribute, group=target,
                               n_identified=g["label"].map(identified).fillna(0).astype(int)))
    if counts:
        wide = wide.merge(pd.concat(counts), on=["label", "attribute", "group"], how="left")
        wide = wide.merge(pd.concat(locations), on=["label", "attribute", "group"], how="left")
    tv_per_row = bootstrap_mean(tv, "tv", by=_ROW, unit=tv_unit, n_boot=n_boot, level=level, seed=seed)
    tv_per_row = tv_per_row.rename(columns={"mean": "tv_mean", "low": "tv_low", "high": "tv_high",
                                            "n_cells": "tv_cells"})
    wide = wide.merge(tv_per_row[[*_ROW, "tv_mean", "tv_low", "tv_high", "tv_cells"]], on=_ROW, how="left")
    return DistributionalAlignment(
        alignment=long[ALIGNMENT_COLUMNS].reset_index(drop=True),
        human_alignment=human_long.rename(columns={"steering": "other"})[
            ["attribute", "group", "other", "metric", "mean", "sd", "hdi_low", "hdi_high"]].reset_index(drop=True),
        table=wide.drop(columns=["label"]).reset_index(drop=True),
        tv=tv,
        excluded=excluded,
        datasets=datasets,
        fits=fits,
        draws=draw_tables,
        metric=metric,
        prob=prob,
        level=level,
        tv_unit=tv_unit,
        n_boot=n_boot,
        seed=seed,
    )
