"""``bayes-align score``: option-label logits (or generated answers) of an LM for items."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "score",
        help="score items with a language model (option-label logits per prompt)",
        description=(
            "Render every (item, persona, option order) prompt, read the LM's next-token "
            "logits of the option labels and write one row per prompt."
        ),
    )
    parser.add_argument("--model", required=True, help="model YAML (e.g. models/smollm2-135m-instruct.yaml)")
    parser.add_argument("--items", required=True, help="items as .jsonl or .csv")
    parser.add_argument("--template", default=None, help="prompt template YAML")
    parser.add_argument("--personas", default=None, help="persona set YAML (grid, table or list)")
    parser.add_argument("--out", required=True, help="output file: .parquet, .jsonl or .csv")
    parser.add_argument(
        "--debias", default="cyclic", choices=["cyclic", "full", "none"], help="option orders"
    )
    parser.add_argument(
        "--batch-size", type=int, default=None,
        help="prompts per forward pass (default: one item x persona group on CPU, 64 on GPU)",
    )
    parser.add_argument("--cache", default=None, help="JSON Lines cache for resuming (default: none)")
    parser.add_argument("--method", default="logits", choices=["logits", "generate"])
    parser.add_argument("--n-samples", type=int, default=1, help="generate: samples per persona")
    parser.add_argument("--temperature", type=float, default=1.0, help="generate: temperature")
    parser.add_argument("--max-new-tokens", type=int, default=8, help="generate: completion length")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(handler=_score)


def _write(frame, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    suffix = out.suffix.lower()
    if suffix == ".parquet":
        frame.to_parquet(out, index=False)
    elif suffix in (".jsonl", ".json"):
        frame.to_json(out, orient="records", lines=True, force_ascii=False)
    elif suffix == ".csv":
        frame.to_csv(out, index=False)
    else:
        raise SystemExit(f"--out must end in .parquet, .jsonl or .csv, got {out.name!r}")


def _score(args: argparse.Namespace) -> int:
    import torch

    from bayes_align.scoring import generate, load_lm, load_personas, score
    from bayes_align.scoring.responses import option_probabilities

    if args.threads:
        torch.set_num_threads(args.threads)
    lm = load_lm(args.model)
    personas = load_personas(args.personas) if args.personas else None
    debias = None if args.debias == "none" else args.debias
    common = dict(
        lm=lm,
        items=args.items,
        template=args.template,
        personas=personas,
        debias=debias,
        cache=args.cache,
        progress=not args.no_progress,
    )
    if args.batch_size is not None:
        common["batch_size"] = args.batch_size
    if args.method == "generate":
        frame = generate(
            **common,
            n_samples=args.n_samples,
            temperature=args.temperature,
            max_new_tokens=args.max_new_tokens,
            seed=args.seed,
        )
        summary = f"parse failures: {frame['choice'].isna().mean():.1%}"
    else:
        frame = score(**common)
        probs = option_probabilities(frame)
        summary = f"mean label mass {frame['label_mass'].mean():.3f}"
        keyed = probs["key"].notna()
        if keyed.any():
            p_key = [p[int(k)] for p, k in zip(probs["probs"][keyed], probs["key"][keyed], strict=True)]
            summary += f", mean P(key) {sum(p_key) / len(p_key):.3f}"
    out = Path(args.out)
    _write(frame, out)
    print(f"{lm.name}: {len(frame)} rows ({summary}) -> {out}")
    return 0
