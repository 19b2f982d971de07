"""Speed of the classical NAEP table: vectorised ``bayes_align.classical`` vs a
straightforward per-item pandas / PyTorch implementation of the same numbers.

The straightforward version is how such analyses are usually written: per-row
``DataFrame.apply`` for the order-averaged softmax, KL, TV, key probabilities and
accuracy, ``groupby().apply(scipy.stats.pearsonr)`` for the correlations, and per
(subset, model) group a ``scipy.optimize.minimize_scalar`` of the PyTorch mean-KL loss for
the temperature (the *same* objective as ``optimize_temperature``). The script checks that
both give the same numbers before it reports the ratio.

The original study fitted each temperature with a PyTorch Adam loop (lr 0.01, stop after
100 steps without improvement); that is far slower still, so it is timed separately on
``--adam-problems`` (subset, model) problems (``adam_temperature``).

Usage::

    python benchmarks/classical_speed.py --data ../shared/data/naep-llm [--repeats 3]
    python benchmarks/classical_speed.py --data ../shared/data/naep-llm --bayes   # NUTS vs SVI

``--bayes`` also times the aggregated-data Bayesian fit (economics, 93 items x 19 groups)
by NUTS and SVI.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import scipy.special
import scipy.stats

from bayes_align.classical import classical_table
from bayes_align.naep import load_naep


def adam_temperature(logits: np.ndarray, human: np.ndarray, max_steps: int = 10_000) -> tuple[float, int]:
    """The original study's temperature fit: PyTorch Adam (lr 0.01) from T = 1, stopping
    after 100 steps without improvement (or at ``max_steps``). Returns (T, steps)."""
    import torch

    logits_t = torch.tensor(logits)
    human_t = torch.tensor(human)
    temperature = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.Adam([temperature], lr=0.01)
    best, since, steps = float("inf"), 0, 0
    while since <= 100 and steps < max_steps:
        steps += 1
        optimizer.zero_grad()
        probs = torch.softmax(logits_t / temperature, dim=-1).mean(dim=-2)
        loss = torch.nn.functional.kl_div(probs.log(), human_t, reduction="batchmean")
        loss.backward()
        optimizer.step()
        if loss.item() < best - 1e-12:
            best, since = loss.item(), 0
        else:
            since += 1
    return temperature.item(), steps


def straightforward_table(naep) -> pd.DataFrame:
    """Per-item pandas / PyTorch implementation of ``classical_table`` (same metrics).

    Temperature: per (subset, model) group, ``scipy.optimize.minimize_scalar`` (bounded,
    on log T in [log 0.01, log 1000], xatol 1e-8) of the PyTorch mean-KL loss.
    """
    import torch
    from scipy import optimize

    rows = naep.rows.reset_index(drop=True)
    frames = []
    for m, model in enumerate(naep.models):
        df = rows[["subset", "item_id", "key"]].copy()
        df["model"] = model
        df["logits"] = list(naep.logits[m])
        df["human"] = list(naep.human_probs)
        frames.append(df)
    data = pd.concat(frames, ignore_index=True)
    data["model_probs"] = data["logits"].apply(lambda z: scipy.special.softmax(z, axis=1).mean(axis=0))

    def fit_temperature(group: pd.DataFrame) -> float:
        logits = torch.tensor(np.stack(group["logits"].to_numpy()))
        human = torch.tensor(np.stack(group["human"].to_numpy()))

        def loss(log_t: float) -> float:
            probs = torch.softmax(logits / float(np.exp(log_t)), dim=-1).mean(dim=-2)
            return torch.nn.functional.kl_div(probs.log(), human, reduction="batchmean").item()

        res = optimize.minimize_scalar(
            loss, bounds=(np.log(1e-2), np.log(1e3)), method="bounded", options={"xatol": 1e-8}
        )
        return float(np.exp(res.x))

    temps = data.groupby(["subset", "model"], sort=False).apply(fit_temperature, include_groups=False)
    data["temperature"] = [temps[(s, m)] for s, m in zip(data["subset"], data["model"], strict=True)]
    data["opt_probs"] = data.apply(
        lambda r: scipy.special.softmax(r["logits"] / r["temperature"], axis=1).mean(axis=0), axis=1
    )
    data["kl"] = data.apply(lambda r: scipy.stats.entropy(r["human"], r["model_probs"]), axis=1)
    data["kl_optimized"] = data.apply(lambda r: scipy.stats.entropy(r["human"], r["opt_probs"]), axis=1)
    data["tv"] = data.apply(lambda r: 0.5 * np.abs(r["human"] - r["model_probs"]).sum(), axis=1)
    data["tv_optimized"] = data.apply(lambda r: 0.5 * np.abs(r["human"] - r["opt_probs"]).sum(), axis=1)
    data["accuracy"] = data.apply(lambda r: float(np.argmax(r["model_probs"]) == r["key"]), axis=1)
    data["human_key"] = data.apply(lambda r: r["human"][r["key"]], axis=1)
    data["opt_key"] = data.apply(lambda r: r["opt_probs"][r["key"]], axis=1)
    data["raw_key"] = data.apply(lambda r: r["model_probs"][r["key"]], axis=1)
    theta0 = pd.Series(naep.theta0_prob(), index=rows["subset"] + "|" + rows["item_id"])
    data["theta0"] = (data["subset"] + "|" + data["item_id"]).map(theta0)

    out = []
    means = data.groupby(["subset", "model"], sort=False)[
        ["temperature", "kl", "kl_optimized", "tv", "tv_optimized", "accuracy"]
    ].mean()
    for metric in means.columns:
        part = means[metric].reset_index().rename(columns={metric: "value"})
        out.append(part.assign(metric=metric, p_value=np.nan))
    lms = data[~data["model"].str.endswith("Baseline")]
    for metric, col, ref in (
        ("ctt_r", "opt_key", "human_key"),
        ("ctt_r_raw", "raw_key", "human_key"),
        ("theta0_r", "opt_key", "theta0"),
    ):
        res = lms.groupby(["subset", "model"], sort=False).apply(
            lambda g, col=col, ref=ref: pd.Series(
                scipy.stats.pearsonr(g.loc[g[ref].notna(), col], g.loc[g[ref].notna(), ref])[:2],
                index=["value", "p_value"],
            ),
            include_groups=False,
        )
        out.append(res.reset_index().assign(metric=metric))
    return pd.concat(out, ignore_index=True)


def _compare(fast: pd.DataFrame, slow: pd.DataFrame) -> pd.DataFrame:
    keys = ["subset", "model", "metric"]
    merged = fast.merge(slow, on=keys, suffixes=("_fast", "_slow"))
    # all-zero logits: every temperature is optimal (we return 1), so no comparison
    merged = merged[~((merged["model"] == "UniformBaseline") & (merged["metric"] == "temperature"))]
    merged["abs_diff"] = (merged["value_fast"] - merged["value_slow"]).abs()
    merged["rel_diff"] = merged["abs_diff"] / merged["value_slow"].abs().clip(lower=1e-12)
    return merged


def _time(fn, repeats: int) -> tuple[float, float, object]:
    """Best wall time and best CPU time (process_time, all threads) over ``repeats`` runs.

    CPU time is reported too because a shared machine inflates wall time.
    """
    best, best_cpu, result = float("inf"), float("inf"), None
    for _ in range(repeats):
        start, cpu = time.perf_counter(), time.process_time()
        result = fn()
        best = min(best, time.perf_counter() - start)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    return best, best_cpu, result


def bench_classical(folder: str, repeats: int, adam_problems: int = 2) -> None:
    naep = load_naep(folder)
    print(f"{naep.n_rows} item rows x {naep.n_models} models, subsets {list(naep.subsets)}")
    t_fast, cpu_fast, fast = _time(lambda: classical_table(naep), repeats)
    t_slow, cpu_slow, slow = _time(lambda: straightforward_table(naep), 1)
    merged = _compare(fast, slow)
    accuracy = merged["metric"] == "accuracy"
    summary = merged.groupby("metric")[["abs_diff", "rel_diff"]].max()
    print(summary.to_string(float_format=lambda v: f"{v:.2e}"))
    opt_kl = merged[merged["metric"] == "kl_optimized"]
    print(
        "straightforward KL at its T minus vectorised KL at T*: min "
        f"{(opt_kl['value_slow'] - opt_kl['value_fast']).min():.2e} (>= 0 up to rounding: T* is the minimiser)"
    )
    exact = merged[~merged["metric"].isin(["temperature", "kl_optimized", "tv_optimized", "ctt_r", "theta0_r"]) & ~accuracy]
    assert exact["abs_diff"].max() < 1e-9, "T = 1 metrics must agree to float precision"
    for label, (subset, model) in enumerate(
        [("economics-12", "Phi-4-14B"), ("history-8", "Qwen2.5-72B"), ("history-4", "Llama-3.2-1B")][:adam_problems]
    ):
        part = naep.select([subset], [model])
        start, cpu = time.perf_counter(), time.process_time()
        t_adam, steps = adam_temperature(part.logits[0], part.human_probs)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        t_star = fast.loc[(fast["subset"] == subset) & (fast["model"] == model) & (fast["metric"] == "temperature"), "value"].item()
        print(f"Adam problem {label + 1} ({subset}, {model}): T = {t_adam:.4f} after {steps} steps "
              f"(T* = {t_star:.4f}) in {wall:.2f} s wall, {cpu:.2f} s CPU")
    print(f"\nvectorised classical_table: {t_fast:.3f} s wall, {cpu_fast:.3f} s CPU (best of {repeats})")
    print(f"straightforward pandas/PyTorch: {t_slow:.1f} s wall, {cpu_slow:.1f} s CPU")
    print(f"ratio: {t_slow / t_fast:.0f}x wall, {cpu_slow / cpu_fast:.0f}x CPU")


def bench_bayes(folder: str) -> None:
    from bayes_align import fit_aggregated
    from bayes_align.aggregated import AggregatedData
    from bayes_align.classical import optimize_temperature

    naep = load_naep(folder, "economics")
    naep = naep.select(models=naep.language_models)
    temps = optimize_temperature(naep.logits, naep.human_probs)
    data = AggregatedData.from_naep(naep, human_n=2000, model_n=100, temperature=temps)
    print(f"\naggregated fit: {data.n_items} items x {data.n_groups} groups ({data.n_rows} rows)")
    for method, kwargs in (
        ("svi", {"draws": 1000}),
        ("nuts", {"chains": 2, "warmup": 500, "draws": 500}),
    ):
        start, cpu = time.perf_counter(), time.process_time()
        fit = fit_aggregated(data, method=method, irt="1pl", **kwargs)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        extra = ""
        if method == "nuts":
            extra = f", divergences {int(fit.idata.sample_stats['diverging'].sum())}"
        print(f"{method}: {wall:.1f} s wall, {cpu:.1f} s CPU ({kwargs}){extra}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--bayes", action="store_true", help="also time NUTS vs SVI")
    parser.add_argument("--adam-problems", type=int, default=2, help="time the Adam loop on this many problems")
    args = parser.parse_args()
    bench_classical(args.data, args.repeats, args.adam_problems)
    if args.bayes:
        bench_bayes(args.data)


if __name__ == "__main__":
    main()
