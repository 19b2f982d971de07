"""Tuning study for bayes_align's NUTS and SVI, through ``fit``'s own arguments.

    python benchmarks/tune.py nuts W1          # chain method, tree depth, target_accept, float64
    python benchmarks/tune.py dense W1         # dense vs diagonal mass (NumPyro directly)
    python benchmarks/tune.py svi W3 [--quick] # SVI minibatch size and learning rate
    python benchmarks/tune.py grad W2          # one gradient of the potential: 1 chain vs 4 vmapped
    python benchmarks/tune.py compile W1       # XLA compilations of a first and a second fit

Every variant runs in this one process, interleaved, and is reported as min bulk ESS/s
over the item parameters (NUTS) or time to the ELBO tolerance (SVI), with its ratio to
the default. The machine is shared: only ratios from one run mean anything.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
# one XLA CPU device per chain so that chain_method="parallel" can be measured
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
    ).strip()

import numpy as np  # noqa: E402

from benchmarks.run import _corr, ess_summary, ours_nuts, ours_svi  # noqa: E402
from benchmarks.workloads import make_workload  # noqa: E402


def nuts_study(name: str, mode: str, chains=4, draws=500, warmup=500) -> None:
    wl = make_workload(name, mode)
    variants = [
        ("sequential", {"chain_method": "sequential"}),
        ("vectorized", {"chain_method": "vectorized"}),
        ("parallel (4 XLA host devices)", {"chain_method": "parallel"}),
        ("vectorized, max_tree_depth=8", {"chain_method": "vectorized", "max_tree_depth": 8}),
        ("vectorized, target_accept=0.8", {"chain_method": "vectorized", "target_accept": 0.8}),
        ("vectorized, target_accept=0.95", {"chain_method": "vectorized", "target_accept": 0.95}),
        ("vectorized, float64", {"chain_method": "vectorized", "float64": True}),
    ]
    print(f"## NUTS tuning on {name} ({wl.shape}), {chains} x {warmup}+{draws}")
    print()
    print("| variant | compile s | sampling s | gradients | mean tree depth | min bulk ESS "
          "| ESS/s | vs sequential |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    base = None
    for label, opts in variants:
        opts = dict(opts)
        cm = opts.pop("chain_method")
        r = ours_nuts(wl.data, True, chains, draws, warmup, 1, cm, **opts)
        ess = ess_summary(r["draws"])
        rate = ess / r["sample_s"]
        base = base or rate
        print(f"| {label} | {r['setup_s']:.1f} | {r['sample_s']:.1f} | {r['grads']} | "
              f"{r['mean_tree_depth']:.2f} | {ess:.0f} | {rate:.2f} | {rate / base:.2f} |",
              flush=True)


def dense_study(name: str, mode: str, chains=4, draws=500, warmup=500) -> None:
    """dense_mass is not an argument of fit: run NumPyro's NUTS on irt_model directly."""
    import jax
    from numpyro.infer import MCMC, NUTS, init_to_uniform

    from bayes_align.model.joint import irt_model
    from benchmarks.workloads import model_kwargs

    wl = make_workload(name, mode)
    kwargs = model_kwargs(wl.data)
    print(f"## Mass matrix on {name} ({wl.shape}), {chains} x {warmup}+{draws}, vectorized")
    print()
    print("| mass matrix | wall s (incl. compile) | gradients | min bulk ESS | ESS/s | vs diagonal |")
    print("| --- | --- | --- | --- | --- | --- |")
    base = None
    for dense in (False, True):
        kernel = NUTS(irt_model, target_accept_prob=0.85, dense_mass=dense,
                      init_strategy=init_to_uniform(radius=1.0))
        mcmc = MCMC(kernel, num_warmup=warmup, num_samples=draws, num_chains=chains,
                    chain_method="vectorized", progress_bar=False)
        t0 = time.perf_counter()
        mcmc.run(jax.random.PRNGKey(1), **kwargs, extra_fields=("num_steps",))
        s = mcmc.get_samples(group_by_chain=True)
        wall = time.perf_counter() - t0
        draws_ = {k: np.asarray(s[k]) for k in ("difficulty", "discrimination", "dif_shift")}
        ess = ess_summary(draws_)
        steps = int(np.asarray(mcmc.get_extra_fields()["num_steps"]).sum())
        rate = ess / wall
        base = base or rate
        print(f"| {'dense' if dense else 'diagonal'} | {wall:.1f} | {steps} | {ess:.0f} | "
              f"{rate:.2f} | {rate / base:.2f} |", flush=True)


def svi_study(name: str, mode: str) -> None:
    wl = make_workload(name, mode)
    n = wl.data.n_obs
    variants = [
        ("default (auto minibatch, lr 0.01)", {}),
        ("full batch, lr 0.01", {"minibatch_size": None}),
        ("minibatch 50k, lr 0.01", {"minibatch_size": min(50_000, n // 2)}),
        ("auto minibatch, lr 0.05", {"learning_rate": 0.05}),
        ("auto minibatch, lr 0.002", {"learning_rate": 0.002}),
    ]
    print(f"## SVI tuning on {name} ({wl.shape}), no-DIF 2PL")
    print()
    print("| variant | steps | converged | time to tol s | s/step | r(difficulty, truth) "
          "| r(discrimination, truth) | r(theta, truth) | vs default time |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    base = None
    for label, opts in variants:
        r = ours_svi(wl.data, False, 1, 100, **opts)
        m = r["means"]
        base = base or r["run_s"]
        print(f"| {label} | {r['steps']} | {r['converged']} | {r['run_s']:.1f} | "
              f"{r['s_per_step']:.4f} | {_corr(m['difficulty'], wl.truth['difficulty']):.3f} | "
              f"{_corr(m['discrimination'], wl.truth['discrimination']):.3f} | "
              f"{_corr(m['theta'], wl.truth['theta']):.3f} | {base / r['run_s']:.2f} |",
              flush=True)


def grad_study(name: str, mode: str, rounds: int = 10) -> None:
    """Time one jitted value-and-gradient of the potential (no sampler), one chain and
    four chains under ``jax.vmap`` (what ``chain_method="vectorized"`` evaluates), for the
    model as it is and with ``jax.nn.softplus`` in place of ``model.irt.softplus``.
    Variants are timed round-robin, best of ``rounds``, so load drift hits all alike."""
    import jax
    import jax.numpy as jnp
    from numpyro.infer.util import initialize_model

    from bayes_align.model import distributions
    from bayes_align.model.joint import irt_model
    from benchmarks.workloads import model_kwargs

    wl = make_workload(name, mode)
    fns = {}
    fast = distributions.softplus
    for label, softplus in (("irt.softplus", fast), ("jax.nn.softplus", jax.nn.softplus)):
        distributions.softplus = softplus
        jax.clear_caches()
        for irt in ("2pl", "1pl"):
            info = initialize_model(jax.random.PRNGKey(0), irt_model,
                                    model_kwargs=model_kwargs(wl.data, irt))
            pe, x1 = info.potential_fn, info.param_info.z
            x4 = jax.tree.map(lambda v: jnp.stack([v + 0.01 * i for i in range(4)]), x1)
            g1 = jax.jit(jax.value_and_grad(pe))
            g4 = jax.jit(jax.vmap(jax.value_and_grad(pe)))
            jax.block_until_ready((g1(x1), g4(x4)))  # compile now, with this softplus
            fns[(irt, label)] = (g1, x1, g4, x4)
    distributions.softplus = fast
    best = {k: [float("inf"), float("inf")] for k in fns}
    for _ in range(rounds):
        for k, (g1, x1, g4, x4) in fns.items():
            for j, (f, x, reps) in enumerate(((g1, x1, 20), (g4, x4, 8))):
                t0 = time.perf_counter()
                for _ in range(reps):
                    out = f(x)
                jax.block_until_ready(out)
                best[k][j] = min(best[k][j], (time.perf_counter() - t0) / reps)
    print(f"## One value-and-gradient of the potential, {name} ({wl.shape}), float32")
    print()
    print("| model | softplus | 1 chain ms | 4 chains vmapped ms | vmapped / (4 x 1 chain) |")
    print("| --- | --- | --- | --- | --- |")
    for (irt, label), (t1, t4) in best.items():
        print(f"| {irt} | {label} | {t1 * 1e3:.3f} | {t4 * 1e3:.3f} | {t4 / (4 * t1):.2f} |")


def compile_study(name: str, mode: str) -> None:
    """XLA compilations and compile seconds of a first and a second short fit (other data,
    same shapes) in this process (jax.monitoring)."""
    import bayes_align as ba
    from bayes_align.data import ResponseData
    from benchmarks.run import CompileTimer

    wl = make_workload(name, mode)
    d = wl.data
    other = ResponseData.from_indices(  # same shapes, other values: every response flipped
        person_idx=d.person_idx, item_idx=d.item_idx, person_group=d.person_group,
        response=1.0 - d.response, persons=d.persons, items=d.items, groups=d.groups,
        reference_group=d.reference_group, kind="binary", warn=False)
    print(f"## Compilations per fit, {name} ({wl.shape}), 4 vectorized chains x 10 + 10")
    print()
    print("| fit | XLA compilations | trace + lower + compile s | wall s |")
    print("| --- | --- | --- | --- |")
    for label, data in (("first fit", d), ("second fit, other data, same shapes", other)):
        t0 = time.perf_counter()
        with CompileTimer() as timer:
            # vectorized: this script gives JAX 4 host devices, which would pick parallel
            ba.fit(data, draws=10, warmup=10, chains=4, chain_method="vectorized",
                   progress_bar=False, log_likelihood=False, check=False)
        print(f"| {label} | {timer.count} | {timer.seconds:.1f} | "
              f"{time.perf_counter() - t0:.1f} |", flush=True)


if __name__ == "__main__":
    study, name = sys.argv[1], sys.argv[2]
    mode = "quick" if "--quick" in sys.argv else "full"
    {"nuts": nuts_study, "dense": dense_study, "svi": svi_study, "grad": grad_study,
     "compile": compile_study}[study](name, mode)
