"""Parameter recovery on simulated data (600 persons, 40 items, 3 groups, 8 DIF items of 0.8).

One NUTS fit (2 chains x 250 draws after 250 warmup: enough for R-hat < 1.05, and the
5%/95% quantiles carry a Monte Carlo error of about 0.1 posterior sd, which moves a
coverage share by about a point, far inside the bands below) and one SVI fit on the same
data, compiled once per module. Tolerances: with 40 items the share of 90% intervals that
cover the truth has a binomial sd of about 5 points, so [80%, 98%] is about +-2 sd; the
pooled check over difficulty, discrimination and DIF shifts (160 parameters) is tighter.
"""

from __future__ import annotations

import numpy as np
import pytest

from bayes_align import fit, simulate

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def simulated():
    return simulate(n_persons=600, n_items=40, n_dif_items=8, dif_size=0.8, irt="2pl", seed=1)


@pytest.fixture(scope="module")
def nuts_fit(simulated):
    data, _ = simulated
    return fit(data, model="2pl", dif="normal", chains=2, draws=250, warmup=250, seed=2,
               progress_bar=False)


@pytest.fixture(scope="module")
def svi_fit(simulated):
    data, _ = simulated
    return fit(data, model="2pl", dif="normal", method="svi", draws=400, seed=3, progress_bar=False)


def _mean(fit_, name):
    return fit_.posterior[name].mean(("chain", "draw")).to_numpy()


def _coverage(fit_, name, truth, prob=0.9):
    draws = fit_.posterior[name].stack(sample=("chain", "draw")).to_numpy()
    lo = np.quantile(draws, (1 - prob) / 2, axis=-1)
    hi = np.quantile(draws, 1 - (1 - prob) / 2, axis=-1)
    return (lo <= truth) & (truth <= hi)


def test_difficulties_recovered(nuts_fit, simulated):
    _, truth = simulated
    r = np.corrcoef(_mean(nuts_fit, "difficulty"), truth["difficulty"])[0, 1]
    assert r >= 0.95, r
    r_a = np.corrcoef(_mean(nuts_fit, "discrimination"), truth["discrimination"])[0, 1]
    assert r_a >= 0.7, r_a  # discriminations vary little (log-sd 0.3), so r is lower


def test_interval_coverage(nuts_fit, simulated):
    _, truth = simulated
    covered_b = _coverage(nuts_fit, "difficulty", truth["difficulty"])
    assert 0.80 <= covered_b.mean() <= 0.98, covered_b.mean()
    pooled = np.concatenate(
        [
            covered_b,
            _coverage(nuts_fit, "discrimination", truth["discrimination"]),
            _coverage(nuts_fit, "dif_shift", truth["dif_shift"]).ravel(),
        ]
    )
    assert 0.80 <= pooled.mean() <= 0.98, pooled.mean()


def test_group_means_and_dif_recovered(nuts_fit, simulated):
    _, truth = simulated
    np.testing.assert_allclose(_mean(nuts_fit, "group_mean"), truth["group_mean"], atol=0.3)
    shift = _mean(nuts_fit, "dif_shift")
    # 32 of 40 true shifts per group are 0, so posterior noise on the null items (sd about
    # 0.2) caps this correlation well below 1 even for a calibrated fit.
    assert np.corrcoef(shift.ravel(), truth["dif_shift"].ravel())[0, 1] >= 0.7
    # the planted items have the largest posterior shifts in each group
    posterior_items = nuts_fit.posterior["dif_shift"].coords["item"].to_numpy()
    for row, group in enumerate(truth["focal_groups"]):
        planted = {item for item, g in truth["dif_items"] if g == group}
        top = set(posterior_items[np.argsort(-np.abs(shift[row]))[: len(planted)]])
        assert len(top & planted) >= len(planted) - 2


def test_nuts_diagnostics_clean(nuts_fit):
    report = nuts_fit.diagnostics
    assert report.n_divergent == 0
    assert report.max_rhat < 1.05


def test_svi_agrees_with_nuts(nuts_fit, svi_fit):
    for name in ("difficulty", "discrimination"):
        r = np.corrcoef(_mean(nuts_fit, name), _mean(svi_fit, name))[0, 1]
        assert r >= 0.98, (name, r)
    r = np.corrcoef(_mean(nuts_fit, "dif_shift").ravel(), _mean(svi_fit, "dif_shift").ravel())[0, 1]
    assert r >= 0.95, r
    assert svi_fit.elbo is not None and np.isfinite(svi_fit.elbo).all()
