"""Classical LM-plausibility metrics on synthetic data with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import optimize, special, stats

from bayes_align import classical
from bayes_align.naep import option_probabilities


def _random_simplex(rng, shape, k=4):
    return rng.dirichlet(np.ones(k), size=shape)


def test_kl_and_tv_known_values():
    h = np.array([[0.5, 0.5, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]])
    p = np.array([[0.25, 0.25, 0.25, 0.25], [0.25, 0.25, 0.25, 0.25]])
    # KL(h || p) = sum h log(h / p): log 2 for the first row, 0 for the second.
    np.testing.assert_allclose(classical.kl_divergence(h, p), [np.log(2), 0.0], atol=1e-15)
    np.testing.assert_allclose(classical.total_variation(h, p), [0.5, 0.0], atol=1e-15)
    # A zero model probability where the human share is positive is infinitely far.
    assert np.isinf(classical.kl_divergence(p[:1], h[:1]))[0]


def test_kl_matches_scipy_entropy():
    rng = np.random.default_rng(0)
    h, p = _random_simplex(rng, 50), _random_simplex(rng, 50)
    np.testing.assert_allclose(classical.kl_divergence(h, p), stats.entropy(h, p, axis=1), rtol=1e-12)


def test_temperature_is_recovered_exactly():
    """Human = order-averaged softmax(z / T*) exactly -> T* is the minimiser (KL = 0)."""
    rng = np.random.default_rng(1)
    n_models, n_rows, n_orders, k = 3, 40, 4, 4
    true_t = np.array([[0.5, 2.0], [7.5, 1.0], [30.0, 0.2]])  # (model, segment)
    segment = np.repeat([0, 1], n_rows // 2)
    # The same logits in every presentation order make the human distribution an exact
    # softmax; different orders would make it a mixture (also fine, see the next test).
    base = rng.normal(0, 3, size=(n_models, n_rows, 1, k))
    logits = np.repeat(base, n_orders, axis=2)
    human_per_model = option_probabilities(logits, true_t[:, segment])
    for m in range(n_models):
        fitted = classical.optimize_temperature(logits[m], human_per_model[m], segment, 2)
        np.testing.assert_allclose(fitted, true_t[m], rtol=1e-7)


def test_temperature_matches_bounded_scalar_minimiser():
    """Generic case (orders disagree, human not a softmax): agrees with scipy's minimiser."""
    rng = np.random.default_rng(2)
    logits = rng.normal(0, 4, size=(2, 30, 4, 4))
    human = _random_simplex(rng, 30)
    fitted = classical.optimize_temperature(logits, human)
    for m in range(2):
        def loss(log_t, m=m):
            return classical.kl_divergence(human, option_probabilities(logits[m], np.exp(log_t))).mean()

        res = optimize.minimize_scalar(loss, bounds=(np.log(1e-2), np.log(1e3)), method="bounded",
                                       options={"xatol": 1e-10})
        assert loss(np.log(fitted[m, 0])) <= res.fun + 1e-12
        np.testing.assert_allclose(fitted[m, 0], np.exp(res.x), rtol=1e-4)


def test_flat_objective_returns_one():
    """All-zero logits (the Uniform baseline): every T is optimal; T = 1 is returned."""
    rng = np.random.default_rng(3)
    fitted = classical.optimize_temperature(np.zeros((10, 4, 4)), _random_simplex(rng, 10))
    np.testing.assert_array_equal(fitted, [1.0])


def test_segment_pearson_matches_scipy():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(3, 60))
    y = 0.4 * x[0] + rng.normal(size=60)
    seg = rng.integers(0, 3, size=60)
    mask = rng.random(60) > 0.1
    r, p, n = classical.segment_pearson(x, y, seg, 3, mask=mask)
    for m in range(3):
        for s in range(3):
            keep = (seg == s) & mask
            ref = stats.pearsonr(x[m, keep], y[keep])
            assert n[m, s] == keep.sum()
            np.testing.assert_allclose([r[m, s], p[m, s]], [ref.statistic, ref.pvalue], rtol=1e-9)


def test_correlations_nan_for_constant_and_theta0_formula():
    rng = np.random.default_rng(5)
    human = rng.uniform(0.2, 0.9, size=20)
    model = np.stack([np.full(20, 0.25), human + rng.normal(0, 0.05, 20)])
    r, p = classical.ctt_correlation(human, model, np.zeros(20, int), 1)
    assert np.isnan(r[0, 0]) and np.isnan(p[0, 0])
    a, b, c = rng.uniform(0.5, 1.5, 20), rng.normal(0, 1, 20), rng.uniform(0.1, 0.3, 20)
    b[3] = np.nan  # no published parameters for this row: left out
    r, p, n = classical.irt_theta0_correlation(a, b, c, model[1:], np.zeros(20, int), 1)
    p0 = c + (1 - c) * special.expit(1.7 * a * (0 - b))
    keep = np.isfinite(b)
    ref = stats.pearsonr(model[1, keep], p0[keep])
    assert n[0, 0] == 19
    np.testing.assert_allclose([r[0, 0], p[0, 0]], [ref.statistic, ref.pvalue], rtol=1e-9)


def test_accuracy_splits_ties():
    probs = np.array([[[0.7, 0.1, 0.1, 0.1], [0.25, 0.25, 0.25, 0.25], [0.1, 0.8, 0.05, 0.05]]])
    key = np.array([0, 2, 0])
    # item 1: key is 1 of 4 tied modes -> 1/4; item 2: wrong.
    np.testing.assert_allclose(classical.accuracy(probs, key, np.zeros(3, int), 1), [[(1 + 0.25) / 3]])


def test_option_probabilities_rejects_bad_temperature():
    with pytest.raises(ValueError, match="temperature"):
        option_probabilities(np.zeros((2, 4, 4)), 0.0)
