"""Power-scaling prior sensitivity (priorsense's method) against real refits."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import bayes_align as ba
from bayes_align.sensitivity import cjs_distance, power_scale_weights, prior_sensitivity

DRAWS = 300  # per chain, 2 chains

NUTS = dict(model="1pl", chains=2, draws=DRAWS, warmup=DRAWS, progress_bar=False, check=False)


@pytest.fixture(scope="module")
def three_person_group():
    """A 600-person reference, a 600-person LM group and a focal group of 3 persons, 10
    items (3 with DIF): the group sizes the issue names; items and draws are what is cut."""
    data, _ = ba.simulate(
        n_persons=1203, n_items=10, groups=("human", "lm", "tiny"), group_sizes=(600, 600, 3),
        n_dif_items=3, irt="1pl", seed=4,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fitted = ba.fit(data, seed=0, **NUTS)
    return data, fitted


def test_cjs_distance_of_a_known_perturbation():
    """Reweighting N(0, 1) draws to N(0, 1 / alpha): zero for equal weights, symmetric in
    x and -x, and growing with the perturbation."""
    x = np.random.default_rng(0).normal(size=4000)
    np.testing.assert_allclose(cjs_distance(x, np.full(x.size, 1 / x.size)), 0.0, atol=1e-12)
    small, large = (np.exp((a - 1) * -x**2 / 2) for a in (1.01, 1.5))
    d_small = cjs_distance(x, small / small.sum())[0]
    d_large = cjs_distance(x, large / large.sum())[0]
    assert 0 < d_small < d_large < 1
    np.testing.assert_allclose(cjs_distance(-x, small / small.sum()), d_small, rtol=1e-12)


def test_three_persons_dif_scale_flagged_600_person_alignment_not(three_person_group):
    _, fitted = three_person_group
    table = prior_sensitivity(fitted).set_index(["variable", "group"])
    tiny = table.loc[("dif_scale", "tiny")]
    assert tiny["prior"] >= 0.05 and tiny["diagnosis"] != "-"
    big = table.loc[("pearson", "lm")]
    assert big["prior"] < 0.05 and big["diagnosis"] == "-"
    assert set(table.columns) == {"item", "prior", "likelihood", "diagnosis"}
    assert all(k < 0.7 for k in table.attrs["pareto_k"].values())


def test_power_scaled_weights_agree_with_a_refit(three_person_group):
    """Power-scaling the HalfNormal(1) prior of dif_scale by alpha = 1.5 is the refit with
    HalfNormal(1 / sqrt(1.5)): the reweighted posterior means of the tiny group's DIF
    scale and of the LM's alignment match the refit's within 0.25 of their posterior sd.
    Two runs of 2 x 300 draws: ESS ~200-350 for dif_scale, so each mean carries ~0.06 sd of
    Monte-Carlo error and their difference ~0.1 sd; 0.25 sd is 2.5 times that (seed 0/1
    measured 0.02 and 0.04 sd)."""
    data, fitted = three_person_group
    weights, k = power_scale_weights(fitted, 1.5, "prior", components=["dif_scale"])
    assert k < 0.7
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        refit = ba.fit(data, priors=ba.Priors(dif_scale=1 / np.sqrt(1.5)), seed=1, **NUTS)
    for name, get in (
        ("dif_scale", lambda f: f.posterior["dif_scale"].sel(focal_group="tiny").values.ravel()),
        ("pearson", lambda f: ba.alignment(f).draws["pearson"].sel(focal_group="lm").values.ravel()),
    ):
        before, after = get(fitted), get(refit)
        reweighted = float(np.sum(weights * before))
        assert abs(reweighted - after.mean()) < 0.25 * after.std(), (name, reweighted, after.mean())
    # and the weights moved the tiny group's scale the way the narrower prior does
    tiny = fitted.posterior["dif_scale"].sel(focal_group="tiny").values.ravel()
    assert np.sum(weights * tiny) < tiny.mean()


def test_sensitivity_input_checks(three_person_group):
    _, fitted = three_person_group
    with pytest.raises(ValueError, match="not in this fit"):
        prior_sensitivity(fitted, components=["guessing"])
    with pytest.raises(ValueError, match="unknown or absent"):
        prior_sensitivity(fitted, variables=["nope"])
    with pytest.raises(ValueError, match="lower_alpha"):
        prior_sensitivity(fitted, lower_alpha=1.2)
