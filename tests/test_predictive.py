"""The model simulates itself: prior and posterior predictive draws as ArviZ groups."""

from __future__ import annotations

import dataclasses
import warnings

import arviz as az
import matplotlib
import numpy as np
import pytest

import bayes_align as ba

matplotlib.use("Agg")


DRAWS = 200  # per chain: 400 draws give the 5% and 95% quantiles to ~1 percentile point


@pytest.fixture(scope="module")
def simulated_nuts():
    """400 persons (200 per group) x 10 items, 2PL with 3 DIF items; NUTS 2 x 200 draws."""
    data, truth = ba.simulate(n_persons=400, n_items=10, groups=("human", "lm"), n_dif_items=3, seed=11)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fitted = ba.fit(data, model="2pl", chains=2, draws=DRAWS, warmup=DRAWS,
                        progress_bar=False, seed=2)
    return data, ba.posterior_predictive(fitted)


def test_posterior_predictive_group_and_arviz_defaults(simulated_nuts):
    data, fitted = simulated_nuts
    pp = fitted.idata.posterior_predictive["y"]
    assert pp.dims == ("chain", "draw", "obs") and pp.shape == (2, DRAWS, data.n_obs)
    assert set(np.unique(pp.values)) == {0.0, 1.0}
    az.plot_ppc(fitted.idata, num_pp_samples=20)
    pit = az.loo_pit(fitted.idata, y="y")
    assert pit.shape == (data.n_obs,) and np.isfinite(pit).all()
    assert az.loo(fitted.idata).elpd_loo < 0  # default var_name works: one variable


def test_observed_item_means_lie_in_their_predictive_intervals(simulated_nuts):
    """Data simulated from the model: the 90% interval of each (item, group) cell's mean
    response covers the observed one in at least 90% of the 20 cells (18 of 20). The
    posterior predictive interval of a statistic of the data the model was fitted to is
    conservative (the fit has seen the data), so coverage sits above the nominal 90%."""
    data, fitted = simulated_nuts
    cell = data.group_idx * data.n_items + data.item_idx
    n_cells = data.n_groups * data.n_items
    counts = np.bincount(cell, minlength=n_cells)
    observed = np.bincount(cell, weights=data.response, minlength=n_cells) / counts
    sims = fitted.idata.posterior_predictive["y"].values.reshape(-1, data.n_obs)
    simulated = np.stack([np.bincount(cell, weights=s, minlength=n_cells) for s in sims]) / counts
    low, high = np.quantile(simulated, [0.05, 0.95], axis=0)
    covered = (observed >= low) & (observed <= high)
    assert n_cells == 20 and covered.sum() >= 18, covered.sum()


def test_posterior_predictive_subsample_and_aggregated_rows(tiny_mixed_nuts):
    """conftest's session mixed fit (reference as persons, two LM groups as counts; a copy,
    so the shared fit stays as it is): 50 draws spread over the 2 chains, and the
    aggregated rows simulate shares of correct answers."""
    fitted = dataclasses.replace(tiny_mixed_nuts, idata=tiny_mixed_nuts.idata.copy())
    mixed = fitted.data
    assert ba.posterior_predictive(fitted, draws=50, seed=1) is fitted
    assert "posterior_predictive" not in tiny_mixed_nuts.idata.groups()
    pp = fitted.idata.posterior_predictive["y"]
    assert pp.shape == (2, 25, mixed.n_units) and mixed.n_rows == 16
    assert set(np.unique(pp.values[..., :mixed.n_obs])) == {0.0, 1.0}  # person responses
    shares = pp.values[..., mixed.n_obs:]  # the aggregated rows: shares of correct answers
    assert ((shares >= 0) & (shares <= 1)).all() and not np.isin(shares, [0.0, 1.0]).all()
    # shares are multiples of 1 / n_total (30 persons per row)
    np.testing.assert_allclose(shares * 30, np.round(shares * 30), atol=1e-4)
    with pytest.raises(ValueError, match="positive integer"):
        ba.posterior_predictive(fitted, draws=0)


def test_prior_predictive_spreads_mean_responses_over_the_unit_interval():
    """Default priors give plausible data: the mean response of a simulated data set
    varies between draws but is not piled at 0 or 1."""
    data, _ = ba.simulate(n_persons=200, n_items=20, groups=("human", "lm"), seed=4)
    prior = ba.prior_predictive(data, model="2pl", draws=400, seed=0)
    assert {"prior", "prior_predictive", "observed_data", "constant_data"} <= set(prior.groups())
    assert prior.prior["difficulty"].dims == ("chain", "draw", "item")
    means = prior.prior_predictive["y"].mean("obs").values.ravel()
    low, high = np.quantile(means, [0.05, 0.95])
    assert 0.05 < low < 0.45 and 0.55 < high < 0.95, (low, high)
    assert np.mean((means < 0.02) | (means > 0.98)) < 0.01
    az.plot_ppc(prior, group="prior", num_pp_samples=20)
    graded, _ = ba.simulate(n_persons=60, n_items=5, n_dif_items=2, irt="grm", seed=5)
    steps = ba.prior_predictive(graded, model="grm", draws=20).prior["step"].values
    assert np.all(np.diff(steps, axis=-1) > 0)
