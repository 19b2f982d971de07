"""bayes_align against its peers, same model, same data, same machine, one process run.

    python benchmarks/run.py --quick              # minutes, small sizes (used by a test)
    python benchmarks/run.py --full               # the README numbers
    python benchmarks/run.py --full --workloads W2,W3 --tools ours   # e.g. on a GPU box

NUTS workloads (W1, W2): bayes_align vs Stan (pystan), PyMC (its NUTS) and nutpie, all on
the multi-group 2PL with the normal DIF shift of DESIGN.md. SVI workloads (W2, W3):
bayes_align vs py-irt on the no-DIF 2PL (py-irt has no DIF), plus bayes_align's DIF model.

ESS is ArviZ's bulk ESS for every tool (same estimator); "min ESS" is the minimum over the
item parameters (difficulty, discrimination, dif_shift). Posterior agreement is
``max |mean_tool - mean_ours| / sd_ours`` over the same parameters, and the largest
Monte-Carlo z-score ``|mean_tool - mean_ours| / sqrt(mcse_tool^2 + mcse_ours^2)``.
Output: a Markdown report (stdout and ``--out``) and the raw numbers as JSON (``--json``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import warnings
from pathlib import Path

# ``python benchmarks/run.py`` puts benchmarks/ on the path, not the repository root
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _early_xla_flags(argv: list[str]) -> None:
    """``--ours-chain-method parallel`` needs one XLA host device per chain, set before
    JAX is imported."""
    wanted = []
    for flag in ("--ours-chain-method", "--ours-variants"):
        if flag in argv:
            wanted += argv[argv.index(flag) + 1].split(",")
    if "parallel" in wanted:
        n = 4
        if "--chains" in argv:
            n = int(argv[argv.index("--chains") + 1])
        flags = os.environ.get("XLA_FLAGS", "")
        if "xla_force_host_platform_device_count" not in flags:
            os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={n}".strip()


_early_xla_flags(sys.argv)
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import numpy as np  # noqa: E402

ITEM_VARS = ("difficulty", "discrimination", "dif_shift")

#: when set, every finished tool is appended here as one JSON line (survives a killed run)
PARTIAL_LOG: Path | None = None


def _partial(workload: str, key: str, result: dict) -> None:
    if PARTIAL_LOG is None:
        return
    row = {"workload": workload, "key": key}
    for k, v in result.items():
        if k in ("draws", "means", "elbo"):
            continue
        row[k] = v
    if "draws" in result:
        try:
            row["min_ess"] = ess_summary(result["draws"])
        except Exception as err:  # pragma: no cover - diagnostics only
            row["min_ess_error"] = repr(err)
    with open(PARTIAL_LOG, "a") as fh:
        fh.write(json.dumps(row, default=float) + "\n")

# chains, draws, warmup per mode; SVI settings per mode
SETTINGS = {
    "quick": {"chains": 2, "draws": 200, "warmup": 200, "svi_budget_s": 60.0, "svi_draws": 100,
              "svi_max_steps": 10_000},
    "full": {"chains": 4, "draws": 1000, "warmup": 1000, "svi_budget_s": 600.0, "svi_draws": 200,
             "svi_max_steps": 10_000},
}


# ----------------------------------------------------------------------------- machine
def machine_info() -> dict[str, str]:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 0
    gpu = "none"
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
        if out.returncode == 0 and out.stdout.strip():
            gpu = out.stdout.strip().replace("\n", "; ")
    except (OSError, subprocess.SubprocessError):
        pass
    import jax

    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    return {
        "cpu": cpu,
        "cores": str(cores),
        "gpu": gpu,
        "jax_backend": f"{jax.default_backend()} ({jax.devices()[0].device_kind})",
        "python": platform.python_version(),
        "load_at_start": f"{load:.1f}",
    }


def versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for name in ("bayes_align", "jax", "numpyro", "arviz", "pystan", "httpstan", "pymc",
                 "pytensor", "nutpie", "py-irt", "pyro-ppl", "torch"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def peer_available(tool: str) -> bool:
    from importlib.util import find_spec

    module = {"stan": "stan", "pymc": "pymc", "nutpie": "nutpie", "pyirt": "py_irt"}[tool]
    return find_spec(module) is not None


# ----------------------------------------------------------------------------- metrics
def _dataset(draws: dict[str, np.ndarray]):
    import arviz as az

    return az.convert_to_dataset({k: v for k, v in draws.items() if k in ITEM_VARS})


def ess_summary(draws: dict[str, np.ndarray]) -> float:
    import arviz as az

    ess = az.ess(_dataset(draws), method="bulk")
    return float(min(float(ess[v].min()) for v in ess.data_vars))


def agreement(draws: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> tuple[float, float]:
    """(max |mean diff| / ref sd, max MCSE z) over the item parameters both have."""
    import arviz as az

    common = [k for k in ITEM_VARS if k in draws and k in ref]
    a, b = _dataset({k: draws[k] for k in common}), _dataset({k: ref[k] for k in common})
    mcse_a, mcse_b = az.mcse(a, method="mean"), az.mcse(b, method="mean")
    worst_sd, worst_z = 0.0, 0.0
    for k in common:
        ma, mb = draws[k].mean(axis=(0, 1)), ref[k].mean(axis=(0, 1))
        sd = ref[k].std(axis=(0, 1))
        diff = np.abs(ma - mb)
        worst_sd = max(worst_sd, float(np.max(diff / np.maximum(sd, 1e-12))))
        se = np.sqrt(mcse_a[k].values ** 2 + mcse_b[k].values ** 2)
        worst_z = max(worst_z, float(np.max(diff / np.maximum(se, 1e-12))))
    return worst_sd, worst_z


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.ravel(a), np.ravel(b)
    return float(np.corrcoef(a, b)[0, 1])


# ----------------------------------------------------------------------------- ours
class CompileTimer:
    """Sum of the tracing, lowering and XLA compile durations JAX reports inside a block."""

    _active: list[CompileTimer] = []
    _registered = False

    def __init__(self) -> None:
        self.seconds = 0.0
        self.count = 0

    @classmethod
    def _listener(cls, event: str, duration: float, **kwargs) -> None:
        if not event.startswith("/jax/core/compile/"):
            return
        for timer in cls._active:
            timer.seconds += duration
            timer.count += "backend_compile" in event

    def __enter__(self) -> CompileTimer:
        import jax.monitoring

        if not CompileTimer._registered:
            jax.monitoring.register_event_duration_secs_listener(CompileTimer._listener)
            CompileTimer._registered = True
        CompileTimer._active.append(self)
        return self

    def __exit__(self, *exc) -> None:
        CompileTimer._active.remove(self)


def _default_chain_method(chains: int) -> str:
    from bayes_align.infer.util import default_chain_method as default

    return default(chains)


def ours_nuts(data, dif: bool, chains: int, draws: int, warmup: int, seed: int,
              chain_method: str | None, **options) -> dict:
    import bayes_align as ba

    kwargs = dict(
        model="2pl",
        dif="normal" if dif else "none",
        method="nuts",
        chains=chains,
        seed=seed,
        progress_bar=False,
        log_likelihood=False,
        check=False,
        **options,
    )
    if chain_method:
        kwargs["chain_method"] = chain_method
    # JAX reports its tracing / lowering / XLA compile durations; they are the setup,
    # the rest of the fit's wall time is sampling (warm-up included)
    with CompileTimer() as timer:
        full = ba.fit(data, draws=draws, warmup=warmup, **kwargs)
    post = full.idata.posterior
    out = {
        "difficulty": post["difficulty"].transpose("chain", "draw", "item").values,
        "discrimination": post["discrimination"].transpose("chain", "draw", "item").values,
    }
    if dif:
        out["dif_shift"] = post["dif_shift"].transpose("chain", "draw", "focal_group", "item").values
    stats = full.idata.sample_stats
    setup = min(timer.seconds, float(full.seconds))
    return {
        "tool": "bayes_align (NumPyro NUTS)",
        "draws": out,
        "setup_s": setup,
        "sample_s": max(float(full.seconds) - setup, 1e-9),
        "total_fit_s": float(full.seconds),
        "divergences": int(stats["diverging"].sum()),
        "chain_method": chain_method or f"default ({_default_chain_method(chains)})",
        "compilations": timer.count,
        "mean_tree_depth": float(stats["tree_depth"].mean()),
        "grads": int(stats["n_steps"].sum()),
    }


def ours_svi(data, dif: bool, seed: int, draws: int, **options) -> dict:
    import bayes_align as ba

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        fit = ba.fit(
            data,
            model="2pl",
            dif="normal" if dif else "none",
            method="svi",
            draws=draws,
            seed=seed,
            progress_bar=False,
            log_likelihood=False,
            **options,
        )
        wall = time.perf_counter() - t0
    post = fit.idata.posterior
    means = {k: post[k].mean(("chain", "draw")).values for k in
             ("difficulty", "discrimination", "theta")}
    n_steps = int(len(fit.elbo))
    max_steps = options.get("max_steps", 20_000)
    return {
        "tool": "bayes_align SVI" + (" (DIF model)" if dif else " (no DIF)"),
        "means": means,
        "run_s": float(fit.seconds),
        "wall_s": wall,
        "steps": n_steps,
        "converged": n_steps < max_steps,
        "time_at_tol": float(fit.seconds) if n_steps < max_steps else None,
        "s_per_step": float(fit.seconds) / max(n_steps, 1),
        "options": {k: str(v) for k, v in options.items()},
    }


# ----------------------------------------------------------------------------- runs
def run_nuts_workload(wl, tools: list[str], s: dict, seed: int, variants: list[str],
                      log) -> dict:
    from benchmarks.peers import pymc_peer, stan_peer

    chains, draws, warmup = s["chains"], s["draws"], s["warmup"]
    results: dict[str, dict] = {}
    for i, variant in enumerate(variants):
        log(f"[{wl.name}] ours NUTS {variant} ({chains} x {warmup}+{draws})")
        cm = None if variant == "default" else variant
        key = "ours" if i == 0 else f"ours_{variant}"
        results[key] = ours_nuts(wl.data, True, chains, draws, warmup, seed, cm)
        _partial(wl.name, key, results[key])
    peers = {
        "stan": stan_peer.fit_stan,
        "nutpie": pymc_peer.fit_nutpie,
        "pymc": pymc_peer.fit_pymc,
    }
    for tool, fn in peers.items():
        if tool not in tools:
            continue
        if not peer_available(tool):
            log(f"[{wl.name}] {tool} is not installed; skipped")
            continue
        log(f"[{wl.name}] {tool}")
        try:
            r = fn(wl.data, dif=True, chains=chains, draws=draws, warmup=warmup, seed=seed)
        except Exception as err:  # a peer failing must not lose the rest of the run
            log(f"[{wl.name}] {tool} failed: {err!r}")
            results[tool] = {"tool": tool, "error": repr(err)}
            continue
        results[tool] = {
            "tool": r.tool,
            "draws": r.draws,
            "setup_s": r.setup_s,
            "sample_s": r.sample_s,
            "divergences": r.divergences,
            "chain_method": r.chain_method,
            "grads": r.extra.get("grads"),
        }
        _partial(wl.name, tool, results[tool])
    ref = results["ours"]["draws"]
    for _tool, r in results.items():
        if "draws" not in r:
            continue
        r["min_ess"] = ess_summary(r["draws"])
        r["ess_per_s"] = r["min_ess"] / r["sample_s"]
        r["ess_per_s_e2e"] = r["min_ess"] / (r["sample_s"] + r["setup_s"])
        r["agree_sd"], r["agree_z"] = agreement(r["draws"], ref)
    if wl.truth:
        for r in results.values():
            if "draws" in r:
                r["corr_truth_difficulty"] = _corr(
                    r["draws"]["difficulty"].mean((0, 1)), wl.truth["difficulty"]
                )
    return results


def run_svi_workload(wl, tools: list[str], s: dict, seed: int, log,
                     nuts_ref: dict | None = None) -> dict:
    results: dict[str, dict] = {}
    n = wl.data.n_obs
    tuned = {"learning_rate": 0.05, "max_steps": s["svi_max_steps"]}
    if n > 200_000:
        tuned["minibatch_size"] = 50_000
    label = ", ".join(f"{k}={v}" for k, v in tuned.items() if k != "max_steps")
    variants = [
        ("ours", False, {"max_steps": s["svi_max_steps"]}, "defaults"),
        ("ours_tuned", False, tuned, label),
        ("ours_dif", True, tuned, label),
    ]
    for key, dif, opts, desc in variants:
        if s.get("svi_variants") and key not in s["svi_variants"]:
            continue
        log(f"[{wl.name}] ours SVI dif={dif} {opts}")
        r = ours_svi(wl.data, dif, seed, s["svi_draws"], **opts)
        r["tool"] = f"bayes_align SVI ({desc})"
        results[key] = r
        _partial(wl.name, key, r)
    if "pyirt" in tools:
        if peer_available("pyirt"):
            from benchmarks.peers.pyirt_peer import fit_pyirt

            log(f"[{wl.name}] py-irt (budget {s['svi_budget_s']:.0f} s)")
            results["pyirt"] = fit_pyirt(wl.data, time_budget_s=s["svi_budget_s"], seed=seed)
            results["pyirt"].pop("elbo", None)
            _partial(wl.name, "pyirt", results["pyirt"])
        else:
            log(f"[{wl.name}] py-irt is not installed; skipped")
    for r in results.values():
        m = r["means"]
        if wl.truth:
            for k in ("difficulty", "discrimination", "theta"):
                r[f"corr_truth_{k}"] = _corr(m[k], wl.truth[k])
        if nuts_ref is not None:
            for k in ("difficulty", "discrimination"):
                r[f"corr_nuts_{k}"] = _corr(m[k], nuts_ref[k].mean((0, 1)))
        r.pop("means")
    return results


# ----------------------------------------------------------------------------- report
def _f(x, fmt="{:.1f}") -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "-"
    return fmt.format(x)


def nuts_table(results: dict) -> str:
    ours = results["ours"]
    lines = [
        "| tool | chains run as | setup s | sampling s | min bulk ESS | ESS/s | ESS/s incl. setup "
        "| gradients / ESS | divergences | max \\|Δmean\\|/sd vs ours | max MCSE z vs ours "
        "| ours/peer ESS/s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for _key, r in results.items():
        if "error" in r:
            lines.append(f"| {r['tool']} | failed: {r['error'][:80]} |" + " |" * 10)
            continue
        ratio = ours["ess_per_s"] / r["ess_per_s"]
        lines.append(
            f"| {r['tool']} | {r['chain_method']} | {_f(r['setup_s'])} | {_f(r['sample_s'])} | "
            f"{_f(r['min_ess'], '{:.0f}')} | {_f(r['ess_per_s'], '{:.2f}')} | "
            f"{_f(r['ess_per_s_e2e'], '{:.2f}')} | "
            f"{_f(r['grads'] / r['min_ess'] if r.get('grads') else None, '{:.0f}')} | "
            f"{r['divergences']} | "
            f"{_f(r['agree_sd'], '{:.3f}')} | {_f(r['agree_z'], '{:.1f}')} | "
            f"{_f(ratio, '{:.2f}')} |"
        )
    ok = [r for r in results.values() if "ess_per_s" in r]
    best_ours = max(r["ess_per_s"] for k, r in results.items() if k.startswith("ours") and k in
                    {kk for kk, rr in results.items() if "ess_per_s" in rr})
    fast_peers = [results[k]["ess_per_s"] for k in ("stan", "nutpie") if k in results
                  and "ess_per_s" in results[k]]
    if fast_peers and ok:
        lines += ["", f"Best bayes_align variant / best of Stan and nutpie (min bulk ESS/s): "
                  f"**{best_ours / max(fast_peers):.2f}x** (target >= 2x)."]
    return "\n".join(lines)


def svi_table(results: dict, truth: bool, nuts: bool) -> str:
    head = "| tool | model | steps | converged | time to tol s | s/step |"
    sep = "| --- | --- | --- | --- | --- | --- |"
    if truth:
        head += " r(difficulty, truth) | r(discrimination, truth) | r(theta, truth) |"
        sep += " --- | --- | --- |"
    if nuts:
        head += " r(difficulty, NUTS) | r(discrimination, NUTS) |"
        sep += " --- | --- |"
    lines = [head, sep]
    for key, r in results.items():
        model = "2PL + normal DIF" if key == "ours_dif" else "2PL, no DIF"
        conv = "yes" if r["converged"] else f"no ({r.get('stopped', 'max_steps')})"
        row = (
            f"| {r['tool']} | {model} | {r['steps']} | {conv} | "
            f"{_f(r['time_at_tol'])} | {_f(r['s_per_step'], '{:.4f}')} |"
        )
        if truth:
            row += "".join(
                f" {_f(r.get(f'corr_truth_{k}'), '{:.3f}')} |"
                for k in ("difficulty", "discrimination", "theta")
            )
        if nuts:
            row += "".join(
                f" {_f(r.get(f'corr_nuts_{k}'), '{:.3f}')} |"
                for k in ("difficulty", "discrimination")
            )
        lines.append(row)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="small sizes (minutes)")
    mode.add_argument("--full", action="store_true", help="README sizes (default)")
    parser.add_argument("--workloads", default="W1,W2,W3")
    parser.add_argument("--tools", default="ours,stan,nutpie,pymc,pyirt")
    parser.add_argument("--chains", type=int)
    parser.add_argument("--draws", type=int)
    parser.add_argument("--warmup", type=int)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--ours-chain-method", default=None,
                        choices=["sequential", "vectorized", "parallel"])
    parser.add_argument("--parts", default="nuts,svi", help="nuts, svi or both")
    parser.add_argument("--ours-variants", default="default,vectorized",
                        help="chain methods for our NUTS rows; the first is the reference")
    parser.add_argument("--svi-variants", default="ours,ours_tuned,ours_dif",
                        help="which of our SVI rows to run (ours = defaults)")
    parser.add_argument("--svi-budget", type=float, help="py-irt time budget, seconds")
    parser.add_argument("--out", type=Path, help="write the Markdown report here")
    parser.add_argument("--json", type=Path, help="write the raw numbers here")
    args = parser.parse_args(argv)

    mode_name = "quick" if args.quick else "full"
    s = dict(SETTINGS[mode_name])
    for k in ("chains", "draws", "warmup"):
        if getattr(args, k) is not None:
            s[k] = getattr(args, k)
    global PARTIAL_LOG
    if args.json:
        PARTIAL_LOG = args.json.with_suffix(".partial.jsonl")
    s["svi_variants"] = [v.strip() for v in args.svi_variants.split(",") if v.strip()]
    if args.svi_budget is not None:
        s["svi_budget_s"] = args.svi_budget
    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]

    def log(msg: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)

    from benchmarks.workloads import make_workload

    info = machine_info()
    report = [
        f"# bayes_align vs peers ({mode_name} run, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})",
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores, GPU: {info['gpu']}; JAX backend "
        f"{info['jax_backend']}; load average at start {info['load_at_start']}.",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()),
        "",
        f"NUTS: {s['chains']} chains x {s['warmup']} warm-up + {s['draws']} draws for every tool; "
        "each tool runs its chains its own default way (column 'chains run as').",
        "",
    ]
    raw: dict[str, dict] = {"machine": info, "settings": s}
    t_start = time.perf_counter()
    nuts_refs: dict[str, dict] = {}
    for name in workloads:
        wl = make_workload(name, mode_name, seed=args.seed)
        log(f"{name}: {wl.shape}")
        if name in ("W1", "W2") and "nuts" in args.parts:
            variants = [v.strip() for v in args.ours_variants.split(",") if v.strip()]
            if args.ours_chain_method:
                variants = [args.ours_chain_method]
            res = run_nuts_workload(wl, tools, s, args.seed, variants, log)
            nuts_refs[name] = res["ours"]["draws"]
            report += [f"## {name} NUTS: {wl.description} ({wl.shape})", "", nuts_table(res), ""]
            raw[f"{name}_nuts"] = {
                k: {kk: vv for kk, vv in v.items() if kk != "draws"} for k, v in res.items()
            }
        if name in ("W2", "W3") and "svi" in args.parts:
            res = run_svi_workload(wl, tools, s, args.seed, log, nuts_ref=nuts_refs.get(name))
            report += [
                f"## {name} SVI: {wl.description} ({wl.shape})",
                "",
                svi_table(res, truth=bool(wl.truth), nuts=name in nuts_refs),
                "",
            ]
            raw[f"{name}_svi"] = res
    report.append(f"Total benchmark wall time: {time.perf_counter() - t_start:.0f} s.")
    text = "\n".join(report) + "\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(raw, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
