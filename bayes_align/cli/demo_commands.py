"""``bayes-align demo``: VerbAgg humans vs SmolLM2 personas, one joint fit, an HTML report."""

from __future__ import annotations

import argparse
from pathlib import Path

from bayes_align.files import check_output_folder

from .fit_commands import declare_chain_devices

__all__ = ["register"]


def _variants(text: str) -> tuple[str, ...]:
    variants = tuple(v.strip() for v in text.split(",") if v.strip())
    allowed = ("ordinal", "binary")
    bad = [v for v in variants if v not in allowed]
    if not variants or bad:
        raise argparse.ArgumentTypeError(
            f"--variants takes a comma-separated subset of {allowed}, got {text!r}"
        )
    return variants


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``demo`` command."""
    from bayes_align.demo import DemoConfig

    default = DemoConfig()
    parser = subparsers.add_parser(
        "demo",
        help="end-to-end demo: VerbAgg humans vs SmolLM2 personas, joint fit, HTML report",
        description=(
            "Score the 24 VerbAgg items with SmolLM2-135M-Instruct speaking as personas that "
            "mirror the human respondents, fit humans and LM jointly (ordinal GRM and binary "
            "2PL, each with a DIF term) by NUTS, and write DIR/report.html, DIR/alignment.csv, "
            "DIR/dif.csv and DIR/fit.nc. LM scores are cached in DIR/score_cache."
        ),
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument(
        "--personas",
        type=int,
        default=default.n_personas,
        help=f"number of LM personas, half F half M (default {default.n_personas})",
    )
    parser.add_argument(
        "--samples",
        type=int,
        default=default.samples_per_persona,
        help="answer sheets drawn per persona, each one LM person "
        f"(default {default.samples_per_persona})",
    )
    parser.add_argument(
        "--variants",
        type=_variants,
        default=default.variants,
        help="comma-separated fits to run, the first is saved as fit.nc (default ordinal,binary)",
    )
    parser.add_argument("--chains", type=int, default=default.chains)
    parser.add_argument("--draws", type=int, default=default.draws, help="draws per chain")
    parser.add_argument("--warmup", type=int, default=default.warmup)
    parser.add_argument("--seed", type=int, default=default.seed)
    parser.add_argument(
        "--lm-config", default=default.lm_config,
        help="LM configuration: a YAML file, or the name of a config shipped with the package "
        f"(default {default.lm_config})",
    )
    parser.add_argument(
        "--items", type=int, default=None, help="use only the first N VerbAgg items (quick checks)"
    )
    parser.add_argument("--progress", action="store_true", help="show NUTS progress bars")
    parser.set_defaults(handler=_run_demo)


def demo_outputs(variants: tuple[str, ...]) -> tuple[str, ...]:
    """The files ``run_demo`` writes in its folder (its cache folder is resumed, not replaced)."""
    fits = ("fit.nc", *(f"fit-{variant}.nc" for variant in variants[1:]))
    tables = ("alignment.csv", "dif.csv", "personas.csv", "lm_probabilities.csv", "lm_responses.csv")
    return ("report.html", "config.json", *tables, *fits)


def _run_demo(args: argparse.Namespace) -> int:
    from bayes_align.demo import DemoConfig, lm_config_path

    config = DemoConfig(
        n_personas=args.personas,
        samples_per_persona=args.samples,
        variants=args.variants,
        chains=args.chains,
        draws=args.draws,
        warmup=args.warmup,
        seed=args.seed,
        lm_config=args.lm_config,
        n_items=args.items,
    )
    check_output_folder(
        args.out, demo_outputs(config.variants), inputs=[lm_config_path(config.lm_config)],
        overwrite=args.overwrite,
    )  # fmt: skip
    declare_chain_devices(config.chains)  # parallel chains; must happen before JAX starts

    from bayes_align.demo import run_demo

    result = run_demo(args.out, config, progress_bar=args.progress)
    print(f"open {result.report}")
    return 0
