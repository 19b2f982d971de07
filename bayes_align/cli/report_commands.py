"""``bayes-align report``: one self-contained HTML page for any saved fit.

The page shows the posterior analyses of the fit (alignment, comparison, DIF, posterior
predictive check, diagnostics). With ``--responses`` (the person-level responses, long
format as for ``bayes-align fit``) the classical numbers (separate-fit correlation,
Mantel-Haenszel) are computed once here and shown beside them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bayes_align.files import check_output, write_text

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``report`` command."""
    parser = subparsers.add_parser(
        "report",
        help="HTML report of a saved fit (person-level, aggregated or mixed)",
        description=(
            "Render one self-contained HTML page (figures embedded) for a fit saved by "
            "'bayes-align fit' or the Python API: alignment, pairwise comparison, DIF forest, "
            "item curves, posterior predictive check, trace/rank plots and diagnostics. "
            "--responses adds the classical numbers computed from person-level responses."
        ),
    )
    parser.add_argument("fit", type=Path, help="a saved fit (.nc)")
    parser.add_argument("--out", type=Path, required=True, help="output HTML file")
    parser.add_argument(
        "--responses", type=Path, default=None,
        help="long-format person-level responses (CSV, TSV or Parquet) for the classical "
        "numbers; groups as in the fit",
    )
    parser.add_argument("--person-col", default="person", help="person id column")
    parser.add_argument("--item-col", default="item", help="item id column")
    parser.add_argument("--group-col", default="group", help="group column")
    parser.add_argument("--response-col", default="response", help="response column")
    parser.add_argument("--prob", type=float, default=0.9, help="interval mass (default 0.9)")
    parser.add_argument(
        "--draws", type=int, default=200,
        help="posterior draws simulated for the predictive check (default 200)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--title", default=None, help="page title (default: the fit's file name)")
    parser.set_defaults(handler=_run_report)


def _classical(args: argparse.Namespace, fit):
    """The classical numbers of ``--responses``, checked against the fit's groups."""
    import bayes_align as ba
    from bayes_align.report import classical_numbers

    data = ba.ResponseData.from_long(
        args.responses, person=args.person_col, item=args.item_col, group=args.group_col,
        response=args.response_col, reference_group=fit.reference_group,
    )
    fit_groups = [str(g) for g in fit.idata.posterior["group"].values]
    unknown = sorted(set(data.groups) - set(fit_groups))
    if unknown:
        raise ValueError(
            f"{args.responses}: groups {unknown} are not groups of the fit {fit_groups}; give "
            "the responses the fit was made from"
        )
    fit_items = {str(i) for i in fit.idata.posterior["item"].values}
    if not set(data.items) <= fit_items:
        extra = sorted(set(data.items) - fit_items)[:5]
        raise ValueError(f"{args.responses}: items {extra} are not items of the fit")
    irt = fit.spec.irt if fit.spec is not None else None
    print(f"classical numbers from {args.responses}: {data}")
    return classical_numbers(data, model=irt, seed=args.seed)


def _run_report(args: argparse.Namespace) -> int:
    import bayes_align as ba
    from bayes_align.report import analyse, render_report

    out = check_output(
        args.out, inputs=[args.fit, args.responses], overwrite=args.overwrite,
        suffixes=(".html", ".htm"),
    )
    if not 0 < args.prob < 1:
        raise ValueError(f"--prob must lie strictly between 0 and 1, got {args.prob}")
    if args.draws < 1:
        raise ValueError(f"--draws must be at least 1, got {args.draws}")
    if not args.fit.is_file():
        raise FileNotFoundError(f"no saved fit at {args.fit}")
    fit = ba.load_fit(args.fit)
    classical = _classical(args, fit) if args.responses is not None else None
    analysis = analyse(
        fit, args.fit.stem, classical=classical, prob=args.prob, predictive_draws=args.draws,
        seed=args.seed, fit_file=args.fit.name,
    )
    command = f"bayes-align report {args.fit} --out {args.out}"
    if args.responses is not None:
        command += f" --responses {args.responses}"
    html = render_report(
        [analysis], title=args.title or f"bayes_align report: {args.fit.name}", commands=[command]
    )
    write_text(html, out)
    share = float(analysis.predictive["inside"].mean())
    print(f"posterior predictive check: {share:.0%} of item means inside their interval")
    print(f"wrote {out}")
    return 0
