"""Report figures: each function takes tables, a fit or an ``InferenceData`` and returns a Figure.

No figure fits a model or simulates one of its own: item curves come from the model's
item response functions (:func:`bayes_align.predictive.item_curves`), predictive checks
from the ``posterior_predictive`` / ``prior_predictive`` draws that
:func:`bayes_align.posterior_predictive` and :func:`bayes_align.prior_predictive` add,
trace and rank plots from ArviZ. Every figure has a title and axis labels a reader
understands without the code; the functions never call ``plt.show``; the caller saves or
embeds the figure and closes it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import arviz as az
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import xarray as xr
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from bayes_align.dif import ETS_B_LOGIT, ETS_C_LOGIT
from bayes_align.predictive import item_curves
from bayes_align.results import as_idata

__all__ = [
    "group_colours",
    "main_parameters",
    "plot_alignment_posterior",
    "plot_dif_forest",
    "plot_item_curves",
    "plot_loss",
    "plot_predictive_check",
    "plot_prob_more_aligned",
    "plot_rank",
    "plot_trace",
    "predictive_item_means",
]

_BAND_COLOURS = {"A": "#eaf5ea", "B": "#fff7dc", "C": "#fcebec"}
_PREDICTIVE_GROUPS = ("posterior_predictive", "prior_predictive")


def group_colours(groups: Sequence[str]) -> dict[str, Any]:
    """One colour per group (tab10 in order); pass the same mapping to every figure."""
    cmap = plt.get_cmap("tab10")
    return {g: cmap(k % 10) for k, g in enumerate(groups)}


def _figure_of(axes: Any) -> Figure:
    return np.asarray(axes).ravel()[0].get_figure()


# --------------------------------------------------------------------------- alignment
def plot_alignment_posterior(
    draws: xr.DataArray,
    table: pd.DataFrame,
    naive: Mapping[str, float] | None = None,
    metric: str = "pearson",
    reference_group: str = "reference",
    colours: Mapping[str, Any] | None = None,
) -> Figure:
    """Posterior density of each focal group's alignment with the reference.

    Parameters
    ----------
    draws
        DataArray of one metric with dims ``(chain, draw, focal_group)``.
    table
        The alignment table (``group, metric, mean, hdi_low, hdi_high``); its rows of
        ``metric`` give the shaded intervals.
    naive
        Classical separate-fit correlation per group, drawn as a dashed vertical line.
    """
    groups = [str(g) for g in draws["focal_group"].to_numpy()]
    rows = table[table["metric"] == metric].set_index("group")
    colours = dict(colours) if colours is not None else group_colours(groups)
    fig, ax = plt.subplots(figsize=(8, 4), dpi=100)
    for group in groups:
        values = draws.sel(focal_group=group).to_numpy().ravel()
        values = values[np.isfinite(values)]
        colour = colours[group]
        if values.size > 1 and np.ptp(values) > 0:
            grid, pdf = az.kde(values)
            ax.plot(grid, pdf, color=colour, lw=1.8, label=f"{group} (joint model)")
            if group in rows.index:
                low, high = rows.loc[group, ["hdi_low", "hdi_high"]].astype(float)
                inside = (grid >= low) & (grid <= high)
                ax.fill_between(grid[inside], pdf[inside], color=colour, alpha=0.25)
        elif values.size:  # a single draw (MAP): a line at the point estimate
            ax.axvline(values[0], color=colour, lw=1.8, label=f"{group} (point estimate)")
        if naive is not None and group in naive and np.isfinite(naive[group]):
            ax.axvline(
                naive[group], color=colour, ls="--", lw=1.4,
                label=f"{group}: classical separate fits",
            )
    label = {"pearson": "Pearson r", "spearman": "Spearman rho"}.get(metric, metric)
    ax.set_xlabel(f"alignment with {reference_group} ({label} of item difficulties)")
    ax.set_ylabel("posterior density")
    ax.set_title(
        f"How well each group reproduces {reference_group}: posterior and 90% HDI (shaded)"
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig


def plot_prob_more_aligned(matrix: pd.DataFrame, metric: str = "pearson") -> Figure:
    """Heat map of P(row group better aligned than column group)."""
    values = matrix.to_numpy(dtype=float)
    n = len(matrix)
    fig, ax = plt.subplots(figsize=(1.6 * n + 2.5, 1.2 * n + 1.6), dpi=100)
    image = ax.imshow(np.where(np.isfinite(values), values, 0.5), cmap="RdBu", vmin=0, vmax=1)
    for r in range(n):
        for c in range(n):
            text = "-" if not np.isfinite(values[r, c]) else f"{values[r, c]:.2f}"
            ax.text(c, r, text, ha="center", va="center", fontsize=10)
    ax.set_xticks(range(n), matrix.columns, rotation=20, ha="right")
    ax.set_yticks(range(n), matrix.index)
    ax.set_xlabel("... than this group")
    ax.set_ylabel("P(this group better aligned ...")
    ax.set_title(f"Posterior probability of better alignment ({metric})")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="probability")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- DIF
def plot_dif_forest(
    dif: pd.DataFrame,
    mantel_haenszel: pd.DataFrame | None = None,
    items: Sequence[str] | None = None,
    colours: Mapping[str, Any] | None = None,
) -> Figure:
    """Forest plot of the DIF of every item for every focal group, ETS bands shaded.

    ``dif`` is a :func:`bayes_align.dif_screen` table on the logit scale (columns ``item,
    group, mean, hdi_low, hdi_high, flagged``). ``mantel_haenszel`` (optional; columns
    ``item, group, log_odds_ratio``) adds the classical estimate as open diamonds.
    Positive values: the item is harder (less often endorsed) for the group than for the
    reference at the same trait level.
    """
    needed = {"item", "group", "mean", "hdi_low", "hdi_high"}
    if not needed <= set(dif.columns):
        raise ValueError(f"the DIF table needs the columns {sorted(needed)}")
    order = list(items) if items is not None else list(pd.unique(dif["item"]))
    groups = list(pd.unique(dif["group"]))
    colours = dict(colours) if colours is not None else group_colours(groups)
    y_of = {item: k for k, item in enumerate(order)}
    offsets = np.linspace(-0.27, 0.27, len(groups)) if len(groups) > 1 else np.zeros(1)
    span = max(float(np.nanmax(np.abs(dif[["hdi_low", "hdi_high"]].to_numpy()))), ETS_C_LOGIT * 1.5)
    fig, ax = plt.subplots(figsize=(8, 0.32 * len(order) + 1.8), dpi=100)
    for low, high, cat in (
        (-ETS_B_LOGIT, ETS_B_LOGIT, "A"),
        (ETS_B_LOGIT, ETS_C_LOGIT, "B"),
        (-ETS_C_LOGIT, -ETS_B_LOGIT, "B"),
        (ETS_C_LOGIT, span * 1.1, "C"),
        (-span * 1.1, -ETS_C_LOGIT, "C"),
    ):
        ax.axvspan(low, high, color=_BAND_COLOURS[cat], zorder=0)
    ax.axvline(0, color="0.4", lw=0.8)
    for k, group in enumerate(groups):
        rows = dif[dif["group"] == group]
        y = np.array([y_of[i] for i in rows["item"]]) + offsets[k]
        colour = colours[group]
        ax.hlines(y, rows["hdi_low"], rows["hdi_high"], color=colour, lw=1.4)
        flagged = rows["flagged"].to_numpy(bool) if "flagged" in rows else np.zeros(len(rows), bool)
        ax.plot(rows["mean"].to_numpy()[~flagged], y[~flagged], "o", ms=4, color=colour)
        ax.plot(
            rows["mean"].to_numpy()[flagged], y[flagged], "o", ms=6, color=colour,
            markeredgecolor="black", markeredgewidth=1.2,
        )
        if mantel_haenszel is not None:
            mh = mantel_haenszel[mantel_haenszel["group"] == group].set_index("item")
            mh = mh.reindex(rows["item"])
            ax.plot(mh["log_odds_ratio"].to_numpy(), y, "D", ms=4, mfc="none", color=colour)
    ax.set_yticks(range(len(order)), order, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(-span * 1.1, span * 1.1)
    ax.set_xlabel("DIF on the logit scale (> 0: harder for the group than for the reference)")
    ax.set_ylabel("item")
    ax.set_title("Differential item functioning: posterior mean and 90% HDI per group")
    handles = [plt.Line2D([], [], color=colours[g], marker="o", lw=1.4, label=g) for g in groups]
    handles.append(
        plt.Line2D(
            [], [], color="0.3", marker="o", lw=0, ms=6, markeredgecolor="black",
            markeredgewidth=1.2, label="flagged (posterior)",
        )
    )
    if mantel_haenszel is not None:
        handles.append(
            plt.Line2D([], [], color="0.3", marker="D", mfc="none", lw=0, label="Mantel-Haenszel")
        )
    handles += [Patch(color=_BAND_COLOURS[c], label=f"ETS {c}") for c in "ABC"]
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


def plot_item_curves(
    fit: Any,
    items: Sequence[str],
    groups: Sequence[str],
    item_labels: Mapping[str, str] | None = None,
    theta_range: tuple[float, float] = (-3.0, 3.0),
    colours: Mapping[str, Any] | None = None,
) -> Figure:
    """Item characteristic curves (expected answer vs ability) of ``items`` for ``groups``.

    The curves are the model's own item response functions with each group's DIF
    (uniform and non-uniform), from :func:`bayes_align.predictive.item_curves`. Lines:
    posterior mean; bands: 90% pointwise interval. The x axis is the common ability scale
    of the joint model (the reference group has mean 0, sd 1).
    """
    if not items:
        raise ValueError("plot_item_curves needs at least one item")
    theta = np.linspace(*theta_range, 61)
    colours = dict(colours) if colours is not None else group_colours(groups)
    n = len(items)
    ncols = min(3, n)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(4.2 * ncols, 3.3 * nrows), dpi=100, squeeze=False
    )
    ymax = 1.0
    for ax, item in zip(axes.ravel(), items, strict=False):
        for group, draws in item_curves(fit, item, list(groups), theta).items():
            low, high = np.quantile(draws, [0.05, 0.95], axis=0)
            ax.plot(theta, draws.mean(axis=0), color=colours[group], lw=1.6, label=group)
            ax.fill_between(theta, low, high, color=colours[group], alpha=0.18)
            ymax = max(ymax, float(np.ceil(high.max() - 1e-9)))
        title = item if item_labels is None else f"{item}\n{item_labels.get(item, '')}"
        ax.set_title(title, fontsize=8)
        ax.set_xlabel("ability (trait level) on the reference scale")
        ax.set_ylabel("expected answer")
        ax.grid(alpha=0.3)
    for ax in axes.ravel():
        ax.set_ylim(-0.05, ymax + 0.05)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    axes.ravel()[0].legend(fontsize=7, loc="upper left")
    fig.suptitle("Item characteristic curves of the most divergent items (mean and 90% band)")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- predictive checks
def _labels(idata: az.InferenceData, dim: str) -> list[str]:
    for group in ("posterior", "prior"):
        if group in idata.groups() and dim in idata[group].coords:
            return [str(v) for v in idata[group][dim].values]
    raise ValueError(f"the InferenceData has no {dim!r} labels in its posterior or prior")


def predictive_item_means(
    fit: Any, group: str = "posterior_predictive", prob: float = 0.9
) -> pd.DataFrame:
    """Observed and simulated mean answer of every (group, item) cell.

    Over the observations ``o`` of a cell (person responses and aggregated rows alike;
    ``y`` is a response or a row's mean answer, ``w = n_responses`` its weight or count)::

        mean_gi = sum_o w_o y_o / sum_o w_o

    for the observed data and for every draw of ``group`` (``"posterior_predictive"``
    or ``"prior_predictive"``). Returns one row per cell: ``group, item, n`` (sum of
    weights), ``observed``, ``simulated`` (mean over draws), ``low``, ``high`` (the
    central ``prob`` interval of the simulated means) and ``inside`` (observed within
    it). Cells without observations are left out.
    """
    idata = as_idata(fit)
    if group not in _PREDICTIVE_GROUPS:
        raise ValueError(f"group must be one of {_PREDICTIVE_GROUPS}, got {group!r}")
    if group not in idata.groups():
        how = "bayes_align.posterior_predictive(fit)" if group == "posterior_predictive" else (
            "bayes_align.prior_predictive(data, ...)")
        raise ValueError(f"the InferenceData has no {group} group; add it with {how}")
    if not 0 < prob < 1:
        raise ValueError(f"prob must lie strictly between 0 and 1, got {prob}")
    const = idata.constant_data
    items, groups = _labels(idata, "item"), _labels(idata, "group")
    n_cells = len(items) * len(groups)
    cell = const["group_idx"].values.astype(np.int64) * len(items) + const["item_idx"].values
    weight = const["n_responses"].values.astype(float)
    observed = idata.observed_data["y"].values.astype(float)
    simulated = idata[group]["y"].values.reshape(-1, observed.size).astype(float)

    total = np.bincount(cell, weights=weight, minlength=n_cells)
    observed_mean = np.bincount(cell, weights=weight * observed, minlength=n_cells)
    n_draws = simulated.shape[0]
    draw_cell = (np.arange(n_draws)[:, None] * n_cells + cell[None, :]).ravel()
    simulated_sum = np.bincount(
        draw_cell, weights=(weight[None, :] * simulated).ravel(), minlength=n_draws * n_cells
    ).reshape(n_draws, n_cells)
    present = total > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        observed_mean = observed_mean / total
        simulated_mean = simulated_sum / total
    tail = (1 - prob) / 2
    low, high = np.quantile(simulated_mean[:, present], [tail, 1 - tail], axis=0)
    table = pd.DataFrame(
        {
            "group": np.repeat(groups, len(items))[present],
            "item": np.tile(items, len(groups))[present],
            "n": total[present],
            "observed": observed_mean[present],
            "simulated": simulated_mean[:, present].mean(axis=0),
            "low": low,
            "high": high,
        }
    )
    table["inside"] = (table["observed"] >= table["low"]) & (table["observed"] <= table["high"])
    table.attrs.update({"prob": float(prob), "predictive": group, "draws": int(n_draws)})
    return table


def plot_predictive_check(
    table: pd.DataFrame, title: str | None = None, colours: Mapping[str, Any] | None = None
) -> Figure:
    """Observed item means per group (points; red when outside) against the interval of
    the simulated item means (bars), from a :func:`predictive_item_means` table."""
    groups = list(pd.unique(table["group"]))
    items = list(pd.unique(table["item"]))
    colours = dict(colours) if colours is not None else group_colours(groups)
    x_of = {item: k for k, item in enumerate(items)}
    fig, axes = plt.subplots(
        len(groups), 1, figsize=(max(6.0, 0.32 * len(items) + 2), 1.7 * len(groups) + 1.0),
        sharex=True, dpi=100, squeeze=False,
    )
    prob = table.attrs.get("prob", 0.9)
    for ax, group in zip(axes[:, 0], groups, strict=True):
        rows = table[table["group"] == group]
        x = rows["item"].map(x_of).to_numpy()
        ax.vlines(x, rows["low"], rows["high"], color=colours[group], lw=5, alpha=0.35,
                  label=f"{prob:.0%} of simulated means")
        inside = rows["inside"].to_numpy(bool)
        ax.plot(x[inside], rows["observed"].to_numpy()[inside], "o", ms=4, color="black",
                label="observed")
        ax.plot(x[~inside], rows["observed"].to_numpy()[~inside], "o", ms=5, color="#c00",
                label="observed, outside")
        ax.set_ylabel(f"{group}\nmean answer", fontsize=8)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7, loc="upper right", ncols=3)
    axes[-1, 0].set_xticks(range(len(items)), items, rotation=60, ha="right", fontsize=8)
    axes[-1, 0].set_xlabel("item")
    share = table["inside"].mean() if len(table) else float("nan")
    which = "Posterior" if table.attrs.get("predictive") != "prior_predictive" else "Prior"
    fig.suptitle(title or f"{which} predictive check: observed item means vs simulated "
                 f"({share:.0%} of cells inside their {prob:.0%} interval)")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- sampler
def main_parameters(fit: Any, items: bool = True) -> xr.Dataset:
    """The parameters a reader checks the sampler on: focal groups' ``group_mean`` and
    estimated ``group_sd``, ``dif_scale`` (and the item ``difficulty`` when ``items``).
    Constant entries (the reference's fixed mean and sd, fixed sds of aggregated
    groups) are left out."""
    posterior = as_idata(fit).posterior
    out = {}
    for name in ("group_mean", "group_sd", "dif_scale", *(("difficulty",) if items else ())):
        if name not in posterior:
            continue
        values = posterior[name]
        dim = next((d for d in values.dims if d not in ("chain", "draw")), None)
        if dim is not None:
            spread = values.max(("chain", "draw")) - values.min(("chain", "draw"))
            values = values.isel({dim: np.flatnonzero(spread.values > 0)})
            if values.sizes[dim] == 0:
                continue
            values = values.rename({dim: f"{name}_{dim}"})  # subsets of one dim differ
        out[name] = values
    if not out:
        raise ValueError("the posterior holds none of group_mean, group_sd, dif_scale, difficulty")
    return xr.Dataset(out)


def plot_trace(fit: Any) -> Figure:
    """ArviZ trace plot (density per chain and trace) of :func:`main_parameters`."""
    parameters = main_parameters(fit)
    axes = az.plot_trace(parameters, compact=True, figsize=(10, 2.0 * len(parameters.data_vars)))
    fig = _figure_of(axes)
    fig.suptitle("Trace plots of the main parameters (one colour per chain)")
    fig.tight_layout()
    return fig


def plot_rank(fit: Any) -> Figure:
    """ArviZ rank plot of the group-level :func:`main_parameters`: with converged chains
    every chain's ranks are uniform (flat bars)."""
    parameters = main_parameters(fit, items=False)
    n_panels = sum(int(np.prod([v.sizes[d] for d in v.dims if d not in ("chain", "draw")]))
                   for v in parameters.data_vars.values())
    ncols = min(3, n_panels)
    nrows = int(np.ceil(n_panels / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 2.4 * nrows), dpi=100,
                             squeeze=False)
    az.plot_rank(parameters, ax=axes.ravel()[:n_panels])
    for ax in axes.ravel()[n_panels:]:
        ax.axis("off")
    fig.suptitle("Rank plots of the group-level parameters (uniform bars: chains agree)")
    fig.tight_layout()
    return fig


def plot_loss(loss: Sequence[float]) -> Figure:
    """The SVI / MAP loss (negative ELBO) per optimisation step."""
    loss = np.asarray(loss, dtype=float)
    fig, ax = plt.subplots(figsize=(7, 3), dpi=100)
    ax.plot(np.arange(1, loss.size + 1), loss, lw=1.2)
    if loss.size and np.all(loss[np.isfinite(loss)] > 0):
        ax.set_yscale("log")
    ax.set_xlabel("optimisation step")
    ax.set_ylabel("loss (negative ELBO)")
    ax.set_title("Optimisation history: the loss should level off")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
