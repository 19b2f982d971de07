"""``bayes-align classical`` and ``bayes-align naep-alignment``: NAEP analyses.

``classical`` prints the classical plausibility metrics of every LM (temperature,
KL, TV, CTT and theta = 0 correlations, accuracy) per subset and, with ``--out``,
writes them as a long CSV plus three figures.

``naep-alignment`` fits the aggregated-data Bayesian IRT model (humans + every LM as
its own group; key counts, or with ``--likelihood nominal`` the counts of every option)
and ranks the LMs by posterior alignment with 90% intervals, next to their classical CTT
correlation.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bayes_align.files import atomic_path, check_output_folder, write_frame

CLASSICAL_FIGURES = ("ctt_correlation.png", "theta0_correlation.png", "kl.png", "temperature.png")


def register(subparsers: argparse._SubParsersAction) -> None:
    classical = subparsers.add_parser(
        "classical",
        help="classical LM plausibility metrics on NAEP data (KL, temperature, correlations)",
        description=(
            "Temperature scaling, KL divergence, total variation, CTT and IRT (theta = 0) "
            "correlations and accuracy of every LM file in a naep-llm folder, per "
            "(subject, grade) subset."
        ),
    )
    classical.add_argument("--data", required=True, type=Path, help="the naep-llm folder")
    classical.add_argument(
        "--subject", action="append", default=None,
        help="subject to analyse (repeat for several; default: all subjects found)",
    )
    classical.add_argument("--out", type=Path, default=None, help="write classical.csv and PNG figures here")
    classical.set_defaults(handler=_run_classical)

    aligned = subparsers.add_parser(
        "naep-alignment",
        help="rank LMs by posterior alignment with the NAEP population (aggregated-data IRT)",
        description=(
            "Fit the aggregated-data joint IRT model with DIF (humans from option shares x "
            "--human-n, every LM from its order-averaged key probabilities x --model-n) and "
            "rank the LMs by posterior alignment (Pearson r of item difficulties, 90% interval)."
        ),
    )
    aligned.add_argument("--data", required=True, type=Path, help="the naep-llm folder")
    aligned.add_argument("--subject", required=True, help="subject, e.g. economics")
    aligned.add_argument("--grade", type=int, default=None, help="grade (needed when the subject has several)")
    aligned.add_argument("--human-n", type=float, default=2000.0, help="effective sample size of the human shares")
    aligned.add_argument("--model-n", type=float, default=100.0, help="effective sample size of each LM's probabilities")
    aligned.add_argument(
        "--temperature", choices=("optimized", "raw"), default="optimized",
        help="LM probabilities at the KL-optimal temperature (default) or at T = 1",
    )
    aligned.add_argument("--method", choices=("svi", "nuts"), default="svi", help="inference method")
    aligned.add_argument("--irt", choices=("1pl", "2pl", "3pl"), default="1pl", help="IRT model (default 1pl)")
    aligned.add_argument(
        "--likelihood", choices=("binary", "nominal"), default="binary",
        help="binary: key vs not (default); nominal: counts of every option (adds distractor DIF "
        "per LM, reported as distractor_dif_scale; 1pl/2pl only)",
    )
    aligned.add_argument("--seed", type=int, default=0)
    aligned.add_argument("--out", type=Path, default=None, help="write naep_alignment.csv here")
    aligned.set_defaults(handler=_run_naep_alignment)


def _run_classical(args: argparse.Namespace) -> int:
    from bayes_align.classical import (
        classical_table,
        plot_correlation_heatmap,
        plot_kl,
        plot_temperatures,
    )
    from bayes_align.naep import load_naep

    if args.out is not None:
        check_output_folder(
            args.out, ("classical.csv", *CLASSICAL_FIGURES), inputs=[args.data],
            overwrite=args.overwrite,
        )  # fmt: skip
    start = time.perf_counter()
    naep = load_naep(args.data, subjects=args.subject)
    table = classical_table(naep)
    elapsed = time.perf_counter() - start
    metrics = ("temperature", "kl", "kl_optimized", "ctt_r", "theta0_r", "accuracy")
    for subset in naep.subsets:
        print(f"\n== {subset} ({int((naep.rows['subset'] == subset).sum())} items)")
        print(_subset_view(table, subset, metrics).to_string())
    print(f"\n{naep.n_rows} item rows x {naep.n_models} models in {elapsed:.2f} s; * p < 0.05")
    if args.out is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        write_frame(table, args.out / "classical.csv")
        figures = {
            "ctt_correlation.png": lambda: plot_correlation_heatmap(
                table, "ctt_r", title="CTT: human facility vs LM key probability (T*); * p < 0.05"
            ),
            "theta0_correlation.png": lambda: plot_correlation_heatmap(
                table, "theta0_r", title="IRT: NAEP 3PL P(theta = 0) vs LM key probability (T*); * p < 0.05"
            ),
            "kl.png": lambda: plot_kl(table),
            "temperature.png": lambda: plot_temperatures(table),
        }
        written = 0
        for name, draw in figures.items():
            if name.endswith("correlation.png"):
                metric = "ctt_r" if name.startswith("ctt") else "theta0_r"
                if not (table["metric"] == metric).any():
                    print(f"skipped {name}: no {metric} values (too few items per subset)")
                    continue
            ax = draw()
            ax.figure.tight_layout()
            with atomic_path(args.out / name) as temporary:
                ax.figure.savefig(temporary, dpi=120)
            plt.close(ax.figure)
            written += 1
        print(f"wrote {args.out / 'classical.csv'} and {written} figures")
    return 0


def _subset_view(table: pd.DataFrame, subset: str, metrics) -> pd.DataFrame:
    """One subset as a model x metric table; correlations starred where p < 0.05."""
    part = table.loc[(table["subset"] == subset) & table["metric"].isin(metrics)]
    models = list(dict.fromkeys(part["model"]))
    value = part.pivot(index="model", columns="metric", values="value").reindex(index=models, columns=list(metrics))
    p_value = part.pivot(index="model", columns="metric", values="p_value").reindex(index=models, columns=list(metrics))
    text = value.map(lambda v: "" if pd.isna(v) else f"{v:.3f}")
    stars = p_value.lt(0.05)
    for column in ("ctt_r", "theta0_r"):
        if column in text:
            text[column] = text[column] + np.where(stars[column], "*", "")
    return text


def _run_naep_alignment(args: argparse.Namespace) -> int:
    from bayes_align.naep import load_naep
    from bayes_align.naep_alignment import naep_alignment

    if args.likelihood == "nominal" and args.irt == "3pl":
        raise ValueError("--likelihood nominal supports --irt 1pl or 2pl")
    for name, value in (("--human-n", args.human_n), ("--model-n", args.model_n)):
        if not np.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be a positive effective sample size, got {value}")
    if args.out is not None:
        check_output_folder(
            args.out, ("naep_alignment.csv",), inputs=[args.data], overwrite=args.overwrite
        )
    naep = load_naep(args.data, subjects=args.subject)
    subset = None if args.grade is None else f"{args.subject}-{args.grade}"
    if subset is None and naep.n_subsets != 1:
        raise ValueError(
            f"subject {args.subject!r} has subsets {list(naep.subsets)}; pass --grade"
        )
    start, cpu = time.perf_counter(), time.process_time()
    result = naep_alignment(
        naep, subset, human_n=args.human_n, model_n=args.model_n,
        temperature=args.temperature, method=args.method, irt=args.irt,
        likelihood=args.likelihood, seed=args.seed, progress_bar=True,
    )  # fmt: skip
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    ranking, data = result.ranking, result.data
    with pd.option_context("display.width", 200, "display.precision", 3):
        print(ranking.to_string(index=False))
    print(
        f"\n{data.n_items} items x {data.n_groups} groups, {args.likelihood} likelihood, "
        f"{args.method.upper()} in {elapsed:.1f} s "
        f"({cpu:.1f} s CPU); "
        f"alignment = posterior Pearson r of item difficulties (human vs LM), 90% interval"
    )
    if args.out is not None:
        write_frame(ranking, args.out / "naep_alignment.csv")
        print(f"wrote {args.out / 'naep_alignment.csv'}")
    return 0
