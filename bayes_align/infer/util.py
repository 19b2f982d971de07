"""Shared pieces of the inference drivers: precision, chain placement, splitting model
arguments into traced arrays and a hashable static part, NumPyro's first initial point,
draws evaluated in chunks, and JAX's persistent compilation cache."""

from __future__ import annotations

import contextlib
import os
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import random
from numpyro.infer import init_to_uniform
from numpyro.infer.util import ModelInfo, ParamInfo, initialize_model
from tqdm.auto import tqdm

from bayes_align.files import user_cache_dir

#: environment variable that turns the persistent compilation cache on (a directory or 1)
COMPILATION_CACHE_ENV = "BAYES_ALIGN_COMPILATION_CACHE"


def precision(float64: bool):
    """``jax.enable_x64`` for the duration of a fit when ``float64``."""
    return jax.enable_x64(True) if float64 else contextlib.nullcontext()


def default_chain_method(chains: int) -> str:
    """Chains on separate devices when there are enough (GPUs, or CPU host devices set
    with ``numpyro.set_host_device_count`` before JAX starts); else one after another on a
    CPU and vectorised on an accelerator (benchmarks/README.md, "Chains on one CPU
    device")."""
    if chains > 1 and jax.local_device_count() >= chains:
        return "parallel"
    return "sequential" if jax.default_backend() == "cpu" else "vectorized"


def to_numpy(tree: Mapping[str, Any]) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in tree.items()}


def first_try(rng_key, model_fn, radius: float, model_kwargs) -> tuple[ParamInfo, ModelInfo]:
    """The initial point NumPyro's ``initialize_model(rng_key, model_fn,
    init_strategy=init_to_uniform(radius=radius))`` tries first (the same key splits, sites
    in model order, ``Uniform(-radius, radius)`` on the unconstrained scale), with the
    potential energy and its gradient there, computed straight-line; and the model's
    ``ModelInfo`` (its transforms and potential).

    Inside a compiled program that uses this point instead of NumPyro's search (a loop of
    up to 100 tries around the potential's gradient), the unused search is dropped by the
    compiler and the program compiles faster (benchmarks/README.md, "Fourth suite-speed
    session"). Callers fall back to the search when the point is not finite
    (:func:`is_finite_point`), so the initial state is NumPyro's either way.
    """
    info = initialize_model(rng_key, model_fn, init_strategy=init_to_uniform(radius=radius),
                            model_kwargs=model_kwargs)
    sites = [name for name, site in info.model_trace.items()
             if site["type"] == "sample" and not site["is_observed"]
             and not site["fn"].support.is_discrete]
    key, subkey = random.split(rng_key)  # find_valid_initial_params' first try
    params = {}
    for name in sites:
        params[name] = random.uniform(subkey, jnp.shape(info.param_info.z[name]),
                                      minval=-radius, maxval=radius)
        key, subkey = random.split(key)
    energy, grad = jax.value_and_grad(info.potential_fn)(params)
    return ParamInfo(params, energy, grad), info


def is_finite_point(energy, grad) -> jax.Array:
    """True when the potential energy and every gradient entry are finite (the validity
    test of NumPyro's search); ``energy`` may hold one value per chain."""
    valid = jnp.all(jnp.isfinite(energy))
    for leaf in jax.tree.leaves(grad):
        valid &= jnp.all(jnp.isfinite(leaf))
    return valid


class Traced:
    """Marks the positions of traced (array) leaves in a static kwargs description."""

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return "<traced>"


TRACED = Traced()


def split_arrays(tree: Any) -> tuple[list[Any], tuple[Any, tuple[Any, ...]]] | None:
    """Split a pytree of model arguments into its array leaves (traced by jit) and a
    hashable static part ``(treedef, leaves with arrays replaced by a marker)``; None
    when a non-array leaf is unhashable."""
    leaves, treedef = jax.tree.flatten(tree)
    is_array = [isinstance(x, (np.ndarray, jax.Array)) for x in leaves]
    arrays = [x for x, a in zip(leaves, is_array, strict=True) if a]
    static = (treedef, tuple(TRACED if a else x for x, a in zip(leaves, is_array, strict=True)))
    try:
        hash(static)
    except TypeError:
        return None
    return arrays, static


def join_arrays(arrays: Sequence[Any], static: tuple[Any, tuple[Any, ...]]) -> Any:
    treedef, leaves = static
    it = iter(arrays)
    return jax.tree.unflatten(treedef, [next(it) if x is TRACED else x for x in leaves])


class ProgramCache(OrderedDict):
    """Compiled programs of this process by key, most recently used last, at most
    ``max_size`` kept (each holds XLA executables)."""

    def __init__(self, max_size: int = 8) -> None:
        super().__init__()
        self.max_size = max_size

    def get_or_build(self, key: Any, build: Callable[[Any], Any]) -> Any:
        program = self.pop(key, None) or build(key)
        self[key] = program
        while len(self) > self.max_size:
            self.popitem(last=False)
        return program


def _batched(key: tuple[Callable[..., Any], tuple]) -> Callable[..., Any]:
    """``fn`` vmapped over draws and jitted, for ``key = (fn, static)``."""
    fn, static = key
    return jax.jit(jax.vmap(lambda draw, args: fn(draw, *args, *static), in_axes=(0, None)))


#: compiled draw-wise maps of this process (:func:`map_draws`)
_MAPPED_PROGRAMS = ProgramCache()


def map_draws(
    fn: Callable[..., Any],
    draws: Mapping[str, np.ndarray],
    size_per_draw: int,
    progress: bool = False,
    desc: str = "draws",
    args: tuple = (),
    static: tuple = (),
) -> Any:
    """``fn(draw, *args, *static)`` vmapped over draws with leading dims ``(chain, draw)``,
    in chunks of about 2e7 numbers (``size_per_draw`` numbers come out per draw); the last
    chunk is padded so one compiled function serves all. ``args`` (pytrees of arrays) are
    arguments of the compiled function, ``static`` (hashable) part of its cache key; pass
    a module-level ``fn`` so the program is reused across calls. Returns the outputs with
    the same leading dims."""
    chain, draw = next(iter(draws.values())).shape[:2]
    flat = {k: np.asarray(v).reshape((chain * draw, *np.shape(v)[2:])) for k, v in draws.items()}
    n_total = chain * draw
    chunk = max(1, min(n_total, 20_000_000 // max(size_per_draw, 1)))
    compiled = _MAPPED_PROGRAMS.get_or_build((fn, tuple(static)), _batched)
    pieces = []
    starts = range(0, n_total, chunk)
    for start in tqdm(starts, desc=desc, disable=not progress or len(starts) < 3, leave=False):
        stop = min(start + chunk, n_total)
        batch = {k: v[start:stop] for k, v in flat.items()}
        if stop - start < chunk:
            pad = chunk - (stop - start)
            batch = {k: np.concatenate([v, np.repeat(v[-1:], pad, axis=0)]) for k, v in batch.items()}
        pieces.append(jax.tree.map(lambda x, n=stop - start: np.asarray(x)[:n], compiled(batch, tuple(args))))
    return jax.tree.map(
        lambda *xs: np.concatenate(xs).reshape((chain, draw, *xs[0].shape[1:])), *pieces
    )


def default_compilation_cache_dir() -> Path:
    """``jax/`` in the package's cache folder (:func:`bayes_align.files.user_cache_dir`:
    ``$BAYES_ALIGN_CACHE_DIR``, else ``~/.cache/bayes_align``)."""
    return user_cache_dir() / "jax"


def enable_compilation_cache(path: str | Path | None = None,
                             min_compile_time_secs: float | None = None) -> Path:
    """Turn on JAX's persistent compilation cache in ``path`` (default
    :func:`default_compilation_cache_dir`) for the rest of the process.

    Compiled programs that took at least ``min_compile_time_secs`` to compile are written
    there and read back by any later process that compiles the same program: a NUTS fit
    of a model with the same spec, settings and data shapes (the data themselves are
    arguments of the program, not part of it) then skips XLA compilation. None leaves
    JAX's ``jax_persistent_cache_min_compile_time_secs`` as it is (1 s unless the
    environment variable ``JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS`` says otherwise).
    The directory is trusted: do not point it at a place others can write to.
    """
    from jax.experimental.compilation_cache import compilation_cache as cc

    path = Path(path).expanduser() if path is not None else default_compilation_cache_dir()
    path.mkdir(parents=True, exist_ok=True)
    if jax.config.jax_compilation_cache_dir != str(path):
        jax.config.update("jax_compilation_cache_dir", str(path))
        cc.reset_cache()  # JAX initialises its cache once; make it pick up the new place
    if min_compile_time_secs is not None:
        jax.config.update("jax_persistent_cache_min_compile_time_secs",
                          float(min_compile_time_secs))
    return path


def maybe_enable_compilation_cache(option: bool | str | Path | None) -> None:
    """Apply ``fit(..., compilation_cache=...)``: None reads ``BAYES_ALIGN_COMPILATION_CACHE``."""
    if option is None:
        env = os.environ.get(COMPILATION_CACHE_ENV, "").strip()
        if not env or env.lower() in ("0", "false", "no", "off"):
            return
        option = True if env.lower() in ("1", "true", "yes", "on") else env
    if option is False:
        return
    enable_compilation_cache(None if option is True else option)
