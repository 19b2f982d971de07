"""``fit``: the one front door to the model, for person-level, aggregated and mixed data.

``fit(data, model=..., dif=..., method=...)`` turns a ``ResponseData``, an
``AggregatedData`` or their combination (:func:`bayes_align.combine`) into the model's
arrays, runs NUTS (:mod:`bayes_align.infer.nuts`) or SVI/MAP
(:mod:`bayes_align.infer.svi`) and returns a :class:`~bayes_align.results.Fit`.
``run_inference`` is the same engine for any NumPyro model that names its sites.

Devices: JAX uses a GPU when a CUDA build of JAX is installed. Parallel chains on a CPU
need ``numpyro.set_host_device_count(n)`` before JAX initialises (first thing in a
script); the library never does that at import. With one device, chains run one after
another on a CPU and vectorised on an accelerator.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import arviz as az
import jax
import numpy as np

from bayes_align import __version__
from bayes_align.aggregated import AggregatedData
from bayes_align.checks import METHODS, check_design, check_settings
from bayes_align.combined import CombinedData, as_combined
from bayes_align.data import ResponseData
from bayes_align.diagnostics import check_convergence
from bayes_align.infer.nuts import run_nuts
from bayes_align.infer.svi import GUIDES, run_svi
from bayes_align.infer.util import (
    default_chain_method,
    map_draws,
    maybe_enable_compilation_cache,
    precision,
)
from bayes_align.model.dims import coords as data_coords
from bayes_align.model.dims import posterior_dims
from bayes_align.model.inputs import ModelInputs, build_model_inputs
from bayes_align.model.joint import irt_model
from bayes_align.model.spec import ModelSpec, Priors
from bayes_align.results import (
    MAX_LOG_LIKELIHOOD_ELEMENTS,
    Fit,
    assemble,
    log_likelihood_draws,
    mask_padded,
)

__all__ = ["METHODS", "fit", "fit_aggregated", "run_inference"]

#: Above this many observations, SVI subsamples observations by default (minibatch="auto").
AUTO_MINIBATCH_THRESHOLD = 200_000


def fit(
    data: ResponseData | AggregatedData | CombinedData,
    model: str | ModelSpec = "2pl",
    dif: str = "normal",
    method: str = "nuts",
    *,
    priors: Priors | Mapping[str, float] | None = None,
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
    likelihood: str = "binary",
    distractor_slopes: bool = False,
    distractor_dif: bool = True,
    aggregated_sd: float | None = 1.0,
    n_nodes: int = 21,
    minibatch_size: int | str | None = "auto",
    **options: Any,
) -> Fit:
    """Fit the joint multi-group IRT model with DIF.

    Parameters
    ----------
    data : ``ResponseData`` (persons), ``AggregatedData`` (counts per item and group) or
        ``bayes_align.combine(...)`` of both.
    model : "1pl", "2pl", "3pl", "grm", or a ModelSpec (which then replaces ``dif``,
        ``dif_discrimination``, ``identification``, ``anchors``, ``n_options``,
        ``likelihood``, ``distractor_*``, ``aggregated_sd`` and ``n_nodes``).
    dif : "normal", "horseshoe" or "none".
    method : "nuts" (default), "svi" or "map".
    priors : a :class:`Priors` (or a mapping of its fields) to change prior scales.
    chains, draws, warmup : NUTS chains, posterior draws per chain and warm-up
        iterations; SVI and MAP use ``draws`` draws from the fitted guide (MAP: one).
    seed, float64, progress_bar : random seed, double precision, progress bars.
    dif_discrimination : also estimate non-uniform DIF on the log-discrimination.
    identification, anchors : "sum_to_zero" (default) or "anchors" with item labels.
    n_options : answer options for the 3PL guessing prior (default 4).
    likelihood, distractor_slopes, distractor_dif, aggregated_sd, n_nodes : aggregated
        rows (see :class:`ModelSpec`).
    minibatch_size : SVI only; "auto" subsamples 10% of the person observations (at least
        50,000) per step above AUTO_MINIBATCH_THRESHOLD observations; an int, or None.
    **options : target_accept (0.85), max_tree_depth (10), chain_method, guide ("normal" |
        "lowrank"), rank, learning_rate (0.01), max_steps (20000), tol (1e-4), patience (3),
        eval_every (200), log_likelihood (True), check (True), compilation_cache.

    Returns
    -------
    Fit whose ``idata`` follows DESIGN.md; ``idata.attrs["dif_unidentified"]`` lists the
    ``[item, focal_group]`` pairs whose DIF the data cannot identify.
    """
    combined = as_combined(data)
    spec = model if isinstance(model, ModelSpec) else ModelSpec(
        irt=model, dif=dif, dif_discrimination=dif_discrimination,
        identification=identification or ("anchors" if anchors else "sum_to_zero"),
        anchors=tuple(anchors), n_options=n_options, likelihood=likelihood,
        distractor_slopes=distractor_slopes, distractor_dif=distractor_dif,
        aggregated_sd=aggregated_sd, n_nodes=n_nodes,
    )
    priors = Priors.coerce(priors)
    method = check_settings(method, chains, draws, warmup)
    check_design(combined, spec)
    if options.get("guide", "normal") not in GUIDES:
        raise ValueError(f"guide must be one of {GUIDES}, got {options['guide']!r}.")
    inputs = build_model_inputs(combined, spec, priors, np.float64 if float64 else np.float32)

    if minibatch_size == "auto":
        minibatch_size = (max(50_000, combined.n_obs // 10)
                          if method == "svi" and combined.n_obs > AUTO_MINIBATCH_THRESHOLD else None)
    if minibatch_size is not None and method != "svi":
        raise ValueError("minibatch_size is only used with method='svi'.")
    if minibatch_size is not None and (combined.n_obs == 0 or minibatch_size >= combined.n_obs):
        minibatch_size = None
    if options.get("guide") == "lowrank" and options.get("rank") is None:
        options["rank"] = int(min(20, math.ceil(math.sqrt(count_latent(inputs, spec)))))
    want_log_lik = options.pop("log_likelihood", True)
    check = options.pop("check", True)

    dims = posterior_dims(spec, inputs)
    with precision(float64):
        posterior, sample_stats, elbo, seconds = _sample(
            irt_model, {"inputs": inputs, "spec": spec, "priors": priors}, method=method,
            keep=list(dims), chains=chains, draws=draws, warmup=warmup, seed=seed,
            progress_bar=progress_bar, minibatch_size=minibatch_size, **options,
        )
        log_lik = None
        n_draws = int(np.prod(next(iter(posterior.values())).shape[:2]))
        if want_log_lik:
            if n_draws * combined.n_units > MAX_LOG_LIKELIHOOD_ELEMENTS:
                warnings.warn(
                    f"The pointwise log-likelihood would hold {n_draws} x {combined.n_units} "
                    "numbers; not computed (use fewer draws for LOO).", UserWarning, stacklevel=2,
                )
            else:
                log_lik = log_likelihood_draws(inputs, spec, posterior, progress=progress_bar)
    idata = assemble(posterior, sample_stats, log_lik, combined, inputs, spec, dims,
                     data_coords(combined, inputs))
    mask_padded(idata.posterior, inputs)
    result = Fit(idata=idata, spec=spec, method=method, reference_group=combined.reference_group,
                 elbo=elbo, seconds=seconds, data=combined, priors=priors)
    idata.attrs.update({
        "method": method, "model_spec": spec.to_json(), "priors": priors.to_json(),
        "approximate": int(result.approximate), "bayes_align_version": __version__,
        "pointwise_log_likelihood": int(log_lik is not None),
    })
    if method == "nuts" and check:
        result.diagnostics = check_convergence(idata, max_tree_depth=options.get("max_tree_depth", 10))
    return result


def fit_aggregated(
    data: AggregatedData | CombinedData, method: str = "svi", irt: str = "1pl",
    focal_sd: float | None = 1.0, n_nodes: int = 21, likelihood: str = "binary",
    distractor_slopes: bool = False, distractor_dif: bool = True, **kwargs: Any,
) -> Fit:
    """:func:`fit` with the defaults that suit aggregated data: SVI, the 1PL (with one
    aggregate per item and group, discriminations are identified only across groups),
    focal ability sd fixed at ``focal_sd`` and no progress bar."""
    kwargs.setdefault("progress_bar", False)
    prior_sd = kwargs.pop("prior_sd", None)
    if prior_sd is not None:
        kwargs["priors"] = Priors.coerce(kwargs.get("priors")).replace(item_prior_sd=prior_sd)
    return fit(data, model=irt, method=method, likelihood=likelihood, n_nodes=n_nodes,
               distractor_slopes=distractor_slopes, distractor_dif=distractor_dif,
               aggregated_sd=focal_sd, **kwargs)


def count_latent(inputs: ModelInputs, spec: ModelSpec) -> int:
    """Number of unconstrained latent dimensions of the model (sizes the low-rank guide)."""
    n_items, n_focal = inputs.n_items, inputs.n_focal
    count = inputs.n_persons + n_items + n_focal + int(inputs.free_sd_index.shape[0])
    count += n_items * (spec.has_discrimination + (spec.irt == "3pl")) + int(inputs.gap_item.size)
    if spec.dif != "none":
        count += n_focal * (1 + n_items)
        if spec.dif == "horseshoe":
            count += n_focal * (1 + n_items)
    if spec.dif_discrimination:
        count += n_focal * (1 + n_items)
    if inputs.row_kind == "nominal":
        count += inputs.n_slots * (1 + spec.distractor_slopes)
        count += n_focal * (1 + inputs.n_slots) if spec.distractor_dif else 0
    return count


def _sample(
    model_fn: Callable[..., None], model_kwargs: Mapping[str, Any], *, method: str, keep: list[str],
    chains: int, draws: int, warmup: int, seed: int, progress_bar: bool,
    minibatch_size: int | None = None, target_accept: float = 0.85, max_tree_depth: int = 10,
    chain_method: str | None = None, guide: str = "normal", rank: int | None = None,
    learning_rate: float = 0.01, max_steps: int = 20_000, tol: float = 1e-4, patience: int = 3,
    eval_every: int = 200, compilation_cache: bool | str | Path | None = None,
):
    """Run NUTS or SVI/MAP; return ``(posterior, sample_stats, elbo, seconds)``."""
    maybe_enable_compilation_cache(compilation_cache)
    rng_key = jax.random.PRNGKey(seed)
    start = time.perf_counter()
    sample_stats = elbo = None
    if method == "nuts":
        posterior, sample_stats = run_nuts(
            model_fn, model_kwargs, rng_key, keep=keep, chains=chains, draws=draws,
            warmup=warmup, target_accept=target_accept, max_tree_depth=max_tree_depth,
            chain_method=chain_method or default_chain_method(chains), progress_bar=progress_bar,
        )
    else:
        posterior, elbo = run_svi(
            model_fn, model_kwargs, rng_key, keep=keep, method=method, draws=draws, guide=guide,
            rank=rank, learning_rate=learning_rate, max_steps=max_steps, tol=tol,
            patience=patience, eval_every=eval_every, minibatch_size=minibatch_size,
            progress_bar=progress_bar,
        )
    return posterior, sample_stats, elbo, time.perf_counter() - start


def run_inference(
    model_fn: Callable[..., None],
    model_kwargs: Mapping[str, Any],
    *,
    method: str = "nuts",
    dims: Mapping[str, Sequence[str]],
    coords: Mapping[str, Any],
    log_likelihood_fn: Callable[[Mapping[str, Any]], Any] | None = None,
    observed_data: Mapping[str, np.ndarray] | None = None,
    constant_data: Mapping[str, np.ndarray] | None = None,
    attrs: Mapping[str, Any] | None = None,
    chains: int = 4,
    draws: int = 1000,
    warmup: int = 1000,
    seed: int = 0,
    float64: bool = False,
    progress_bar: bool = True,
    check: bool = True,
    **options: Any,
) -> Fit:
    """Run NUTS, SVI or MAP on any NumPyro model and build its InferenceData.

    ``dims`` (posterior variable -> dim names) says which sample/deterministic sites are
    stored; ``log_likelihood_fn(draw) -> (n_obs,)`` (optional) is vmapped over draws into
    ``log_likelihood["y"]`` on dim ``obs``; ``observed_data``/``constant_data`` (1-d,
    on ``obs``) and ``attrs`` are stored as they are. ``options`` as in :func:`fit`.
    """
    method = check_settings(method, chains, draws, warmup)
    with precision(float64):
        posterior, sample_stats, elbo, seconds = _sample(
            model_fn, model_kwargs, method=method, keep=list(dims), chains=chains, draws=draws,
            warmup=warmup, seed=seed, progress_bar=progress_bar, **options,
        )
        log_lik = None
        if log_likelihood_fn is not None:
            size = len(next(iter((observed_data or {"y": [0]}).values())))
            log_lik = {"y": map_draws(log_likelihood_fn, posterior, size)}
    all_dims = {k: list(v) for k, v in dims.items()} | {"y": ["obs"]}
    for name in list(observed_data or {}) + list(constant_data or {}):
        all_dims.setdefault(name, ["obs"])
    idata = az.from_dict(
        posterior=posterior, sample_stats=sample_stats, log_likelihood=log_lik,
        observed_data=dict(observed_data) if observed_data else None,
        constant_data=dict(constant_data) if constant_data else None,
        coords=dict(coords), dims=all_dims,
    )
    idata.attrs.update({"method": method, "bayes_align_version": __version__,
                        "approximate": int(method != "nuts"), **dict(attrs or {})})
    result = Fit(idata=idata, spec=None, method=method, reference_group=str((attrs or {}).get(
        "reference_group", "")), elbo=elbo, seconds=seconds)
    if method == "nuts" and check:
        result.diagnostics = check_convergence(idata, max_tree_depth=options.get("max_tree_depth", 10))
    return result
