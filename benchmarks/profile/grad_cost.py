"""Cost of one log-density gradient, bayes_align's model vs variants of the likelihood.

Run: python -m benchmarks.profile.grad_cost [W1|W2|W3] [--quick]

The NUTS cost is (number of gradients) x (cost of one gradient) + the sampler's own
per-step overhead; this script isolates the second term and compares it with patched
likelihoods that compute the same log-density (checked to agree to float32 precision).
"""

from __future__ import annotations

import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.infer.util import initialize_model

from bayes_align.model.joint import irt_model, sample_parameters
from benchmarks.workloads import make_workload, model_kwargs


def _time(fn, x, repeat: int) -> float:
    out = fn(x)
    jax.block_until_ready(out)
    best = []
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(repeat):
            out = fn(x)
        jax.block_until_ready(out)
        best.append((time.perf_counter() - t0) / repeat)
    return min(best)


def fast_log_lik(params, person_idx, item_idx, flat_shift_idx, response):
    """Same 2PL + DIF log-likelihood with one softplus and no log/exp round trip."""
    n_items = params["difficulty"].shape[-1]
    zero_row = jnp.zeros((1, n_items), dtype=params["difficulty"].dtype)
    shift_flat = jnp.concatenate([params["dif_shift"], zero_row], axis=0).reshape(-1)
    b = params["difficulty"][item_idx] + shift_flat[flat_shift_idx]
    eta = params["discrimination"][item_idx] * (params["theta"][person_idx] - b)
    return response * eta - jax.nn.softplus(eta)


def main(argv: list[str]) -> None:
    name = argv[0] if argv else "W2"
    mode = "quick" if "--quick" in argv else "full"
    wl = make_workload(name, mode)
    kwargs = model_kwargs(wl.data)
    inputs = kwargs["inputs"]
    info = initialize_model(jax.random.PRNGKey(0), irt_model, model_kwargs=kwargs)
    pe = info.potential_fn
    x0 = info.param_info.z
    grad_ours = jax.jit(jax.value_and_grad(pe))
    repeat = 200 if wl.data.n_obs < 200_000 else 10

    # patched: same priors, faster likelihood
    import numpyro
    import numpyro.distributions as dist

    focal_row = jnp.asarray(inputs.focal_row)
    row = np.asarray(inputs.focal_row)[inputs.group_idx]
    flat_idx = jnp.asarray(row * inputs.n_items + inputs.item_idx, dtype=jnp.int32)
    pidx, iidx = jnp.asarray(inputs.person_idx), jnp.asarray(inputs.item_idx)
    resp = jnp.asarray(inputs.response)
    del focal_row

    def patched_model(inputs, spec, priors, subsample_size=None):
        params = sample_parameters(inputs, spec, priors)
        numpyro.factor("y", jnp.sum(fast_log_lik(params, pidx, iidx, flat_idx, resp)))

    info2 = initialize_model(
        jax.random.PRNGKey(0), patched_model, model_kwargs=kwargs
    )
    grad_fast = jax.jit(jax.value_and_grad(info2.potential_fn))
    v1, g1 = grad_ours(x0)
    v2, g2 = grad_fast(x0)
    rel = max(
        float(jnp.max(jnp.abs(g1[k] - g2[k])) / (jnp.max(jnp.abs(g1[k])) + 1e-6)) for k in g1
    )
    t_ours = _time(grad_ours, x0, repeat)
    t_fast = _time(grad_fast, x0, repeat)
    print(f"{name} ({wl.shape}); device {jax.devices()[0]}")
    print(f"potential: ours {float(v1):.3f} patched {float(v2):.3f}; max rel grad diff {rel:.1e}")
    print("| likelihood | s per gradient | ratio vs ours |")
    print("| --- | --- | --- |")
    print(f"| bayes_align.model (current) | {t_ours * 1e3:.3f} ms | 1.00 |")
    print(f"| one softplus, flat DIF index, no log/exp | {t_fast * 1e3:.3f} ms | {t_ours / t_fast:.2f} |")
    _ = dist


if __name__ == "__main__":
    main(sys.argv[1:])
