"""Self-contained HTML report of a joint human-vs-LM alignment analysis.

:func:`analyse` runs the posterior analyses of one fit (alignment, pairwise comparison,
DIF screen, sampler diagnostics) next to their classical counterparts (separate-fit
correlation, Mantel-Haenszel); :func:`render_report` turns one or more such analyses
into a single HTML file whose figures are embedded as base64 PNGs, so the file can be
mailed or opened offline.
"""

from __future__ import annotations

import base64
import html
import io
import json
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
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

__all__ = [
    "VariantAnalysis",
    "analyse",
    "dif_with_mantel_haenszel",
    "divergent_items",
    "figure_data_uri",
    "package_versions",
    "render_report",
]

#: Packages whose versions the report lists under "Reproduce".
_VERSIONED_PACKAGES = (
    "bayes_align",
    "numpy",
    "jax",
    "numpyro",
    "arviz",
    "pandas",
    "matplotlib",
    "torch",
    "transformers",
)


@dataclass
class VariantAnalysis:
    """Everything the report shows about one fitted variant (e.g. ordinal or binary).

    Attributes
    ----------
    name
        Variant label (``"ordinal"``, ``"binary"``).
    data
        The multi-group responses that were fitted.
    idata
        The fit's ``InferenceData``.
    alignment
        :func:`bayes_align.alignment` result.
    comparison
        :func:`bayes_align.compare_alignment` result (``None`` with one focal group).
    naive
        :func:`bayes_align.naive_alignment` table (``group, pearson, spearman, n_items``).
    dif
        :func:`dif_with_mantel_haenszel` table (posterior DIF on the logit scale with the
        Mantel-Haenszel columns beside it).
    diagnostics
        :class:`~bayes_align.diagnostics.DiagnosticReport` of the fit.
    fit_file
        File name of the saved fit (relative to the report).
    """

    name: str
    data: ResponseData
    idata: az.InferenceData
    alignment: Alignment
    comparison: AlignmentComparison | None
    naive: pd.DataFrame
    dif: pd.DataFrame
    diagnostics: DiagnosticReport
    fit_file: str = "fit.nc"
    extra: dict[str, Any] = field(default_factory=dict)


def dif_with_mantel_haenszel(dif: pd.DataFrame, mh: pd.DataFrame) -> pd.DataFrame:
    """The posterior DIF table with the Mantel-Haenszel estimate of each pair beside it.

    Adds ``mh_log_odds_ratio``, ``mh_delta``, ``mh_p_value`` and ``mh_category`` (matched
    on ``item, group``) to a :func:`bayes_align.dif_screen` table.
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


def analyse(
    fit: Any,
    data: ResponseData,
    name: str,
    *,
    prob: float = 0.9,
    seed: int = 0,
    fit_file: str = "fit.nc",
) -> VariantAnalysis:
    """Run every analysis the report shows on one fit.

    Posterior: :func:`~bayes_align.alignment`, :func:`~bayes_align.compare_alignment`
    (Pearson), :func:`~bayes_align.dif_screen` on the logit scale, convergence
    diagnostics. Classical: :func:`~bayes_align.naive_alignment` (separate MAP fits),
    :func:`~bayes_align.mantel_haenszel`.
    """
    from bayes_align.alignment import alignment, as_inference_data, compare_alignment
    from bayes_align.alignment import naive_alignment as classical_alignment
    from bayes_align.diagnostics import check_convergence
    from bayes_align.dif import dif_screen, mantel_haenszel

    idata = as_inference_data(fit)
    aligned = alignment(idata, prob=prob)
    comparison = compare_alignment(idata, prob=prob) if len(data.focal_groups) > 1 else None
    naive = classical_alignment(data, seed=seed, progress_bar=False)
    dif = dif_with_mantel_haenszel(
        dif_screen(idata, prob=prob, scale="logit"), mantel_haenszel(data)
    )
    var_names = [
        v
        for v in (
            "difficulty",
            "discrimination",
            "step",
            "dif_shift",
            "dif_scale",
            "group_mean",
            "group_sd",
        )
        if v in idata.posterior
    ]
    diagnostics = check_convergence(idata, var_names=var_names, warn=False)
    return VariantAnalysis(
        name=name,
        data=data,
        idata=idata,
        alignment=aligned,
        comparison=comparison,
        naive=naive,
        dif=dif,
        diagnostics=diagnostics,
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


def _figure(uri: str, fig_id: str, caption: str) -> str:
    return (
        f'<figure id="{_esc(fig_id)}"><img src="{uri}" alt="{_esc(caption)}">'
        f"<figcaption>{_esc(caption)}</figcaption></figure>"
    )


def _diagnostic_lines(analysis: VariantAnalysis) -> str:
    d = analysis.diagnostics
    total = d.n_chains * d.n_draws

    def status(ok: bool) -> str:
        return '<span class="ok">ok</span>' if ok else '<span class="bad">check</span>'

    lines = [
        f"R-hat: max {d.max_rhat:.3f} (target &lt; 1.01) {status(d.max_rhat < 1.01)}",
        f"ESS: min bulk {d.min_ess_bulk:.0f}, min tail {d.min_ess_tail:.0f} of {total} draws "
        f"(target &ge; {100 * d.n_chains}) {status(min(d.min_ess_bulk, d.min_ess_tail) >= 100 * d.n_chains)}",
        f"Divergences: {d.n_divergent} of {total} transitions {status(d.n_divergent == 0)}",
    ]
    return "<ul>" + "".join(f"<li>{line}</li>" for line in lines) + "</ul>"


def _data_summary(data: ResponseData) -> pd.DataFrame:
    frame = data.to_frame()
    summary = frame.groupby("group", sort=False).agg(
        persons=("person", "nunique"),
        responses=("response", "size"),
        mean_answer=("response", "mean"),
    )
    return summary.reindex(list(data.groups)).reset_index()


def _variant_section(
    analysis: VariantAnalysis,
    item_labels: Mapping[str, str] | None,
    n_curve_items: int,
) -> str:
    from bayes_align import plots

    data = analysis.data
    name = analysis.name
    reference = data.reference_group
    groups = list(data.focal_groups)
    colours = plots.group_colours(data.groups)
    parts = [f'<h2 id="variant-{_esc(name)}">{_esc(name.capitalize())} model</h2>']
    k = int(np.max(data.n_categories))
    model = json.loads(analysis.idata.attrs.get("model_spec", "{}") or "{}").get("irt", "?")
    parts.append(
        f'<p class="note">{k}-category responses, IRT model <b>{_esc(model)}</b> with a DIF term '
        f"for every focal group; reference group <b>{_esc(reference)}</b>. "
        f"Saved fit: <code>{_esc(analysis.fit_file)}</code>.</p>"
    )

    # data summary
    parts.append("<h3>Data</h3>" + _table(_data_summary(data)))
    parts.append(
        _figure(
            figure_data_uri(
                plots.plot_item_means(data.to_frame(), k, items=data.items, colours=colours)
            ),
            f"fig-data-{name}",
            "Average answer per item and group, straight from the data.",
        )
    )

    # alignment
    metric = "pearson"
    naive_map = dict(zip(analysis.naive["group"], analysis.naive[metric], strict=True))
    parts.append("<h3>Alignment with the reference</h3>")
    parts.append(
        '<p class="note">Alignment is the correlation, over items, between the item '
        "difficulties of the reference group and those of the focal group, computed inside "
        "every posterior draw of the joint model (1 = the group finds exactly the same items "
        "hard). The dashed lines are the classical number: the correlation of difficulties "
        "from separate fits, which is biased towards 0 by estimation noise.</p>"
    )
    parts.append(
        _figure(
            figure_data_uri(
                plots.plot_alignment_posterior(
                    analysis.alignment.draws[metric],
                    analysis.alignment.table,
                    naive_map,
                    metric=metric,
                    reference_group=reference,
                    colours=colours,
                )
            ),
            f"fig-alignment-{name}",
            f"Posterior of each group's alignment with {reference}; shaded: "
            f"{analysis.alignment.prob:.0%} HDI; dashed: classical separate-fit correlation.",
        )
    )
    table = analysis.alignment.table.merge(
        analysis.naive.melt(
            id_vars="group",
            value_vars=["pearson", "spearman"],
            var_name="metric",
            value_name="classical",
        ),
        on=["group", "metric"],
        how="left",
    )
    parts.append(_table(table))

    if analysis.comparison is not None:
        parts.append("<h3>Which group is better aligned?</h3>")
        matrix = analysis.comparison.matrix()
        parts.append(
            '<div class="side">'
            + _figure(
                figure_data_uri(plots.plot_prob_more_aligned(matrix)),
                f"fig-compare-{name}",
                "P(row group better aligned with the reference than column group), Pearson.",
            )
            + "<div>"
            + _table(analysis.comparison.ranking)
            + "</div></div>"
        )

    # DIF
    dif = analysis.dif
    rope = dif.attrs.get("rope", 0.426)
    parts.append("<h3>Differential item functioning (DIF)</h3>")
    parts.append(
        '<p class="note">DIF of an item for a group is how much harder (positive) or easier '
        "(negative) the item is for that group than for the reference at the same trait level, "
        "in logits. ETS bands: A (negligible, |DIF| &lt; 0.43), B (slight to moderate), C "
        "(moderate to large, |DIF| &ge; 0.64). An item is flagged when the posterior "
        f"probability that |DIF| &gt; {rope:.3f} is at least {dif.attrs.get('prob', 0.9):.0%}. "
        "Open diamonds: the classical Mantel-Haenszel log odds ratio.</p>"
    )
    flagged = dif[
        dif["flagged"] | dif["category"].isin(["B", "C"]) | dif["mh_category"].isin(["B", "C"])
    ]
    flagged = flagged.reindex(flagged["mean"].abs().sort_values(ascending=False).index)
    shown = flagged[
        [
            "item",
            "group",
            "mean",
            "hdi_low",
            "hdi_high",
            "prob_abs_gt_rope",
            "category",
            "flagged",
            "mh_log_odds_ratio",
            "mh_category",
        ]
    ].rename(
        columns={
            "category": "ets (posterior)",
            "mh_log_odds_ratio": "mh_log_or",
            "mh_category": "ets (MH)",
        }
    )
    flagged_html = (
        _table(shown) if len(shown) else "<p>No item reaches ETS B or C for any group.</p>"
    )
    parts.append(
        '<div class="side">'
        + _figure(
            figure_data_uri(
                plots.plot_dif_forest(
                    dif,
                    dif.rename(columns={"mh_log_odds_ratio": "log_odds_ratio"}),
                    items=data.items,
                    colours=colours,
                )
            ),
            f"fig-dif-{name}",
            "DIF forest plot: posterior mean and HDI per item and group, ETS bands shaded.",
        )
        + f"<div><b>Items flagged by either method</b>{flagged_html}</div></div>"
    )

    # item curves
    lm_groups = [g for g in groups if g.startswith("lm:")] or groups
    top = divergent_items(dif, lm_groups, n=n_curve_items)
    if top:
        parts.append("<h3>Item characteristic curves of the most divergent items</h3>")
        parts.append(
            _figure(
                figure_data_uri(
                    plots.plot_item_curves(
                        analysis.idata,
                        top,
                        [reference, *groups],
                        item_labels=item_labels,
                        colours=colours,
                    )
                ),
                f"fig-curves-{name}",
                "Expected answer as a function of the trait, per group, for the items whose "
                "DIF is largest for the language model.",
            )
        )

    parts.append("<h3>Sampler diagnostics</h3>" + _diagnostic_lines(analysis))
    return "\n".join(parts)


def render_report(
    analyses: Sequence[VariantAnalysis],
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
        One :class:`VariantAnalysis` per fitted variant, the main one first.
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
    sections = [_variant_section(a, item_labels, n_curve_items) for a in analyses]
    toc = " &middot; ".join(
        f'<a href="#variant-{_esc(a.name)}">{_esc(a.name)}</a>' for a in analyses
    )
    repro = ['<h2 id="reproduce">Reproduce</h2>']
    if commands:
        repro.append("<pre>" + "\n".join(_esc(c) for c in commands) + "</pre>")
    versions = package_versions()
    repro.append(
        "<p>Versions: " + ", ".join(f"{_esc(k)} {_esc(v)}" for k, v in versions.items()) + "</p>"
    )
    if config:
        repro.append(
            "<p>Settings:</p><pre>"
            + _esc(json.dumps(dict(config), indent=1, default=str))
            + "</pre>"
        )
    if timings:
        rows = pd.DataFrame(
            {"stage": list(timings), "seconds": [float(v) for v in timings.values()]}
        )
        repro.append("<p>Time per stage:</p>" + _table(rows, digits=1))
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{_esc(title)}</h1>{intro}<p>Variants: {toc} &middot; "
        '<a href="#reproduce">reproduce</a></p>'
        + "\n".join(sections)
        + "\n".join(repro)
        + _LOAD_CHECK
        + "</body></html>\n"
    )
