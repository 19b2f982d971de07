"""``bayes-align score``: an LM's answer distributions for items (label log-probs, a
sequence of answers, a stated distribution, or sampled answers), with persona or
few-shot steering, through any backend of the model YAML."""

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
    parser.add_argument(
        "--method", default="logprobs",
        choices=["logprobs", "sequence", "verbalized", "generate", "logits"],
        help="expression method: label log-probs, N answers in one completion, a stated "
        "distribution, or one sampled answer per completion (generate); logits = logprobs",
    )
    parser.add_argument(
        "--steering", default=None, choices=["none", "persona", "few_shot"],
        help="default: few_shot with --few-shot-shares, persona with --personas, else none",
    )
    parser.add_argument(
        "--few-shot-shares", default=None,
        help="few_shot: CSV of item, group, option, share (or count) [, attribute]",
    )
    parser.add_argument(
        "--few-shot-items", default=None, help="few_shot: items of those shares (default: --items)"
    )
    parser.add_argument(
        "--similarity", default=None, help="few_shot: JSON {item: [similar items, best first]}"
    )
    parser.add_argument("--k", type=int, default=5, help="few_shot: similar questions shown")
    parser.add_argument(
        "--n-samples", type=int, default=None,
        help="sequence: answers per completion (default 30); generate: samples per persona (1)",
    )
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (0: greedy)")
    parser.add_argument(
        "--max-new-tokens", type=int, default=None,
        help="completion length (default: generate 8, sequence 2N+16, verbalized 10K+24)",
    )
    parser.add_argument(
        "--table", default="prompts", choices=["prompts", "options"],
        help="write one row per prompt, or the long (item, persona, option) table",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(handler=_score)


SCORE_SUFFIXES = (".parquet", ".jsonl", ".csv", ".json")


def _check_paths(args: argparse.Namespace) -> Path:
    """Refuse a bad --out or a foreign --cache before the LM is loaded."""
    from bayes_align.files import check_output
    from bayes_align.scoring.cache import check_cache_file

    inputs = [args.model, args.items, args.template, args.personas, args.cache]
    if args.cache is not None:
        check_cache_file(args.cache)
    return check_output(
        args.out, inputs=inputs, overwrite=args.overwrite, suffixes=SCORE_SUFFIXES
    )


def _few_shot(args: argparse.Namespace):
    """FewShot from --few-shot-shares (+ --few-shot-items, --similarity, --k), or None."""
    import json

    import pandas as pd

    from bayes_align.scoring import FewShot, load_items

    if args.few_shot_shares is None:
        for flag in ("few_shot_items", "similarity"):
            if getattr(args, flag) is not None:
                raise ValueError(f"--{flag.replace('_', '-')} needs --few-shot-shares.")
        return None
    shares = pd.read_csv(args.few_shot_shares, dtype={"item": str, "group": str, "attribute": str},
                         keep_default_na=False)
    similarity = None
    if args.similarity is not None:
        similarity = json.loads(Path(args.similarity).read_text(encoding="utf-8"))
    pool = load_items(args.few_shot_items or args.items)
    return FewShot(pool, shares, k=args.k, similarity=similarity)


def _score(args: argparse.Namespace) -> int:
    from bayes_align.files import write_frame
    from bayes_align.scoring import generate, load_backend, load_lm, load_personas, score
    from bayes_align.scoring.responses import option_probabilities, option_table

    out = _check_paths(args)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    method = "logprobs" if args.method == "logits" else args.method
    lm = load_lm(args.model) if method == "generate" else load_backend(args.model)
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
    if method == "generate":
        frame = generate(
            **common,
            n_samples=args.n_samples or 1,
            temperature=args.temperature,
            max_new_tokens=args.max_new_tokens or 8,
            seed=args.seed,
        )
        summary = f"parse failures: {frame['choice'].isna().mean():.1%}"
    elif method != "logprobs":
        frame = score(
            **common, method=method, steering=args.steering, few_shot=_few_shot(args),
            n_samples=args.n_samples or 30, temperature=args.temperature,
            max_tokens=args.max_new_tokens, seed=args.seed,
        )
        summary = "parse status " + ", ".join(
            f"{k} {v}" for k, v in sorted(frame.attrs["parse_status_counts"].items())
        )
    else:
        frame = score(**common, steering=args.steering, few_shot=_few_shot(args))
        probs = option_probabilities(frame)
        summary = f"mean label mass {frame['label_mass'].mean():.3f}"
        keyed = probs["key"].notna()
        if keyed.any():
            p_key = [p[int(k)] for p, k in zip(probs["probs"][keyed], probs["key"][keyed], strict=True)]
            summary += f", mean P(key) {sum(p_key) / len(p_key):.3f}"
    if args.table == "options":
        if method == "generate":
            raise ValueError("--table options needs a distribution method, not --method generate.")
        frame = option_table(frame)
    write_frame(frame, out)
    print(f"{lm.name}: {len(frame)} rows ({summary}) -> {out}")
    return 0
