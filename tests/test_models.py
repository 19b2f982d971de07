"""Model specification, priors/sites and the pure log-likelihood (no sampling here)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpyro import handlers

from bayes_align import simulate
from bayes_align.data import ResponseData
from bayes_align.models import (
    ModelSpec,
    build_model_inputs,
    irt_model,
    make_log_likelihood_fn,
    observation_log_likelihood,
)


def _trace(data, spec):
    inputs = build_model_inputs(data, spec)
    return handlers.trace(handlers.seed(irt_model, 0)).get_trace(inputs=inputs, spec=spec)


@pytest.fixture(scope="module")
def small():
    data, _ = simulate(n_persons=60, n_items=6, n_dif_items=2, seed=0)
    return data


def test_spec_validation_and_json():
    spec = ModelSpec(irt="3PL", dif="horseshoe", anchors=("a", "b"), n_options=5)
    assert spec.irt == "3pl" and spec.identification == "anchors"
    assert ModelSpec.from_json(spec.to_json()) == spec
    with pytest.raises(ValueError, match="irt must be"):
        ModelSpec(irt="4pl")
    with pytest.raises(ValueError, match="dif must be"):
        ModelSpec(dif="laplace")
    with pytest.raises(ValueError, match="anchor"):
        ModelSpec(identification="anchors")
    with pytest.raises(ValueError, match="dif_discrimination"):
        ModelSpec(irt="1pl", dif_discrimination=True)


def test_sites_and_shapes(small):
    trace = _trace(small, ModelSpec(irt="2pl", dif="normal", dif_discrimination=True))
    shapes = {name: site["value"].shape for name, site in trace.items()}
    assert shapes["difficulty"] == (6,)
    assert shapes["discrimination"] == (6,)
    assert shapes["dif_shift"] == (2, 6)
    assert shapes["dif_scale"] == (2,)
    assert shapes["dif_log_discrimination"] == (2, 6)
    assert shapes["group_mean"] == (3,) and shapes["group_sd"] == (3,)
    assert shapes["theta"] == (small.n_persons,)
    assert trace["y"]["fn"].log_prob(trace["y"]["value"]).shape == (small.n_obs,)
    assert float(trace["group_mean"]["value"][0]) == 0.0
    assert float(trace["group_sd"]["value"][0]) == 1.0
    # sum-to-zero identification over items, within each focal group
    np.testing.assert_allclose(trace["dif_shift"]["value"].sum(axis=1), 0.0, atol=1e-5)


def test_anchors_fix_shifts(small):
    spec = ModelSpec(dif="horseshoe", anchors=("item_000", "item_003"))
    shift = np.asarray(_trace(small, spec)["dif_shift"]["value"])
    np.testing.assert_array_equal(shift[:, [0, 3]], 0.0)
    assert np.all(shift[:, [1, 2, 4, 5]] != 0.0)


def test_model_data_mismatch_errors(small):
    soft, _ = simulate(n_persons=30, n_items=4, n_dif_items=2, soft=True, seed=1)
    with pytest.raises(ValueError, match="Soft .* graded response"):
        build_model_inputs(soft, ModelSpec(irt="grm"))
    ordinal, _ = simulate(n_persons=30, n_items=4, n_dif_items=2, irt="grm", seed=1)
    with pytest.raises(ValueError, match="use irt='grm'"):
        build_model_inputs(ordinal, ModelSpec(irt="2pl"))
    with pytest.raises(ValueError, match=r"Anchor item\(s\) \['nope'\]"):
        build_model_inputs(small, ModelSpec(anchors=("nope",)))


def _one_obs_params(theta=0.3, b=-0.2, a=1.5, c=None, step=None):
    params = {
        "theta": jnp.array([theta]),
        "difficulty": jnp.array([b]),
        "discrimination": jnp.array([a]),
        "dif_shift": jnp.zeros((1, 1)),
    }
    if c is not None:
        params["guessing"] = jnp.array([c])
    if step is not None:
        params["step"] = jnp.array([step])
    return params


def _ll(params, response, irt, n_categories=2, weight=1.0):
    zero = jnp.zeros(1, jnp.int32)
    return float(
        observation_log_likelihood(
            params,
            person_idx=zero,
            item_idx=zero,
            group_idx=zero,
            response=jnp.array([response], jnp.float32),
            weight=jnp.array([weight], jnp.float32),
            focal_row=jnp.array([1, 0], jnp.int32),
            n_categories=jnp.array([n_categories]),
            irt=irt,
        )[0]
    )


def test_binary_soft_weighted_and_3pl_log_likelihood():
    eta = 1.5 * (0.3 + 0.2)
    p = 1 / (1 + np.exp(-eta))
    assert _ll(_one_obs_params(), 1.0, "2pl") == pytest.approx(np.log(p), rel=1e-5)
    assert _ll(_one_obs_params(), 0.0, "2pl") == pytest.approx(np.log(1 - p), rel=1e-5)
    soft = 0.7 * np.log(p) + 0.3 * np.log(1 - p)
    assert _ll(_one_obs_params(), 0.7, "2pl") == pytest.approx(soft, rel=1e-5)
    assert _ll(_one_obs_params(), 0.7, "2pl", weight=3.0) == pytest.approx(3 * soft, rel=1e-5)
    p3 = 0.25 + 0.75 * p
    assert _ll(_one_obs_params(c=0.25), 1.0, "3pl") == pytest.approx(np.log(p3), rel=1e-5)
    assert _ll(_one_obs_params(c=0.25), 0.0, "3pl") == pytest.approx(np.log(1 - p3), rel=1e-5)


def test_graded_probabilities_sum_to_one_and_match_formula():
    step = [-1.0, 0.2, 0.8]
    params = _one_obs_params(step=step)
    probs = np.array([np.exp(_ll(params, k, "grm", n_categories=4)) for k in range(4)])
    assert probs.sum() == pytest.approx(1.0, abs=1e-5)
    cum = 1 / (1 + np.exp(-1.5 * (0.5 - np.array(step))))
    expected = -np.diff(np.concatenate([[1.0], cum, [0.0]]))
    np.testing.assert_allclose(probs, expected, rtol=1e-4)
    # an item with 3 of the 4 padded categories ignores the padded step
    padded = _one_obs_params(step=[-1.0, 1.0, 0.0])
    probs3 = np.array([np.exp(_ll(padded, k, "grm", n_categories=3)) for k in range(3)])
    assert probs3.sum() == pytest.approx(1.0, abs=1e-5)


def test_graded_gradients_finite_at_open_ends():
    def total(step):
        params = _one_obs_params(step=None)
        params["step"] = step[None]
        return sum(_ll_jax(params, k) for k in range(3))

    def _ll_jax(params, k):
        zero = jnp.zeros(1, jnp.int32)
        return observation_log_likelihood(
            params, zero, zero, zero, jnp.array([float(k)]), jnp.ones(1),
            jnp.array([1, 0], jnp.int32), jnp.array([3]), "grm",
        )[0]

    grad = jax.grad(total)(jnp.array([-0.5, 0.5]))
    assert np.all(np.isfinite(np.asarray(grad)))


def test_reference_group_has_no_shift_and_focal_shift_applies():
    params = _one_obs_params()
    params["dif_shift"] = jnp.array([[0.4]])
    zero = jnp.zeros(1, jnp.int32)
    args = dict(
        person_idx=zero, item_idx=zero, response=jnp.ones(1), weight=jnp.ones(1),
        focal_row=jnp.array([1, 0], jnp.int32), n_categories=jnp.array([2]), irt="2pl",
    )
    ref = float(observation_log_likelihood(params, group_idx=zero, **args)[0])
    focal = float(observation_log_likelihood(params, group_idx=jnp.ones(1, jnp.int32), **args)[0])
    assert ref == pytest.approx(np.log(1 / (1 + np.exp(-1.5 * 0.5))), rel=1e-5)
    assert focal == pytest.approx(np.log(1 / (1 + np.exp(-1.5 * 0.1))), rel=1e-5)  # harder


def test_log_likelihood_fn_matches_model_factor(small):
    spec = ModelSpec(irt="2pl")
    trace = _trace(small, spec)
    draw = {k: site["value"] for k, site in trace.items() if site["type"] != "plate"}
    out = make_log_likelihood_fn(build_model_inputs(small, spec), spec)(draw)
    factor = trace["y"]["fn"].log_prob(trace["y"]["value"])
    np.testing.assert_allclose(np.asarray(out["y"]), np.asarray(factor), rtol=1e-5)
    per_person = np.bincount(small.person_idx, weights=np.asarray(out["y"]))
    np.testing.assert_allclose(np.asarray(out["y_person"]), per_person, rtol=1e-4)


def test_grm_with_per_item_categories():
    import pandas as pd

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
    import jax
    import jax.numpy as jnp

    from bayes_align.models import softplus

    x = jnp.array([-200.0, -30.0, -5.0, -1e-3, 0.0, 1e-3, 2.0, 30.0, 200.0], dtype=jnp.float32)
    np.testing.assert_allclose(softplus(x), jax.nn.softplus(x), rtol=1e-6, atol=1e-30)
    grad = jax.vmap(jax.grad(softplus))(x)
    np.testing.assert_allclose(grad, jax.nn.sigmoid(x), rtol=1e-5, atol=1e-7)
    assert np.isfinite(np.asarray(grad)).all()
