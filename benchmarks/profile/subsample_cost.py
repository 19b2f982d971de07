"""Cost of drawing SVI minibatch indices: NumPyro's plate subsampling vs alternatives.

    python -m benchmarks.profile.subsample_cost [n_obs] [batch]

On CPU ``numpyro.plate(..., subsample_size=B)`` draws its indices with a Fisher-Yates
shuffle written as a ``lax.scan`` of ``B`` sequential steps (numpyro/primitives.py,
``_subsample_fn``), which is paid on every SVI step.
"""

from __future__ import annotations

import sys
import time

import jax
import jax.numpy as jnp
from numpyro.primitives import _subsample_fn


def _time(fn, key, repeat=3) -> float:
    jax.block_until_ready(fn(key))
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(key))
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv: list[str]) -> None:
    n = int(float(argv[0])) if argv else 2_500_000
    b = int(float(argv[1])) if len(argv) > 1 else 250_000
    key = jax.random.PRNGKey(0)
    numpyro_fn = jax.jit(lambda k: _subsample_fn(n, b, k))
    randint = jax.jit(lambda k: jax.random.randint(k, (b,), 0, n))
    perm = jax.jit(lambda k: jax.random.permutation(k, n)[:b])
    # the gather a step needs anyway (2 int32 index arrays + response, n_obs long)
    data = jnp.arange(n, dtype=jnp.int32)
    gather = jax.jit(lambda k: data[jax.random.randint(k, (b,), 0, n)])
    rows = [
        ("numpyro plate subsample (Fisher-Yates scan)", _time(numpyro_fn, key)),
        ("jax.random.permutation(n)[:B]", _time(perm, key)),
        ("jax.random.randint (with replacement)", _time(randint, key)),
        ("randint + one gather of an n_obs array", _time(gather, key)),
    ]
    base = rows[0][1]
    print(f"n_obs = {n:,}, minibatch = {b:,}, backend = {jax.default_backend()}")
    print()
    print("| index draw | s per SVI step | speed-up vs numpyro plate |")
    print("| --- | --- | --- |")
    for label, t in rows:
        print(f"| {label} | {t:.4f} | {base / t:.0f}x |")


if __name__ == "__main__":
    main(sys.argv[1:])
