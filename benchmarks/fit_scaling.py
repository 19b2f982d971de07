"""How fitting scales with the number of observations (NUTS, SVI).

For 1e4, 1e5 and 1e6 observations (2PL with normal DIF, 3 groups, 50 items, every
person answers every item) it measures

* NUTS: wall time (compilation included) and the smallest bulk ESS per second over all
  stored parameters (item, DIF, group and person parameters);
* SVI (AutoNormal, minibatches above 2e5 observations): wall time and steps until the
  smoothed ELBO converges, and the correlation of posterior-mean difficulties with truth;
* optionally (--chain-methods) sequential versus vectorized NUTS chains at the smallest size.

Prints a Markdown table with the CPU, core count, JAX backend and load average.

    python benchmarks/fit_scaling.py            # full run (NUTS up to 1e5)
    python benchmarks/fit_scaling.py --quick    # 1e4 only, short chains
    python benchmarks/fit_scaling.py --sizes 1e4 --methods nuts --chain-methods --host-devices 2
"""

from __future__ import annotations

import argparse
import os
import platform
import warnings


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1e4 observations, short chains")
    parser.add_argument("--sizes", type=float, nargs="*", default=None)
    parser.add_argument("--nuts-max", type=float, default=1e5, help="largest size run with NUTS")
    parser.add_argument("--chains", type=int, default=2)
    parser.add_argument("--draws", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--items", type=int, default=50)
    parser.add_argument("--chain-methods", action="store_true",
                        help="also compare sequential and vectorized chains at the smallest size")
    parser.add_argument("--host-devices", type=int, default=0,
                        help="split the CPU into this many XLA devices first (parallel chains)")
    parser.add_argument("--methods", nargs="*", default=["svi", "nuts"])
    args = parser.parse_args(argv)
    if args.host_devices:
        import numpyro  # must run before JAX initialises its backend

        numpyro.set_host_device_count(args.host_devices)

    import jax
    import numpy as np

    from bayes_align import fit, simulate
    from bayes_align.diagnostics import min_ess_per_second

    sizes = args.sizes or ([1e4] if args.quick else [1e4, 1e5, 1e6])
    draws, warmup = (200, 200) if args.quick else (args.draws, args.warmup)
    rows = []
    for size in sizes:
        n_obs = int(size)
        n_persons = max(n_obs // args.items, 6)
        data, truth = simulate(n_persons=n_persons, n_items=args.items, n_dif_items=8, seed=0)
        methods = [m for m in args.methods if m == "svi" or size <= args.nuts_max]
        chain_methods = [None]
        if args.chain_methods and size == sizes[0]:
            chain_methods = ["sequential", "vectorized"] + (["parallel"] if args.host_devices else [])
        for method in methods:
            for chain_method in chain_methods if method == "nuts" else [None]:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    options = {}
                    if method == "nuts":
                        options = dict(chains=args.chains, draws=draws, warmup=warmup)
                        if chain_method:
                            options["chain_method"] = chain_method
                    result = fit(data, method=method, progress_bar=False, log_likelihood=False,
                                 **options)
                post_b = result.posterior["difficulty"].mean(("chain", "draw")).to_numpy()
                r = float(np.corrcoef(post_b, truth["difficulty"])[0, 1])
                row = {
                    "n_obs": data.n_obs,
                    "persons": data.n_persons,
                    "method": method + (f" ({chain_method})" if chain_method else ""),
                    "seconds": result.seconds,
                    "r_difficulty": r,
                }
                if method == "nuts":
                    row["min_ess_per_s"] = min_ess_per_second(result.idata, result.seconds)
                    row["detail"] = (
                        f"{args.chains}x{draws} draws, {warmup} warmup, "
                        f"min bulk ESS {result.diagnostics.min_ess_bulk:.0f}, "
                        f"{result.diagnostics.n_divergent} divergences"
                    )
                else:
                    steps = len(result.elbo)
                    row["min_ess_per_s"] = float("nan")
                    minibatch = "minibatch" if data.n_obs > 200_000 else "full batch"
                    row["detail"] = f"{steps} steps to ELBO convergence, {minibatch}"
                rows.append(row)
                print(row, flush=True)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print()
    print(
        f"CPU: {_cpu_model()}, {os.cpu_count()} cores; JAX {jax.__version__} backend "
        f"{jax.default_backend()} ({jax.device_count()} device); load average {load:.1f}"
    )
    print()
    print("| observations | persons | method | wall time (s) | min bulk ESS/s | r(difficulty, truth) | notes |")
    print("| ---: | ---: | --- | ---: | ---: | ---: | --- |")
    for row in rows:
        ess = "" if np.isnan(row["min_ess_per_s"]) else f"{row['min_ess_per_s']:.1f}"
        print(
            f"| {row['n_obs']:,} | {row['persons']:,} | {row['method']} | {row['seconds']:.1f} "
            f"| {ess} | {row['r_difficulty']:.3f} | {row['detail']} |"
        )
    if max(sizes) > args.nuts_max:
        print(f"\nNUTS was not run above {args.nuts_max:.0e} observations (too slow on this CPU).")


if __name__ == "__main__":
    main()
