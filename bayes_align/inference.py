"""Fit NumPyro models (NUTS, SVI or MAP) and return ArviZ InferenceData with named dims.

``fit(data, ...)`` fits the joint multi-group IRT model of :mod:`bayes_align.models`.
``run_inference(model_fn, model_kwargs, ...)`` is the generic engine underneath; any
NumPyro model that follows the DESIGN.md posterior names can reuse it.

Notes on devices: JAX uses a GPU automatically when ``jax[cuda12]`` is installed.
Parallel chains on CPU need ``numpyro.set_host_device_count(n)`` *before* JAX
initialises (call it first thing in your script); the library never does that at import.
With a single device, chains are vectorised (``chain_method="vectorized"``): on VerbAgg
(W1, 4 chains) that gave 2.7x the ESS/s of sequential chains (benchmarks/README.md).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from numpyro.infer import MCMC, NUTS, SVI, Predictive, Trace_ELBO, init_to_uniform
from numpyro.infer.autoguide import AutoDelta, AutoLowRankMultivariateNormal, AutoNormal
from tqdm.auto import tqdm

from bayes_align import __version__
from bayes_align.data import ResponseData
from bayes_align.diagnostics import DiagnosticReport, check_convergence
from bayes_align.models import ModelSpec, build_model_inputs, irt_model, make_log_likelihood_fn

METHODS = ("nuts", "svi", "map")
GUIDES = ("normal", "lowrank")

#: Above this many observations, SVI subsamples observations by default (minibatch="auto").
AUTO_MINIBATCH_THRESHOLD = 200_000
#: Largest log-likelihood array (draws x observations) kept in memory before falling back
#: to the per-person log-likelihood only.
MAX_LOG_LIKELIHOOD_ELEMENTS = 200_000_000


@dataclass
class Fit:
    """A fitted model: the ArviZ InferenceData and how it was made.

    Attributes
    ----------
    idata : az.InferenceData with groups posterior, sample_stats (NUTS), log_likelihood,
        observed_data, constant_data; dims and coords carry the user's labels.
    spec : the ModelSpec (None for models fitted through ``run_inference`` without one).
    method : "nuts", "svi" or "map".
    reference_group : label of the reference group.
    elbo : SVI/MAP loss history (negative ELBO per step), None for NUTS.
    diagnostics : the convergence report (NUTS), None otherwise.
    seconds : wall time of the inference itself (compilation included).
    data : the ResponseData the fit used (in memory only; not saved by ``to_netcdf``).
    """

    idata: az.InferenceData
    spec: ModelSpec | None
    method: str
    reference_group: str
    elbo: np.ndarray | None = None
    diagnostics: DiagnosticReport | None = None
    seconds: float = float("nan")
    data: ResponseData | None = field(default=None, repr=False)

    @property
    def posterior(self):
        return self.idata.posterior

    def summary(self, var_names: Sequence[str] | None = None, **kwargs) -> Any:
        """``arviz.summary`` of the posterior (default: item and group parameters)."""
        if var_names is None:
            var_names = [v for v in self.idata.posterior.data_vars if v != "theta"]
        return az.summary(self.idata, var_names=list(var_names), **kwargs)

    def to_netcdf(self, path: str | Path) -> Path:
        """Save everything needed to reload the fit (model spec and ELBO go into attrs)."""
        path = Path(path)
        self.idata.attrs["method"] = self.method
        self.idata.attrs["reference_group"] = self.reference_group
        if self.spec is not None:
            self.idata.attrs["model_spec"] = self.spec.to_json()
        if self.elbo is not None:
            self.idata.attrs["elbo"] = json.dumps([float(f"{v:.7g}") for v in self.elbo])
        self.idata.attrs["seconds"] = float(self.seconds)
        self.idata.to_netcdf(str(path), engine="h5netcdf")
        return path


def load_fit(path: str | Path) -> Fit:
    """Reload a fit saved with :meth:`Fit.to_netcdf` (no refitting, no data needed)."""
    idata = az.from_netcdf(str(path), engine="h5netcdf")
    attrs = dict(idata.attrs)
    spec = None
    if "model_spec" in attrs:
        try:
            spec = ModelSpec.from_json(attrs["model_spec"])
        except (TypeError, ValueError):
            # a model fitted through run_inference with its own spec fields (e.g. the
            # aggregated model); the JSON stays available in idata.attrs["model_spec"].
            spec = None
    elbo = np.asarray(json.loads(attrs["elbo"])) if "elbo" in attrs else None
    return Fit(
        idata=idata,
        spec=spec,
        method=str(attrs.get("method", "unknown")),
        reference_group=str(attrs.get("reference_group", "")),
        elbo=elbo,
        seconds=float(attrs.get("seconds", float("nan"))),
    )


def as_idata(fit_or_idata: Fit | az.InferenceData) -> az.InferenceData:
    """Accept a Fit or an InferenceData (for downstream functions)."""
    if isinstance(fit_or_idata, Fit):
        return fit_or_idata.idata
    if isinstance(fit_or_idata, az.InferenceData):
        return fit_or_idata
    raise ValueError(f"Expected a Fit or an arviz.InferenceData, got {type(fit_or_idata).__name__}.")


# ---------------------------------------------------------------------------- helpers
def irt_dims(spec: ModelSpec) -> dict[str, list[str]]:
    """Posterior variable -> dims for the IRT model (the variables that are stored)."""
    dims = {
        "difficulty": ["item"],
        "group_mean": ["group"],
        "group_sd": ["group"],
        "theta": ["person"],
    }
    if spec.has_discrimination:
        dims["discrimination"] = ["item"]
    if spec.irt == "3pl":
        dims["guessing"] = ["item"]
    if spec.irt == "grm":
        dims["step"] = ["item", "cutpoint"]
    if spec.dif != "none":
        dims["dif_shift"] = ["focal_group", "item"]
        dims["dif_scale"] = ["focal_group"]
    if spec.dif_discrimination:
        dims["dif_log_discrimination"] = ["focal_group", "item"]
        dims["dif_log_discrimination_scale"] = ["focal_group"]
    return dims


def data_coords(data: ResponseData) -> dict[str, Any]:
    """Coordinates with the user's labels for every IRT dim."""
    return {
        "item": list(data.items),
        "person": list(data.persons),
        "group": list(data.groups),
        "focal_group": list(data.focal_groups),
        "obs": np.arange(data.n_obs),
        "cutpoint": np.arange(max(int(data.n_categories.max()) - 1, 1)),
    }


def _precision(float64: bool):
    return jax.enable_x64(True) if float64 else contextlib.nullcontext()


def _default_chain_method(chains: int) -> str:
    """Chains on separate devices when there are enough (e.g. GPUs, or CPU host devices set
    with ``numpyro.set_host_device_count`` before JAX starts), else vectorised on one
    device: measured 2.7x the ESS/s of sequential chains on VerbAgg (benchmarks/README.md)."""
    if chains > 1 and jax.local_device_count() >= chains:
        return "parallel"
    return "vectorized"


def _to_numpy(tree: Mapping[str, Any]) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in tree.items()}


def _log_likelihood_draws(
    log_likelihood_fn: Callable[[Mapping[str, jnp.ndarray]], Mapping[str, jnp.ndarray]],
    posterior: Mapping[str, np.ndarray],
    n_obs: int,
    progress_bar: bool,
    which: Sequence[str] | None,
) -> dict[str, np.ndarray]:
    """Evaluate ``log_likelihood_fn`` on every draw: vmap over chunks of draws.

    ``posterior`` arrays have leading dims (chain, draw). Chunks hold about 2e7 numbers.
    """
    chain, draw = next(iter(posterior.values())).shape[:2]
    flat = {k: v.reshape((chain * draw, *v.shape[2:])) for k, v in posterior.items()}
    n_total = chain * draw
    chunk = max(1, min(n_total, 20_000_000 // max(n_obs, 1)))

    def select(out):
        return {k: v for k, v in out.items() if which is None or k in which}

    batched = jax.jit(jax.vmap(lambda d: select(log_likelihood_fn(d))))
    pieces: dict[str, list[np.ndarray]] = {}
    starts = range(0, n_total, chunk)
    bar = tqdm(starts, desc="log-likelihood", disable=not progress_bar or len(starts) < 3, leave=False)
    for start in bar:
        stop = min(start + chunk, n_total)
        batch = {k: v[start:stop] for k, v in flat.items()}
        if stop - start < chunk:  # pad the last chunk so it reuses the compiled function
            pad = chunk - (stop - start)
            batch = {k: np.concatenate([v, np.repeat(v[-1:], pad, axis=0)]) for k, v in batch.items()}
        out = batched(batch)
        for k, v in out.items():
            pieces.setdefault(k, []).append(np.asarray(v)[: stop - start])
    return {k: np.concatenate(v).reshape((chain, draw, *v[0].shape[1:])) for k, v in pieces.items()}


# ------------------------------------------------------------ compilation cache
#: environment variable that turns the persistent compilation cache on (a directory or 1)
COMPILATION_CACHE_ENV = "BAYES_ALIGN_COMPILATION_CACHE"


def default_compilation_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/bayes_align/jax`` (``~/.cache/bayes_align/jax``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return Path(base).expanduser() / "bayes_align" / "jax"


def enable_compilation_cache(path: str | Path | None = None,
                             min_compile_time_secs: float = 1.0) -> Path:
    """Turn on JAX's persistent compilation cache in ``path`` (default
    :func:`default_compilation_cache_dir`) for the rest of the process.

    Compiled programs that took at least ``min_compile_time_secs`` to compile are written
    there and read back by any later process that compiles the same program: a NUTS fit
    of a model with the same spec, settings and data shapes (the data themselves are
    arguments of the program, not part of it) then skips XLA compilation. Works even
    after JAX has compiled something in this process (the cache is re-initialised). The
    directory is trusted: do not point it at a place others can write to.
    """
    from jax.experimental.compilation_cache import compilation_cache as cc

    path = Path(path).expanduser() if path is not None else default_compilation_cache_dir()
    path.mkdir(parents=True, exist_ok=True)
    if jax.config.jax_compilation_cache_dir != str(path):
        jax.config.update("jax_compilation_cache_dir", str(path))
        cc.reset_cache()  # JAX initialises its cache once; make it pick up the new place
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_time_secs))
    return path


def _maybe_enable_compilation_cache(option: bool | str | Path | None) -> None:
    if option is None:
        env = os.environ.get(COMPILATION_CACHE_ENV, "").strip()
        if not env or env.lower() in ("0", "false", "no", "off"):
            return
        option = True if env.lower() in ("1", "true", "yes", "on") else env
    if option is False:
        return
    enable_compilation_cache(None if option is True else option)


# ------------------------------------------------------------------------ inference
def run_inference(
    model_fn: Callable[..., None],
    model_kwargs: Mapping[str, Any],
    *,
    method: str = "nuts",
    dims: Mapping[str, Sequence[str]],
    coords: Mapping[str, Any],
    log_likelihood_fn: Callable[[Mapping[str, jnp.ndarray]], Mapping[str, jnp.ndarray]] | None = None,
    log_likelihood_dims: Mapping[str, Sequence[str]] | None = None,
    observed_data: Mapping[str, np.ndarray] | None = None,
    constant_data: Mapping[str, np.ndarray] | None = None,
    attrs: Mapping[str, Any] | None = None,
    spec: ModelSpec | None = None,
    reference_group: str = "",
    chains: int = 4,
    draws: int = 1000,
    warmup: int = 1000,
    seed: int = 0,
    float64: bool = False,
    progress_bar: bool = True,
    target_accept: float = 0.85,
    max_tree_depth: int = 10,
    chain_method: str | None = None,
    guide: str = "normal",
    rank: int | None = None,
    learning_rate: float = 0.01,
    max_steps: int = 20_000,
    tol: float = 1e-4,
    patience: int = 3,
    eval_every: int = 200,
    minibatch_size: int | None = None,
    n_obs: int | None = None,
    log_likelihood: bool | str = True,
    check: bool = True,
    compilation_cache: bool | str | Path | None = None,
) -> Fit:
    """Run NUTS, SVI or MAP on any NumPyro model and build the InferenceData.

    Parameters
    ----------
    model_fn, model_kwargs : the NumPyro model and its keyword arguments. For SVI with
        ``minibatch_size`` the model must accept ``subsample_size=B`` and return an
        unbiased minibatch estimate of its log-likelihood (see ``models.irt_model``).
    method : "nuts", "svi" or "map".
    dims : posterior variable -> dim names. Exactly these sample/deterministic sites are
        stored in ``idata.posterior`` (helper sites such as non-centred ``z`` are dropped).
    coords : dim name -> labels.
    log_likelihood_fn : ``f(draw: dict[str, Array]) -> dict[str, Array]`` for one draw
        (e.g. ``{"y": (n_obs,), "y_person": (n_persons,)}``); vmapped and chunked over draws.
    log_likelihood_dims : dims of its outputs (default ``{"y": ["obs"], "y_person": ["person"]}``).
    observed_data, constant_data, attrs : stored as they are.
    chains, draws, warmup : NUTS settings; SVI and MAP use ``draws`` posterior draws from
        the guide (MAP: one draw) stored as a single chain.
    float64 : run in double precision (``jax.enable_x64`` for the duration of the call).
    target_accept, max_tree_depth, chain_method : NUTS options. ``chain_method`` defaults to
        "parallel" when there are at least ``chains`` JAX devices, else "vectorized".
    guide : "normal" (AutoNormal, mean-field) or "lowrank" (AutoLowRankMultivariateNormal
        with ``rank``; None uses NumPyro's default ``sqrt(n_latent)``; ``fit`` passes
        ``min(20, ceil(sqrt(n_latent)))``).
    learning_rate, max_steps, tol, patience, eval_every : SVI optimisation (Adam with an
        exponentially decaying step size). Every ``eval_every`` steps the mean loss of the
        window is compared with the previous window; SVI stops when the change
        ``|m_k - m_{k-1}|`` stays below ``max(tol |m_k|, 2 se_k)`` for ``patience`` windows in
        a row, where ``se_k = sqrt(s_k^2 / W + s_{k-1}^2 / W)`` is the standard error of the
        difference of two window means (``s`` the within-window sd, ``W = eval_every``).
        The noise term matters for minibatches, whose ELBO noise can exceed ``tol |m|``
        forever; a trend within a window inflates ``s`` by only ``~1/sqrt(W)`` of the change.
    minibatch_size : SVI only: subsample this many observations per step.
    n_obs : number of observations (only needed to size the log-likelihood chunks).
    log_likelihood : True (per observation ``y`` and per person ``y_person``, falling back to
        ``y_person`` only above MAX_LOG_LIKELIHOOD_ELEMENTS), "person", or False.
    check : NUTS only: run :func:`bayes_align.diagnostics.check_convergence` (warns).
    compilation_cache : keep compiled programs on disk so that a later process fitting a
        model of the same shapes skips XLA compilation: True (directory
        ``$XDG_CACHE_HOME/bayes_align/jax``, default ``~/.cache/bayes_align/jax``) or a
        directory; None (default) uses the environment variable
        ``BAYES_ALIGN_COMPILATION_CACHE`` (a directory, or ``1`` for the default one) when
        set, else leaves JAX's configuration alone; False does nothing. See
        :func:`enable_compilation_cache`.
    """
    method = method.lower()
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
    if guide not in GUIDES:
        raise ValueError(f"guide must be one of {GUIDES}, got {guide!r}.")
    rng_key = jax.random.PRNGKey(seed)
    keep = list(dims)
    elbo = None
    sample_stats: dict[str, np.ndarray] | None = None
    report = None

    _maybe_enable_compilation_cache(compilation_cache)
    with _precision(float64):
        start = time.perf_counter()
        if method == "nuts":
            posterior, sample_stats = _run_nuts(
                model_fn,
                model_kwargs,
                rng_key,
                keep=keep,
                chains=chains,
                draws=draws,
                warmup=warmup,
                target_accept=target_accept,
                max_tree_depth=max_tree_depth,
                chain_method=chain_method or _default_chain_method(chains),
                progress_bar=progress_bar,
            )
        else:
            posterior, elbo = _run_svi(
                model_fn,
                model_kwargs,
                rng_key,
                keep=keep,
                method=method,
                draws=draws,
                guide=guide,
                rank=rank,
                learning_rate=learning_rate,
                max_steps=max_steps,
                tol=tol,
                patience=patience,
                eval_every=eval_every,
                minibatch_size=minibatch_size,
                progress_bar=progress_bar,
            )
        seconds = time.perf_counter() - start

        log_lik = None
        if log_likelihood_fn is not None and log_likelihood:
            n_draws_total = int(np.prod(next(iter(posterior.values())).shape[:2]))
            which = None if log_likelihood is True else ["y_person"]
            if which is None and n_obs and n_draws_total * n_obs > MAX_LOG_LIKELIHOOD_ELEMENTS:
                warnings.warn(
                    f"The pointwise log-likelihood would hold {n_draws_total} x {n_obs} numbers; "
                    "keeping only the per-person sums y_person. Use fewer draws to keep y.",
                    UserWarning,
                    stacklevel=3,
                )
                which = ["y_person"]
            log_lik = _log_likelihood_draws(
                log_likelihood_fn, posterior, n_obs or 1, progress_bar, which
            )

    ll_dims = dict(log_likelihood_dims or {"y": ["obs"], "y_person": ["person"]})
    all_dims = {k: list(v) for k, v in dims.items()}
    all_dims.update({k: list(v) for k, v in ll_dims.items()})
    for name, values in (constant_data or {}).items():
        all_dims.setdefault(name, [_guess_dim(values, coords)])
    for name, values in (observed_data or {}).items():
        all_dims.setdefault(name, [_guess_dim(values, coords)])
    used = {d for dim_list in all_dims.values() for d in dim_list}
    idata_attrs = {
        "method": method,
        "reference_group": reference_group,
        "bayes_align_version": __version__,
        **(dict(attrs) if attrs else {}),
    }
    if spec is not None:
        idata_attrs["model_spec"] = spec.to_json()
    idata = az.from_dict(
        posterior=posterior,
        sample_stats=sample_stats,
        log_likelihood=log_lik,
        observed_data=dict(observed_data) if observed_data else None,
        constant_data=dict(constant_data) if constant_data else None,
        coords={k: v for k, v in coords.items() if k in used},
        dims=all_dims,
        attrs=idata_attrs,
    )
    idata.attrs.update(idata_attrs)
    if method == "nuts" and check:
        report = check_convergence(idata, max_tree_depth=max_tree_depth)
    return Fit(
        idata=idata,
        spec=spec,
        method=method,
        reference_group=reference_group,
        elbo=elbo,
        diagnostics=report,
        seconds=seconds,
    )


def _guess_dim(values: np.ndarray, coords: Mapping[str, Any]) -> str:
    n = len(values)
    for name in ("obs", "person", "item", "group"):
        if name in coords and len(coords[name]) == n:
            return name
    raise ValueError(f"Cannot find a dim of length {n} for a data array; pass it in coords.")


#: NUTS fields kept in ``sample_stats`` (besides the draws), as NumPyro names them.
_NUTS_FIELDS = ("diverging", "num_steps", "energy", "potential_energy", "accept_prob",
                "adapt_state.step_size")


def _run_nuts(
    model_fn, model_kwargs, rng_key, *, keep, chains, draws, warmup, target_accept,
    max_tree_depth, chain_method, progress_bar,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """NUTS through one compiled program (vectorized / sequential chains) when the model's
    array arguments can be traced; otherwise, and for ``parallel``, NumPyro's ``MCMC``."""
    settings = dict(keep=keep, chains=chains, draws=draws, warmup=warmup,
                    target_accept=target_accept, max_tree_depth=max_tree_depth)
    if chain_method in ("vectorized", "sequential"):
        split = _split_arrays(model_kwargs)
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
    posterior = _to_numpy({k: collected[k] for k in keep})
    extra = _to_numpy({k: collected[k] for k in _NUTS_FIELDS})
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
        init_strategy=init_to_uniform(radius=1.0),
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


class _Traced:
    """Marks the positions of traced (array) leaves in a static kwargs description."""

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return "<traced>"


_TRACED = _Traced()


def _split_arrays(tree: Any) -> tuple[list[Any], tuple[Any, tuple[Any, ...]]] | None:
    """Split a pytree of model arguments into its array leaves (traced by jit) and a
    hashable static part ``(treedef, leaves with arrays replaced by a marker)``; None
    when a non-array leaf is unhashable."""
    leaves, treedef = jax.tree.flatten(tree)
    is_array = [isinstance(x, (np.ndarray, jax.Array)) for x in leaves]
    arrays = [x for x, a in zip(leaves, is_array, strict=True) if a]
    static = (treedef, tuple(_TRACED if a else x for x, a in zip(leaves, is_array, strict=True)))
    try:
        hash(static)
    except TypeError:
        return None
    return arrays, static


def _join_arrays(arrays: Sequence[Any], static: tuple[Any, tuple[Any, ...]]) -> Any:
    treedef, leaves = static
    it = iter(arrays)
    return jax.tree.unflatten(treedef, [next(it) if x is _TRACED else x for x in leaves])


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


class _NutsProgram:
    """NumPyro's NUTS kernel driven through its public ``MCMCKernel`` interface (``init``,
    ``sample``, ``postprocess_fn``) by two jitted functions that take the model's arrays as
    arguments:

    * ``init(keys, arrays)``: initial parameters (``init_to_uniform``), warm-up adapter and
      the empty draw buffers, for a batch of chains (vmapped);
    * ``advance(state, arrays, buffers, start, stop)``: NUTS transitions ``start..stop-1``
      (warm-up and sampling in one ``fori_loop``), writing the constrained draws and the
      sampler statistics of the sampling iterations into the buffers.

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
            init_strategy=init_to_uniform(radius=1.0),
        )
        self.init = jax.jit(self._init)
        self.advance = jax.jit(self._advance, donate_argnums=(2,))

    def _kwargs(self, arrays):
        return _join_arrays(arrays, self.key.static)

    def _record(self, state, kwargs) -> dict[str, jnp.ndarray]:
        """Constrained sites in ``keep`` (deterministic sites included) and statistics."""
        constrain = self.kernel.postprocess_fn((), kwargs)
        values = jax.vmap(constrain)(state.z)
        out = {k: values[k] for k in self.key.keep if k in values}
        for name in _NUTS_FIELDS:
            value = state
            for part in name.split("."):
                value = getattr(value, part)
            out[name] = value
        return out

    def _init(self, keys, arrays):
        kwargs = self._kwargs(arrays)

        def one_chain(rng_key):
            return self.kernel.init(rng_key, self.key.warmup, None, model_args=(),
                                    model_kwargs=kwargs)

        # a single (non-batched) key per chain: NumPyro's non-vectorized init under our vmap
        state = jax.vmap(one_chain)(keys)
        record = self._record(state, kwargs)
        buffers = jax.tree.map(
            lambda x: jnp.zeros((self.key.draws, *x.shape), x.dtype), record
        )
        return state, buffers, jnp.all(jnp.isfinite(state.potential_energy))

    def _advance(self, state, arrays, buffers, start, stop):
        kwargs = self._kwargs(arrays)
        sample = jax.vmap(self.kernel.sample, in_axes=(0, None, None))
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


#: compiled NUTS programs of this process, most recently used last
_NUTS_PROGRAMS: OrderedDict[_NutsKey, _NutsProgram] = OrderedDict()
_NUTS_PROGRAMS_MAX = 8


def _nuts_program(key: _NutsKey) -> _NutsProgram:
    program = _NUTS_PROGRAMS.pop(key, None) or _NutsProgram(key)
    _NUTS_PROGRAMS[key] = program
    while len(_NUTS_PROGRAMS) > _NUTS_PROGRAMS_MAX:
        _NUTS_PROGRAMS.popitem(last=False)
    return program


def _run_nuts_compiled(
    model_fn, arrays, static, rng_key, *, keep, chains, draws, warmup, target_accept,
    max_tree_depth, chain_method, progress_bar,
) -> dict[str, np.ndarray]:
    """Run NUTS with :class:`_NutsProgram`: all chains at once (``vectorized``) or one
    after another through the same compiled program (``sequential``)."""
    key = _NutsKey(model_fn, static, int(warmup), int(draws), float(target_accept),
                   int(max_tree_depth), tuple(keep))
    program = _nuts_program(key)
    chain_keys = jax.random.split(rng_key, chains)
    batches = [chain_keys] if chain_method == "vectorized" else [chain_keys[c:c + 1]
                                                                  for c in range(chains)]
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
            pieces.append(jax.tree.map(lambda x: np.swapaxes(np.asarray(x), 0, 1), buffers))
    finally:
        bar.close()
    return {k: np.concatenate([p[k] for p in pieces], axis=0) for k in pieces[0]}


def _make_guide(model_fn, guide: str, method: str, rank: int | None):
    # Uniform(-0.5, 0.5) on the unconstrained scale: near the prior centre, and much cheaper
    # to set up than init_to_median (which samples every site eagerly).
    init = init_to_uniform(radius=0.5)
    if method == "map":
        return AutoDelta(model_fn, init_loc_fn=init)
    if guide == "lowrank":
        return AutoLowRankMultivariateNormal(model_fn, rank=rank, init_loc_fn=init, init_scale=0.1)
    return AutoNormal(model_fn, init_loc_fn=init, init_scale=0.1)


def _run_svi(
    model_fn, model_kwargs, rng_key, *, keep, method, draws, guide, rank, learning_rate,
    max_steps, tol, patience, eval_every, minibatch_size, progress_bar,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    fit_kwargs = dict(model_kwargs)
    if minibatch_size is not None:
        fit_kwargs["subsample_size"] = int(minibatch_size)
    auto_guide = _make_guide(model_fn, guide, method, rank)
    schedule = optax.exponential_decay(
        init_value=learning_rate, transition_steps=1000, decay_rate=0.8,
        end_value=learning_rate / 20,
    )
    optimizer = optax.adam(schedule)
    svi = SVI(model_fn, auto_guide, optimizer, loss=Trace_ELBO())
    init_key, run_key, draw_key = jax.random.split(rng_key, 3)
    state = svi.init(init_key, **fit_kwargs)

    @jax.jit
    def run_window(state):
        def step(carry, _):
            carry, loss = svi.update(carry, **fit_kwargs)
            return carry, loss

        return jax.lax.scan(step, state, None, length=eval_every)

    losses: list[np.ndarray] = []
    previous = None
    calm = 0
    n_windows = max(1, math.ceil(max_steps / eval_every))
    bar = tqdm(total=n_windows * eval_every, desc=f"{method.upper()}", disable=not progress_bar)
    converged = False
    for _ in range(n_windows):
        state, window = run_window(state)
        window = np.asarray(window)
        losses.append(window)
        if not np.all(np.isfinite(window)):
            bar.close()
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
    bar.close()
    elbo = np.concatenate(losses)
    if not converged:
        warnings.warn(
            f"{method.upper()} did not converge in {max_steps} steps (the ELBO change between "
            f"windows stayed above tol={tol} and its noise); raise max_steps or learning_rate.",
            UserWarning,
            stacklevel=3,
        )
    params = svi.get_params(state)
    n_draws = 1 if method == "map" else draws
    predictive = Predictive(
        model_fn,
        guide=auto_guide,
        params=params,
        num_samples=n_draws,
        return_sites=keep,
    )
    # jit the whole draw: one compilation, and XLA drops the unused likelihood factor.
    samples = jax.jit(lambda key: predictive(key, **model_kwargs))(draw_key)
    missing = [k for k in keep if k not in samples]
    if missing:
        raise ValueError(f"The model has no sample or deterministic site(s) {missing}.")
    posterior = {k: np.asarray(samples[k])[None] for k in keep}
    return posterior, elbo


# ------------------------------------------------------------------------------ fit
def fit(
    data: ResponseData,
    model: str | ModelSpec = "2pl",
    dif: str = "normal",
    method: str = "nuts",
    *,
    chains: int = 4,
    draws: int = 1000,
    warmup: int = 1000,
    seed: int = 0,
    float64: bool = False,
    progress_bar: bool = True,
    dif_discrimination: bool = False,
    identification: str | None = None,
    anchors: Sequence[str] = (),
    n_options: int | None = None,
    minibatch_size: int | str | None = "auto",
    **options: Any,
) -> Fit:
    """Fit the joint multi-group IRT model with DIF to ``data``.

    Parameters
    ----------
    data : ResponseData.
    model : "1pl", "2pl", "3pl", "grm" or a ModelSpec (then ``dif``, ``dif_discrimination``,
        ``identification``, ``anchors`` and ``n_options`` are ignored).
    dif : "normal", "horseshoe" or "none".
    method : "nuts" (default), "svi" or "map".
    chains, draws, warmup, seed, float64, progress_bar : see :func:`run_inference`.
    dif_discrimination : also estimate non-uniform DIF on the log-discrimination.
    identification, anchors : "sum_to_zero" (default) or "anchors" with anchor item labels.
    n_options : answer options for the 3PL guessing prior (default 4).
    minibatch_size : SVI only; "auto" subsamples 10% of observations (at least 50,000) per
        step when there are more than AUTO_MINIBATCH_THRESHOLD observations; an int, or None
        for full-batch.
    **options : passed to :func:`run_inference` (target_accept, max_tree_depth,
        chain_method, guide, rank, learning_rate, max_steps, tol, patience, eval_every,
        log_likelihood, check, compilation_cache).

    Returns
    -------
    Fit, whose ``idata`` follows DESIGN.md (posterior variables, dims, coords, attrs).
    ``idata.attrs["dif_unidentified"]`` is a JSON list of ``[item, focal_group]`` pairs
    whose DIF the data cannot identify (see ResponseData.dif_unidentified).
    """
    if not isinstance(data, ResponseData):
        raise ValueError(
            f"fit expects a ResponseData (build one with ResponseData.from_long), got "
            f"{type(data).__name__}."
        )
    if isinstance(model, ModelSpec):
        spec = model
    else:
        spec = ModelSpec(
            irt=model,
            dif=dif,
            dif_discrimination=dif_discrimination,
            identification=identification or ("anchors" if anchors else "sum_to_zero"),
            anchors=tuple(anchors),
            n_options=n_options,
        )
    method = method.lower()
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
    float_dtype = np.float64 if float64 else np.float32
    inputs = build_model_inputs(data, spec, float_dtype=float_dtype)

    if minibatch_size == "auto":
        minibatch_size = (
            max(50_000, data.n_obs // 10)
            if method == "svi" and data.n_obs > AUTO_MINIBATCH_THRESHOLD
            else None
        )
    if minibatch_size is not None and method != "svi":
        raise ValueError("minibatch_size is only used with method='svi'.")
    if minibatch_size is not None and minibatch_size >= data.n_obs:
        minibatch_size = None

    if options.get("guide") == "lowrank" and options.get("rank") is None:
        options["rank"] = int(min(20, math.ceil(math.sqrt(_count_latent(inputs, spec)))))

    dif_unidentified = sorted([list(pair) for pair in data.dif_unidentified])
    result = run_inference(
        irt_model,
        {"inputs": inputs, "spec": spec},
        method=method,
        dims=irt_dims(spec),
        coords=data_coords(data),
        log_likelihood_fn=make_log_likelihood_fn(inputs, spec),
        observed_data={"y": data.response},
        constant_data={
            "person_idx": data.person_idx,
            "item_idx": data.item_idx,
            "group_idx": data.group_idx,
            "weight": data.weight,
            "person_group": data.person_group,
        },
        attrs={
            "kind": data.kind,
            "dif_unidentified": json.dumps(dif_unidentified),
            "n_categories": json.dumps([int(k) for k in data.n_categories]),
        },
        spec=spec,
        reference_group=data.reference_group,
        chains=chains,
        draws=draws,
        warmup=warmup,
        seed=seed,
        float64=float64,
        progress_bar=progress_bar,
        minibatch_size=minibatch_size,
        n_obs=data.n_obs,
        **options,
    )
    if spec.irt == "grm":
        _mask_padded_steps(result.idata, data.n_categories)
    result.data = data
    return result


def _mask_padded_steps(idata: az.InferenceData, n_categories: np.ndarray) -> None:
    """Set the padded cutpoints of items with fewer categories to NaN."""
    step = idata.posterior["step"]
    valid = np.arange(step.sizes["cutpoint"])[None, :] < (np.asarray(n_categories)[:, None] - 1)
    idata.posterior["step"] = step.where(valid[None, None])


def _count_latent(inputs, spec: ModelSpec) -> int:
    """Number of unconstrained latent dimensions of ``irt_model`` (for the low-rank guide)."""
    n_items, n_focal = inputs.n_items, inputs.n_focal
    count = inputs.n_persons + n_items + 2 * n_focal
    count += n_items * (spec.has_discrimination + (spec.irt == "3pl"))
    count += int(inputs.gap_item.size)
    if spec.dif != "none":
        count += n_focal * (1 + n_items) + (n_focal * (1 + n_items) if spec.dif == "horseshoe" else 0)
    if spec.dif_discrimination:
        count += n_focal * (1 + n_items)
    return count
