"""Item response functions: the probability of every answer category at a given ability.

Written once, in JAX, over arbitrary broadcast shapes; the model's likelihoods, the
simulators, the predictive checks and the plotted item curves all call these.

With item parameters combined per (group, item) cell,
``location = theta - b_i - s_gi`` and ``a = a_i exp(lambda_gi)`` (``s``: uniform DIF,
``lambda``: non-uniform DIF, both 0 for the reference):

* binary (1PL/2PL/3PL): ``P(y = 1) = c + (1 - c) sigmoid(a * location)``;
* graded (GRM): ``P(y >= k) = sigmoid(a (location - step_k))``, ``k = 1..K-1``, with
  increasing steps, and ``P(y = k) = P(y >= k) - P(y >= k + 1)``;
* nominal (nested logit, options with a key ``k*``): ``P(k*) = sigmoid(a * location)``
  and a distractor ``d`` gets ``(1 - P(k*)) softmax_D(z_d)`` with distractor logits
  ``z_d = zeta_d + delta_gd + lambda_d theta`` over the item's distractors ``D``.

An aggregated group (no person ids, counts per item) integrates ability over its
population ``theta ~ Normal(mu_g, sigma_g)`` by Gauss-Hermite quadrature,
``P_g(k) = sum_q w_q P(k | mu_g + sigma_g x_q)`` (:func:`marginal_log_probs`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

#: log-probability of a category an item does not have: finite, so gradients stay finite.
IMPOSSIBLE = -1e30


def gauss_hermite(n_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Probabilists' Gauss-Hermite nodes and weights normalised to sum to one.

    ``sum_q w_q f(x_q)`` approximates ``E[f(X)]`` for ``X ~ Normal(0, 1)``, exactly for
    polynomials of degree up to ``2 n_nodes - 1``.
    """
    if n_nodes < 1:
        raise ValueError("n_nodes must be at least 1")
    nodes, weights = np.polynomial.hermite_e.hermegauss(n_nodes)
    return nodes, weights / weights.sum()


def softplus(x: jnp.ndarray) -> jnp.ndarray:
    """``log(1 + exp(x))``, stable for any ``x``: ``max(x, 0) + log1p(exp(-|x|))``.

    The same function as ``jax.nn.softplus`` (to float rounding) without its inf/nan
    handling, which is cheaper on the XLA CPU backend (benchmarks/README.md compares
    them); it is the largest elementwise term of the binary likelihood.
    """
    # relu written as (x + |x|) / 2 so that the derivative is sigmoid(x) at x = 0 as well
    return 0.5 * (x + jnp.abs(x)) + jnp.log1p(jnp.exp(-jnp.abs(x)))


def binary_log_probs(eta: jnp.ndarray, guessing: jnp.ndarray | None = None):
    """``(log P(y = 0), log P(y = 1))`` with ``P(y = 1) = c + (1 - c) sigmoid(eta)``."""
    if guessing is None:
        return -softplus(eta), -softplus(-eta)
    log_1mc = jnp.log1p(-guessing)
    log_p = jnp.logaddexp(jnp.log(guessing), log_1mc + jax.nn.log_sigmoid(eta))
    return log_1mc + jax.nn.log_sigmoid(-eta), log_p


def graded_category_log_probs(a, location, step, n_categories) -> jnp.ndarray:
    """``log P(y = k)``, ``k = 0..K_max-1``, of the graded response model.

    ``a`` and ``location`` broadcast to a shape ``S``; ``step`` has shape
    ``S + (K_max - 1,)`` (the item's steps, any value beyond its ``K - 1``) and
    ``n_categories`` broadcasts to ``S``. Categories an item does not have get
    :data:`IMPOSSIBLE`. Uses ``P(>=k) - P(>=k+1) = sigmoid(u) sigmoid(-v) (1 - exp(v - u))``
    with ``u = a (location - step_k)``, ``v = a (location - step_{k+1})``.
    """
    k_max = step.shape[-1] + 1
    k = jnp.arange(k_max)
    last = jnp.asarray(n_categories)[..., None] - 1
    is_first, is_last = k == 0, k == last
    lower = jnp.take(step, jnp.clip(k - 1, 0, k_max - 2), axis=-1)
    upper = jnp.take(step, jnp.clip(k, 0, k_max - 2), axis=-1)
    return _graded_terms(a[..., None], location[..., None], lower, upper, is_first, is_last,
                         k > last)


def graded_log_prob_at(a, location, step_table, item_idx, category, n_categories) -> jnp.ndarray:
    """``log P(y = category)`` for observations of items ``item_idx``: two gathers from the
    ``(n_items, K_max - 1)`` step table instead of a row of steps per observation."""
    k = category.astype(jnp.int32)
    last = jnp.asarray(n_categories)[item_idx] - 1
    n_steps = step_table.shape[1]
    lower = step_table[item_idx, jnp.clip(k - 1, 0, n_steps - 1)]
    upper = step_table[item_idx, jnp.clip(k, 0, n_steps - 1)]
    return _graded_terms(a, location, lower, upper, k == 0, k == last, k > last)


def _graded_terms(a, location, lower, upper, is_first, is_last, absent):
    """log(sigmoid(u) - sigmoid(v)) with finite placeholders at the open ends."""
    lower = jnp.where(is_first, upper - 1.0, lower)
    upper = jnp.where(is_last, lower + 1.0, upper)
    u = a * (location - lower)
    v = a * (location - upper)
    log_upper_tail = jnp.where(is_first, 0.0, jax.nn.log_sigmoid(u))
    log_lower_tail = jnp.where(is_last, 0.0, jax.nn.log_sigmoid(-v))
    log_gap = jnp.where(is_first | is_last, 0.0, jnp.log(-jnp.expm1(jnp.minimum(v - u, -1e-30))))
    return jnp.where(absent, IMPOSSIBLE, log_upper_tail + log_lower_tail + log_gap)


def nominal_category_log_probs(eta, distractor_logits, is_key, is_distractor) -> jnp.ndarray:
    """``log P(option)`` of the nested-logit nominal model.

    ``eta = a * location`` has a shape ``S``; ``distractor_logits``, ``is_key`` and
    ``is_distractor`` broadcast to ``S + (K_max,)``. Options that are neither key nor
    distractor (padding) get :data:`IMPOSSIBLE`.
    """
    logits = jnp.where(is_distractor, distractor_logits, IMPOSSIBLE)
    log_soft = logits - jax.scipy.special.logsumexp(logits, axis=-1, keepdims=True)
    log_key = jax.nn.log_sigmoid(eta)[..., None]
    log_wrong = jax.nn.log_sigmoid(-eta)[..., None] + log_soft
    return jnp.where(is_key, log_key, jnp.where(is_distractor, log_wrong, IMPOSSIBLE))


def marginal_log_probs(log_probs_at_nodes: jnp.ndarray, log_weights: jnp.ndarray) -> jnp.ndarray:
    """``log sum_q w_q P(k | theta_q)`` from ``(..., Q, K)`` log-probabilities at the nodes."""
    return jax.scipy.special.logsumexp(log_weights[:, None] + log_probs_at_nodes, axis=-2)


def expected_score(log_probs: jnp.ndarray) -> jnp.ndarray:
    """``sum_k k P(k)`` over the last axis (the mean category; P(y = 1) for binary items)."""
    k = jnp.arange(log_probs.shape[-1], dtype=log_probs.dtype)
    return jnp.sum(jnp.exp(log_probs) * k, axis=-1)
