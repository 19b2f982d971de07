"""The model layer: spec and priors, sites and shapes, item response functions, observed
distributions (log-density and simulation) and the pointwise log-likelihood."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from numpyro import handlers
from scipy import stats

from bayes_align import simulate
from bayes_align.combined import as_combined
from bayes_align.data import ResponseData
from bayes_align.model.distributions import BinaryResponse, CategoryCounts, GradedResponse
from bayes_align.model.inputs import build_model_inputs
from bayes_align.model.irt import graded_category_log_probs, softplus
from bayes_align.model.joint import irt_model, observation_distributions, pointwise_log_likelihood
from bayes_align.model.spec import ModelSpec, Priors


def _inputs(data, spec, priors=None):
    return build_model_inputs(as_combined(data), spec, priors or Priors())


def _trace(data, spec, priors=None):
    priors = priors or Priors()
    inputs = _inputs(data, spec, priors)
    return handlers.trace(handlers.seed(irt_model, 0)).get_trace(inputs=inputs, spec=spec, priors=priors)


@pytest.fixture(scope="module")
def small():
    data, _ = simulate(n_persons=60, n_items=6, n_dif_items=2, seed=0)
    return data


def test_spec_and_priors_validation_and_json():
    spec = ModelSpec(irt="3PL", dif="horseshoe", anchors=("a", "b"), n_options=5)
    assert spec.irt == "3pl" and spec.identification == "anchors"
    assert ModelSpec.from_json(spec.to_json()) == spec
    for kwargs, message in [
        ({"irt": "4pl"}, "irt must be"), ({"dif": "laplace"}, "dif must be"),
        ({"identification": "anchors"}, "anchor"), ({"irt": "1pl", "dif_discrimination": True}, "dif_discrimination"),
        ({"dif_discrimination": "yes"}, "True or False"), ({"likelihood": "nominal", "irt": "3pl"}, "nominal"),
        ({"aggregated_sd": -1.0}, "aggregated_sd"), ({"n_nodes": 0}, "n_nodes"),
    ]:
        with pytest.raises(ValueError, match=message):
            ModelSpec(**kwargs)
    priors = Priors.parse(["dif_scale=0.5", "difficulty=3"])
    assert priors.dif_scale == 0.5 and priors.difficulty == 3.0 and priors.group_sd == 1.0
    assert Priors.from_json(priors.to_json()) == priors
    for bad, message in [(["dif_scale"], "NAME=VALUE"), (["dif_scale=abc"], "not a number"),
                         (["nope=1"], "unknown Priors field"), (["dif_scale=-1"], "positive")]:
        with pytest.raises(ValueError, match=message):
            Priors.parse(bad)
    with pytest.raises(ValueError, match="must be a number"):
        Priors(dif_scale="1")


def test_sites_and_shapes(small):
    trace = _trace(small, ModelSpec(irt="2pl", dif="normal", dif_discrimination=True))
    shapes = {name: site["value"].shape for name, site in trace.items()}
    assert shapes["difficulty"] == (6,) and shapes["discrimination"] == (6,)
    assert shapes["dif_shift"] == (2, 6) and shapes["dif_scale"] == (2,)
    assert shapes["dif_log_discrimination"] == (2, 6)
    assert shapes["group_mean"] == (3,) and shapes["group_sd"] == (3,)
    assert shapes["theta"] == (small.n_persons,)
    assert trace["y"]["is_observed"] and trace["y"]["fn"].batch_shape == (small.n_obs,)
    assert "counts" not in trace  # no aggregated rows
    assert float(trace["group_mean"]["value"][0]) == 0.0
    assert float(trace["group_sd"]["value"][0]) == 1.0
    np.testing.assert_allclose(trace["dif_shift"]["value"].sum(axis=1), 0.0, atol=1e-5)


def test_prior_scales_reach_the_sites(small):
    trace = _trace(small, ModelSpec(), Priors(dif_scale=0.3, difficulty=5.0, group_sd=0.7))
    assert float(trace["dif_scale"]["fn"].base_dist.base_dist.scale) == pytest.approx(0.3)
    assert float(trace["difficulty"]["fn"].base_dist.scale[0]) == pytest.approx(5.0)
    assert float(trace["sigma_focal"]["fn"].base_dist.base_dist.scale) == pytest.approx(0.7)


def test_anchors_fix_shifts(small):
    spec = ModelSpec(dif="horseshoe", anchors=("item_000", "item_003"))
    shift = np.asarray(_trace(small, spec)["dif_shift"]["value"])
    np.testing.assert_array_equal(shift[:, [0, 3]], 0.0)
    assert np.all(shift[:, [1, 2, 4, 5]] != 0.0)


def test_model_data_mismatch_errors(small):
    from bayes_align.checks import check_design

    soft, _ = simulate(n_persons=30, n_items=4, n_dif_items=2, soft=True, seed=1)
    with pytest.raises(ValueError, match="soft.* graded response"):
        check_design(as_combined(soft), ModelSpec(irt="grm"))
    ordinal, _ = simulate(n_persons=30, n_items=4, n_dif_items=2, irt="grm", seed=1)
    with pytest.raises(ValueError, match="use model='grm'"):
        check_design(as_combined(ordinal), ModelSpec(irt="2pl"))
    with pytest.raises(ValueError, match=r"Anchor\(s\) 'nope' are not items"):
        check_design(as_combined(small), ModelSpec(anchors=("nope",)))
    with pytest.raises(ValueError, match=r"Anchor item\(s\) \['nope'\]"):
        _inputs(small, ModelSpec(anchors=("nope",)))


def test_binary_response_soft_weighted_and_3pl():
    eta = jnp.array([1.5 * 0.5])
    p = 1 / (1 + np.exp(-0.75))
    plain = BinaryResponse(eta)
    assert float(plain.log_prob(1.0)[0]) == pytest.approx(np.log(p), rel=1e-5)
    assert float(plain.log_prob(0.0)[0]) == pytest.approx(np.log(1 - p), rel=1e-5)
    soft = 0.7 * np.log(p) + 0.3 * np.log(1 - p)
    assert float(plain.log_prob(0.7)[0]) == pytest.approx(soft, rel=1e-5)
    floor = BinaryResponse(eta, jnp.array([0.25]))
    p3 = 0.25 + 0.75 * p
    assert float(floor.log_prob(1.0)[0]) == pytest.approx(np.log(p3), rel=1e-5)
    assert float(floor.log_prob(0.0)[0]) == pytest.approx(np.log(1 - p3), rel=1e-5)
    draws = np.asarray(floor.sample(jax.random.PRNGKey(0), (20_000,)))
    assert set(np.unique(draws)) == {0.0, 1.0}
    # sd of a mean of 20,000 Bernoulli draws is 0.003: 4 sd
    assert draws.mean() == pytest.approx(p3, abs=0.012)


def test_graded_probabilities_sum_to_one_match_formula_and_sample():
    step = jnp.array([[-1.0, 0.2, 0.8], [-1.0, 1.0, 0.0]])  # item 1 has 3 categories
    n_cat = jnp.array([4, 3])
    dist = GradedResponse(jnp.array([1.5, 1.5]), jnp.array([0.5, 0.5]), step, jnp.array([0, 1]), n_cat)
    probs = np.exp(np.asarray(dist.category_log_probs()))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    cum = 1 / (1 + np.exp(-1.5 * (0.5 - np.array([-1.0, 0.2, 0.8]))))
    np.testing.assert_allclose(probs[0], -np.diff(np.concatenate([[1.0], cum, [0.0]])), rtol=1e-4)
    assert probs[1, 3] < 1e-30  # the padded category
    for k in range(3):
        one = float(dist.log_prob(jnp.array([float(k), float(k)]))[1])
        assert one == pytest.approx(np.log(probs[1, k]), rel=1e-4)
    draws = np.asarray(dist.sample(jax.random.PRNGKey(1), (20_000,)))
    observed = np.stack([(draws[:, 0] == k).mean() for k in range(4)])
    np.testing.assert_allclose(observed, probs[0], atol=0.015)  # 4 sd of a share at n = 20,000
    assert draws[:, 1].max() <= 2


def test_graded_gradients_finite_at_open_ends():
    def total(step):
        log_p = graded_category_log_probs(jnp.array(1.3), jnp.array(0.2), step, 3)
        return jnp.sum(log_p)

    grad = jax.grad(total)(jnp.array([-0.5, 0.5]))
    assert np.all(np.isfinite(np.asarray(grad)))


def test_category_counts_is_the_multinomial_and_samples_it():
    probs = np.array([[0.2, 0.5, 0.3], [0.6, 0.4, 0.0]])
    log_p = jnp.log(jnp.where(probs > 0, probs, 1.0)) + jnp.where(probs > 0, 0.0, -1e30)
    counts = np.array([[3.0, 10, 7], [12.0, 8, 0]])
    dist = CategoryCounts(log_p, jnp.array([20.0, 20.0]))
    expected = [stats.multinomial.logpmf(counts[0], 20, probs[0]), stats.binom.logpmf(12, 20, 0.6)]
    np.testing.assert_allclose(np.asarray(dist.log_prob(counts)), expected, rtol=1e-5)
    kernel = CategoryCounts(log_p, jnp.array([20.0, 20.0]), include_coefficient=False)
    np.testing.assert_allclose(np.asarray(kernel.log_prob(counts)), (counts * np.log(np.where(probs > 0, probs, 1))).sum(1), rtol=1e-5)
    draws = np.asarray(dist.sample(jax.random.PRNGKey(0), (5000,)))
    np.testing.assert_array_equal(draws.sum(-1), 20.0)
    assert (draws[:, 1, 2] == 0).all()
    # sd of the mean count of a category over 5000 rows is at most sqrt(20 * 0.25 / 5000) = 0.03
    np.testing.assert_allclose(draws.mean(0), 20 * probs, atol=0.13)


def test_reference_group_has_no_shift_and_focal_shift_applies(small):
    spec = ModelSpec(irt="2pl")
    inputs = _inputs(small, spec)
    params = {
        "theta": jnp.full(small.n_persons, 0.3), "difficulty": jnp.full(6, -0.2),
        "discrimination": jnp.full(6, 1.5), "dif_shift": jnp.full((2, 6), 0.4),
        "group_mean": jnp.zeros(3), "group_sd": jnp.ones(3),
    }
    eta = np.asarray(observation_distributions(params, inputs, spec)["y"].eta)
    reference = small.group_idx == small.reference_index
    np.testing.assert_allclose(eta[reference], 1.5 * 0.5, rtol=1e-6)
    np.testing.assert_allclose(eta[~reference], 1.5 * 0.1, rtol=1e-5)  # harder for the group


def test_pointwise_log_likelihood_matches_the_observed_sites():
    data, _ = simulate(n_persons=60, n_items=6, n_dif_items=2, seed=0)
    frame = data.to_frame()
    frame["weight"] = np.where(frame["group"] == "human", 2.0, 1.0)
    weighted = ResponseData.from_long(frame, weight="weight")
    spec = ModelSpec(irt="2pl")
    trace = _trace(weighted, spec)
    draw = {k: site["value"] for k, site in trace.items() if site["type"] != "plate"}
    ll = np.asarray(pointwise_log_likelihood(draw, _inputs(weighted, spec), spec))
    site = trace["y"]
    np.testing.assert_allclose(ll, np.asarray(site["scale"] * site["fn"].log_prob(site["value"])), rtol=1e-5)
    assert ll.shape == (weighted.n_obs,)


def test_grm_with_per_item_categories():
    rng = np.random.default_rng(0)
    df = pd.DataFrame(
        {
            "person": np.repeat([f"p{k}" for k in range(20)], 2),
            "item": np.tile(["three", "five"], 20),
            "group": np.repeat(["human", "lm"] * 10, 2),
        }
    )
    df["response"] = np.where(df["item"] == "three", rng.integers(0, 3, 40), rng.integers(0, 5, 40))
    data = ResponseData.from_long(df, n_categories={"three": 3, "five": 5})
    trace = _trace(data, ModelSpec(irt="grm"))
    step = np.asarray(trace["step"]["value"])
    assert step.shape == (2, 4)
    assert np.all(np.diff(step[0, :2]) > 0) and np.all(np.diff(step[1]) > 0)
    np.testing.assert_allclose(step[0, :2].sum(), 0.0, atol=1e-5)
    np.testing.assert_allclose(step[1].sum(), 0.0, atol=1e-5)
    assert trace["step_log_gap"]["value"].shape == (1 + 3,)


def test_fast_softplus_matches_jax_softplus_and_its_gradient():
    x = jnp.array([-200.0, -30.0, -5.0, -1e-3, 0.0, 1e-3, 2.0, 30.0, 200.0], dtype=jnp.float32)
    np.testing.assert_allclose(softplus(x), jax.nn.softplus(x), rtol=1e-6, atol=1e-30)
    grad = jax.vmap(jax.grad(softplus))(x)
    np.testing.assert_allclose(grad, jax.nn.sigmoid(x), rtol=1e-5, atol=1e-7)
