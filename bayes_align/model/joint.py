"""The joint multi-group IRT model with explicit DIF, as one NumPyro function.

Every group ``g`` is either person-level (an ability ``theta_p`` per person) or
aggregated (counts per item, ability integrated over ``Normal(mu_g, sigma_g)``); all
groups share the item parameters. For group ``g`` and item ``i`` (the *cell*)::

    b_gi = b_i + s_gi                    s: dif_shift (0 for the reference)
    a_gi = a_i exp(lambda_gi)            lambda: dif_log_discrimination (optional)

and the answer probabilities at ability ``theta`` follow the item response functions of
:mod:`bayes_align.model.irt` (binary 1PL/2PL/3PL, graded, nominal nested logit).

Priors (every scale is a field of :class:`~bayes_align.model.spec.Priors`, defaults in
brackets)::

    difficulty[i]         ~ Normal(0, difficulty [2])      (or a published value, item_prior_sd)
    log_discrimination[i] ~ Normal(0, log_discrimination [0.5])      (2pl, 3pl, grm)
    guessing[i]           ~ Beta(s / K, s (1 - 1/K)),  s = guessing_strength [20]   (3pl)
    step gaps             = exp(g),  g ~ Normal(0, step_log_gap [1]); steps centred (grm)
    mu[ref] = 0, sigma[ref] = 1
    mu[g]                 ~ Normal(0, group_mean [2])                     (focal groups)
    sigma[g]              ~ HalfNormal(group_sd [1])   person-level focal groups; aggregated
                            focal groups: fixed at ModelSpec.aggregated_sd (default 1)
    theta[p]              = mu[g_p] + sigma[g_p] z[p],  z ~ Normal(0, 1)
    dif_scale[g]          ~ HalfNormal(dif_scale [1]);  dif_raw[g, i] ~ Normal(0, 1)
    dif_shift[g, i]       = dif_scale[g] (dif_raw[g, i] - mean_i dif_raw[g, :])  sum_to_zero
                          = dif_scale[g] dif_raw[g, i] (1 - anchor[i])          anchors
    horseshoe:            tau[g] ~ HalfCauchy(p0 / (n_items - p0)), p0 = expected share x n_items,
                          lambda[g, i] ~ HalfCauchy(1), slab c^2 ~ InvGamma(nu / 2, nu s^2 / 2)
    dif_log_discrimination[g, i] = t_g (r[g, i] - mean_i r[g, :]),  t_g ~ HalfNormal(dif_discrimination_scale [0.5])
    nominal: distractor_intercept ~ Normal(0, distractor_intercept [2]) centred over the item's
             distractors; distractor_slope ~ Normal(0, distractor_slope [1]) (optional);
             dif_distractor[g] = u_g centred(raw), u_g ~ HalfNormal(dif_distractor_scale [1])

Likelihood: person observations ``y ~ BinaryResponse`` (3PL floor; fractional ``y`` for
soft responses) or ``GradedResponse``, weighted by ``weight``; aggregated rows
``counts ~ CategoryCounts(P_g)``, a multinomial over the row's answer categories with
``P_g(k) = sum_q w_q P(k | mu_g + sigma_g x_q)`` (Gauss-Hermite). Both are observed
distributions, so ``numpyro.infer.Predictive`` simulates the model.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist

from bayes_align.model.distributions import BinaryResponse, CategoryCounts, GradedResponse
from bayes_align.model.inputs import ModelInputs
from bayes_align.model.irt import (
    binary_log_probs,
    graded_category_log_probs,
    marginal_log_probs,
    nominal_category_log_probs,
)
from bayes_align.model.spec import ModelSpec, Priors

__all__ = [
    "LIKELIHOOD_PARAMS",
    "irt_model",
    "observation_distributions",
    "pointwise_log_likelihood",
    "row_scores",
    "sample_parameters",
]

#: posterior variables the likelihood reads
LIKELIHOOD_PARAMS = (
    "theta", "difficulty", "discrimination", "guessing", "step", "dif_shift",
    "dif_log_discrimination", "group_mean", "group_sd", "distractor_intercept",
    "distractor_slope", "dif_distractor",
)


# --------------------------------------------------------------------------- priors
def _centre(raw, anchor_mask, identification: str):
    """The identification constraint over items (last axis)."""
    if identification == "anchors":
        return raw * (1.0 - anchor_mask)
    return raw - jnp.mean(raw, axis=-1, keepdims=True)


def _sample_dif_shift(inputs: ModelInputs, spec: ModelSpec, priors: Priors):
    n_focal, n_items = inputs.n_focal, inputs.n_items
    anchor = jnp.asarray(inputs.anchor_mask)
    if spec.dif == "none" or n_focal == 0:
        return jnp.zeros((n_focal, n_items))
    if spec.dif == "normal":
        scale = numpyro.sample(
            "dif_scale", dist.HalfNormal(priors.dif_scale).expand([n_focal]).to_event(1)
        )
        raw = numpyro.sample("dif_raw", dist.Normal(0.0, 1.0).expand([n_focal, n_items]).to_event(2))
        shift = scale[:, None] * _centre(raw, anchor, spec.identification)
    else:  # regularized horseshoe, non-centred
        p0 = max(priors.horseshoe_expected_dif * n_items, 1.0)
        tau0 = p0 / max(n_items - p0, 1.0)
        nu, s = priors.horseshoe_slab_df, priors.horseshoe_slab_scale
        tau = numpyro.sample("dif_scale", dist.HalfCauchy(tau0).expand([n_focal]).to_event(1))
        lam = numpyro.sample(
            "dif_local_scale", dist.HalfCauchy(1.0).expand([n_focal, n_items]).to_event(2)
        )
        c2 = numpyro.sample(
            "dif_slab_c2", dist.InverseGamma(nu / 2, nu * s**2 / 2).expand([n_focal]).to_event(1)
        )
        lam_tilde = jnp.sqrt(c2[:, None] * lam**2 / (c2[:, None] + tau[:, None] ** 2 * lam**2))
        raw = numpyro.sample("dif_raw", dist.Normal(0.0, 1.0).expand([n_focal, n_items]).to_event(2))
        shift = _centre(tau[:, None] * lam_tilde * raw, anchor, spec.identification)
    return numpyro.deterministic("dif_shift", shift)


def _sample_steps(inputs: ModelInputs, priors: Priors):
    """Ordered graded steps ``(n_items, K_max - 1)``, centred per item; padding is 0."""
    n_items, k_max = inputs.n_items, inputs.max_categories
    gaps = jnp.zeros((n_items, k_max - 1))
    if inputs.gap_item.size:
        log_gap = numpyro.sample(
            "step_log_gap",
            dist.Normal(0.0, priors.step_log_gap).expand([inputs.gap_item.size]).to_event(1),
        )
        gaps = gaps.at[inputs.gap_item, inputs.gap_pos].set(jnp.exp(log_gap))
    cumulative = jnp.cumsum(gaps, axis=1)
    valid = jnp.arange(k_max - 1)[None, :] < (jnp.asarray(inputs.n_categories)[:, None] - 1)
    mean = jnp.sum(cumulative * valid, axis=1, keepdims=True) / jnp.sum(valid, axis=1, keepdims=True)
    return numpyro.deterministic("step", jnp.where(valid, cumulative - mean, 0.0))


def _sample_distractors(inputs: ModelInputs, spec: ModelSpec, priors: Priors) -> dict:
    """Nominal rows: distractor intercepts, slopes and DIF, centred over each item's
    distractors (sampled as flat vectors of the free distractor slots)."""
    shape = inputs.option_is_key.shape
    n_slots, n_focal = inputs.n_slots, inputs.n_focal
    if not n_slots:
        return {"distractor_intercept": jnp.zeros(shape)}
    centring = jnp.asarray(inputs.distractor_centring)

    def centred(raw):
        return (raw @ centring).reshape(*raw.shape[:-1], *shape)

    out = {}
    raw = numpyro.sample(
        "distractor_raw", dist.Normal(0.0, priors.distractor_intercept).expand([n_slots]).to_event(1)
    )
    out["distractor_intercept"] = numpyro.deterministic("distractor_intercept", centred(raw))
    if spec.distractor_slopes:
        raw = numpyro.sample(
            "distractor_slope_raw",
            dist.Normal(0.0, priors.distractor_slope).expand([n_slots]).to_event(1),
        )
        out["distractor_slope"] = numpyro.deterministic("distractor_slope", centred(raw))
    if spec.distractor_dif and n_focal:
        scale = numpyro.sample(
            "dif_distractor_scale",
            dist.HalfNormal(priors.dif_distractor_scale).expand([n_focal]).to_event(1),
        )
        raw = numpyro.sample(
            "dif_distractor_raw", dist.Normal(0.0, 1.0).expand([n_focal, n_slots]).to_event(2)
        )
        out["dif_distractor"] = numpyro.deterministic(
            "dif_distractor", scale[:, None, None] * centred(raw)
        )
    return out


def sample_parameters(inputs: ModelInputs, spec: ModelSpec, priors: Priors) -> dict:
    """Sample every prior of :func:`irt_model`; return the parameters the likelihood reads."""
    n_items, n_focal, n_groups = inputs.n_items, inputs.n_focal, inputs.n_groups
    params: dict[str, jnp.ndarray] = {}
    params["difficulty"] = numpyro.sample(
        "difficulty", dist.Normal(inputs.difficulty_loc, inputs.difficulty_sd).to_event(1)
    )
    if spec.has_discrimination:
        log_a = numpyro.sample(
            "log_discrimination",
            dist.Normal(inputs.log_discrimination_loc, inputs.log_discrimination_sd).to_event(1),
        )
        params["discrimination"] = numpyro.deterministic("discrimination", jnp.exp(log_a))
    if spec.irt == "3pl":
        params["guessing"] = numpyro.sample(
            "guessing", dist.Beta(inputs.guessing_alpha, inputs.guessing_beta).to_event(1)
        )
    if spec.irt == "grm":
        params["step"] = _sample_steps(inputs, priors)

    group_mean = jnp.zeros(n_groups)
    group_sd = jnp.asarray(inputs.fixed_sd)
    if n_focal:
        mu = numpyro.sample(
            "mu_focal", dist.Normal(0.0, priors.group_mean).expand([n_focal]).to_event(1)
        )
        group_mean = group_mean.at[jnp.asarray(inputs.focal_index)].set(mu)
    n_free = inputs.free_sd_index.shape[0]
    if n_free:
        sigma = numpyro.sample(
            "sigma_focal", dist.HalfNormal(priors.group_sd).expand([n_free]).to_event(1)
        )
        group_sd = group_sd.at[jnp.asarray(inputs.free_sd_index)].set(sigma)
    params["group_mean"] = numpyro.deterministic("group_mean", group_mean)
    params["group_sd"] = numpyro.deterministic("group_sd", group_sd)
    if inputs.n_persons:
        z = numpyro.sample("z", dist.Normal(0.0, 1.0).expand([inputs.n_persons]).to_event(1))
        person_group = jnp.asarray(inputs.person_group)
        params["theta"] = numpyro.deterministic(
            "theta", group_mean[person_group] + group_sd[person_group] * z
        )

    params["dif_shift"] = _sample_dif_shift(inputs, spec, priors)
    if spec.dif_discrimination and n_focal:
        scale = numpyro.sample(
            "dif_log_discrimination_scale",
            dist.HalfNormal(priors.dif_discrimination_scale).expand([n_focal]).to_event(1),
        )
        raw = numpyro.sample(
            "dif_log_discrimination_raw",
            dist.Normal(0.0, 1.0).expand([n_focal, n_items]).to_event(2),
        )
        params["dif_log_discrimination"] = numpyro.deterministic(
            "dif_log_discrimination",
            scale[:, None] * _centre(raw, jnp.asarray(inputs.anchor_mask), spec.identification),
        )
    if inputs.row_kind == "nominal":
        params.update(_sample_distractors(inputs, spec, priors))
    return params


# ----------------------------------------------------------------------- likelihood
def _cell_tables(params: Mapping, inputs: ModelInputs, irt: str):
    """Item parameters combined per (group, item) cell: flat ``b`` and ``a`` tables of
    ``(n_focal + 1) * n_items`` entries, the reference's row (last) without DIF. One
    gather per observation then brings both (instead of one per parameter)."""
    n_items = inputs.n_items
    dtype = params["difficulty"].dtype
    zero_row = jnp.zeros((1, n_items), dtype)

    def by_cell(table):
        return jnp.concatenate([table, zero_row], axis=0)

    b_cell = params["difficulty"][None, :] + by_cell(params["dif_shift"])
    if irt == "1pl":
        return b_cell.reshape(-1), None
    if "dif_log_discrimination" in params:
        a_cell = jnp.exp(jnp.log(params["discrimination"])[None, :]
                         + by_cell(params["dif_log_discrimination"]))
    else:
        a_cell = jnp.broadcast_to(params["discrimination"][None, :], b_cell.shape)
    return b_cell.reshape(-1), a_cell.reshape(-1)


def _person_distribution(params, inputs: ModelInputs, spec: ModelSpec, b_cell, a_cell, obs):
    cell = jnp.asarray(inputs.focal_row)[obs["group_idx"]] * inputs.n_items + obs["item_idx"]
    location = params["theta"][obs["person_idx"]] - b_cell[cell]
    a = None if a_cell is None else a_cell[cell]
    if spec.irt == "grm":
        return GradedResponse(a, location, params["step"], obs["item_idx"], inputs.n_categories)
    eta = location if a is None else a * location
    guessing = params["guessing"][obs["item_idx"]] if spec.irt == "3pl" else None
    return BinaryResponse(eta, guessing)


def row_category_log_probs(params, inputs: ModelInputs, spec: ModelSpec, b_cell=None, a_cell=None):
    """``(n_rows, K)`` log-probability of each answer category of every aggregated row,
    ability integrated over the row group's population by Gauss-Hermite quadrature."""
    if b_cell is None:
        b_cell, a_cell = _cell_tables(params, inputs, spec.irt)
    item, group = jnp.asarray(inputs.row_item), jnp.asarray(inputs.row_group)
    cell = jnp.asarray(inputs.focal_row)[group] * inputs.n_items + item
    theta = (params["group_mean"][group][:, None]
             + params["group_sd"][group][:, None] * jnp.asarray(inputs.nodes)[None, :])  # (R, Q)
    location = theta - b_cell[cell][:, None]
    a = jnp.ones_like(location[:, :1]) if a_cell is None else a_cell[cell][:, None]
    if inputs.row_kind == "graded":
        at_nodes = graded_category_log_probs(
            a, location, params["step"][item][:, None, :],
            jnp.asarray(inputs.n_categories)[item][:, None],
        )
    elif inputs.row_kind == "nominal":
        logits = params["distractor_intercept"][item][:, None, :]
        if "dif_distractor" in params:
            n_items, k = inputs.option_is_key.shape
            delta = jnp.concatenate(
                [params["dif_distractor"], jnp.zeros((1, n_items, k), logits.dtype)], axis=0
            )
            logits = logits + delta[jnp.asarray(inputs.focal_row)[group], item][:, None, :]
        if "distractor_slope" in params:
            logits = logits + params["distractor_slope"][item][:, None, :] * theta[:, :, None]
        at_nodes = nominal_category_log_probs(
            a * location, logits,
            jnp.asarray(inputs.option_is_key)[item][:, None, :],
            jnp.asarray(inputs.option_is_distractor)[item][:, None, :],
        )
    else:
        guessing = params["guessing"][item][:, None] if spec.irt == "3pl" else None
        log_q, log_p = binary_log_probs(a * location, guessing)
        at_nodes = jnp.stack([log_q, log_p], axis=-1)
    return marginal_log_probs(at_nodes, jnp.asarray(inputs.log_weights))


def observation_distributions(
    params: Mapping, inputs: ModelInputs, spec: ModelSpec, obs: Mapping | None = None,
    include_coefficient: bool = True,
) -> dict:
    """The distributions of the observed data given parameters: ``{"y": person
    responses, "counts": aggregated rows}`` (a key is absent when that part is empty).

    ``obs`` optionally replaces the person observation arrays (a minibatch).
    """
    b_cell, a_cell = _cell_tables(params, inputs, spec.irt)
    out = {}
    if inputs.n_obs:
        if obs is None:
            obs = {"person_idx": inputs.person_idx, "item_idx": inputs.item_idx,
                   "group_idx": inputs.group_idx}
        obs = {k: jnp.asarray(v) for k, v in obs.items()}
        out["y"] = _person_distribution(params, inputs, spec, b_cell, a_cell, obs)
    if inputs.n_rows:
        log_probs = row_category_log_probs(params, inputs, spec, b_cell, a_cell)
        out["counts"] = CategoryCounts(log_probs, jnp.asarray(inputs.row_total),
                                       include_coefficient=include_coefficient)
    return out


def irt_model(
    inputs: ModelInputs, spec: ModelSpec, priors: Priors, predict: bool = False,
    subsample_size: int | None = None,
) -> None:
    """The NumPyro model: :func:`sample_parameters`, then the observed sites ``y``
    (person responses, plate ``obs``) and ``counts`` (aggregated rows, plate ``row``).

    ``predict=True`` leaves the observed sites unobserved (``Predictive`` draws them).
    ``subsample_size=B`` (SVI minibatches) draws ``B`` person observations uniformly
    with replacement (``jax.random.randint``; NumPyro's plate subsampling draws without
    replacement through a slow scan) and scales their log-likelihood by ``n_obs / B``,
    an unbiased estimate; aggregated rows are always used whole. The row multinomial's
    coefficient, constant in the parameters, is left out of the density.
    """
    params = sample_parameters(inputs, spec, priors)
    obs = None
    n_rows, scale = inputs.n_obs, None
    response, weight = jnp.asarray(inputs.response), jnp.asarray(inputs.weight)
    if inputs.n_obs and subsample_size is not None:
        idx = jax.random.randint(numpyro.prng_key(), (subsample_size,), 0, inputs.n_obs)
        obs = {k: jnp.asarray(getattr(inputs, k))[idx] for k in ("person_idx", "item_idx", "group_idx")}
        response, weight = response[idx], weight[idx]
        n_rows, scale = subsample_size, inputs.n_obs / subsample_size
    if inputs.has_weights:
        scale = weight if scale is None else weight * scale
    dists = observation_distributions(params, inputs, spec, obs, include_coefficient=False)
    if "y" in dists:
        with numpyro.plate("obs", n_rows), numpyro.handlers.scale(scale=1.0 if scale is None else scale):
            numpyro.sample("y", dists["y"], obs=None if predict else response)
    if "counts" in dists:
        with numpyro.plate("row", inputs.n_rows):
            numpyro.sample("counts", dists["counts"], obs=None if predict else jnp.asarray(inputs.row_counts))


def pointwise_log_likelihood(draw: Mapping, inputs: ModelInputs, spec: ModelSpec):
    """Log-likelihood of every observation for one posterior draw: the weighted person
    responses, then the aggregated rows (multinomial coefficient included);
    shape ``(n_obs + n_rows,)``. ``draw`` holds posterior variables (DESIGN.md names)."""
    params = {k: draw[k] for k in LIKELIHOOD_PARAMS if k in draw}
    dtype = params["difficulty"].dtype
    if "dif_shift" not in params:  # dif="none": no shifts are stored
        params["dif_shift"] = jnp.zeros((inputs.n_focal, inputs.n_items), dtype)
    for name in ("step", "distractor_intercept", "distractor_slope", "dif_distractor"):
        if name in params:  # padded entries are NaN in the posterior
            params[name] = jnp.nan_to_num(params[name])
    if inputs.row_kind == "nominal" and "distractor_intercept" not in params:
        params["distractor_intercept"] = jnp.zeros(inputs.option_is_key.shape, dtype)
    dists = observation_distributions(params, inputs, spec)
    parts = []
    if "y" in dists:
        parts.append(jnp.asarray(inputs.weight) * dists["y"].log_prob(jnp.asarray(inputs.response)))
    if "counts" in dists:
        parts.append(dists["counts"].log_prob(jnp.asarray(inputs.row_counts)))
    return jnp.concatenate(parts)


def row_scores(counts, inputs: ModelInputs):
    """Mean answer of aggregated rows from counts ``(..., n_rows, K)``: the share choosing
    the key (binary and nominal rows) or the mean category (graded rows)."""
    counts = jnp.asarray(counts)
    total = jnp.sum(counts, axis=-1)
    if inputs.row_kind == "binary":
        return counts[..., 1] / total
    if inputs.row_kind == "nominal":
        is_key = jnp.asarray(inputs.option_is_key)[jnp.asarray(inputs.row_item)]
        return jnp.sum(counts * is_key, axis=-1) / total
    category = jnp.arange(counts.shape[-1], dtype=counts.dtype)
    return jnp.sum(counts * category, axis=-1) / total
