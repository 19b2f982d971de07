"""Prior and posterior predictive draws of the model, as ArviZ groups.

Both run ``numpyro.infer.Predictive`` on the model itself (:func:`bayes_align.model.joint.irt_model`
with its observed sites left free): the posterior predictive substitutes every stored
posterior draw (deterministic sites included) and draws the responses; the prior
predictive draws parameters and responses from the priors. The simulated ``y`` has the
layout of ``observed_data["y"]`` (dim ``obs``: person responses, then the aggregated
rows' mean answers), so ``az.plot_ppc`` and ``az.loo_pit`` work on the result.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from functools import partial
from typing import Any

import arviz as az
import jax
import numpy as np
from numpyro.infer import Predictive

from bayes_align.aggregated import AggregatedData
from bayes_align.checks import check_design
from bayes_align.combined import CombinedData, as_combined
from bayes_align.data import ResponseData
from bayes_align.model.dims import coords as data_coords
from bayes_align.model.dims import posterior_dims
from bayes_align.model.inputs import ModelInputs, build_model_inputs
from bayes_align.model.joint import irt_model, row_scores
from bayes_align.model.spec import ModelSpec, Priors
from bayes_align.results import Fit, as_idata, data_groups, fit_inputs, mask_padded

__all__ = ["item_curves", "posterior_predictive", "prior_predictive", "simulate_y"]

_OBSERVED_SITES = ("y", "counts")
#: substitute stored deterministic sites (theta, dif_shift, ...) too; the keyword changed
#: name in NumPyro 0.19
_CONDITION_DETERMINISTIC = (
    {"condition_deterministic": True}
    if "condition_deterministic" in inspect.signature(Predictive).parameters
    else {"exclude_deterministic": False}
)


def simulate_y(
    samples: Mapping[str, np.ndarray], inputs: ModelInputs, spec: ModelSpec, priors: Priors,
    seed: int = 0, return_sites: tuple[str, ...] = (),
) -> dict[str, np.ndarray]:
    """Draw data from the model for each parameter draw in ``samples`` (leading axis:
    draws; any stored posterior variable, deterministic ones included; missing latent
    variables are drawn from their priors). Returns ``{"y": (draws, obs)}`` plus any
    ``return_sites`` (e.g. ``"counts"``, parameters)."""
    n = int(next(iter(samples.values())).shape[0])
    chunk = max(1, min(n, 20_000_000 // max(inputs.n_obs + inputs.n_rows * 8, 1)))
    sites = tuple(sorted({*_OBSERVED_SITES, *return_sites}))

    def draw(key, batch, model_inputs):
        return _draw_program(key, batch, model_inputs, spec, priors, sites)

    keys = jax.random.split(jax.random.PRNGKey(seed), -(-n // chunk))
    pieces = []
    for k, start in enumerate(range(0, n, chunk)):
        stop = min(start + chunk, n)
        batch = {name: np.asarray(v)[start:stop] for name, v in samples.items()}
        if stop - start < chunk:  # pad so one compiled program serves every chunk
            batch = {name: np.concatenate([v, np.repeat(v[-1:], chunk - (stop - start), 0)])
                     for name, v in batch.items()}
        out = draw(keys[k], batch, inputs)
        pieces.append({name: np.asarray(v)[: stop - start] for name, v in out.items() if name in sites})
    out = {name: np.concatenate([p[name] for p in pieces]) for name in pieces[0]}
    parts = []
    if "y" in out:
        parts.append(out["y"].astype(np.float64))
    if "counts" in out:
        parts.append(np.asarray(row_scores(out["counts"], inputs), np.float64))
    out["y"] = np.concatenate(parts, axis=-1)
    return out


@partial(jax.jit, static_argnames=("spec", "priors", "sites"))
def _draw_program(key, batch, model_inputs, spec, priors, sites):
    """One compiled program per model, sites and shapes (data and draws are arguments)."""
    predictive = Predictive(irt_model, posterior_samples=batch, return_sites=list(sites),
                            **_CONDITION_DETERMINISTIC)
    return predictive(key, inputs=model_inputs, spec=spec, priors=priors, predict=True)


def posterior_predictive(fit: Fit, draws: int | None = None, seed: int = 0) -> Fit:
    """Add a ``posterior_predictive`` group (``y``, dims ``chain, draw, obs``) to the fit.

    ``draws=None`` uses every posterior draw (needed by ``az.loo_pit``, whose weights come
    from the same draws); an integer takes that many draws evenly spaced per chain.
    Returns the same Fit (its ``idata`` gains or replaces the group).
    """
    idata = as_idata(fit)
    inputs, spec, priors = fit_inputs(fit)
    posterior = idata.posterior
    if draws is not None:
        if not (isinstance(draws, int) and draws >= 1):
            raise ValueError(f"draws must be a positive integer or None, got {draws!r}")
        per_chain = max(1, -(-draws // posterior.sizes["chain"]))
        take = np.unique(np.linspace(0, posterior.sizes["draw"] - 1, per_chain).astype(int))
        posterior = posterior.isel(draw=take)
    chain, draw = posterior.sizes["chain"], posterior.sizes["draw"]
    samples = {name: np.nan_to_num(posterior[name].values.reshape(chain * draw, *posterior[name].shape[2:]))
               for name in posterior.data_vars}
    y = simulate_y(samples, inputs, spec, priors, seed=seed)["y"].reshape(chain, draw, -1)
    if "posterior_predictive" in idata.groups():
        del idata.posterior_predictive
    idata.add_groups(
        posterior_predictive={"y": y}, dims={"y": ["obs"]},
        coords={"chain": posterior["chain"].values, "draw": posterior["draw"].values,
                "obs": idata.observed_data["obs"].values},
    )
    return fit


@partial(jax.jit, static_argnames=("spec", "priors", "draws", "sites"))
def _prior_draws(rng_key, inputs: ModelInputs, spec: ModelSpec, priors: Priors, draws: int,
                 sites: tuple[str, ...]):
    """``draws`` joint draws of parameters and responses from the prior (compiled once per
    spec, priors, sizes and shapes)."""
    predictive = Predictive(irt_model, num_samples=draws, return_sites=list(sites))
    return predictive(rng_key, inputs=inputs, spec=spec, priors=priors, predict=True)


def prior_predictive(
    data: ResponseData | AggregatedData | CombinedData,
    model: str | ModelSpec = "2pl",
    dif: str = "normal",
    draws: int = 500,
    seed: int = 0,
    priors: Priors | Mapping[str, float] | None = None,
    **spec_options: Any,
) -> az.InferenceData:
    """Draw parameters and responses from the priors for the design of ``data``.

    Returns an InferenceData with ``prior`` (the model's parameters, named dims),
    ``prior_predictive`` (``y`` on ``obs``), ``observed_data`` and ``constant_data``:
    ``az.plot_ppc(idata, group="prior")`` compares simulated and observed responses.
    ``spec_options`` are further :class:`ModelSpec` fields (``dif_discrimination``,
    ``anchors``, ``likelihood``, ...).
    """
    if not (isinstance(draws, int) and draws >= 1):
        raise ValueError(f"draws must be a positive integer, got {draws!r}")
    combined = as_combined(data)
    spec = model if isinstance(model, ModelSpec) else ModelSpec(irt=model, dif=dif, **spec_options)
    priors = Priors.coerce(priors)
    check_design(combined, spec)
    inputs = build_model_inputs(combined, spec, priors)
    dims = posterior_dims(spec, inputs)
    out = _prior_draws(jax.random.PRNGKey(seed), inputs, spec, priors, draws,
                       (*dims, *_OBSERVED_SITES))
    prior = {name: np.asarray(out[name])[None] for name in dims}
    parts = []
    if "y" in out:
        parts.append(np.asarray(out["y"], np.float64))
    if "counts" in out:
        parts.append(np.asarray(row_scores(out["counts"], inputs), np.float64))
    groups = data_groups(combined, inputs, spec)
    coords = data_coords(combined, inputs)
    all_dims = {k: list(v) for k, v in dims.items()} | groups["dims"] | {"y": ["obs"]}
    used = {d for dl in all_dims.values() for d in dl}
    idata = az.from_dict(
        prior=prior, prior_predictive={"y": np.concatenate(parts, axis=-1)[None]},
        observed_data=groups["observed"], constant_data=groups["constant"],
        coords={k: v for k, v in coords.items() if k in used}, dims=all_dims,
    )
    idata.attrs.update(groups["attrs"] | {"model_spec": spec.to_json(), "priors": priors.to_json(),
                                          "reference_group": combined.reference_group})
    mask_padded(idata.prior, inputs)
    return idata


def item_curves(
    fit: Fit, item: str, groups: list[str] | tuple[str, ...], theta: np.ndarray, max_draws: int = 200
) -> dict[str, np.ndarray]:
    """Posterior draws of an item's expected answer as a function of ability, per group:
    ``{group: (draws, len(theta))}`` (P(key) for binary and nominal items, the mean
    category for graded ones), from the model's item response functions with the
    group's DIF (uniform and non-uniform) applied."""
    import jax.numpy as jnp

    from bayes_align.model.irt import (
        binary_log_probs,
        expected_score,
        graded_category_log_probs,
    )

    idata = as_idata(fit)
    post = idata.posterior.stack(sample=("chain", "draw"))
    take = np.linspace(0, post.sizes["sample"] - 1, min(max_draws, post.sizes["sample"])).astype(int)
    post = post.isel(sample=take)
    if item not in post["item"].values:
        raise ValueError(f"unknown item {item!r}")

    def values(name, **sel):
        return np.nan_to_num(post[name].sel(item=item, **sel).transpose("sample", ...).values)

    focal = set(post["focal_group"].values.astype(str)) if "focal_group" in post.dims else set()
    unknown = [g for g in groups if g not in set(post["group"].values.astype(str))]
    if unknown:
        raise ValueError(f"unknown groups {unknown}")
    theta = jnp.asarray(theta, jnp.float32)[None, :]
    curves = {}
    for group in groups:
        b = values("difficulty")
        a = values("discrimination") if "discrimination" in post else np.ones_like(b)
        if group in focal and "dif_shift" in post:
            b = b + values("dif_shift", focal_group=group)
        if group in focal and "dif_log_discrimination" in post:
            a = a * np.exp(values("dif_log_discrimination", focal_group=group))
        location = theta - jnp.asarray(b)[:, None]
        a = jnp.asarray(a)[:, None]
        if "step" in post:
            step = jnp.asarray(values("step"))  # (S, K - 1)
            n_cat = int(np.isfinite(post["step"].sel(item=item).isel(sample=0).values).sum()) + 1
            log_p = graded_category_log_probs(a, location, step[:, None, :], n_cat)
            curves[group] = np.asarray(expected_score(log_p))
        else:
            guessing = jnp.asarray(values("guessing"))[:, None] if "guessing" in post else None
            curves[group] = np.exp(np.asarray(binary_log_probs(a * location, guessing)[1]))
    return curves
