"""NumPyro distributions of the observed data, so that the model can simulate itself.

Each has the ``log_prob`` the likelihood needs (vectorised, gathering only what the
observed value needs) and a ``sample`` that draws data from the same item response
function (:mod:`bayes_align.model.irt`); ``numpyro.infer.Predictive`` uses the latter.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.special import gammaln
from numpyro.distributions import Distribution, constraints
from numpyro.distributions.util import promote_shapes

from bayes_align.model.irt import (
    IMPOSSIBLE,
    binary_log_probs,
    graded_category_log_probs,
    graded_log_prob_at,
    softplus,
)


class BinaryResponse(Distribution):
    """``y ~ Bernoulli(c + (1 - c) sigmoid(eta))`` (``c = 0`` without ``guessing``).

    ``log_prob`` accepts fractional ``y`` in [0, 1] (soft responses) as
    ``y log p + (1 - y) log(1 - p)``; ``sample`` draws 0/1.
    """

    arg_constraints = {"eta": constraints.real}
    support = constraints.unit_interval
    pytree_data_fields = ("eta", "guessing")

    def __init__(self, eta, guessing=None, *, validate_args=None):
        self.eta = eta
        self.guessing = guessing
        super().__init__(batch_shape=jnp.shape(eta), validate_args=validate_args)

    @property
    def probs(self):
        p = jax.nn.sigmoid(self.eta)
        return p if self.guessing is None else self.guessing + (1 - self.guessing) * p

    def log_prob(self, value):
        if self.guessing is None:  # y log sigmoid(eta) + (1 - y) log sigmoid(-eta)
            return value * self.eta - softplus(self.eta)
        log_q, log_p = binary_log_probs(self.eta, self.guessing)
        return value * log_p + (1.0 - value) * log_q

    def sample(self, key, sample_shape=()):
        shape = sample_shape + self.batch_shape
        return jax.random.bernoulli(key, self.probs, shape).astype(jnp.result_type(float))

    @property
    def mean(self):
        return self.probs


class GradedResponse(Distribution):
    """Graded response model for observations of items ``item_idx``.

    ``a``, ``location`` and ``item_idx`` have the batch shape; ``step`` is the
    ``(n_items, K_max - 1)`` table and ``n_categories`` the ``(n_items,)`` counts.
    """

    arg_constraints = {"a": constraints.positive, "location": constraints.real}
    support = constraints.nonnegative_integer
    pytree_data_fields = ("a", "location", "step", "item_idx", "n_categories")

    def __init__(self, a, location, step, item_idx, n_categories, *, validate_args=None):
        self.a, self.location = promote_shapes(a, location)
        self.step, self.item_idx, self.n_categories = step, item_idx, n_categories
        super().__init__(batch_shape=jnp.shape(self.location), validate_args=validate_args)

    def category_log_probs(self):
        """``(batch, K_max)`` log-probabilities of every category."""
        return graded_category_log_probs(
            self.a, self.location, self.step[self.item_idx],
            jnp.asarray(self.n_categories)[self.item_idx],
        )

    def log_prob(self, value):
        return graded_log_prob_at(
            self.a, self.location, self.step, self.item_idx, value, self.n_categories
        )

    def sample(self, key, sample_shape=()):
        logits = self.category_log_probs()
        return jax.random.categorical(key, logits, shape=sample_shape + self.batch_shape).astype(
            jnp.result_type(float)
        )


class CategoryCounts(Distribution):
    """Multinomial counts over the categories of a row: ``counts ~ Multinomial(n, P)``.

    ``log_probs`` ``(rows, K)`` (categories a row does not have at
    :data:`~bayes_align.model.irt.IMPOSSIBLE`), ``total`` ``(rows,)``. Counts may be
    fractional (soft counts); ``log_prob`` is then the multinomial kernel with
    ``lgamma`` coefficients. ``include_coefficient=False`` drops the coefficient, which
    is constant in the parameters (the model uses that; stored log-likelihoods keep it).
    ``sample`` draws integer counts of ``round(total)`` by sequential binomials.
    """

    arg_constraints = {"log_probs": constraints.real_vector}
    support = constraints.independent(constraints.nonnegative, 1)
    pytree_data_fields = ("log_probs", "total")
    pytree_aux_fields = ("include_coefficient",)

    def __init__(self, log_probs, total, include_coefficient=True, *, validate_args=None):
        self.log_probs, self.total = log_probs, total
        self.include_coefficient = include_coefficient
        super().__init__(
            batch_shape=jnp.shape(log_probs)[:-1],
            event_shape=jnp.shape(log_probs)[-1:],
            validate_args=validate_args,
        )

    def log_prob(self, value):
        present = self.log_probs > IMPOSSIBLE / 2
        kernel = jnp.sum(jnp.where(present, value * self.log_probs, 0.0), axis=-1)
        if not self.include_coefficient:
            return kernel
        coefficient = gammaln(jnp.sum(value, axis=-1) + 1) - jnp.sum(
            jnp.where(present, gammaln(value + 1), 0.0), axis=-1
        )
        return coefficient + kernel

    def sample(self, key, sample_shape=()):
        shape = sample_shape + self.batch_shape
        probs = jnp.broadcast_to(jnp.exp(self.log_probs), shape + self.event_shape)
        remaining_n = jnp.broadcast_to(jnp.round(self.total), shape)
        remaining_p = jnp.ones(shape, probs.dtype)
        columns = []
        keys = jax.random.split(key, self.event_shape[0])
        for k in range(self.event_shape[0] - 1):
            p = jnp.clip(probs[..., k] / jnp.maximum(remaining_p, 1e-30), 0.0, 1.0)
            count = jax.random.binomial(keys[k], remaining_n, p).astype(probs.dtype)
            columns.append(count)
            remaining_n = remaining_n - count
            remaining_p = remaining_p - probs[..., k]
        columns.append(remaining_n)
        return jnp.stack(columns, axis=-1)

    @property
    def mean(self):
        return jnp.exp(self.log_probs) * self.total[..., None]
