"""Self-contained HTML report of any fit: person-level, aggregated or mixed.

:func:`analyse` reads one fit's posterior (it never fits): alignment, pairwise comparison,
DIF screen, a posterior predictive check of the item means, convergence diagnostics.
The classical numbers (separate-fit correlation, Mantel-Haenszel) need person-level
responses and separate fits; the caller computes them once with
:func:`classical_numbers` and hands them in. :func:`render_report` turns one or more
analyses into a single HTML page whose figures are embedded as base64 PNGs, so the file
can be mailed or opened offline::

    fit = ba.load_fit("fit.nc")
    classical = classical_numbers(responses, model=fit.spec.irt)   # optional
    html = render_report([analyse(fit, classical=classical)])
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io
import json
import platform
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:  # pragma: no cover
    import arviz as az
    from matplotlib.figure import Figure

    from bayes_align.alignment import Alignment, AlignmentComparison
    from bayes_align.data import ResponseData
    from bayes_align.diagnostics import DiagnosticReport
    from bayes_align.results import Fit

__all__ = [
    "Classical",
    "FitAnalysis",
    "analyse",
    "classical_numbers",
    "dif_with_mantel_haenszel",
    "divergent_items",
    "figure_data_uri",
    "package_versions",
    "render_report",
]

#: Packages whose versions the report lists under "Reproduce".
_VERSIONED_PACKAGES = (
    "bayes_align", "numpy", "jax", "numpyro", "arviz", "pandas", "matplotlib", "torch",
    "transformers",
)


@dataclass(frozen=True)
class Classical:
    """The classical numbers of person-level responses, shown beside the posterior ones.

    naive : :func:`bayes_align.naive_alignment` table (``group, pearson, spearman,
        n_items``), or None.
    mantel_haenszel : :func:`bayes_align.mantel_haenszel` table, or None.
    """

    naive: pd.DataFrame | None = None
    mantel_haenszel: pd.DataFrame | None = None


def classical_numbers(
    data: ResponseData, model: str | None = None, seed: int = 0
) -> Classical:
    """Compute the classical numbers of ``data`` once: separate MAP fits per group
    (:func:`~bayes_align.naive_alignment`, ``model`` as there) and Mantel-Haenszel.

    The caller's step (it fits); :func:`analyse` and :func:`render_report` never call it.
    Raises ValueError when ``data`` holds no focal group besides its reference.
    """
    from bayes_align.dif import mantel_haenszel
    from bayes_align.naive import naive_alignment

    if not data.focal_groups:
        raise ValueError(
            f"the responses hold only the reference group {data.reference_group!r}; the "
            "classical numbers compare a focal group with it"
        )
    naive = naive_alignment(data, model=model, seed=seed, progress_bar=False)
    with warnings.catch_warnings():  # weights are ignored by MH; the report says so
        warnings.simplefilter("ignore", UserWarning)
        mh = mantel_haenszel(data)
    return Classical(naive=naive, mantel_haenszel=mh)


@dataclass
class FitAnalysis:
    """Everything the report shows about one fit.

    Attributes
    ----------
    name : section label (e.g. ``"ordinal"``).
    fit : the Fit (or InferenceData) analysed.
    alignment : :func:`bayes_align.alignment` result; None for a fit without DIF term.
    comparison : :func:`bayes_align.compare_alignment` (Pearson); None with fewer than
        two focal groups.
    dif : :func:`bayes_align.dif_screen` on the logit scale, with the Mantel-Haenszel
        columns beside it when ``classical`` has them; None without DIF term or draws.
    predictive : :func:`bayes_align.plots.predictive_item_means` of the posterior
        predictive draws.
    diagnostics : :func:`~bayes_align.diagnostics.check_convergence` of a NUTS fit,
        None for SVI/MAP (approximate) fits.
    classical : the caller's classical numbers, or None.
    fit_file : file name of the saved fit, shown in the report (optional).
    """

    name: str
    fit: Any
    alignment: Alignment | None
    comparison: AlignmentComparison | None
    dif: pd.DataFrame | None
    predictive: pd.DataFrame
    diagnostics: DiagnosticReport | None
    classical: Classical | None = None
    fit_file: str | None = None

    @property
    def idata(self) -> az.InferenceData:
        from bayes_align.results import as_idata

        return as_idata(self.fit)

    def alignment_table(self) -> pd.DataFrame:
        """The alignment table with the classical separate-fit correlation (``classical``)
        beside the ``pearson`` and ``spearman`` rows when the classical numbers are given."""
        if self.alignment is None:
            raise ValueError(f"{self.name}: the fit has no DIF term, so no alignment table")
        table = self.alignment.table
        naive = self.classical.naive if self.classical is not None else None
        if naive is None:
            return table
        classical = naive.melt(id_vars="group", value_vars=["pearson", "spearman"],
                               var_name="metric", value_name="classical")
        return table.merge(classical, on=["group", "metric"], how="left")

    @property
    def approximate(self) -> bool:
        attrs = self.idata.attrs
        return bool(int(attrs.get("approximate", attrs.get("method") in ("svi", "map"))))


def dif_with_mantel_haenszel(dif: pd.DataFrame, mh: pd.DataFrame) -> pd.DataFrame:
    """The posterior DIF table with the Mantel-Haenszel estimate of each pair beside it.

    Adds ``mh_log_odds_ratio``, ``mh_delta``, ``mh_p_value`` and ``mh_category`` (matched
    on ``item, group``; NaN for pairs the responses do not cover) to a
    :func:`bayes_align.dif_screen` table.
    """
    for name, table, cols in (
        ("dif", dif, ("item", "group", "mean")),
        ("mh", mh, ("item", "group", "log_odds_ratio", "delta", "p_value", "category")),
    ):
        missing = set(cols) - set(table.columns)
        if missing:
            raise ValueError(f"the {name} table lacks the columns {sorted(missing)}")
    classical = mh[["item", "group", "log_odds_ratio", "delta", "p_value", "category"]].rename(
        columns={
            "log_odds_ratio": "mh_log_odds_ratio",
            "delta": "mh_delta",
            "p_value": "mh_p_value",
            "category": "mh_category",
        }
    )
    merged = dif.merge(classical, on=["item", "group"], how="left", validate="one_to_one")
    merged.attrs.update(dif.attrs)
    return merged


def _with_posterior_predictive(fit: Any, draws: int, seed: int) -> Any:
    """``fit`` with a ``posterior_predictive`` group: its own, or drawn now into a shallow
    copy (the caller's fit, and the file it may save later, stay unchanged)."""
    import arviz as az

    from bayes_align.predictive import posterior_predictive
    from bayes_align.results import Fit, as_idata

    idata = as_idata(fit)
    if "posterior_predictive" in idata.groups():
        return fit
    shallow = az.InferenceData(
        attrs=dict(idata.attrs), **{group: idata[group] for group in idata.groups()}
    )
    copy = dataclasses.replace(fit, idata=shallow) if isinstance(fit, Fit) else shallow
    n_draws = idata.posterior.sizes["chain"] * idata.posterior.sizes["draw"]
    return posterior_predictive(copy, draws=min(draws, n_draws), seed=seed)


def analyse(
    fit: Fit | az.InferenceData,
    name: str = "fit",
    *,
    classical: Classical | None = None,
    prob: float = 0.9,
    predictive_draws: int = 200,
    seed: int = 0,
    fit_file: str | None = None,
) -> FitAnalysis:
    """Read every number the report shows from one fit's posterior (no fitting).

    Posterior: :func:`~bayes_align.alignment`, :func:`~bayes_align.compare_alignment`
    (Pearson, two or more focal groups), :func:`~bayes_align.dif_screen` on the logit
    scale, a posterior predictive check of the item means per group
    (``predictive_draws`` draws from :func:`bayes_align.posterior_predictive`, unless the
    fit already has the group), and for NUTS the convergence diagnostics of every
    posterior variable. ``classical`` (from :func:`classical_numbers`) is put beside them.
    """
    from bayes_align.alignment import alignment, compare_alignment
    from bayes_align.diagnostics import check_convergence
    from bayes_align.dif import dif_screen
    from bayes_align.plots import predictive_item_means
    from bayes_align.results import as_idata

    idata = as_idata(fit)
    posterior = idata.posterior
    n_draws = posterior.sizes["chain"] * posterior.sizes["draw"]
    aligned = comparison = dif = None
    if "dif_shift" in posterior:
        with warnings.catch_warnings():  # a MAP fit's single draw: the report says so
            warnings.simplefilter("ignore", UserWarning)
            aligned = alignment(idata, prob=prob)
        if posterior.sizes["focal_group"] >= 2:
            comparison = compare_alignment(idata, prob=prob)
        if n_draws >= 2:
            dif = dif_screen(idata, prob=prob, scale="logit")
            if classical is not None and classical.mantel_haenszel is not None:
                dif = dif_with_mantel_haenszel(dif, classical.mantel_haenszel)
    with_draws = _with_posterior_predictive(fit, predictive_draws, seed)
    predictive = predictive_item_means(with_draws, "posterior_predictive", prob=prob)
    approximate = bool(int(idata.attrs.get("approximate", 0)))
    diagnostics = None
    if not approximate and "diverging" in getattr(idata, "sample_stats", {}):
        diagnostics = check_convergence(idata, warn=False)
    return FitAnalysis(
        name=name, fit=fit, alignment=aligned, comparison=comparison, dif=dif,
        predictive=predictive, diagnostics=diagnostics, classical=classical,
        fit_file=fit_file,
    )


def divergent_items(dif: pd.DataFrame, groups: Sequence[str], n: int = 6) -> list[str]:
    """The ``n`` items whose largest |posterior mean DIF| over ``groups`` is largest."""
    rows = dif[dif["group"].isin(list(groups))]
    if rows.empty:
        return []
    strength = rows.assign(abs_mean=rows["mean"].abs()).groupby("item")["abs_mean"].max()
    return list(strength.sort_values(ascending=False, kind="stable").index[:n])


def figure_data_uri(fig: Figure, dpi: int = 90) -> str:
    """PNG ``data:`` URI of a Matplotlib figure (closes the figure)."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def package_versions(packages: Sequence[str] = _VERSIONED_PACKAGES) -> dict[str, str]:
    """Installed versions of ``packages`` (``"not installed"`` where absent) and Python's."""
    versions = {"python": platform.python_version()}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


# --------------------------------------------------------------------------- HTML pieces
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;
max-width:1100px;padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;font-size:.85em;margin:.6em 0}
th,td{border:1px solid #ddd;padding:.25em .5em;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
figure{margin:1em 0}figure img{max-width:100%;height:auto}
figcaption{font-size:.85em;color:#555}
.side{display:flex;gap:1.5em;flex-wrap:wrap;align-items:flex-start}
.note{font-size:.9em;color:#444}.ok{color:#176117}.bad{color:#a11}
.warn{background:#fff7dc;border:1px solid #e8d8a0;padding:.5em .8em}
pre{background:#f6f6f6;padding:.8em;overflow-x:auto;font-size:.85em}
"""

_LOAD_CHECK = """
<script>
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute("data-figures", String(imgs.length));
  document.body.setAttribute("data-figures-loaded", String(ok));
});
</script>
"""


def _esc(value: Any) -> str:
    return html.escape(str(value))


def _table(frame: pd.DataFrame, digits: int = 3) -> str:
    def fmt(value: Any) -> str:
        if isinstance(value, (float, np.floating)):
            return "&ndash;" if not np.isfinite(value) else f"{value:.{digits}f}"
        if isinstance(value, (bool, np.bool_)):
            return "yes" if value else ""
        return _esc(value)

    head = "".join(f"<th>{_esc(c)}</th>" for c in frame.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{fmt(v)}</td>" for v in row) + "</tr>"
        for row in frame.itertuples(index=False)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _figure(fig: Figure, fig_id: str, caption: str) -> str:
    return (
        f'<figure id="{_esc(fig_id)}"><img src="{figure_data_uri(fig)}" alt="{_esc(caption)}">'
        f"<figcaption>{_esc(caption)}</figcaption></figure>"
    )


def _status(ok: bool) -> str:
    return '<span class="ok">ok</span>' if ok else '<span class="bad">check</span>'


def _model_line(analysis: FitAnalysis) -> str:
    attrs = analysis.idata.attrs
    spec = json.loads(attrs.get("model_spec", "{}") or "{}")
    kinds = json.loads(attrs.get("group_kind", "[]") or "[]")
    groups = [str(g) for g in analysis.idata.posterior["group"].values]
    described = ", ".join(
        f"<b>{_esc(g)}</b> ({_esc(k)})" for g, k in zip(groups, kinds or ["?"] * len(groups),
                                                       strict=False)
    )
    saved = f" Saved fit: <code>{_esc(analysis.fit_file)}</code>." if analysis.fit_file else ""
    return (
        f'<p class="note">IRT model <b>{_esc(spec.get("irt", "?"))}</b>, DIF prior '
        f'<b>{_esc(spec.get("dif", "?"))}</b>, fitted by <b>{_esc(attrs.get("method", "?"))}</b> '
        f'to {_esc(attrs.get("kind", "?"))} data. Groups: {described}; reference '
        f"<b>{_esc(attrs.get('reference_group', '?'))}</b>.{saved}</p>"
    )


def _data_section(analysis: FitAnalysis) -> str:
    from bayes_align.results import fit_data

    summary = fit_data(analysis.fit).group_summary().reset_index()
    summary = summary.loc[:, (summary != 0).any(axis=0)]  # drop all-zero kinds of count
    return "<h3>Data</h3>" + _table(summary, digits=1)


def _alignment_section(analysis: FitAnalysis, colours: Mapping[str, Any]) -> str:
    from bayes_align import plots

    aligned = analysis.alignment
    reference = analysis.idata.attrs.get("reference_group", "the reference")
    if aligned is None:
        return (
            "<h3>Alignment with the reference</h3><p>This fit has no DIF term (dif='none'): "
            "every group shares the reference's item difficulties by assumption, so there "
            "is no alignment to estimate.</p>"
        )
    naive = analysis.classical.naive if analysis.classical is not None else None
    naive_map = dict(zip(naive["group"], naive["pearson"], strict=True)) if naive is not None else None
    parts = [
        "<h3>Alignment with the reference</h3>",
        '<p class="note">Alignment is the correlation, over items, between the item '
        "difficulties of the reference group and those of the focal group, computed inside "
        "every posterior draw of the joint model (1 = the group finds exactly the same items "
        "hard). "
        + ("The dashed lines are the classical number: the correlation of difficulties from "
           "separate fits, which estimation noise biases towards 0." if naive is not None
           else "No classical numbers were given (they need person-level responses).")
        + "</p>",
        _figure(
            plots.plot_alignment_posterior(
                aligned.draws["pearson"], aligned.table, naive_map, metric="pearson",
                reference_group=reference, colours=colours,
            ),
            f"fig-alignment-{analysis.name}",
            f"Posterior of each group's alignment with {reference}; shaded: "
            f"{aligned.prob:.0%} HDI" + ("; dashed: classical separate-fit correlation."
                                         if naive is not None else "."),
        ),
    ]
    parts.append(_table(analysis.alignment_table()))
    if analysis.comparison is not None:
        parts += [
            "<h3>Which group is better aligned?</h3>",
            '<div class="side">',
            _figure(
                plots.plot_prob_more_aligned(analysis.comparison.matrix()),
                f"fig-compare-{analysis.name}",
                "P(row group better aligned with the reference than column group), Pearson.",
            ),
            "<div>" + _table(analysis.comparison.ranking) + "</div></div>",
        ]
    return "\n".join(parts)


def _dif_section(
    analysis: FitAnalysis, colours: Mapping[str, Any], item_labels: Mapping[str, str] | None,
    n_curve_items: int,
) -> str:
    from bayes_align import plots

    dif = analysis.dif
    if dif is None:
        reason = ("the fit has a single draw (MAP), so posterior DIF probabilities are undefined"
                  if analysis.alignment is not None else "the fit has no DIF term")
        return f"<h3>Differential item functioning (DIF)</h3><p>Not shown: {reason}.</p>"
    has_mh = "mh_log_odds_ratio" in dif.columns
    rope = dif.attrs.get("rope", 0.426)
    parts = [
        "<h3>Differential item functioning (DIF)</h3>",
        '<p class="note">DIF of an item for a group is how much harder (positive) or easier '
        "(negative) the item is for that group than for the reference at the same trait level, "
        "in logits. ETS bands: A (negligible, |DIF| &lt; 0.43), B (slight to moderate), C "
        "(moderate to large, |DIF| &ge; 0.64). An item is flagged when the posterior "
        f"probability that |DIF| &gt; {rope:.3f} is at least {dif.attrs.get('prob', 0.9):.0%}."
        + (" Open diamonds: the classical Mantel-Haenszel log odds ratio (person-level "
           "responses; weights ignored)." if has_mh else "")
        + "</p>",
    ]
    bands = dif["category"].isin(["B", "C"]) | dif["flagged"]
    if has_mh:
        bands |= dif["mh_category"].isin(["B", "C"])
    flagged = dif[bands]
    flagged = flagged.reindex(flagged["mean"].abs().sort_values(ascending=False).index)
    columns = ["item", "group", "mean", "hdi_low", "hdi_high", "prob_abs_gt_rope", "category",
               "flagged", *(["mh_log_odds_ratio", "mh_category"] if has_mh else [])]
    shown = flagged[columns].rename(columns={
        "category": "ets (posterior)", "mh_log_odds_ratio": "mh_log_or", "mh_category": "ets (MH)"
    })
    listing = (_table(shown) if len(shown)
               else "<p>No item reaches ETS B or C, or is flagged, for any group.</p>")
    items = [str(i) for i in analysis.idata.posterior["item"].values]
    mh = dif.rename(columns={"mh_log_odds_ratio": "log_odds_ratio"}) if has_mh else None
    parts.append(
        '<div class="side">'
        + _figure(
            plots.plot_dif_forest(dif, mh, items=items, colours=colours),
            f"fig-dif-{analysis.name}",
            "DIF forest plot: posterior mean and HDI per item and group, ETS bands shaded.",
        )
        + f"<div><b>Items flagged or in ETS B/C</b>{listing}</div></div>"
    )
    focal = [str(g) for g in analysis.idata.posterior["focal_group"].values]
    top = divergent_items(dif, focal, n=n_curve_items)
    if top:
        reference = str(analysis.idata.attrs.get("reference_group"))
        parts += [
            "<h3>Item characteristic curves of the most divergent items</h3>",
            _figure(
                plots.plot_item_curves(analysis.fit, top, [reference, *focal],
                                       item_labels=item_labels, colours=colours),
                f"fig-curves-{analysis.name}",
                "Expected answer as a function of the trait, per group (the model's item "
                "response functions with each group's DIF), for the items with the largest DIF.",
            ),
        ]
    return "\n".join(parts)


def _predictive_section(analysis: FitAnalysis, colours: Mapping[str, Any]) -> str:
    from bayes_align import plots

    table = analysis.predictive
    prob = table.attrs.get("prob", 0.9)
    share = float(table["inside"].mean())
    outside = table.loc[~table["inside"], ["group", "item", "n", "observed", "low", "high"]]
    listing = (
        "<p>Cells outside their interval:</p>" + _table(outside.head(20))
        if len(outside) else ""
    )
    return "\n".join([
        "<h3>Posterior predictive check</h3>",
        '<p class="note">Answers simulated from the fitted model (every group, person-level '
        "and aggregated alike, from the model's own likelihood) against the data: for every "
        "group and item, the mean answer weighted by the number of responses. "
        f"{share:.0%} of the {len(table)} cells lie inside their {prob:.0%} interval "
        f"({table.attrs.get('draws', '?')} posterior draws); far fewer would point to a "
        "misfitting model.</p>",
        _figure(
            plots.plot_predictive_check(table, colours=colours),
            f"fig-ppc-{analysis.name}",
            f"Observed item means (points; red: outside) and the {prob:.0%} interval of the "
            "simulated ones (bars), per group.",
        ),
        listing,
    ])


def _diagnostics_section(analysis: FitAnalysis) -> str:
    from bayes_align import plots

    parts = ["<h3>Sampler diagnostics</h3>"]
    if analysis.approximate:
        method = analysis.idata.attrs.get("method", "svi")
        parts.append(
            '<p class="warn"><b>Approximate posterior.</b> This fit was made by '
            f"{_esc(method).upper()}, not by MCMC: its draws come from an approximation "
            "(a fitted normal guide, or a point for MAP) that tends to understate the "
            "uncertainty. R-hat, ESS and divergences do not apply; refit with NUTS before "
            "relying on intervals.</p>"
        )
        elbo = getattr(analysis.fit, "elbo", None)
        if elbo is None and "elbo" in analysis.idata.attrs:
            elbo = json.loads(analysis.idata.attrs["elbo"])
        if elbo is not None and len(elbo) > 1:
            parts.append(_figure(plots.plot_loss(elbo), f"fig-loss-{analysis.name}",
                                 "Loss history of the optimisation."))
        return "\n".join(parts)
    d = analysis.diagnostics
    if d is None:
        return "\n".join([*parts, "<p>No sampler statistics in this fit.</p>"])
    total = d.n_chains * d.n_draws
    needed = 100 * d.n_chains
    lines = [
        f"R-hat: max {d.max_rhat:.3f} at {_esc(d.worst.get('rhat', '?'))} (target &lt; 1.01) "
        f"{_status(bool(d.max_rhat < 1.01))}",
        f"ESS: min bulk {d.min_ess_bulk:.0f}, min tail {d.min_ess_tail:.0f} of {total} draws "
        f"(target &ge; {needed}) {_status(bool(min(d.min_ess_bulk, d.min_ess_tail) >= needed))}",
        f"Divergences: {d.n_divergent} of {total} transitions {_status(d.n_divergent == 0)}",
    ]
    parts.append("<ul>" + "".join(f"<li>{line}</li>" for line in lines) + "</ul>")
    parts.extend(f'<p class="warn">{_esc(m)}</p>' for m in d.messages)
    if d.n_draws >= 4:
        parts.append(_figure(plots.plot_trace(analysis.fit), f"fig-trace-{analysis.name}",
                             "Trace plots (ArviZ): densities per chain and the draws in order."))
        if d.n_chains >= 2:
            parts.append(_figure(plots.plot_rank(analysis.fit), f"fig-rank-{analysis.name}",
                                 "Rank plots (ArviZ): ranks of each chain's draws among all."))
    return "\n".join(parts)


def _section(analysis: FitAnalysis, item_labels: Mapping[str, str] | None, n_curve_items: int) -> str:
    from bayes_align import plots

    groups = [str(g) for g in analysis.idata.posterior["group"].values]
    colours = plots.group_colours(groups)
    name = analysis.name
    return "\n".join([
        f'<h2 id="section-{_esc(name)}">{_esc(name)}</h2>',
        _model_line(analysis),
        _data_section(analysis),
        _alignment_section(analysis, colours),
        _dif_section(analysis, colours, item_labels, n_curve_items),
        _predictive_section(analysis, colours),
        _diagnostics_section(analysis),
    ])


def render_report(
    analyses: Sequence[FitAnalysis],
    *,
    title: str = "bayes_align report",
    intro: str = "",
    item_labels: Mapping[str, str] | None = None,
    commands: Sequence[str] = (),
    config: Mapping[str, Any] | None = None,
    timings: Mapping[str, float] | None = None,
    n_curve_items: int = 6,
) -> str:
    """The report as one self-contained HTML string (figures embedded as base64 PNG).

    Parameters
    ----------
    analyses
        One :class:`FitAnalysis` per fit (:func:`analyse`), the main one first.
    intro
        HTML paragraph(s) shown under the title (the caller escapes its own text).
    item_labels
        Item id -> question text, used in the item-curve titles.
    commands
        Shell commands that reproduce the report.
    config, timings
        Settings and seconds per stage, listed under "Reproduce".
    """
    if not analyses:
        raise ValueError("render_report needs at least one analysed fit")
    names = [a.name for a in analyses]
    if len(set(names)) != len(names):
        raise ValueError(f"analysis names must be unique, got {names}")
    sections = [_section(a, item_labels, n_curve_items) for a in analyses]
    toc = " &middot; ".join(f'<a href="#section-{_esc(n)}">{_esc(n)}</a>' for n in names)
    repro = ['<h2 id="reproduce">Reproduce</h2>']
    if commands:
        repro.append("<pre>" + "\n".join(_esc(c) for c in commands) + "</pre>")
    versions = package_versions()
    repro.append(
        "<p>Versions: " + ", ".join(f"{_esc(k)} {_esc(v)}" for k, v in versions.items()) + "</p>"
    )
    if config:
        repro.append(
            "<p>Settings:</p><pre>" + _esc(json.dumps(dict(config), indent=1, default=str))
            + "</pre>"
        )
    if timings:
        rows = pd.DataFrame({"stage": list(timings), "seconds": [float(v) for v in timings.values()]})
        repro.append("<p>Time per stage:</p>" + _table(rows, digits=1))
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{_esc(title)}</h1>{intro}<p>Sections: {toc} &middot; "
        '<a href="#reproduce">reproduce</a></p>'
        + "\n".join(sections)
        + "\n".join(repro)
        + _LOAD_CHECK
        + "</body></html>\n"
    )
