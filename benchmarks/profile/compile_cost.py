"""Where bayes_align's NUTS wall time goes: JAX tracing/compilation vs sampling.

    python -m benchmarks.profile.compile_cost W1 [--quick] [--short] [--chain-method vectorized]

Run it under different ``XLA_FLAGS`` (e.g. ``--xla_backend_optimization_level=0``) to see
how much of the compile is LLVM optimisation and what it costs at run time.

Registers a ``jax.monitoring`` listener and sums the durations JAX reports for tracing,
lowering and XLA backend compilation during ``fit``, for a tiny fit (5 + 5 iterations)
and a real one, and lists the largest compilations.
"""

from __future__ import annotations

import collections
import sys
import time

import jax
import jax.monitoring

from benchmarks.workloads import make_workload

EVENTS: collections.Counter = collections.Counter()
COUNTS: collections.Counter = collections.Counter()


def _listener(event: str, duration: float, **kwargs) -> None:
    EVENTS[event] += duration
    COUNTS[event] += 1


def main(argv: list[str]) -> None:
    import bayes_align as ba

    name = argv[0] if argv else "W1"
    mode = "quick" if "--quick" in argv else "full"
    cm = argv[argv.index("--chain-method") + 1] if "--chain-method" in argv else None
    wl = make_workload(name, mode)
    jax.monitoring.register_event_duration_secs_listener(_listener)
    kw = dict(model="2pl", dif="normal", chains=4, progress_bar=False, log_likelihood=False,
              check=False)
    if cm:
        kw["chain_method"] = cm
    print(f"{name} ({wl.shape}), chain_method={cm or 'default'}, jax {jax.__version__}")
    print()
    print("| fit | wall s | trace s | lower s | XLA compile s | compilations | rest (sampling) s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    runs = [("first tiny fit (5+5)", 5), ("second tiny fit (5+5)", 5), ("fit 500+500", 500)]
    if "--short" in argv:  # one real fit only
        runs = [("fit 300+300", 300)]
    for label, n in runs:
        EVENTS.clear()
        COUNTS.clear()
        t0 = time.perf_counter()
        ba.fit(wl.data, draws=n, warmup=n, **kw)
        wall = time.perf_counter() - t0
        trace = sum(v for k, v in EVENTS.items() if "trace" in k)
        lower = sum(v for k, v in EVENTS.items() if "lower" in k or "mlir" in k)
        comp = sum(v for k, v in EVENTS.items() if "backend_compile" in k)
        n_comp = sum(v for k, v in COUNTS.items() if "backend_compile" in k)
        print(f"| {label} | {wall:.1f} | {trace:.1f} | {lower:.1f} | {comp:.1f} | {n_comp} | "
              f"{wall - trace - lower - comp:.1f} |", flush=True)
    print()
    print("JAX events in the last fit (seconds, count):")
    for k, v in sorted(EVENTS.items(), key=lambda kv: -kv[1])[:12]:
        print(f"- {k}: {v:.2f} s ({COUNTS[k]})")


if __name__ == "__main__":
    main(sys.argv[1:])
