"""SVI and MAP: Adam on the ELBO of an autoguide, stopped by a noise-aware rule.

The optimisation windows and the posterior draws run as programs compiled once per
model, settings and array shapes (the data are jit arguments), cached for the process:
refitting data of the same shapes (replicates, sample-size studies) reuses them.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import random
from numpyro import handlers
from numpyro.infer import SVI, Predictive, Trace_ELBO, init_to_uniform
from numpyro.infer.autoguide import AutoDelta, AutoLowRankMultivariateNormal, AutoNormal
from numpyro.infer.util import ParamInfo
from tqdm.auto import tqdm

from bayes_align.infer.util import (
    ProgramCache,
    first_try,
    is_finite_point,
    join_arrays,
    split_arrays,
)

GUIDES = ("normal", "lowrank")
#: the guide's initial locations are drawn from Uniform(-radius, radius) on the
#: unconstrained scale: near the prior centre, and much cheaper to set up than
#: init_to_median (which samples every site eagerly)
_INIT_RADIUS = 0.5


def make_guide(model_fn, guide: str, method: str, rank: int | None):
    """AutoDelta (MAP), AutoNormal (mean-field) or AutoLowRankMultivariateNormal."""
    init = init_to_uniform(radius=_INIT_RADIUS)
    if method == "map":
        return AutoDelta(model_fn, init_loc_fn=init)
    if guide == "lowrank":
        return AutoLowRankMultivariateNormal(model_fn, rank=rank, init_loc_fn=init, init_scale=0.1)
    return AutoNormal(model_fn, init_loc_fn=init, init_scale=0.1)


@dataclass(frozen=True)
class _SviKey:
    model_fn: Callable[..., None]
    static: Any
    method: str
    guide: str
    rank: int | None
    learning_rate: float
    eval_every: int
    n_draws: int
    keep: tuple[str, ...]


class _SviProgram:
    """The guide, the SVI object and jitted functions of the data arrays:
    ``init(key, arrays)`` (the SVI state, from the first try of NumPyro's search for the
    guide's initial locations, and whether that point is finite; ``init_search`` is
    NumPyro's own set-up, compiled only when the first try is not finite),
    ``run_window(state, arrays)`` (``eval_every`` steps) and ``draw(params, key, arrays)``."""

    def __init__(self, key: _SviKey) -> None:
        self.key = key
        self.guide = make_guide(key.model_fn, key.guide, key.method, key.rank)
        schedule = optax.exponential_decay(
            init_value=key.learning_rate, transition_steps=1000, decay_rate=0.8,
            end_value=key.learning_rate / 20,
        )
        self.svi = SVI(key.model_fn, self.guide, optax.adam(schedule), loss=Trace_ELBO())
        self.init = jax.jit(self._init)
        self.init_search = jax.jit(partial(self._init, search=True))
        self.run_window = jax.jit(self._run_window)
        self.draw = jax.jit(self._draw)

    def kwargs(self, arrays):
        return join_arrays(arrays, self.key.static)

    def _init(self, rng_key, arrays, search: bool = False):
        # Compiled, the guide's set-up (a trace of the model and NumPyro's search for a valid
        # initial point) is one program per shape instead of hundreds of eager operations.
        # The guide keeps that trace's shapes, supports and plates; its values are never
        # computed with again (the parameters live in the SVI state).
        self.guide.prototype_trace = None
        kwargs = self.kwargs(arrays)
        if search:
            return self.svi.init(rng_key, **kwargs), jnp.array(True)
        params, point = self._first_try(rng_key, kwargs)
        state = self.svi.init(rng_key, init_params=params, **kwargs)
        return state, is_finite_point(point.potential_energy, point.z_grad)

    def _first_try(self, rng_key, kwargs) -> tuple[dict[str, Any], ParamInfo]:
        """The guide's initial parameters from the first try of NumPyro's search (the point
        ``AutoGuide._setup_prototype`` would find when that try is finite; see
        :func:`~bayes_align.infer.util.first_try`), and that point with its potential
        energy and gradient. NumPyro's search, then unused, is dropped by the compiler."""
        _, _, guide_seed = random.split(rng_key, 3)  # SVI.init's split
        _, setup_key = random.split(guide_seed)  # numpyro.prng_key() of the guide's set-up
        point, info = first_try(setup_key, self.key.model_fn, _INIT_RADIUS, kwargs)
        locs = point.z  # unconstrained, in model order (the guide's ``_init_locs``)
        if isinstance(self.guide, AutoDelta):
            constrained = handlers.seed(info.postprocess_fn, rng_seed=0)(locs)
            params = {f"{name}_{self.guide.prefix}_loc": constrained[name] for name in locs}
        elif isinstance(self.guide, AutoNormal):
            params = {f"{name}_{self.guide.prefix}_loc": value for name, value in locs.items()}
        else:  # AutoContinuous: the locations raveled in the guide's order (NumPyro's search
            # returns them through a while loop, which orders a dict's keys)
            flat = jnp.concatenate([jnp.reshape(locs[name], -1) for name in sorted(locs)])
            params = {f"{self.guide.prefix}_loc": flat}
        return params, point

    def _run_window(self, state, arrays):
        kwargs = self.kwargs(arrays)

        def step(carry, _):
            return self.svi.update(carry, **kwargs)

        return jax.lax.scan(step, state, None, length=self.key.eval_every)

    def _draw(self, params, rng_key, arrays):
        kwargs = self.kwargs(arrays)
        kwargs.pop("subsample_size", None)  # draws need no minibatch
        predictive = Predictive(
            self.key.model_fn, guide=self.guide, params=params,
            num_samples=self.key.n_draws, return_sites=list(self.key.keep),
        )
        return predictive(rng_key, **kwargs)


#: compiled SVI programs of this process
_SVI_PROGRAMS = ProgramCache()


def _svi_program(key: _SviKey) -> _SviProgram:
    return _SVI_PROGRAMS.get_or_build(key, _SviProgram)


def run_svi(
    model_fn, model_kwargs: Mapping[str, Any], rng_key, *, keep, method, draws, guide, rank,
    learning_rate, max_steps, tol, patience, eval_every, minibatch_size, progress_bar,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Optimise the ELBO; return posterior draws ``(1, draws, ...)`` and the loss history.

    Every ``eval_every`` steps the mean loss of the window is compared with the previous
    window's; SVI stops when the change stays below ``max(tol |m_k|, 2 se_k)`` for
    ``patience`` windows in a row, ``se_k`` being the standard error of the difference
    of the two window means (minibatch noise can exceed ``tol |m|`` forever).
    """
    fit_kwargs = dict(model_kwargs)
    if minibatch_size is not None:
        fit_kwargs["subsample_size"] = int(minibatch_size)
    split = split_arrays(fit_kwargs)
    if split is None:
        raise ValueError("SVI needs hashable non-array model arguments")
    arrays, static = split
    n_draws = 1 if method == "map" else int(draws)
    program = _svi_program(_SviKey(model_fn, static, method, guide, rank, float(learning_rate),
                                   int(eval_every), n_draws, tuple(keep)))
    init_key, _, draw_key = jax.random.split(rng_key, 3)
    if minibatch_size is None:
        state, valid = program.init(init_key, arrays)
    else:  # the guide widens subsampled sites' initial locations to the full plate
        valid = False
    if not bool(valid):
        state, _ = program.init_search(init_key, arrays)

    losses: list[np.ndarray] = []
    previous = None
    calm = 0
    n_windows = max(1, math.ceil(max_steps / eval_every))
    bar = tqdm(total=n_windows * eval_every, desc=method.upper(), disable=not progress_bar)
    converged = False
    try:
        for _ in range(n_windows):
            state, window = program.run_window(state, arrays)
            window = np.asarray(window)
            losses.append(window)
            if not np.all(np.isfinite(window)):
                raise FloatingPointError(
                    "The ELBO became NaN/inf; lower learning_rate, use float64=True, or check the data."
                )
            mean, var = float(window.mean()), float(window.var())
            bar.update(eval_every)
            if previous is not None:
                change = abs(mean - previous[0])
                noise = 2.0 * math.sqrt((var + previous[1]) / window.size)
                bar.set_postfix(loss=f"{mean:.4g}", rel_change=f"{change / max(abs(mean), 1e-12):.1e}")
                calm = calm + 1 if change < max(tol * abs(mean), noise) else 0
                if calm >= patience:
                    converged = True
                    break
            previous = (mean, var)
    finally:
        bar.close()
    if not converged:
        warnings.warn(
            f"{method.upper()} did not converge in {max_steps} steps (the ELBO change between "
            f"windows stayed above tol={tol} and its noise); raise max_steps or learning_rate.",
            UserWarning,
            stacklevel=3,
        )
    samples = program.draw(program.svi.get_params(state), draw_key, arrays)
    missing = [k for k in keep if k not in samples]
    if missing:
        raise ValueError(f"The model has no sample or deterministic site(s) {missing}.")
    posterior = {k: np.asarray(samples[k])[None] for k in keep}
    return posterior, np.concatenate(losses)
