"""``bayes-align fit | alignment | dif | compare``: fit the joint IRT model and analyse a fit.

``fit`` reads long-format responses (CSV, TSV or Parquet; columns ``person, item, group,
response[, weight]`` unless renamed with ``--person-col`` etc.; labels exactly as written),
checks the arguments against the data, fits the model and saves the posterior as NetCDF.
The other commands reload a saved fit (no refitting), print a table, and write it with
``--csv PATH`` / ``--json PATH``. Output paths are checked before any work and written
atomically (:mod:`bayes_align.files`); errors reach the user through ``cli.main``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pandas as pd

from bayes_align.cli.responses import add_response_arguments, read_response_data
from bayes_align.files import check_output, write_frame

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
    add_response_arguments(parser)
    parser.add_argument("--model", choices=("1pl", "2pl", "3pl", "grm"), default="2pl")
    parser.add_argument("--dif", choices=("none", "normal", "horseshoe"), default="normal")
    parser.add_argument("--method", choices=("nuts", "svi", "map"), default="nuts")
    parser.add_argument("--chains", type=int, default=4, help="NUTS chains")
    parser.add_argument("--draws", type=int, default=1000, help="posterior draws (per chain)")
    parser.add_argument(
        "--warmup", type=int, default=1000, help="NUTS warmup iterations (SVI/MAP ignore it)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--prior",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="change a prior scale, e.g. --prior dif_scale=0.5 (repeatable; names: the "
        "fields of bayes_align.Priors)",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("fit.nc"), help="output NetCDF file (.nc)"
    )
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
FIT_SUFFIXES = (".nc", ".nc4", ".netcdf")


def _check_tables(args: argparse.Namespace, inputs: list[Path]) -> None:
    """Refuse bad ``--csv`` / ``--json`` paths before loading anything."""
    if args.csv is not None:
        check_output(args.csv, inputs=inputs, overwrite=args.overwrite, suffixes=(".csv",))
    if args.json is not None:
        check_output(
            args.json, inputs=[*inputs, args.csv], overwrite=args.overwrite, suffixes=(".json",)
        )


def _write_tables(table: pd.DataFrame, args: argparse.Namespace) -> None:
    for path in (args.csv, args.json):
        if path is not None:
            write_frame(table, path)
            print(f"wrote {path}")


def _print_table(table: pd.DataFrame) -> None:
    with pd.option_context(*_TABLE_OPTIONS):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


def _load(path: Path):
    import bayes_align as ba

    if not path.is_file():
        where = f"{path} is a folder, not a saved fit" if path.is_dir() else f"no saved fit at {path}"
        raise FileNotFoundError(f"{where}; create one with 'bayes-align fit'")
    return ba.load_fit(path)  # a ValueError in words for a damaged or foreign file


# ----------------------------------------------------------------------------- handlers
def declare_chain_devices(chains: int) -> None:
    """One XLA host device per NUTS chain, so that ``fit`` runs the chains in parallel on
    the CPU cores (``chain_method="parallel"``); must run before JAX initialises. It pays
    even with more chains than cores (benchmarks/README.md, W1). An ``XLA_FLAGS`` that
    already sets the device count wins."""
    if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
        return
    import numpyro

    numpyro.set_host_device_count(max(1, chains))



def _run_fit(args: argparse.Namespace) -> int:
    import bayes_align as ba
    from bayes_align.checks import check_fit_arguments

    out = check_output(
        args.out, inputs=[args.responses], overwrite=args.overwrite, suffixes=FIT_SUFFIXES
    )
    if args.method == "nuts" and args.chains > 1:
        declare_chain_devices(args.chains)
    data = read_response_data(args)
    settings = dict(
        model=args.model,
        dif=args.dif,
        method=args.method,
        chains=args.chains,
        draws=args.draws,
        warmup=args.warmup,
    )
    check_fit_arguments(data, **settings)
    priors = ba.Priors.parse(args.prior)
    print(data)
    if data.has_weights:
        print("weights: column " + repr(args.weight_col or "weight"))
    result = ba.fit(data, **settings, priors=priors, seed=args.seed, progress_bar=not args.quiet)
    result.to_netcdf(out)  # atomic: a temporary file renamed into place
    print(f"{args.method} fit of the {args.model} model (dif={args.dif}) in {result.seconds:.1f} s")
    report = result.diagnostics
    if report is not None:
        print(
            f"max R-hat {report.max_rhat:.3f}, min bulk ESS {report.min_ess_bulk:.0f}, "
            f"min tail ESS {report.min_ess_tail:.0f}, {report.n_divergent} divergent "
            f"transitions ({report.n_chains} chains x {report.n_draws} draws)"
        )
    print(f"saved {out}")
    return 0


def _run_alignment(args: argparse.Namespace) -> int:
    import bayes_align as ba

    _check_tables(args, [args.fit])
    fitted = _load(args.fit)
    result = ba.alignment(fitted, prob=args.prob)
    print(result)
    if result.draws.sizes["focal_group"] >= 2:
        print()
        print(ba.compare_alignment(fitted, metric=args.metric, prob=args.prob))
    _write_tables(result.table, args)
    return 0


def _run_dif(args: argparse.Namespace) -> int:
    import bayes_align as ba

    _check_tables(args, [args.fit])
    table = ba.dif_screen(_load(args.fit), rope=args.rope, prob=args.prob, scale=args.scale)
    n_flagged = int(table["flagged"].sum())
    print(
        f"DIF screen ({args.scale}, rope {args.rope}, prob {args.prob}): {n_flagged} of "
        f"{len(table)} (item, group) pairs flagged; mean > 0: harder for the group than "
        "for the reference"
    )
    _print_table(table[table["flagged"]] if args.flagged_only else table)
    _write_tables(table, args)
    return 0


def _run_compare(args: argparse.Namespace) -> int:
    import bayes_align as ba

    names = args.names or [path.stem for path in args.fits]
    if len(names) != len(args.fits):
        raise ValueError(f"got {len(names)} names for {len(args.fits)} fits")
    if len(set(names)) != len(names):
        raise ValueError(f"model names must be unique, got {names}; pass --names")
    _check_tables(args, list(args.fits))
    fits = {name: _load(path) for name, path in zip(names, args.fits, strict=True)}
    result = ba.compare_models(fits, pointwise=args.pointwise)
    print(result)
    _write_tables(result.table.reset_index(names="model"), args)
    return 0
