"""Joint multi-group IRT models with explicit DIF, as NumPyro functions.

Everything is written over long-format index arrays: for observation ``o`` with person
``p = person_idx[o]``, item ``i = item_idx[o]`` and group ``g = group_idx[o]``

.. math::

    \\eta_o = a_{ig} (\\theta_p - b_i - \\delta_{gi}), \\qquad
    a_{ig} = \\exp(\\log a_i + \\lambda_{gi}),

with ``b`` = ``difficulty``, ``a`` = ``discrimination``, ``delta`` = ``dif_shift`` (zero
for the reference group) and ``lambda`` = ``dif_log_discrimination`` (non-uniform DIF,
optional). Binary and soft responses use

.. math::

    p_o = c_i + (1 - c_i)\\,\\sigma(\\eta_o), \\qquad
    \\ell_o = w_o\\,[\\,y_o \\log p_o + (1 - y_o) \\log(1 - p_o)\\,],

(``c = 0`` except in the 3PL; fractional ``y`` is the soft/fractional Bernoulli). The graded
response model uses ``P(y >= k) = sigma(a (theta - b - delta - step[i, k]))``.

Priors (DESIGN.md)::

    difficulty[i]         ~ Normal(0, 2)
    log_discrimination[i] ~ Normal(0, 0.5)           (2pl, 3pl, grm; 1pl: a = 1)
    guessing[i]           ~ Beta(20/K, 20(1 - 1/K))  (3pl, K = n_options)
    mu_focal[g]           ~ Normal(0, 2),  sigma_focal[g] ~ HalfNormal(1);  reference 0, 1
    theta[p]              = mu[g_p] + sigma[g_p] z[p],  z ~ Normal(0, 1)
    dif_scale[g]          ~ HalfNormal(1);  dif_raw[g, i] ~ Normal(0, 1)
    dif_shift[g, i]       = dif_scale[g] (dif_raw[g, i] - mean_i dif_raw[g, :])   sum_to_zero
                          = dif_scale[g] dif_raw[g, i] (1 - anchor[i])            anchors

Additional priors not fixed by DESIGN.md (documented in the README, "Core"):

* grm: consecutive step gaps ``exp(step_log_gap)`` with ``step_log_gap ~ Normal(0, 1)``;
  steps are their cumulative sums, centred to sum to zero per item.
* horseshoe: regularized horseshoe (Piironen & Vehtari 2017) per focal group with
  ``tau[g] ~ HalfCauchy(tau0)``, ``tau0 = p0 / (n_items - p0)``, ``p0 = horseshoe_expected_dif``
  times ``n_items``; ``lambda[g, i] ~ HalfCauchy(1)``; slab ``c^2 ~ InvGamma(nu/2, nu s^2/2)``
  with ``nu = 4``, ``s = horseshoe_slab_scale``. ``dif_scale`` stores ``tau``.
* dif_discrimination: ``dif_log_discrimination[g, i] = s_g (r[g, i] - mean_i r[g, :])``,
  ``s_g ~ HalfNormal(0.5)`` (stored as ``dif_log_discrimination_scale``), ``r ~ Normal(0, 1)``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from bayes_align.data import ResponseData

IRT_MODELS = ("1pl", "2pl", "3pl", "grm")
DIF_PRIORS = ("normal", "horseshoe", "none")
IDENTIFICATIONS = ("sum_to_zero", "anchors")


@dataclass(frozen=True)
class ModelSpec:
    """Which IRT model to fit (see the module docstring for the math).

    irt : "1pl" | "2pl" | "3pl" | "grm"
    dif : "normal" (hierarchical normal, per-group scale) | "horseshoe" | "none"
    dif_discrimination : also fit non-uniform DIF on the log-discrimination.
    identification : "sum_to_zero" (DIF shifts sum to zero over items within a group,
        the default) or "anchors" (shifts of the ``anchors`` items are fixed at zero).
    anchors : item labels assumed DIF-free (identification="anchors").
    n_options : answer options per item for the 3PL guessing prior (default 4).
    horseshoe_expected_dif : prior guess of the fraction of DIF items (horseshoe).
    horseshoe_slab_scale : slab scale (logits) of the regularized horseshoe.
    """

    irt: str = "2pl"
    dif: str = "normal"
    dif_discrimination: bool = False
    identification: str = "sum_to_zero"
    anchors: tuple[str, ...] = field(default_factory=tuple)
    n_options: int | None = None
    horseshoe_expected_dif: float = 0.2
    horseshoe_slab_scale: float = 1.5

    def __post_init__(self) -> None:
        object.__setattr__(self, "irt", str(self.irt).lower())
        object.__setattr__(self, "anchors", tuple(str(a) for a in self.anchors))
        if self.irt not in IRT_MODELS:
            raise ValueError(f"irt must be one of {IRT_MODELS}, got {self.irt!r}.")
        if self.dif not in DIF_PRIORS:
            raise ValueError(f"dif must be one of {DIF_PRIORS}, got {self.dif!r}.")
        if self.identification not in IDENTIFICATIONS:
            raise ValueError(
                f"identification must be one of {IDENTIFICATIONS}, got {self.identification!r}."
            )
        if self.identification == "anchors" and not self.anchors:
            raise ValueError("identification='anchors' needs at least one anchor item label.")
        if self.anchors and self.identification != "anchors":
            object.__setattr__(self, "identification", "anchors")
        if self.dif_discrimination and self.irt == "1pl":
            raise ValueError("dif_discrimination needs a model with discriminations (2pl/3pl/grm).")
        if self.n_options is not None and self.n_options < 2:
            raise ValueError("n_options must be at least 2.")
        if not 0 < self.horseshoe_expected_dif < 1:
            raise ValueError("horseshoe_expected_dif must be a fraction in (0, 1).")

    @property
    def has_discrimination(self) -> bool:
        return self.irt != "1pl"

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelSpec:
        values = json.loads(text)
        values["anchors"] = tuple(values.get("anchors", ()))
        return cls(**values)


@dataclass(frozen=True, eq=False)
class ModelInputs:
    """Arrays and sizes the model needs, built once from a ResponseData by
    :func:`build_model_inputs`. Per-observation arrays have length ``n_obs``.

    A JAX pytree: the arrays are its leaves and the sizes (``n_persons``, ``n_items``,
    ``n_groups``, ``reference_index``, ``max_categories``) its static metadata, so a
    jitted sampler takes the data as traced arguments instead of baking them into the
    program as constants; the compiled program then depends only on the shapes and can
    be reused for other data of the same shapes (in memory and in JAX's persistent
    compilation cache).
    """

    person_idx: np.ndarray
    item_idx: np.ndarray
    group_idx: np.ndarray
    response: np.ndarray
    weight: np.ndarray
    person_group: np.ndarray
    n_persons: int
    n_items: int
    n_groups: int
    reference_index: int
    focal_index: np.ndarray  # (n_focal,) group index of every focal group
    focal_row: np.ndarray  # (n_groups,) row of a group in dif_shift; reference -> n_focal
    anchor_mask: np.ndarray  # (n_items,) 1.0 for anchors
    n_categories: np.ndarray  # (n_items,)
    guessing_prior_k: np.ndarray  # (n_items,) answer options for the 3PL prior
    gap_item: np.ndarray  # grm: item of every free step gap
    gap_pos: np.ndarray  # grm: position (1..K_i-2) of every free step gap
    #: largest number of categories over items; static (needed for array shapes).
    #: None: taken from ``n_categories`` (which must then be concrete).
    max_categories: int | None = None

    def __post_init__(self) -> None:
        if self.max_categories is None:
            object.__setattr__(self, "max_categories", int(np.max(self.n_categories)))

    @property
    def n_obs(self) -> int:
        return int(self.response.shape[0])

    @property
    def n_focal(self) -> int:
        return int(self.focal_index.shape[0])

    def observation_arrays(self) -> dict[str, np.ndarray]:
        return {
            "person_idx": self.person_idx,
            "item_idx": self.item_idx,
            "group_idx": self.group_idx,
            "response": self.response,
            "weight": self.weight,
        }


_STATIC_INPUT_FIELDS = ("n_persons", "n_items", "n_groups", "reference_index", "max_categories")
jax.tree_util.register_dataclass(
    ModelInputs,
    data_fields=[
        f.name for f in fields(ModelInputs) if f.name not in _STATIC_INPUT_FIELDS
    ],
    meta_fields=list(_STATIC_INPUT_FIELDS),
)


def build_model_inputs(data: ResponseData, spec: ModelSpec, float_dtype=np.float32) -> ModelInputs:
    """Check that ``spec`` suits ``data`` and assemble the model's arrays.

    Raises ValueError for soft responses with the GRM, ordinal responses with a binary
    model, or anchor labels that are not items.
    """
    if spec.irt == "grm" and data.kind == "soft":
        raise ValueError(
            "Soft (fractional) responses cannot be fitted with the graded response model; "
            "use irt='1pl'/'2pl'/'3pl', or round the responses to categories first."
        )
    if spec.irt != "grm" and data.kind == "ordinal":
        many = [data.items[i] for i in np.flatnonzero(data.n_categories > 2)]
        if many:
            raise ValueError(
                f"Items {many[:10]} have more than 2 categories; use irt='grm' for ordinal data."
            )
    if spec.irt == "grm" and data.kind == "binary":
        pass  # a GRM with K = 2 is the 2PL; allowed.

    anchor_mask = np.zeros(data.n_items, dtype=float_dtype)
    if spec.identification == "anchors":
        unknown = [a for a in spec.anchors if a not in data.items]
        if unknown:
            raise ValueError(
                f"Anchor item(s) {unknown} are not items of the data; anchors must be item labels."
            )
        anchor_mask[[data.items.index(a) for a in spec.anchors]] = 1.0

    focal_index = data.focal_index.astype(np.int32)
    focal_row = np.full(data.n_groups, len(focal_index), dtype=np.int32)
    focal_row[focal_index] = np.arange(len(focal_index), dtype=np.int32)

    k_options = spec.n_options if spec.n_options is not None else 4
    n_cat = data.n_categories.astype(np.int32) if spec.irt == "grm" else np.full(data.n_items, 2, np.int32)
    n_gaps = np.maximum(n_cat - 2, 0)
    gap_item = np.repeat(np.arange(data.n_items, dtype=np.int32), n_gaps)
    gap_pos = (
        np.concatenate([np.arange(1, k + 1) for k in n_gaps]).astype(np.int32)
        if n_gaps.sum()
        else np.zeros(0, np.int32)
    )
    return ModelInputs(
        person_idx=data.person_idx.astype(np.int32),
        item_idx=data.item_idx.astype(np.int32),
        group_idx=data.group_idx.astype(np.int32),
        response=data.response.astype(float_dtype),
        weight=data.weight.astype(float_dtype),
        person_group=data.person_group.astype(np.int32),
        n_persons=data.n_persons,
        n_items=data.n_items,
        n_groups=data.n_groups,
        reference_index=data.reference_index,
        focal_index=focal_index,
        focal_row=focal_row,
        anchor_mask=anchor_mask,
        n_categories=n_cat,
        guessing_prior_k=np.full(data.n_items, k_options, dtype=float_dtype),
        gap_item=gap_item,
        gap_pos=gap_pos,
        max_categories=int(n_cat.max()),
    )


# --------------------------------------------------------------------------- priors
def _centre(raw: jnp.ndarray, anchor_mask: jnp.ndarray, identification: str) -> jnp.ndarray:
    """Apply the identification constraint over items (last axis)."""
    if identification == "anchors":
        return raw * (1.0 - anchor_mask)
    return raw - jnp.mean(raw, axis=-1, keepdims=True)


def _sample_dif_shift(inputs: ModelInputs, spec: ModelSpec) -> jnp.ndarray:
    n_focal, n_items = inputs.n_focal, inputs.n_items
    anchor = jnp.asarray(inputs.anchor_mask)
    if spec.dif == "none" or n_focal == 0:
        return jnp.zeros((n_focal, n_items))
    if spec.dif == "normal":
        scale = numpyro.sample("dif_scale", dist.HalfNormal(1.0).expand([n_focal]).to_event(1))
        raw = numpyro.sample("dif_raw", dist.Normal(0.0, 1.0).expand([n_focal, n_items]).to_event(2))
        shift = scale[:, None] * _centre(raw, anchor, spec.identification)
    else:  # regularized horseshoe, non-centred
        p0 = max(spec.horseshoe_expected_dif * n_items, 1.0)
        tau0 = p0 / max(n_items - p0, 1.0)
        slab_df, slab_scale = 4.0, spec.horseshoe_slab_scale
        tau = numpyro.sample("dif_scale", dist.HalfCauchy(tau0).expand([n_focal]).to_event(1))
        lam = numpyro.sample(
            "dif_local_scale", dist.HalfCauchy(1.0).expand([n_focal, n_items]).to_event(2)
        )
        c2 = numpyro.sample(
            "dif_slab_c2",
            dist.InverseGamma(slab_df / 2, slab_df * slab_scale**2 / 2).expand([n_focal]).to_event(1),
        )
        lam_tilde = jnp.sqrt(c2[:, None] * lam**2 / (c2[:, None] + tau[:, None] ** 2 * lam**2))
        raw = numpyro.sample("dif_raw", dist.Normal(0.0, 1.0).expand([n_focal, n_items]).to_event(2))
        shift = _centre(tau[:, None] * lam_tilde * raw, anchor, spec.identification)
    return numpyro.deterministic("dif_shift", shift)


def _sample_steps(inputs: ModelInputs) -> jnp.ndarray:
    """Ordered GRM steps, padded to ``(n_items, K_max - 1)``; padded entries are 0."""
    n_items, k_max = inputs.n_items, inputs.max_categories
    gaps = jnp.zeros((n_items, k_max - 1))
    if inputs.gap_item.size:
        log_gap = numpyro.sample(
            "step_log_gap", dist.Normal(0.0, 1.0).expand([inputs.gap_item.size]).to_event(1)
        )
        gaps = gaps.at[inputs.gap_item, inputs.gap_pos].set(jnp.exp(log_gap))
    cumulative = jnp.cumsum(gaps, axis=1)  # position 0 is the first step (0 before centring)
    valid = (jnp.arange(k_max - 1)[None, :] < (jnp.asarray(inputs.n_categories)[:, None] - 1))
    mean = jnp.sum(cumulative * valid, axis=1, keepdims=True) / jnp.sum(valid, axis=1, keepdims=True)
    return numpyro.deterministic("step", jnp.where(valid, cumulative - mean, 0.0))


def sample_parameters(inputs: ModelInputs, spec: ModelSpec) -> dict[str, jnp.ndarray]:
    """Sample all priors of :func:`irt_model`; return the parameters the likelihood uses."""
    n_items, n_focal, n_groups = inputs.n_items, inputs.n_focal, inputs.n_groups
    focal_index = jnp.asarray(inputs.focal_index)

    difficulty = numpyro.sample("difficulty", dist.Normal(0.0, 2.0).expand([n_items]).to_event(1))
    params: dict[str, jnp.ndarray] = {"difficulty": difficulty}
    if spec.has_discrimination:
        log_a = numpyro.sample(
            "log_discrimination", dist.Normal(0.0, 0.5).expand([n_items]).to_event(1)
        )
        params["discrimination"] = numpyro.deterministic("discrimination", jnp.exp(log_a))
    if spec.irt == "3pl":
        k = jnp.asarray(inputs.guessing_prior_k)
        params["guessing"] = numpyro.sample(
            "guessing", dist.Beta(20.0 / k, 20.0 * (1.0 - 1.0 / k)).to_event(1)
        )
    if spec.irt == "grm":
        params["step"] = _sample_steps(inputs)

    group_mean, group_sd = jnp.zeros(n_groups), jnp.ones(n_groups)
    if n_focal:
        mu_focal = numpyro.sample("mu_focal", dist.Normal(0.0, 2.0).expand([n_focal]).to_event(1))
        sigma_focal = numpyro.sample(
            "sigma_focal", dist.HalfNormal(1.0).expand([n_focal]).to_event(1)
        )
        group_mean = group_mean.at[focal_index].set(mu_focal)
        group_sd = group_sd.at[focal_index].set(sigma_focal)
    group_mean = numpyro.deterministic("group_mean", group_mean)
    group_sd = numpyro.deterministic("group_sd", group_sd)
    z = numpyro.sample("z", dist.Normal(0.0, 1.0).expand([inputs.n_persons]).to_event(1))
    person_group = jnp.asarray(inputs.person_group)
    params["theta"] = numpyro.deterministic(
        "theta", group_mean[person_group] + group_sd[person_group] * z
    )

    params["dif_shift"] = _sample_dif_shift(inputs, spec)
    if spec.dif_discrimination and n_focal:
        scale = numpyro.sample(
            "dif_log_discrimination_scale", dist.HalfNormal(0.5).expand([n_focal]).to_event(1)
        )
        raw = numpyro.sample(
            "dif_log_discrimination_raw",
            dist.Normal(0.0, 1.0).expand([n_focal, n_items]).to_event(2),
        )
        params["dif_log_discrimination"] = numpyro.deterministic(
            "dif_log_discrimination",
            scale[:, None] * _centre(raw, jnp.asarray(inputs.anchor_mask), spec.identification),
        )
    return params


# --------------------------------------------------------------------- likelihood
@partial(jax.jit, static_argnames=("irt",))
def observation_log_likelihood(
    params: Mapping[str, jnp.ndarray],
    person_idx: jnp.ndarray,
    item_idx: jnp.ndarray,
    group_idx: jnp.ndarray,
    response: jnp.ndarray,
    weight: jnp.ndarray,
    focal_row: jnp.ndarray,
    n_categories: jnp.ndarray,
    irt: str,
) -> jnp.ndarray:
    """Weighted log-likelihood of every observation for one parameter draw (pure JAX).

    ``params`` holds ``theta`` (n_persons,), ``difficulty`` (n_items,), ``dif_shift``
    (n_focal, n_items) and, depending on ``irt``, ``discrimination``, ``guessing``,
    ``step`` (n_items, K_max - 1) and ``dif_log_discrimination`` (n_focal, n_items).
    Returns ``w_o * log p(y_o | params)`` of shape (n_obs,). Vectorise over draws with
    ``jax.vmap``. Jitted so that the eager model trace NumPyro runs at initialisation
    compiles it once instead of op by op (inside another jit it is simply inlined).
    """
    n_items = params["difficulty"].shape[-1]
    dtype = params["difficulty"].dtype
    # Every item parameter is first combined per (group, item) cell (n_groups x n_items
    # numbers, the reference row without DIF), then one gather of a (cells, k) table
    # brings them to the observations: 2 gathers per observation (theta, table) instead
    # of one per parameter, so the backward pass has 2 scatter-adds over the observations
    # instead of 4 or 5, and exp(log a + lambda) is taken per cell, not per observation
    # (benchmarks/README.md, "Compile once and per-gradient cost").
    cell = jnp.asarray(focal_row)[group_idx] * n_items + item_idx
    zero_row = jnp.zeros((1, n_items), dtype=dtype)

    def by_cell(table):  # (n_focal, n_items) -> (n_focal + 1, n_items), reference row 0
        return jnp.concatenate([table, zero_row], axis=0)

    b_cell = params["difficulty"][None, :] + by_cell(params["dif_shift"])
    columns = [b_cell.reshape(-1)]
    if irt != "1pl":
        if "dif_log_discrimination" in params:
            a_cell = jnp.exp(
                jnp.log(params["discrimination"])[None, :]
                + by_cell(params["dif_log_discrimination"])
            )
        else:
            a_cell = jnp.broadcast_to(params["discrimination"][None, :], b_cell.shape)
        columns.append(a_cell.reshape(-1))
    per_obs = [column[cell] for column in columns]
    location = params["theta"][person_idx] - per_obs[0]
    a = jnp.ones_like(location) if irt == "1pl" else per_obs[1]

    if irt == "grm":
        return weight * _graded_log_prob(a, location, params["step"], item_idx, response, n_categories)

    eta = location if irt == "1pl" else a * location
    if irt == "3pl":
        c = params["guessing"][item_idx]
        log_p = jnp.logaddexp(jnp.log(c), jnp.log1p(-c) + jax.nn.log_sigmoid(eta))
        log_q = jnp.log1p(-c) + jax.nn.log_sigmoid(-eta)
        return weight * (response * log_p + (1.0 - response) * log_q)
    # y log sigmoid(eta) + (1 - y) log sigmoid(-eta) = y eta - softplus(eta)
    return weight * (response * eta - softplus(eta))


def softplus(x: jnp.ndarray) -> jnp.ndarray:
    """``log(1 + exp(x))``, stable for any ``x``: ``max(x, 0) + log1p(exp(-|x|))``.

    The same function as ``jax.nn.softplus`` (to float rounding), about 4x cheaper on the
    XLA CPU backend, where ``jax.nn.softplus`` goes through ``jnp.logaddexp`` and its
    inf/nan handling (measured in benchmarks/README.md); it is the largest elementwise
    term of the binary likelihood and of its gradient.
    """
    # relu written as (x + |x|) / 2 so that the derivative is sigmoid(x) at x = 0 as well
    # (jnp.maximum splits a tie 1/2 - 1/2 and d|x|/dx = 1 there, which would give 0)
    return 0.5 * (x + jnp.abs(x)) + jnp.log1p(jnp.exp(-jnp.abs(x)))


def _graded_log_prob(a, location, step, item_idx, response, n_categories):
    """log P(y = k) = log(sigma(u) - sigma(v)), u = a(loc - step[k-1]), v = a(loc - step[k]).

    Uses sigma(u) - sigma(v) = sigma(u) sigma(-v) (1 - exp(v - u)); the open ends (k = 0 or
    k = K_i - 1) are handled with finite placeholders and masks, so gradients stay finite.
    """
    k = response.astype(jnp.int32)
    last = jnp.asarray(n_categories)[item_idx] - 1
    is_first = k == 0
    is_last = k == last
    n_steps = step.shape[1]
    lower = step[item_idx, jnp.clip(k - 1, 0, n_steps - 1)]
    upper = step[item_idx, jnp.clip(k, 0, n_steps - 1)]
    lower = jnp.where(is_first, upper - 1.0, lower)
    upper = jnp.where(is_last, lower + 1.0, upper)
    u = a * (location - lower)
    v = a * (location - upper)
    log_upper_tail = jnp.where(is_first, 0.0, jax.nn.log_sigmoid(u))
    log_lower_tail = jnp.where(is_last, 0.0, jax.nn.log_sigmoid(-v))
    log_gap = jnp.where(is_first | is_last, 0.0, jnp.log(-jnp.expm1(v - u)))
    return log_upper_tail + log_lower_tail + log_gap


def irt_model(inputs: ModelInputs, spec: ModelSpec, subsample_size: int | None = None) -> None:
    """The NumPyro model: priors from :func:`sample_parameters`, then a weighted
    log-likelihood factor ``y`` inside ``plate("obs")``.

    With ``subsample_size=B`` (SVI minibatches) the factor covers ``B`` observations drawn
    uniformly with replacement and is scaled by ``n_obs / B``, an unbiased estimate of the
    full log-likelihood. The indices come from ``jax.random.randint``: NumPyro's own plate
    subsampling draws without replacement through a scan that costs seconds per step on
    a CPU at millions of observations (benchmarks/README.md, W3).
    """
    params = sample_parameters(inputs, spec)
    obs = inputs.observation_arrays()
    n_rows, scale = inputs.n_obs, 1.0
    if subsample_size is not None:
        idx = jax.random.randint(numpyro.prng_key(), (subsample_size,), 0, inputs.n_obs)
        obs = {k: jnp.asarray(v)[idx] for k, v in obs.items()}
        n_rows, scale = subsample_size, inputs.n_obs / subsample_size
    with numpyro.plate("obs", n_rows), numpyro.handlers.scale(scale=scale):
        log_lik = observation_log_likelihood(
            params,
            focal_row=inputs.focal_row,
            n_categories=inputs.n_categories,
            irt=spec.irt,
            **obs,
        )
        numpyro.factor("y", log_lik)


LIKELIHOOD_PARAMS = (
    "theta",
    "difficulty",
    "discrimination",
    "guessing",
    "step",
    "dif_shift",
    "dif_log_discrimination",
)


def make_log_likelihood_fn(inputs: ModelInputs, spec: ModelSpec):
    """Return ``f(draw) -> {"y": (n_obs,), "y_person": (n_persons,)}`` for one posterior draw.

    ``draw`` is a dict of the posterior variables (DESIGN.md names). ``y_person`` sums the
    observation log-likelihoods per person (for leave-one-person-out PSIS-LOO).
    """
    obs = {k: jnp.asarray(v) for k, v in inputs.observation_arrays().items()}
    focal_row = jnp.asarray(inputs.focal_row)
    n_categories = jnp.asarray(inputs.n_categories)
    n_persons, n_focal, n_items = inputs.n_persons, inputs.n_focal, inputs.n_items

    def log_likelihood(draw: Mapping[str, jnp.ndarray]) -> dict[str, jnp.ndarray]:
        params = {k: draw[k] for k in LIKELIHOOD_PARAMS if k in draw}
        if "dif_shift" not in params:  # dif="none": no shifts are stored
            params["dif_shift"] = jnp.zeros((n_focal, n_items), dtype=draw["difficulty"].dtype)
        if spec.irt == "grm":
            params["step"] = jnp.nan_to_num(params["step"])  # padded cutpoints are NaN
        y = observation_log_likelihood(
            params, focal_row=focal_row, n_categories=n_categories, irt=spec.irt, **obs
        )
        y_person = jax.ops.segment_sum(y, obs["person_idx"], num_segments=n_persons)
        return {"y": y, "y_person": y_person}

    return log_likelihood
