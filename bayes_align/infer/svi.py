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
from typing import Any

import jax
import numpy as np
import optax
from numpyro.infer import SVI, Predictive, Trace_ELBO, init_to_uniform
from numpyro.infer.autoguide import AutoDelta, AutoLowRankMultivariateNormal, AutoNormal
from tqdm.auto import tqdm

from bayes_align.infer.util import ProgramCache, join_arrays, split_arrays

GUIDES = ("normal", "lowrank")


def make_guide(model_fn, guide: str, method: str, rank: int | None):
    """AutoDelta (MAP), AutoNormal (mean-field) or AutoLowRankMultivariateNormal."""
    # Uniform(-0.5, 0.5) on the unconstrained scale: near the prior centre, and much cheaper
    # to set up than init_to_median (which samples every site eagerly).
    init = init_to_uniform(radius=0.5)
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
    """The guide, the SVI object and two jitted functions of the data arrays:
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
        self.run_window = jax.jit(self._run_window)
        self.draw = jax.jit(self._draw)

    def kwargs(self, arrays):
        return join_arrays(arrays, self.key.static)

    def _init(self, rng_key, arrays):
        # Compiled, the guide's set-up (a trace of the model and the search for a valid
        # initial point) is one program per shape instead of hundreds of eager operations.
        # The guide keeps that trace's shapes, supports and plates; its values are never
        # computed with again (the parameters live in the SVI state).
        self.guide.prototype_trace = None
        return self.svi.init(rng_key, **self.kwargs(arrays))

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
    state = program.init(init_key, arrays)

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
