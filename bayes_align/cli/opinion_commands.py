"""``bayes-align opinions``: how close LM opinion distributions are to human groups' answers.

Reads the human answer counts (``--data``: ``{ATTRIBUTE}_data.json`` files) and the LM
distributions (``--lm-results``: a ``{method}/{model}/{task}/{ATTRIBUTE}/{Group}.json``
folder, or a long table file from :mod:`bayes_align.scoring`) and writes to ``--out``:

- ``tv.csv``: TV and KL per ``model, method, steering, attribute, group, item`` (with
  ``n_human, lm_mass, unmapped_mass, status``);
- ``tv_summary.csv``: mean TV per model x method x steering with its bootstrap interval;
- ``human_baseline.csv``: the human split-half TV per (item, group);
- ``issues.csv``: every wart of the inputs (split options, tiny cells, mapping and parse
  failures), with ``source`` human or lm;
- ``tv.png``: the summary as a figure;

and, unless ``--no-alignment``, the posterior side (one graded IRT fit per group the LMs
were steered to, :func:`bayes_align.distributional_alignment.distributional_alignment`):

- ``alignment.csv``: ``model, method, steering, attribute, group, metric, mean, sd,
  hdi_low, hdi_high`` per LM condition and target group;
- ``alignment_summary.csv``: the posterior metric and TV per LM condition and target group
  with the items used, and pooled over groups (``group`` empty);
- ``method_comparison.csv``: expression methods compared pairwise per model and steering
  (posterior probability of better alignment, paired TV difference);
- ``human_alignment.csv``: the other human groups against each target;
- ``excluded.csv``: LM comparisons left out of the Bayesian data, with the reason;
- ``alignment.png``: TV and posterior alignment side by side;
- ``fits/{ATTRIBUTE}_{Group}.nc`` with ``--save-fits``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

OUTPUT_NAMES = ("tv.csv", "tv_summary.csv", "human_baseline.csv", "issues.csv", "tv.png")
ALIGNMENT_OUTPUTS = ("alignment.csv", "alignment_summary.csv", "method_comparison.csv",
                     "human_alignment.csv", "excluded.csv", "alignment.png")
_TABLE_READERS = {
    ".csv": pd.read_csv,
    ".tsv": lambda p: pd.read_csv(p, sep="\t"),
    ".jsonl": lambda p: pd.read_json(p, lines=True),
    ".json": pd.read_json,
    ".parquet": pd.read_parquet,
    ".pq": pd.read_parquet,
}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "opinions",
        help="distance of LM opinion distributions from human groups (TV, KL, bootstrap, baseline)",
        description=(
            "Total variation and KL between each LM's answer distribution and each human "
            "group's, per item, with the mean per model x expression method x steering, its "
            "bootstrap interval and the human split-half baseline."
        ),
    )
    parser.add_argument("--data", required=True, type=Path,
                        help="human data folder with {ATTRIBUTE}_data.json files")
    parser.add_argument("--lm-results", required=True, type=Path,
                        help="LM results folder ({method}/{model}/{task}/{ATTRIBUTE}/{Group}.json) or a "
                        "table (.csv/.tsv/.jsonl/.json/.parquet) with item, group, option, probability, "
                        "model, method, steering")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--info", type=Path, default=None,
                        help="info.csv with the survey order and ordinal positions of the options "
                        "(default: DATA/info.csv when present)")
    parser.add_argument("--attribute", action="append", default=None,
                        help="attribute to load, e.g. SEX (repeat for several; default: all files)")
    parser.add_argument("--drop-refused", action="store_true",
                        help="leave the 'Refused' answer out of both distributions and renormalise")
    parser.add_argument("--raw-probabilities", action="store_true",
                        help="use the LM probabilities as reported, as the paper's code did, instead "
                        "of renormalising them over the item's answers")
    parser.add_argument("--bootstrap", choices=("cells", "items"), default="cells",
                        help="resample (item, group) cells (the paper's interval, default) or whole items")
    parser.add_argument("--resample-human", action="store_true",
                        help="also redraw every group's counts in each bootstrap resample")
    parser.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples (default 1000)")
    parser.add_argument("--level", type=float, default=0.95, help="interval level (default 0.95)")
    parser.add_argument("--min-respondents", type=int, default=20,
                        help="smallest group the human split-half baseline splits (default 20)")
    parser.add_argument("--seed", type=int, default=0)
    bayes = parser.add_argument_group("posterior alignment (one graded IRT fit per target group)")
    bayes.add_argument("--no-alignment", action="store_true",
                       help="only the classical numbers: skip the Bayesian fits and their outputs")
    bayes.add_argument("--lm-n", default=None, metavar="N or METHOD=N",
                       help="effective sample size of an LM distribution (default 100); repeatable "
                       "METHOD=N per expression method, N may be 'natural' for sequence (30 x runs)",
                       action="append")
    bayes.add_argument("--target", action="append", default=None, metavar="ATTRIBUTE:Group",
                       help="target group to fit (repeat; default: every group the LMs were steered to)")
    bayes.add_argument("--human-group", action="append", default=None, metavar="Group",
                       help="other human group added to each fit of its attribute (repeat; default: the "
                       "other target groups); 'none' for none")
    bayes.add_argument("--fit-method", choices=("svi", "nuts"), default="svi",
                       help="variational (default, fast) or NUTS posterior")
    bayes.add_argument("--draws", type=int, default=1000, help="posterior draws per fit (per chain for NUTS)")
    bayes.add_argument("--chains", type=int, default=4, help="NUTS chains (default 4)")
    bayes.add_argument("--prob", type=float, default=0.9, help="HDI mass (default 0.9)")
    bayes.add_argument("--save-fits", action="store_true", help="write every fit to fits/{ATTRIBUTE}_{Group}.nc")
    parser.set_defaults(handler=_run_opinions)


def _load_lm(path: Path, human):
    from bayes_align.opinions import lm_distributions_from_frame, load_lm_results

    if path.is_dir():
        return load_lm_results(path, human)
    reader = _TABLE_READERS.get(path.suffix.lower())
    if reader is None:
        raise ValueError(f"{path}: give a results folder or a table ending in {sorted(_TABLE_READERS)}")
    if not path.is_file():
        raise FileNotFoundError(f"LM results {path} do not exist")
    return lm_distributions_from_frame(reader(path), human)


def _lm_n(values: list[str] | None) -> float | dict[str, float | str]:
    """``--lm-n`` values: one number, or ``METHOD=N`` pairs (the others keep the default)."""
    from bayes_align.opinion_model import DEFAULT_LM_N

    if not values:
        return DEFAULT_LM_N
    plain = [v for v in values if "=" not in v]
    if plain and len(values) > 1:
        raise ValueError(f"--lm-n takes one number or METHOD=N pairs, got {values}")
    if plain:
        return float(plain[0])
    out: dict[str, float | str] = {}
    for value in values:
        method, n = value.split("=", 1)
        out[method.strip()] = n.strip() if n.strip() == "natural" else float(n)
    return out


def _targets(values: list[str] | None) -> list[tuple[str, str]] | None:
    if not values:
        return None
    bad = [v for v in values if ":" not in v]
    if bad:
        raise ValueError(f"--target must be ATTRIBUTE:Group, got {bad}")
    return [tuple(v.split(":", 1)) for v in values]


def _interval_table(summary: pd.DataFrame) -> pd.DataFrame:
    """model x (steering, method) view with ``mean [low, high]`` cells."""
    text = summary.assign(
        value=[f"{m:.3f} [{lo:.3f}, {hi:.3f}]" if np.isfinite(m) else "-"
               for m, lo, hi in zip(summary["mean"], summary["low"], summary["high"], strict=True)]
    )
    view = text.pivot(index="model", columns=["steering", "method"], values="value")
    return view.reindex(index=list(dict.fromkeys(summary["model"]))).fillna("")


def _run_opinions(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bayes_align.distributional import (
        bootstrap_mean,
        human_split_baseline,
        plot_tv_summary,
        tv_summary,
        tv_table,
    )
    from bayes_align.files import atomic_path, check_output_folder, write_frame
    from bayes_align.opinions import load_opinions

    if args.n_boot < 1:
        raise ValueError(f"--n-boot must be at least 1, got {args.n_boot}")
    if args.draws < 1 or args.chains < 1:
        raise ValueError("--draws and --chains must be at least 1")
    names = OUTPUT_NAMES + (() if args.no_alignment else ALIGNMENT_OUTPUTS)
    out = check_output_folder(args.out, names, inputs=[args.data, args.lm_results, args.info],
                              overwrite=getattr(args, "overwrite", False))
    fits_folder = out / "fits"
    if args.save_fits and fits_folder.is_dir() and any(fits_folder.iterdir()) and not getattr(args, "overwrite", False):
        raise FileExistsError(f"{fits_folder} already holds files; pass --overwrite to replace them")
    lm_n, targets = _lm_n(args.lm_n), _targets(args.target)
    human_groups: bool | list[str] = True
    if args.human_group:
        human_groups = [] if [g.lower() for g in args.human_group] == ["none"] else list(args.human_group)
    human = load_opinions(args.data, attributes=args.attribute,
                          info=args.info if args.info is not None else True,
                          drop_refused=args.drop_refused)
    lm = _load_lm(args.lm_results, human)
    renormalize = not args.raw_probabilities
    table = tv_table(human, lm, renormalize=renormalize)
    summary = tv_summary(human, lm, renormalize=renormalize, unit=args.bootstrap, n_boot=args.n_boot,
                         level=args.level, resample_human=args.resample_human, seed=args.seed)
    compared = table.loc[table["status"] == "ok", ["attribute", "group"]].drop_duplicates()
    baseline = human_split_baseline(human, min_respondents=args.min_respondents,
                                     groups=compared.itertuples(index=False, name=None), seed=args.seed)
    baseline_summary = bootstrap_mean(baseline, by=(), unit=args.bootstrap, n_boot=args.n_boot,
                                      level=args.level, seed=args.seed)
    issues = pd.concat([human.issues.assign(source="human"), lm.issues.assign(source="lm")],
                       ignore_index=True)

    write_frame(table, out / "tv.csv")
    write_frame(summary, out / "tv_summary.csv")
    write_frame(baseline, out / "human_baseline.csv")
    write_frame(issues, out / "issues.csv")
    figure = plot_tv_summary(summary, baseline_summary)
    with atomic_path(out / "tv.png") as temporary:
        figure.savefig(temporary, dpi=120, bbox_inches="tight")
    plt.close(figure)
    study = None
    if not args.no_alignment:
        study = _write_alignment(args, out, human, lm, lm_n, targets, human_groups, renormalize)

    percent = 100 * (1 - args.level)
    with pd.option_context("display.width", 250, "display.max_columns", 50, "display.max_colwidth", 40):
        print(f"{human.n_items} items, {len(human.groups)} groups; {len(lm.cells)} LM cells "
              f"-> {len(table)} (cell, group) comparisons")
        print("\ncomparison status:\n" + table["status"].value_counts().to_string())
        failed = table.loc[table["status"] == "parse_failure"]
        if len(failed):
            rate = (failed.groupby(["model", "method", "steering"], sort=False).size()
                    / table.groupby(["model", "method", "steering"], sort=False).size()).dropna()
            print("\nparse failures (no mass on the item's answers), share of comparisons:\n"
                  + rate.map(lambda r: f"{100 * r:.1f}%").to_string())
        if len(issues):
            counts = issues.groupby(["source", "kind"]).size().rename("n").reset_index()
            print("\ninput issues (details in issues.csv):\n" + counts.to_string(index=False))
        print(f"\nmean TV per model x steering x method, {100 - percent:g}% bootstrap interval "
              f"({args.bootstrap}{', human counts redrawn' if args.resample_human else ''}):")
        print(_interval_table(summary).to_string())
        b = baseline_summary.iloc[0]
        print(f"\nhuman split-half baseline: {b['mean']:.3f} [{b['low']:.3f}, {b['high']:.3f}] over "
              f"{int(b['n_cells'])} cells ({int((baseline['status'] != 'ok').sum())} cells too small)")
    if study is not None:
        _print_alignment(study)
    print(f"\nwrote {', '.join(names)} to {out}")
    return 0


def _write_alignment(args, out: Path, human, lm, lm_n, targets, human_groups, renormalize):
    import matplotlib.pyplot as plt

    from bayes_align.distributional_alignment import distributional_alignment
    from bayes_align.files import atomic_path, write_frame

    fit_options = {"draws": args.draws}
    if args.fit_method == "nuts":
        fit_options.update(chains=args.chains, warmup=args.draws)
    study = distributional_alignment(
        human, lm, targets=targets, lm_n=lm_n, human_groups=human_groups, method=args.fit_method,
        prob=args.prob, renormalize=renormalize, tv_unit=args.bootstrap, n_boot=args.n_boot,
        level=args.level, seed=args.seed, fit_options=fit_options,
    )
    pooled = study.summary().assign(attribute="", group="")
    per_group = study.table.rename(columns={f"{study.metric}_{k}": v for k, v in
                                            (("mean", "mean"), ("sd", "sd"), ("low", "hdi_low"),
                                             ("high", "hdi_high"))})
    write_frame(study.alignment, out / "alignment.csv")
    write_frame(pd.concat([per_group, pooled], ignore_index=True).assign(metric=study.metric),
                out / "alignment_summary.csv")
    write_frame(study.compare(), out / "method_comparison.csv")
    write_frame(study.human_alignment, out / "human_alignment.csv")
    write_frame(study.excluded, out / "excluded.csv")
    figure = study.plot()
    with atomic_path(out / "alignment.png") as temporary:
        figure.savefig(temporary, dpi=120, bbox_inches="tight")
    plt.close(figure)
    if args.save_fits:
        (out / "fits").mkdir(exist_ok=True)
        for (attribute, group), fitted in study.fits.items():
            with atomic_path(out / "fits" / f"{attribute}_{group}.nc") as temporary:
                fitted.to_netcdf(temporary)
    return study


def _print_alignment(study) -> None:
    metric = study.metric
    summary = study.summary()
    text = summary.assign(
        value=[f"{m:.3f} [{lo:.3f}, {hi:.3f}]" for m, lo, hi in
               zip(summary["mean"], summary["hdi_low"], summary["hdi_high"], strict=True)])
    view = text.pivot(index="model", columns=["steering", "method"], values="value").fillna("")
    with pd.option_context("display.width", 250, "display.max_columns", 50, "display.max_colwidth", 40):
        print(f"\nposterior {metric} per model x steering x method, pooled over "
              f"{len(study.fits)} target group(s), {100 * study.prob:g}% HDI:")
        print(view.to_string())
        if len(study.excluded):
            print("\nLM comparisons left out of the Bayesian data (excluded.csv):\n"
                  + study.excluded["reason"].value_counts().to_string())
        comparison = study.compare()
        if len(comparison):
            shown = comparison[["model", "steering", "a", "b", "prob_better", "posterior_credible",
                                "tv_diff", "tv_credible"]]
            print("\nexpression methods compared (P(a better aligned than b); TV a - b):\n"
                  + shown.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
