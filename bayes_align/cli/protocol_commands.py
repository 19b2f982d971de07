"""``bayes-align protocol controls | stability`` and ``bayes-align finetune``.

``protocol controls`` adds the control populations (:func:`bayes_align.protocol.controls`)
to long-format responses, fits everything jointly and writes the control table, the
alignment table, a figure and the fit. ``protocol stability`` runs the sample-size study
(:func:`bayes_align.protocol.sample_size_study`). ``finetune`` trains LoRA adapters on
human answer shares (:func:`bayes_align.finetune.finetune`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bayes_align.cli.responses import add_response_arguments, read_response_data
from bayes_align.files import atomic_path, check_output_folder, write_frame

CONTROLS_FILES = ("controls.csv", "alignment.csv", "controls.png", "fit.nc")
STABILITY_FILES = (
    "sample_size.csv",
    "sample_size_summary.csv",
    "sample_size_full.csv",
    "timings.csv",
    "sample_size.png",
)


def register(subparsers: argparse._SubParsersAction) -> None:
    protocol = subparsers.add_parser(
        "protocol",
        help="validate an alignment study: control populations, stability against sample size",
        description=(
            "The psychometric-alignment protocol: 'controls' ranks every group between "
            "control populations built from the human data; 'stability' refits with the "
            "human sample subsampled to several sizes."
        ),
    )
    commands = protocol.add_subparsers(dest="protocol_command", required=True)
    _register_controls(commands)
    _register_stability(commands)
    for command in commands.choices.values():
        # the common options are added to top-level commands only; SUPPRESS keeps one
        # given before the subcommand name
        command.add_argument(
            "--overwrite", action="store_true", default=argparse.SUPPRESS,
            help="replace output files that exist",
        )  # fmt: skip
        command.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS,
            help="show the Python traceback of an error",
        )  # fmt: skip
    _register_finetune(subparsers)


# ----------------------------------------------------------------------------- parsers
def _add_data_arguments(parser: argparse.ArgumentParser) -> None:
    add_response_arguments(parser)
    parser.add_argument(
        "--model", choices=("1pl", "2pl", "3pl", "grm"), default=None,
        help="IRT model (default: grm for ordinal data, 2pl otherwise)",
    )  # fmt: skip
    parser.add_argument("--dif", choices=("normal", "horseshoe"), default="normal")
    parser.add_argument("--prob", type=float, default=0.9, help="HDI mass (default 0.9)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _register_controls(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "controls",
        help="fit the groups jointly with control populations and rank them between the controls",
        description=(
            "Add control populations built from the reference group (split_half: half the "
            "reference persons as a focal group; shuffled: reference persons with their "
            "answers permuted across items; random: uniformly random answers) and optionally "
            "an ensemble of LM groups, fit everything jointly and write controls.csv, "
            "alignment.csv, controls.png and fit.nc to --out."
        ),
    )
    _add_data_arguments(parser)
    parser.add_argument(
        "--kinds", nargs="+", choices=("split_half", "shuffled", "random"),
        default=["split_half", "shuffled", "random"], help="control populations to add",
    )  # fmt: skip
    parser.add_argument("--size", type=int, default=None, help="persons per control group")
    parser.add_argument(
        "--ensemble", nargs="+", default=None, metavar="GROUP",
        help="also pool these LM groups in equal shares into a group lm:ensemble",
    )  # fmt: skip
    parser.add_argument(
        "--items", nargs="+", default=None, metavar="ITEM",
        help="compute alignment on these items only (e.g. held-out items)",
    )  # fmt: skip
    parser.add_argument(
        "--metric", choices=("pearson", "spearman", "dif_scale", "invariant_share"),
        default="pearson", help="metric of the control table",
    )  # fmt: skip
    parser.add_argument("--method", choices=("nuts", "svi"), default="nuts")
    parser.add_argument("--chains", type=int, default=4, help="NUTS chains")
    parser.add_argument("--draws", type=int, default=1000, help="posterior draws (per chain)")
    parser.add_argument("--warmup", type=int, default=1000, help="NUTS warmup iterations")
    parser.set_defaults(handler=_run_controls)


def _register_stability(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "stability",
        help="alignment against the number of human respondents (subsample and refit)",
        description=(
            "Subsample the reference group to each --sizes value --reps times (focal groups "
            "kept), refit and record posterior and classical alignment; writes "
            "sample_size.csv, sample_size_summary.csv, sample_size_full.csv, timings.csv "
            "and sample_size.png to --out."
        ),
    )
    _add_data_arguments(parser)
    parser.add_argument(
        "--sizes", nargs="+", type=int, default=[50, 100, 150, 300],
        help="reference sizes (each at most the reference's persons)",
    )  # fmt: skip
    parser.add_argument("--reps", type=int, default=10, help="replicates per size")
    parser.add_argument(
        "--method", choices=("nuts", "svi"), default="nuts",
        help="nuts (default); svi is faster but its intervals are too narrow at small sizes",
    )  # fmt: skip
    parser.add_argument("--chains", type=int, default=2, help="NUTS chains per replicate")
    parser.add_argument("--draws", type=int, default=500, help="posterior draws (per chain)")
    parser.add_argument("--warmup", type=int, default=500, help="NUTS warmup iterations")
    parser.add_argument(
        "--no-classical", action="store_true", help="skip the classical separate-fit r"
    )
    parser.set_defaults(handler=_run_stability)


def _register_finetune(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "finetune",
        help="train LoRA adapters so that an LM answers like the human targets",
        description=(
            "Fine-tune an LM (LoRA) so that its option distribution for each (item, "
            "persona) matches the human answer shares of the persona's group "
            "(soft-label cross-entropy over the option labels, option orders cycled as in "
            "scoring), on the training items only, with early stopping on held-out training "
            "items. Writes the adapter (peft format), training.json and model.yaml (the "
            "model YAML with 'adapter: .', for 'bayes-align score --model') to --out. "
            "Rerunning with the same arguments resumes from the last checkpoint."
        ),
    )
    parser.add_argument("--model", type=Path, required=True, help="model YAML (see models/)")
    parser.add_argument("--items", type=Path, required=True, help="items (.jsonl or .csv)")
    parser.add_argument(
        "--targets", type=Path, required=True,
        help="shares.csv: item, option (0-based), share, optionally persona or group",
    )  # fmt: skip
    parser.add_argument("--template", type=Path, default=None, help="prompt template YAML")
    parser.add_argument("--personas", type=Path, default=None, help="personas YAML")
    parser.add_argument(
        "--train-items", nargs="+", default=None, metavar="ITEM",
        help="item ids to train on, or one file with an id per line (default: all with targets)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, required=True, help="adapter folder")
    parser.add_argument("--steps", type=int, default=200, help="at most this many steps")
    parser.add_argument("--lr", type=float, default=1e-3, help="learning rate (AdamW)")
    parser.add_argument("--batch-size", type=int, default=8, help="prompts per step")
    parser.add_argument("--rank", type=int, default=8, help="LoRA rank")
    parser.add_argument("--alpha", type=float, default=16.0, help="LoRA alpha")
    parser.add_argument("--dropout", type=float, default=0.0, help="LoRA dropout")
    parser.add_argument(
        "--target-modules", nargs="+", default=None,
        help="module names that get adapters (default: every linear projection, "
        "q/k/v/o_proj and gate/up/down_proj)",
    )  # fmt: skip
    parser.add_argument(
        "--validation-share", type=float, default=0.2,
        help="share of the training items held out for early stopping (0: none)",
    )  # fmt: skip
    parser.add_argument(
        "--autocast", choices=("bfloat16", "float16"), default=None,
        help="mixed precision for the training steps (evaluations stay in the model's dtype)",
    )  # fmt: skip
    parser.add_argument(
        "--attention", choices=("eager", "sdpa"), default=None,
        help="attention implementation while training (default: the model's own)",
    )  # fmt: skip
    parser.add_argument("--eval-every", type=int, default=10, help="steps between evaluations")
    parser.add_argument("--patience", type=int, default=5, help="evaluations without improvement")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(handler=_run_finetune)


# ----------------------------------------------------------------------------- handlers
def _run_controls(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import bayes_align as ba
    from bayes_align import protocol

    out = check_output_folder(
        args.out, CONTROLS_FILES, inputs=[args.responses], overwrite=args.overwrite
    )
    data = protocol.controls(read_response_data(args), kinds=args.kinds, size=args.size, seed=args.seed)
    if args.ensemble:
        data = protocol.lm_ensemble(data, args.ensemble, size=args.size, seed=args.seed)
    print(data)
    model = args.model or ("grm" if data.kind == "ordinal" else "2pl")
    fitted = ba.fit(
        data, model=model, dif=args.dif, method=args.method, chains=args.chains,
        draws=args.draws, warmup=args.warmup, seed=args.seed, progress_bar=not args.quiet,
    )  # fmt: skip
    fitted.to_netcdf(out / "fit.nc")
    table = protocol.control_table(fitted, metric=args.metric, prob=args.prob, items=args.items)
    write_frame(table, out / "controls.csv")
    write_frame(ba.alignment(fitted, prob=args.prob, items=args.items).table, out / "alignment.csv")
    figure = protocol.plot_control_table(table, metric=args.metric)
    with atomic_path(out / "controls.png") as tmp:
        figure.savefig(tmp, dpi=150)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"wrote {', '.join(CONTROLS_FILES)} to {out}")
    return 0


def _run_stability(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    from bayes_align import protocol

    out = check_output_folder(
        args.out, STABILITY_FILES, inputs=[args.responses], overwrite=args.overwrite
    )
    data = read_response_data(args)
    print(data)
    study = protocol.sample_size_study(
        data, sizes=args.sizes, reps=args.reps, method=args.method, seed=args.seed,
        model=args.model, dif=args.dif, prob=args.prob, classical=not args.no_classical,
        progress=not args.quiet, draws=args.draws,
        **({"chains": args.chains, "warmup": args.warmup} if args.method == "nuts" else {}),
    )  # fmt: skip
    summary = study.summary()
    for name, frame in zip(
        STABILITY_FILES[:4], (study.table, summary, study.full, study.timings), strict=True
    ):
        write_frame(frame, out / name)
    with atomic_path(out / "sample_size.png") as tmp:
        study.plot().savefig(tmp, dpi=150)
    print(summary.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"{study.replicates_per_minute:.1f} replicates per minute")
    print(f"wrote {', '.join(STABILITY_FILES)} to {out}")
    return 0


def _train_items(values: list[str] | None) -> list[str] | None:
    if values and len(values) == 1 and Path(values[0]).is_file():
        text = Path(values[0]).read_text(encoding="utf-8")
        return [line.strip() for line in text.splitlines() if line.strip()]
    return values


def _run_finetune(args: argparse.Namespace) -> int:
    from bayes_align.finetune import finetune

    result = finetune(
        args.model, args.items, args.targets, template=args.template, personas=args.personas,
        train_items=_train_items(args.train_items), out=args.out, progress=not args.quiet,
        threads=args.threads, steps=args.steps, learning_rate=args.lr,
        batch_size=args.batch_size, rank=args.rank, alpha=args.alpha, dropout=args.dropout,
        validation_share=args.validation_share,
        **({"target_modules": tuple(args.target_modules)} if args.target_modules else {}),
        eval_every=args.eval_every, patience=args.patience, seed=args.seed,
        autocast=args.autocast, attention=args.attention,
    )  # fmt: skip
    print(result.history.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    how = "stopped early" if result.stopped_early else "ran"
    print(
        f"{how} {result.steps_run} steps; kept the adapter of step {result.best_step} "
        f"(lowest validation loss) in {result.out}; score with --model {result.model_yaml}"
    )
    return 0
