"""How alignment depends on the number of human respondents.

For each size ``n`` in ``sizes`` and replicate ``r``, :func:`sample_size_study` draws
``n`` persons of the reference group without replacement, keeps every focal group as it
is, refits the joint model and records each focal group's posterior alignment (mean, sd,
HDI) beside the classical number (:func:`bayes_align.naive_alignment`: the correlation
of separately estimated difficulties) at that size. A fit of the full sample gives the
values the replicates are judged against:

- the posterior should stay honest at small sizes: its HDI widens, and the HDI of most
  replicates still covers the full-sample posterior mean (``coverage`` in
  :meth:`SampleSizeStudy.summary`);
- the classical r is attenuated by the noise of the small-sample difficulties, so its
  mean over replicates falls below the full-sample value as ``n`` shrinks.

Every replicate of one size has the same persons, items and groups, so the same array
shapes (and, with complete data, the same number of observations): the fitting program
compiled for the first replicate of a size is reused for the others.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

import bayes_align as ba

__all__ = ["SampleSizeStudy", "sample_size_study", "subsample_reference"]

_COLUMNS = ["size", "rep", "group", "metric", "mean", "sd", "hdi_low", "hdi_high", "classical"]
#: Metrics with a classical (separate-fit) counterpart in :func:`naive_alignment`.
_CLASSICAL = ("pearson", "spearman")


def subsample_reference(
    data: ba.ResponseData, size: int, rng: np.random.Generator
) -> ba.ResponseData:
    """``data`` with ``size`` reference persons drawn without replacement; focal groups kept.

    Persons keep their labels; items keep theirs even when no drawn person answered one.
    """
    reference = np.flatnonzero(data.person_group == data.reference_index)
    if not 1 <= size <= reference.size:
        raise ValueError(
            f"size {size} is not between 1 and the {reference.size} persons of the reference "
            f"{data.reference_group!r}"
        )
    keep = np.ones(data.n_persons, dtype=bool)
    keep[reference] = False
    keep[rng.choice(reference, size=size, replace=False)] = True
    new_index = np.cumsum(keep) - 1
    rows = keep[data.person_idx]
    return ba.ResponseData.from_indices(
        person_idx=new_index[data.person_idx[rows]],
        item_idx=data.item_idx[rows],
        person_group=data.person_group[keep],
        response=data.response[rows],
        weight=data.weight[rows],
        persons=np.asarray(data.persons)[keep].tolist(),
        items=data.items,
        groups=data.groups,
        reference_group=data.reference_group,
        kind=data.kind,
        n_categories=data.n_categories,
        warn=False,
    )


@dataclass(frozen=True)
class SampleSizeStudy:
    """Result of :func:`sample_size_study`.

    Attributes
    ----------
    table
        Long DataFrame, one row per (size, rep, focal group, metric): ``size, rep, group,
        metric, mean, sd, hdi_low, hdi_high, classical`` (``classical``: the
        separate-fit correlation at that size; NaN for metrics without one).
    full
        The same columns for the full sample (``size`` = the reference's size, ``rep`` -1).
    timings
        ``size, rep, fit_seconds, classical_seconds`` per replicate.
    prob
        Mass of the HDIs.
    """

    table: pd.DataFrame
    full: pd.DataFrame
    timings: pd.DataFrame
    prob: float

    @property
    def replicates_per_minute(self) -> float:
        """Replicates (joint fit + classical fits) per minute of wall time."""
        seconds = float((self.timings["fit_seconds"] + self.timings["classical_seconds"]).sum())
        return 60.0 * len(self.timings) / seconds if seconds > 0 else float("nan")

    def summary(self) -> pd.DataFrame:
        """Per (size, group, metric): the replicates against the full sample.

        Columns: ``size, group, metric, n_reps``; ``mean`` (mean over replicates of the
        posterior mean) and ``full_mean`` (the full-sample posterior mean); ``hdi_width``
        (mean HDI width); ``coverage`` (share of replicates whose HDI contains
        ``full_mean``); ``classical`` and ``classical_sd`` (mean and sd over replicates)
        and ``full_classical``.
        """
        full = self.full.set_index(["group", "metric"])
        table = self.table.join(
            full[["mean", "classical"]].rename(
                columns={"mean": "full_mean", "classical": "full_classical"}
            ),
            on=["group", "metric"],
        )
        table["hdi_width"] = table["hdi_high"] - table["hdi_low"]
        table["covers"] = (table["hdi_low"] <= table["full_mean"]) & (
            table["full_mean"] <= table["hdi_high"]
        )
        grouped = table.groupby(["size", "group", "metric"], sort=True)
        out = grouped.agg(
            n_reps=("rep", "size"),
            mean=("mean", "mean"),
            full_mean=("full_mean", "first"),
            hdi_width=("hdi_width", "mean"),
            coverage=("covers", "mean"),
            classical=("classical", "mean"),
            classical_sd=("classical", "std"),
            full_classical=("full_classical", "first"),
        )
        return out.reset_index()

    def plot(self, metric: str = "pearson") -> Any:
        """Posterior and classical alignment against the reference size, one panel per
        focal group; and the mean HDI width against size. Returns the figure."""
        import matplotlib.pyplot as plt

        summary = self.summary()
        summary = summary[summary["metric"] == metric]
        if summary.empty:
            raise ValueError(f"the study has no metric {metric!r}")
        table = self.table[self.table["metric"] == metric]
        groups = list(dict.fromkeys(summary["group"]))
        fig, axes = plt.subplots(
            1, len(groups) + 1, figsize=(3.6 * (len(groups) + 1), 3.4), squeeze=False
        )
        for ax, group in zip(axes[0], groups, strict=False):
            rows = summary[summary["group"] == group]
            reps = table[table["group"] == group].groupby("size")
            sizes = rows["size"].to_numpy()
            ax.fill_between(
                sizes,
                reps["hdi_low"].mean().to_numpy(),
                reps["hdi_high"].mean().to_numpy(),
                color="C0",
                alpha=0.2,
                label=f"mean {self.prob:.0%} HDI",
            )
            ax.plot(sizes, rows["mean"], "o-", color="C0", label="posterior mean")
            if rows["classical"].notna().any():
                ax.errorbar(
                    sizes,
                    rows["classical"],
                    yerr=rows["classical_sd"],
                    fmt="s--",
                    color="C3",
                    capsize=3,
                    label="classical r (mean, sd)",
                )
                ax.axhline(rows["full_classical"].iloc[0], color="C3", lw=1, ls=":")
            ax.axhline(rows["full_mean"].iloc[0], color="C0", lw=1, ls=":", label="full sample")
            ax.set_title(group)
            ax.set_xlabel("reference persons")
            ax.set_ylabel(metric)
        axes[0][0].legend(fontsize=7)
        width_ax = axes[0][-1]
        for group in groups:
            rows = summary[summary["group"] == group]
            width_ax.plot(rows["size"], rows["hdi_width"], "o-", label=group)
        width_ax.set_xlabel("reference persons")
        width_ax.set_ylabel(f"mean {self.prob:.0%} HDI width")
        width_ax.set_title("posterior uncertainty")
        width_ax.legend(fontsize=7)
        fig.tight_layout()
        return fig


def _alignment_rows(
    fitted: Any,
    data: ba.ResponseData,
    prob: float,
    metrics: Sequence[str],
    classical: bool,
    model: str,
    seed: int,
) -> tuple[pd.DataFrame, float]:
    """Alignment table of one fit with the classical column, and the classical fits' seconds."""
    table = ba.alignment(fitted, prob=prob).table
    table = table[table["metric"].isin(metrics)].copy()
    table["classical"] = np.nan
    start = time.perf_counter()
    if classical and any(m in _CLASSICAL for m in metrics):
        naive = ba.naive_alignment(data, model=model, seed=seed, progress_bar=False)
        naive = naive.melt(id_vars="group", value_vars=list(_CLASSICAL), var_name="metric")
        table = table.drop(columns="classical").merge(
            naive.rename(columns={"value": "classical"}), on=["group", "metric"], how="left"
        )
    return table, time.perf_counter() - start


def sample_size_study(
    data: ba.ResponseData,
    sizes: Sequence[int] = (50, 100, 150, 300),
    reps: int = 10,
    method: str = "nuts",
    seed: int = 0,
    *,
    model: str | None = None,
    dif: str = "normal",
    prob: float = 0.9,
    metrics: Sequence[str] = ("pearson", "spearman"),
    classical: bool = True,
    progress: bool = True,
    **fit_kwargs: Any,
) -> SampleSizeStudy:
    """Refit with the reference group subsampled to each size; see the module docstring.

    Parameters
    ----------
    data
        Reference group plus the focal groups to study.
    sizes
        Reference sizes, each at most the reference's number of persons.
    reps
        Replicates per size.
    method
        ``"nuts"`` (default) or ``"svi"``; the full-sample fit uses the same. SVI is
        several times faster per replicate but its intervals are too narrow, and pulled
        towards perfect alignment, when the reference is small (docs/protocol.md), so
        the coverage it reports is not to be trusted; use it for a first look.
    seed
        Seeds the subsamples and every fit.
    model, dif
        Passed to :func:`bayes_align.fit` (``model`` default: ``"grm"`` for ordinal data,
        ``"2pl"`` otherwise) and ``model`` to :func:`bayes_align.naive_alignment`.
    prob
        HDI mass.
    metrics
        Alignment metrics to keep (``pearson`` and ``spearman`` have classical values).
    classical
        Also compute the classical separate-fit correlations.
    progress
        Show a progress bar over the replicates.
    fit_kwargs
        Further arguments of :func:`bayes_align.fit` (e.g. ``draws``, ``chains``). The
        fits skip the pointwise log-likelihood (``log_likelihood=False``) unless told
        otherwise: the study reads only their alignment.
    """
    sizes = sorted({int(s) for s in sizes})
    n_reference = int(np.sum(data.person_group == data.reference_index))
    too_large = [s for s in sizes if not 2 <= s <= n_reference]
    if too_large or not sizes:
        raise ValueError(
            f"sizes {too_large or list(sizes)} are not between 2 and the {n_reference} persons of "
            f"the reference {data.reference_group!r}"
        )
    if reps < 1:
        raise ValueError(f"reps must be at least 1, got {reps}")
    if method not in ("svi", "nuts"):
        raise ValueError(f"method must be 'svi' or 'nuts' (intervals are needed), got {method!r}")
    model = model or ("grm" if data.kind == "ordinal" else "2pl")
    fit_kwargs.setdefault("progress_bar", False)
    fit_kwargs.setdefault("log_likelihood", False)
    rng = np.random.default_rng(seed)

    def run(sample: ba.ResponseData, fit_seed: int) -> tuple[pd.DataFrame, float, float]:
        start = time.perf_counter()
        fitted = ba.fit(sample, model=model, dif=dif, method=method, seed=fit_seed, **fit_kwargs)
        seconds = time.perf_counter() - start
        table, classical_seconds = _alignment_rows(
            fitted, sample, prob, metrics, classical, model, fit_seed
        )
        return table, seconds, classical_seconds

    full, _, _ = run(data, int(rng.integers(2**31)))
    full.insert(0, "rep", -1)
    full.insert(0, "size", n_reference)

    tables, timings = [], []
    with tqdm(
        total=len(sizes) * reps, desc="sample-size study", unit="fit", disable=not progress
    ) as bar:
        for size in sizes:
            for rep in range(reps):
                sample = subsample_reference(data, size, rng)
                table, seconds, classical_seconds = run(sample, int(rng.integers(2**31)))
                table.insert(0, "rep", rep)
                table.insert(0, "size", size)
                tables.append(table)
                timings.append((size, rep, seconds, classical_seconds))
                bar.update()
    return SampleSizeStudy(
        table=pd.concat(tables, ignore_index=True)[_COLUMNS],
        full=full[_COLUMNS],
        timings=pd.DataFrame(timings, columns=["size", "rep", "fit_seconds", "classical_seconds"]),
        prob=prob,
    )
