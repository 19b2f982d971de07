"""NUTS: NumPyro's kernel driven by two compiled programs that take the data as arguments.

:func:`run_nuts` runs NumPyro's NUTS kernel through its public ``MCMCKernel``
interface (``init``, ``sample``, ``postprocess_fn``) with the model's array arguments as
jit arguments, so a fit compiles once per shape and later fits of other data with the
same shapes reuse the programs (``parallel`` chains, and models that need concrete
array values, go through NumPyro's ``MCMC``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax, random
from numpyro.infer import MCMC, NUTS, init_to_uniform
from numpyro.infer.util import ParamInfo
from tqdm.auto import tqdm

from bayes_align.infer.util import (
    ProgramCache,
    first_try,
    is_finite_point,
    join_arrays,
    split_arrays,
    to_numpy,
)

#: initial points are drawn from Uniform(-radius, radius) on the unconstrained scale
_INIT_RADIUS = 1.0
#: NUTS fields kept in ``sample_stats`` (besides the draws), as NumPyro names them.
_NUTS_FIELDS = ("diverging", "num_steps", "energy", "potential_energy", "accept_prob",
                "adapt_state.step_size")


def run_nuts(
    model_fn, model_kwargs, rng_key, *, keep, chains, draws, warmup, target_accept,
    max_tree_depth, chain_method, progress_bar,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """NUTS through one compiled program (vectorized / sequential chains) when the model's
    array arguments can be traced; otherwise, and for ``parallel``, NumPyro's ``MCMC``."""
    settings = dict(keep=keep, chains=chains, draws=draws, warmup=warmup,
                    target_accept=target_accept, max_tree_depth=max_tree_depth)
    if chain_method in ("vectorized", "sequential"):
        split = split_arrays(model_kwargs)
        if split is not None:
            arrays, static = split
            try:
                extra = _run_nuts_compiled(
                    model_fn, arrays, static, rng_key, chain_method=chain_method,
                    progress_bar=progress_bar, **settings,
                )
            except _TracingFailed:
                pass  # the model needs concrete values of an array argument
            else:
                return _nuts_output(extra, keep)
    extra = _run_nuts_mcmc(model_fn, model_kwargs, rng_key, chain_method=chain_method,
                           progress_bar=progress_bar, **settings)
    return _nuts_output(extra, keep)


def _nuts_output(collected: Mapping[str, Any], keep) -> tuple[dict, dict]:
    """Split collected (chain, draw, ...) arrays into the posterior and sample_stats."""
    missing = [k for k in keep if k not in collected]
    if missing:
        raise ValueError(f"The model has no sample or deterministic site(s) {missing}.")
    posterior = to_numpy({k: collected[k] for k in keep})
    extra = to_numpy({k: collected[k] for k in _NUTS_FIELDS})
    num_steps = extra["num_steps"].astype(np.int64)
    sample_stats = {
        "diverging": extra["diverging"].astype(bool),
        "n_steps": num_steps,
        "tree_depth": (np.floor(np.log2(np.maximum(num_steps, 1))) + 1).astype(np.int64),
        "lp": -extra["potential_energy"],
        "energy": extra["energy"],
        "acceptance_rate": extra["accept_prob"],
        "step_size": extra["adapt_state.step_size"],
    }
    return posterior, sample_stats


def _run_nuts_mcmc(
    model_fn, model_kwargs, rng_key, *, keep, chains, draws, warmup, target_accept,
    max_tree_depth, chain_method, progress_bar,
) -> dict[str, Any]:
    """NumPyro's ``MCMC`` driver: its initialisation runs op by op (about 120 small XLA
    compilations) and the data are constants of the compiled loop."""
    kernel = NUTS(
        model_fn,
        target_accept_prob=target_accept,
        max_tree_depth=max_tree_depth,
        init_strategy=init_to_uniform(radius=_INIT_RADIUS),
    )
    mcmc = MCMC(
        kernel,
        num_warmup=warmup,
        num_samples=draws,
        num_chains=chains,
        chain_method=chain_method,
        progress_bar=progress_bar,
    )
    with warnings.catch_warnings():
        # numpyro warns when there are fewer devices than chains; sequential is our choice.
        warnings.filterwarnings("ignore", message="There are not enough devices")
        mcmc.run(rng_key, extra_fields=_NUTS_FIELDS, **model_kwargs)
    samples = mcmc.get_samples(group_by_chain=True)
    out = {k: samples[k] for k in keep if k in samples}
    out.update(mcmc.get_extra_fields(group_by_chain=True))
    return out


# ------------------------------------------------------------- compiled NUTS driver
class _TracingFailed(Exception):
    """The model could not be traced with its array arguments as jit arguments."""


@dataclass(frozen=True)
class _NutsKey:
    """Everything the compiled NUTS programs depend on apart from array shapes/dtypes."""

    model_fn: Callable[..., None]
    static: Any
    warmup: int
    draws: int
    target_accept: float
    max_tree_depth: int
    keep: tuple[str, ...]
    batched: bool


class _NutsProgram:
    """NumPyro's NUTS kernel driven through its public ``MCMCKernel`` interface (``init``,
    ``sample``, ``postprocess_fn``) by two jitted functions that take the model's arrays as
    arguments:

    * ``init(keys, arrays)``: initial parameters (``init_to_uniform``), warm-up adapter and
      the empty draw buffers, for a batch of chains (vmapped) or for one chain (the first
      try of NumPyro's search, :meth:`_first_try`; ``init_search`` is NumPyro's search,
      compiled only when a first try is invalid);
    * ``advance(state, arrays, buffers, start, stop)``: NUTS transitions ``start..stop-1``
      (warm-up and sampling in one ``fori_loop``), writing the constrained draws and the
      sampler statistics of the sampling iterations into the buffers.

    ``batched`` (vectorized chains, more than one) vmaps the kernel over chains;
    otherwise the programs hold one chain and are called once per chain (benchmarks/
    README.md, "Chains on one CPU device", compares the two).

    Both compile once per shape and are reused by every later fit with the same model,
    settings and array shapes (the instance is cached in ``_NUTS_PROGRAMS``), and, with the
    persistent compilation cache on, by later processes. ``advance`` with a dynamic range
    serves the whole run in one call, or a progress bar in chunks, from one program.
    """

    def __init__(self, key: _NutsKey) -> None:
        self.key = key
        self.kernel = NUTS(
            key.model_fn,
            target_accept_prob=key.target_accept,
            max_tree_depth=key.max_tree_depth,
            init_strategy=init_to_uniform(radius=_INIT_RADIUS),
        )
        self.init = jax.jit(self._init)
        self.init_search = jax.jit(partial(self._init, search=True))
        self.advance = jax.jit(self._advance, donate_argnums=(2,))

    def _kwargs(self, arrays):
        return join_arrays(arrays, self.key.static)

    def _record(self, state, kwargs) -> dict[str, jnp.ndarray]:
        """Constrained sites in ``keep`` (deterministic sites included) and statistics."""
        constrain = self.kernel.postprocess_fn((), kwargs)
        values = jax.vmap(constrain)(state.z) if self.key.batched else constrain(state.z)
        out = {k: values[k] for k in self.key.keep if k in values}
        for name in _NUTS_FIELDS:
            value = state
            for part in name.split("."):
                value = getattr(value, part)
            out[name] = value
        return out

    def _first_try(self, rng_key, kwargs) -> ParamInfo:
        """The initial point NumPyro's ``HMC.init`` draws for one chain on its first try,
        with its potential energy and gradient (:func:`~bayes_align.infer.util.first_try`);
        ``init_search`` runs NumPyro's search only when this point is not finite, from the
        same first draw, so the initial state is NumPyro's either way."""
        _, init_key = random.split(rng_key)  # HMC.init's split
        point, _ = first_try(init_key, self.key.model_fn, _INIT_RADIUS, kwargs)
        return point

    def _init(self, keys, arrays, search: bool = False):
        """``keys``: one key per chain (batched) or the one chain's key. ``search``:
        NumPyro's own initialisation (up to 100 tries) instead of the first try."""
        kwargs = self._kwargs(arrays)

        def one_chain(rng_key):
            start = None if search else self._first_try(rng_key, kwargs)
            return self.kernel.init(rng_key, self.key.warmup, start, model_args=(),
                                    model_kwargs=kwargs)

        # NumPyro's one-chain init, under our vmap for batched chains
        state = jax.vmap(one_chain)(keys) if self.key.batched else one_chain(keys)
        record = self._record(state, kwargs)
        buffers = jax.tree.map(
            lambda x: jnp.zeros((self.key.draws, *x.shape), x.dtype), record
        )
        return state, buffers, is_finite_point(state.potential_energy, state.z_grad)

    def _advance(self, state, arrays, buffers, start, stop):
        kwargs = self._kwargs(arrays)
        sample = self.kernel.sample
        if self.key.batched:
            sample = jax.vmap(sample, in_axes=(0, None, None))
        warmup = self.key.warmup

        def body(i, carry):
            state, buffers = carry
            state = sample(state, (), kwargs)
            buffers = lax.cond(
                i >= warmup,
                lambda b: jax.tree.map(
                    lambda buf, v: buf.at[i - warmup].set(v), b, self._record(state, kwargs)
                ),
                lambda b: b,
                buffers,
            )
            return state, buffers

        return lax.fori_loop(start, stop, body, (state, buffers))


#: compiled NUTS programs of this process
_NUTS_PROGRAMS = ProgramCache()


def _nuts_program(key: _NutsKey) -> _NutsProgram:
    return _NUTS_PROGRAMS.get_or_build(key, _NutsProgram)


def _run_nuts_compiled(
    model_fn, arrays, static, rng_key, *, keep, chains, draws, warmup, target_accept,
    max_tree_depth, chain_method, progress_bar,
) -> dict[str, np.ndarray]:
    """Run NUTS with :class:`_NutsProgram`: all chains at once (``vectorized``) or one
    after another through the same compiled program (``sequential``)."""
    batched = chain_method == "vectorized" and chains > 1
    key = _NutsKey(model_fn, static, int(warmup), int(draws), float(target_accept),
                   int(max_tree_depth), tuple(keep), batched)
    program = _nuts_program(key)
    chain_keys = jax.random.split(rng_key, chains)
    batches = [chain_keys] if batched else list(chain_keys)
    total = warmup + draws
    n_chunks = 20 if progress_bar else 1
    bounds = sorted({round(total * j / n_chunks) for j in range(n_chunks + 1)})
    bar = tqdm(total=total * len(batches), desc="NUTS (compiling)", disable=not progress_bar,
               unit="it")
    pieces = []
    try:
        for batch in batches:
            try:
                state, buffers, valid = program.init(batch, arrays)
                if not bool(valid):
                    state, buffers, valid = program.init_search(batch, arrays)
            except jax.errors.JAXTypeError as err:
                _NUTS_PROGRAMS.pop(key, None)
                raise _TracingFailed from err
            if not bool(valid):
                raise RuntimeError(
                    "Cannot find valid initial parameters. Please check your model again."
                )
            for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
                state, buffers = program.advance(state, arrays, buffers, lo, hi)
                if progress_bar:
                    jax.block_until_ready(state)
                    bar.set_description("NUTS warmup" if hi <= warmup else "NUTS sample")
                    bar.set_postfix(step_size=f"{float(jnp.mean(state.adapt_state.step_size)):.2e}",
                                    steps=int(jnp.max(state.num_steps)), refresh=False)
                    bar.update(hi - lo)
            pieces.append(jax.tree.map(
                lambda x: np.swapaxes(np.asarray(x), 0, 1) if key.batched
                else np.asarray(x)[None], buffers))
    finally:
        bar.close()
    return {k: np.concatenate([p[k] for p in pieces], axis=0) for k in pieces[0]}


