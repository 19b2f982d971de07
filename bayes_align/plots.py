"""Report figures: each function takes tables or an ``InferenceData`` and returns a Figure.

Every figure has a title and axis labels a reader understands without the code. The
functions never call ``plt.show``; the caller saves or embeds the figure and closes it.
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

__all__ = [
    "expected_score_curves",
    "group_colours",
    "plot_alignment_posterior",
    "plot_dif_forest",
    "plot_item_curves",
    "plot_item_means",
    "plot_predictive_item_means",
    "plot_prob_more_aligned",
    "simulate_responses",
]

_BAND_COLOURS = {"A": "#eaf5ea", "B": "#fff7dc", "C": "#fcebec"}


def group_colours(groups: Sequence[str]) -> dict[str, Any]:
    """One colour per group (tab10 in order); pass the same mapping to every figure."""
    cmap = plt.get_cmap("tab10")
    return {g: cmap(k % 10) for k, g in enumerate(groups)}


def plot_item_means(
    frame: pd.DataFrame,
    n_categories: int,
    items: Sequence[str] | None = None,
    colours: Mapping[str, Any] | None = None,
) -> Figure:
    """Mean response of every item in every group (the raw data, before any model).

    ``frame`` is a long DataFrame with ``item``, ``group`` and ``response`` columns;
    ``n_categories`` sets the y axis (0 .. K-1).
    """
    for column in ("item", "group", "response"):
        if column not in frame.columns:
            raise ValueError(f"plot_item_means needs a {column!r} column")
    order = list(items) if items is not None else list(pd.unique(frame["item"]))
    groups = list(pd.unique(frame["group"]))
    means = (
        frame.groupby(["group", "item"])["response"]
        .mean()
        .unstack("item")
        .reindex(index=groups, columns=order)
    )
    colours = dict(colours) if colours is not None else group_colours(groups)
    fig, ax = plt.subplots(figsize=(10, 3.8), dpi=100)
    x = np.arange(len(order))
    for group in groups:
        ax.plot(x, means.loc[group].to_numpy(), "o-", ms=4, lw=1, label=group, color=colours[group])
    ax.set_xticks(x, order, rotation=60, ha="right", fontsize=8)
    ax.set_ylim(-0.05, n_categories - 1 + 0.05)
    ax.set_xlabel("item")
    ylabel = "share answering yes/perhaps" if n_categories == 2 else "mean answer (0 = no, 2 = yes)"
    ax.set_ylabel(ylabel)
    ax.set_title("Raw data: average answer to each item, by group")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncols=min(4, len(groups)), loc="upper right")
    fig.tight_layout()
    return fig


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
        if naive is not None and group in naive and np.isfinite(naive[group]):
            ax.axvline(
                naive[group],
                color=colour,
                ls="--",
                lw=1.4,
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
            rows["mean"].to_numpy()[flagged],
            y[flagged],
            "o",
            ms=6,
            color=colour,
            markeredgecolor="black",
            markeredgewidth=1.2,
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
            [],
            [],
            color="0.3",
            marker="o",
            lw=0,
            ms=6,
            markeredgecolor="black",
            markeredgewidth=1.2,
            label="flagged (posterior)",
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


def expected_score_curves(
    idata: az.InferenceData,
    item: str,
    groups: Sequence[str],
    theta: np.ndarray,
    max_draws: int = 200,
) -> dict[str, np.ndarray]:
    """Posterior draws of the expected score of ``item`` as a function of ability.

    Uses the model of DESIGN.md: ``a (theta - difficulty - dif_shift)`` with the GRM steps
    (expected score = sum_k P(y >= k)) or the 2PL/3PL curve. The reference group has no
    ``dif_shift``. Returns ``{group: array (n_draws, len(theta))}``.
    """
    post = idata.posterior
    stacked = post.stack(sample=("chain", "draw"))
    n_samples = stacked.sizes["sample"]
    take = np.linspace(0, n_samples - 1, min(max_draws, n_samples)).astype(int)

    def values(name: str, **sel: Any) -> np.ndarray:
        return stacked[name].sel(**sel).isel(sample=take).to_numpy()

    difficulty = values("difficulty", item=item)
    discrimination = (
        values("discrimination", item=item)
        if "discrimination" in post
        else np.ones_like(difficulty)
    )
    steps = values("step", item=item).T if "step" in post else None  # (draws, cutpoints)
    guessing = values("guessing", item=item) if "guessing" in post else np.zeros_like(difficulty)
    focal = (
        set(post["dif_shift"]["focal_group"].to_numpy().astype(str))
        if "dif_shift" in post
        else set()
    )
    curves = {}
    for group in groups:
        shift = values("dif_shift", focal_group=group, item=item) if group in focal else 0.0
        a = discrimination
        if group in focal and "dif_log_discrimination" in post:
            a = a * np.exp(values("dif_log_discrimination", focal_group=group, item=item))
        location = theta[None, :] - (difficulty + shift)[:, None]  # (draws, theta)
        if steps is not None:
            eta = a[:, None, None] * (location[:, :, None] - steps[:, None, :])
            curves[group] = (1 / (1 + np.exp(-eta))).sum(axis=-1)
        else:
            p = 1 / (1 + np.exp(-a[:, None] * location))
            curves[group] = guessing[:, None] + (1 - guessing[:, None]) * p
    return curves


def plot_item_curves(
    idata: az.InferenceData,
    items: Sequence[str],
    groups: Sequence[str],
    item_labels: Mapping[str, str] | None = None,
    theta_range: tuple[float, float] = (-3.0, 3.0),
    colours: Mapping[str, Any] | None = None,
) -> Figure:
    """Item characteristic curves (expected answer vs ability) of ``items`` for ``groups``.

    Lines: posterior mean; bands: 90% pointwise interval. The x axis is the common ability
    scale of the joint model (the reference group has mean 0, sd 1).
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
        curves = expected_score_curves(idata, item, groups, theta)
        for group, draws in curves.items():
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
def simulate_responses(
    params: Mapping[str, np.ndarray],
    person_idx: np.ndarray,
    item_idx: np.ndarray,
    group_idx: np.ndarray,
    focal_row: np.ndarray,
    seed: int = 0,
) -> np.ndarray:
    """Simulate responses of every observation under each parameter draw.

    ``params`` holds draws (leading axis ``S``) with the DESIGN.md names: ``difficulty``
    ``(S, item)``, optional ``discrimination`` ``(S, item)``, ``guessing`` ``(S, item)``,
    ``step`` ``(S, item, cutpoint)`` (GRM), ``dif_shift`` ``(S, focal_group, item)`` and
    ``theta`` ``(S, person)``. ``focal_row[g]`` is the row of group ``g`` in ``dif_shift``
    (``-1`` or ``n_focal`` for the reference, as in ``ModelInputs.focal_row``). Works for prior draws (``numpyro.infer.Predictive``) and
    posterior draws alike. Returns an int array ``(S, n_obs)``.
    """
    rng = np.random.default_rng(seed)
    difficulty = np.asarray(params["difficulty"], dtype=float)
    n_draws = difficulty.shape[0]
    theta = np.asarray(params["theta"], dtype=float)[:, person_idx]
    location = theta - difficulty[:, item_idx]
    if "dif_shift" in params:
        shift = np.asarray(params["dif_shift"], dtype=float)
        padded = np.concatenate([shift, np.zeros((n_draws, 1, shift.shape[-1]))], axis=1)
        row = np.asarray(focal_row)[group_idx]
        rows = np.where((row < 0) | (row >= shift.shape[1]), shift.shape[1], row)
        location = location - padded[:, rows, item_idx]
    a = (
        np.asarray(params["discrimination"], dtype=float)[:, item_idx]
        if "discrimination" in params
        else 1.0
    )
    uniform = rng.random(location.shape)
    if "step" in params:
        step = np.asarray(params["step"], dtype=float)[:, item_idx, :]  # (S, obs, cut)
        p_at_least = 1 / (1 + np.exp(-a[..., None] * (location[..., None] - step)))
        p_at_least = np.where(np.isfinite(step), p_at_least, 0.0)
        return (uniform[..., None] < p_at_least).sum(axis=-1)
    p = 1 / (1 + np.exp(-a * location))
    if "guessing" in params:
        c = np.asarray(params["guessing"], dtype=float)[:, item_idx]
        p = c + (1 - c) * p
    return (uniform < p).astype(int)


def plot_predictive_item_means(
    observed: np.ndarray,
    simulated: np.ndarray,
    item_idx: np.ndarray,
    group_idx: np.ndarray,
    items: Sequence[str],
    groups: Sequence[str],
    title: str,
    colours: Mapping[str, Any] | None = None,
) -> Figure:
    """Observed item means per group against the 90% interval of simulated item means.

    ``simulated`` is ``(S, n_obs)`` from :func:`simulate_responses` (prior or posterior).
    """
    n_items, n_groups = len(items), len(groups)
    cell = group_idx.astype(np.int64) * n_items + item_idx
    counts = np.bincount(cell, minlength=n_groups * n_items).astype(float)
    counts[counts == 0] = np.nan

    def means(y: np.ndarray) -> np.ndarray:
        return (np.bincount(cell, weights=y, minlength=n_groups * n_items) / counts).reshape(
            n_groups, n_items
        )

    observed_means = means(np.asarray(observed, dtype=float))
    simulated_means = np.stack([means(row.astype(float)) for row in simulated])
    low, high = np.nanquantile(simulated_means, [0.05, 0.95], axis=0)
    colours = dict(colours) if colours is not None else group_colours(groups)
    fig, axes = plt.subplots(n_groups, 1, figsize=(10, 1.9 * n_groups + 0.8), sharex=True, dpi=100)
    axes = np.atleast_1d(axes)
    x = np.arange(n_items)
    for g, (ax, group) in enumerate(zip(axes, groups, strict=True)):
        ax.fill_between(
            x, low[g], high[g], color=colours[group], alpha=0.25, step="mid", label="90% simulated"
        )
        ax.plot(x, observed_means[g], "o", ms=4, color="black", label="observed")
        ax.set_ylabel(f"{group}\nmean answer", fontsize=8)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="upper right")
    axes[-1].set_xticks(x, items, rotation=60, ha="right", fontsize=8)
    axes[-1].set_xlabel("item")
    fig.suptitle(title)
    fig.tight_layout()
    return fig
