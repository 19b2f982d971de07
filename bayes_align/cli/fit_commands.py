"""``bayes-align fit | alignment | dif | compare``: fit the joint IRT model and analyse a fit.

``fit`` reads long-format responses (CSV or Parquet; columns ``person, item, group,
response[, weight]`` unless renamed with ``--person-col`` etc.), fits the model and saves
the posterior as NetCDF. The other commands reload a saved fit (no refitting), print a
table, and write it with ``--csv PATH`` / ``--json PATH``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pandas as pd

_TABLE_OPTIONS = ("display.width", 200, "display.max_columns", 50, "display.max_rows", 500)


def register(subparsers: argparse._SubParsersAction) -> None:
    _register_fit(subparsers)
    _register_alignment(subparsers)
    _register_dif(subparsers)
    _register_compare(subparsers)


# ----------------------------------------------------------------------------- parsers
def _add_outputs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--csv", type=Path, default=None, help="also write the table as CSV here")
    parser.add_argument(
        "--json", type=Path, default=None, help="also write the table as JSON records here"
    )


def _register_fit(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "fit",
        help="fit the joint multi-group IRT model with DIF and save the posterior",
        description=(
            "Fit the joint multi-group IRT model with an explicit DIF term to long-format "
            "responses (one row per person x item) and save the posterior as NetCDF."
        ),
    )
    parser.add_argument("responses", type=Path, help="CSV or Parquet file, one row per response")
    parser.add_argument("--reference", default="human", help="label of the reference group")
    parser.add_argument("--person-col", default="person", help="person id column")
    parser.add_argument("--item-col", default="item", help="item id column")
    parser.add_argument("--group-col", default="group", help="group column")
    parser.add_argument("--response-col", default="response", help="response column")
    parser.add_argument(
        "--weight-col", default=None, help="optional column of counts for aggregated rows"
    )
    parser.add_argument(
        "--kind",
        choices=("auto", "binary", "soft", "ordinal"),
        default="auto",
        help="response kind (auto: inferred from the values)",
    )
    parser.add_argument("--model", choices=("1pl", "2pl", "3pl", "grm"), default="2pl")
    parser.add_argument("--dif", choices=("none", "normal", "horseshoe"), default="normal")
    parser.add_argument("--method", choices=("nuts", "svi", "map"), default="nuts")
    parser.add_argument("--chains", type=int, default=4, help="NUTS chains")
    parser.add_argument("--draws", type=int, default=1000, help="posterior draws (per chain)")
    parser.add_argument("--warmup", type=int, default=1000, help="NUTS warmup iterations")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("fit.nc"), help="output NetCDF file")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(handler=_run_fit)


def _register_alignment(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "alignment",
        help="posterior alignment of each focal group with the reference",
        description=(
            "Posterior alignment metrics (Pearson and Spearman correlation of item "
            "difficulties, DIF scale, invariant share of variance) of every focal group, "
            "and with two or more focal groups their ranking."
        ),
    )
    parser.add_argument("fit", type=Path, help="a fit saved by 'bayes-align fit'")
    parser.add_argument("--prob", type=float, default=0.9, help="HDI mass (default 0.9)")
    parser.add_argument(
        "--metric",
        choices=("pearson", "spearman", "dif_scale", "invariant_share"),
        default="pearson",
        help="metric used to rank the focal groups",
    )
    _add_outputs(parser)
    parser.set_defaults(handler=_run_alignment)


def _register_dif(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "dif",
        help="posterior DIF screen per item and focal group (ETS A/B/C categories)",
        description=(
            "Posterior DIF screen: per (item, focal group) the posterior mean shift "
            "(> 0: harder for the group than for the reference), HDI, P(|shift| > rope), "
            "ETS A/B/C category and a flag."
        ),
    )
    parser.add_argument("fit", type=Path, help="a fit saved by 'bayes-align fit'")
    parser.add_argument(
        "--rope", type=float, default=0.426, help="region of practical equivalence (logits)"
    )
    parser.add_argument("--prob", type=float, default=0.9, help="HDI mass and flag probability")
    parser.add_argument(
        "--scale",
        choices=("shift", "logit"),
        default="shift",
        help="screen dif_shift (ability units) or discrimination x shift (log odds)",
    )
    parser.add_argument(
        "--flagged-only", action="store_true", help="print only flagged rows (files get all)"
    )
    _add_outputs(parser)
    parser.set_defaults(handler=_run_dif)


def _register_compare(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compare",
        help="compare saved fits by PSIS-LOO",
        description=(
            "Compare two or more fits of the same data by PSIS-LOO and say which model "
            "the data prefer."
        ),
    )
    parser.add_argument("fits", type=Path, nargs="+", help="fits saved by 'bayes-align fit'")
    parser.add_argument(
        "--names", nargs="+", default=None, help="model names (default: the file names)"
    )
    parser.add_argument(
        "--pointwise",
        choices=("obs", "person"),
        default="obs",
        help="leave out one response (obs) or one person with all their responses",
    )
    _add_outputs(parser)
    parser.set_defaults(handler=_run_compare)


# ----------------------------------------------------------------------------- helpers
def _fail(message: str) -> int:
    print(f"bayes-align: error: {message}", file=sys.stderr)
    return 2


def _write_table(table: pd.DataFrame, csv: Path | None, json: Path | None) -> None:
    if csv is not None:
        csv.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(csv, index=False)
        print(f"wrote {csv}")
    if json is not None:
        json.parent.mkdir(parents=True, exist_ok=True)
        table.to_json(json, orient="records", indent=2)
        print(f"wrote {json}")


def _print_table(table: pd.DataFrame) -> None:
    with pd.option_context(*_TABLE_OPTIONS):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


def _load(path: Path):
    from bayes_align.inference import load_fit

    if not path.is_file():
        raise FileNotFoundError(f"no saved fit at {path}; create one with 'bayes-align fit'")
    return load_fit(path)


def _read_responses(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise FileNotFoundError(f"responses file {path} does not exist")
    if path.suffix.lower() in (".parquet", ".pq"):
        return pd.read_parquet(path)
    return pd.read_csv(path)


# ----------------------------------------------------------------------------- handlers
def declare_chain_devices(chains: int) -> None:
    """One XLA host device per NUTS chain, so that ``fit`` runs the chains in parallel on
    the CPU cores (``chain_method="parallel"``); must run before JAX initialises. Even
    with more chains than cores this paid: 4 devices on 2 cores gave 1.4x to 1.8x the ESS/s of
    4 vectorised chains on VerbAgg (benchmarks/README.md, W1). An ``XLA_FLAGS`` that
    already sets the device count wins."""
    if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
        return
    import numpyro

    numpyro.set_host_device_count(max(1, chains))



def _run_fit(args: argparse.Namespace) -> int:
    if args.method == "nuts" and args.chains > 1:
        declare_chain_devices(args.chains)
    from bayes_align.data import ResponseData
    from bayes_align.inference import fit

    try:
        frame = _read_responses(args.responses)
        data = ResponseData.from_long(
            frame,
            person=args.person_col,
            item=args.item_col,
            group=args.group_col,
            response=args.response_col,
            weight=args.weight_col,
            reference_group=args.reference,
            kind=None if args.kind == "auto" else args.kind,
        )
    except (FileNotFoundError, ValueError) as err:
        return _fail(str(err))
    print(data)
    result = fit(
        data,
        model=args.model,
        dif=args.dif,
        method=args.method,
        chains=args.chains,
        draws=args.draws,
        warmup=args.warmup,
        seed=args.seed,
        progress_bar=not args.quiet,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result.to_netcdf(args.out)
    print(f"{args.method} fit of the {args.model} model (dif={args.dif}) in {result.seconds:.1f} s")
    report = result.diagnostics
    if report is not None:
        print(
            f"max R-hat {report.max_rhat:.3f}, min bulk ESS {report.min_ess_bulk:.0f}, "
            f"min tail ESS {report.min_ess_tail:.0f}, {report.n_divergent} divergent "
            f"transitions ({report.n_chains} chains x {report.n_draws} draws)"
        )
    print(f"saved {args.out}")
    return 0


def _run_alignment(args: argparse.Namespace) -> int:
    from bayes_align.alignment import alignment, compare_alignment

    try:
        fitted = _load(args.fit)
        result = alignment(fitted, prob=args.prob)
    except (FileNotFoundError, ValueError) as err:
        return _fail(str(err))
    print(result)
    if result.draws.sizes["focal_group"] >= 2:
        print()
        print(compare_alignment(fitted, metric=args.metric, prob=args.prob))
    _write_table(result.table, args.csv, args.json)
    return 0


def _run_dif(args: argparse.Namespace) -> int:
    from bayes_align.dif import dif_screen

    try:
        table = dif_screen(_load(args.fit), rope=args.rope, prob=args.prob, scale=args.scale)
    except (FileNotFoundError, ValueError) as err:
        return _fail(str(err))
    n_flagged = int(table["flagged"].sum())
    print(
        f"DIF screen ({args.scale}, rope {args.rope}, prob {args.prob}): {n_flagged} of "
        f"{len(table)} (item, group) pairs flagged; mean > 0: harder for the group than "
        "for the reference"
    )
    _print_table(table[table["flagged"]] if args.flagged_only else table)
    _write_table(table, args.csv, args.json)
    return 0


def _run_compare(args: argparse.Namespace) -> int:
    from bayes_align.compare import compare_models

    names = args.names or [path.stem for path in args.fits]
    if len(names) != len(args.fits):
        return _fail(f"got {len(names)} names for {len(args.fits)} fits")
    if len(set(names)) != len(names):
        return _fail(f"model names must be unique, got {names}; pass --names")
    try:
        fits = {name: _load(path) for name, path in zip(names, args.fits, strict=True)}
        result = compare_models(fits, pointwise=args.pointwise)
    except (FileNotFoundError, ValueError) as err:
        return _fail(str(err))
    print(result)
    table = result.table.reset_index(names="model")
    _write_table(table, args.csv, args.json)
    return 0
