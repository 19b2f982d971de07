"""Scoring throughput: the batched pipeline of ``bayes_align.scoring.score`` against a
one-prompt-at-a-time loop, same model, same prompts, same process, same thread count.

The loop is what a straightforward implementation does: tokenize one prompt, run the
model on it (all positions' logits), read the last position's label logits. The batched
pipeline without prefix sharing sorts prompts by length, pads them into batches and
computes only the last position's logits; the default pipeline (``share_prefix=True``)
also packs the option orders of each (item, persona) into one prefix tree, so the
header, persona preamble and stem are computed once per group and the run-wide prefix
once per run (``bayes_align/scoring/prefix.py``).

Both wall-clock time and process CPU time (all threads) are reported: on a shared
machine CPU time is the steadier measure of the work done.

    python benchmarks/scoring_throughput.py --threads 2 --items 12 [--personas 4] [--debias full]

Uses the NAEP economics items from ../shared/data/naep-llm when present, else built-in
synthetic items; the model is models/smollm2-135m-instruct.yaml.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
NAEP = ROOT.parent / "shared" / "data" / "naep-llm"


def _items(n: int):
    from bayes_align.scoring import Item, load_items

    path = NAEP / "items" / "naep-economics-items.jsonl"
    if path.is_file():
        return load_items(path)[:n], "NAEP economics"
    rng = np.random.default_rng(0)
    words = "price market demand supply trade growth labour capital tax income".split()
    items = []
    for i in range(n):
        stem = " ".join(rng.choice(words, size=int(rng.integers(10, 60)))) + "?"
        options = tuple(" ".join(rng.choice(words, size=int(rng.integers(1, 8)))) for _ in range(4))
        items.append(Item(f"s{i}", stem, options, key=0))
    return items, "synthetic"


def _personas(n: int):
    """``n`` personas from a grid of age x gender x region (none for 0)."""
    if n == 0:
        return None
    from bayes_align.scoring import persona_grid

    grid = persona_grid(
        "You are a {age}-year-old {gender} student from the {region} of the United States.",
        age=[13, 17], gender=["female", "male"], region=["Northeast", "Midwest", "South", "West"],
    )
    if n > len(grid):
        raise SystemExit(f"--personas at most {len(grid)}")
    return grid[:n]


def _timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=12)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1, help="round-robin repeats; best is kept")
    parser.add_argument(
        "--batch-sizes", default="auto,16", help="comma list; 'auto' is score's default"
    )
    parser.add_argument("--debias", default="cyclic", choices=["cyclic", "full", "none"])
    parser.add_argument(
        "--personas", type=int, default=0, help="show every item to this many personas (0: none)"
    )
    parser.add_argument(
        "--no-share-prefix", action="store_true", help="skip the share_prefix=True rows"
    )
    parser.add_argument("--model", default=str(ROOT / "models" / "smollm2-135m-instruct.yaml"))
    args = parser.parse_args()

    import torch

    from bayes_align.scoring import load_lm, load_template, score
    from bayes_align.scoring.score import build_requests

    torch.set_num_threads(args.threads)
    lm = load_lm(args.model)
    items, source = _items(args.items)
    template_path = NAEP / "prompt-without-passage.yaml"
    template = load_template(template_path) if template_path.is_file() else load_template({})
    debias = None if args.debias == "none" else args.debias

    # warm-up (first-call allocations) on both paths
    score(lm, items[:1], template, debias=None, progress=False)
    personas = _personas(args.personas)
    requests = build_requests(lm, items, template, personas, debias)
    label_ids = score(lm, items[:1], template, debias=None, progress=False)["label_token_ids"].iloc[0]

    def loop():
        out = []
        with torch.inference_mode():
            for request in requests:
                encoded = lm.tokenizer(request.prompt.text, add_special_tokens=False, return_tensors="pt")
                logits = lm.model(**encoded).logits[0, -1]
                out.append(logits[label_ids].float().numpy())
        return np.asarray(out)

    sizes = [None if b == "auto" else int(b) for b in args.batch_sizes.split(",")]
    pipelines = [("one prompt at a time", 1, None)]
    pipelines += [("batched `score`, no prefix sharing", bs, False) for bs in sizes]
    if not args.no_share_prefix:
        pipelines += [("batched `score`, prefix tree", bs, True) for bs in sizes]

    def run(batch_size, share):
        if share is None:
            return loop()
        frame = score(
            lm, items, template, personas, debias=debias, batch_size=batch_size,
            progress=False, share_prefix=share,
        )
        return np.stack(frame["position_logits"].to_numpy())

    # round-robin repeats; the fastest repeat of each pipeline is reported (as timeit
    # does), which discounts interference from other processes on a shared machine
    best = {}
    outputs = {}
    for _ in range(args.repeats):
        for name, bs, share in pipelines:
            out, wall, cpu = _timed(lambda bs=bs, share=share: run(bs, share))
            outputs[name, bs] = out
            old = best.get((name, bs), (np.inf, np.inf))
            best[name, bs] = (min(old[0], wall), min(old[1], cpu))
    loop_logits = outputs["one prompt at a time", 1]
    n = len(requests)
    rows = []
    for name, bs, share in pipelines:
        diff = None if share is None else np.abs(outputs[name, bs] - loop_logits).max()
        rows.append((name, bs, n, *best[name, bs], diff))

    tokens = np.mean([len(lm.tokenizer(r.prompt.text, add_special_tokens=False)["input_ids"]) for r in requests])
    print(
        f"\nModel {lm.name} ({lm.dtype}, {lm.device}), torch threads {args.threads}, "
        f"{len(items)} {source} items x {len(personas) if personas else 1} personas x "
        f"{n // len(items) // (len(personas) if personas else 1)} option orders = {n} prompts, "
        f"mean {tokens:.0f} tokens per prompt; best of {args.repeats} round-robin repeat(s).\n"
    )
    print("| pipeline | batch size | prompts/s (wall) | speed-up (wall) | CPU s / prompt | speed-up (CPU) | max abs logit diff vs loop |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    base_wall, base_cpu = rows[0][3], rows[0][4]
    for name, bs, count, wall, cpu, diff in rows:
        print(
            f"| {name}{' (default)' if bs is None and 'tree' in name else ''} | {bs or 'auto'} | {count / wall:.2f} | {base_wall / wall:.2f}x | {cpu / count:.3f} | "
            f"{base_cpu / cpu:.2f}x | {'-' if diff is None else f'{diff:.1e}'} |"
        )


if __name__ == "__main__":
    main()
