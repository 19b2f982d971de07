"""PSIS-LOO model comparison: verdicts on hand-built log-likelihoods, then real fits."""

from __future__ import annotations

import warnings

import arviz as az
import numpy as np
import pytest

from bayes_align.compare import compare_models


def loglik_idata(mean_per_obs: float, n_obs: int = 400, seed: int = 0, spread: float = 0.05):
    """Posterior with a log_likelihood group as DESIGN.md lays it out (one ``y`` on
    ``obs``) and ``constant_data.person_idx`` (10 answers per person).

    Every observation's log-likelihood is ``mean_per_obs`` plus small noise, so the elpd
    is about ``n_obs * mean_per_obs`` and differences between models are known.
    """
    rng = np.random.default_rng(seed)
    return az.from_dict(
        posterior={"difficulty": rng.normal(size=(2, 100, 3))},
        log_likelihood={"y": mean_per_obs + spread * rng.normal(size=(2, 100, n_obs))},
        constant_data={"person_idx": np.repeat(np.arange(n_obs // 10), 10)},
        dims={"difficulty": ["item"], "y": ["obs"], "person_idx": ["obs"]},
    )


def test_clear_preference_is_stated_with_numbers():
    # elpd difference about 400 * 0.05 = 20; the per-observation differences vary little,
    # so the SE is small and the preference is clear.
    result = compare_models({"invariant": loglik_idata(-1.05, seed=1), "dif": loglik_idata(-1.0)})
    assert list(result.table.index) == ["dif", "invariant"]
    assert result.verdict.startswith("The data prefer 'dif' over 'invariant' by 2")
    assert "elpd (SE" in result.verdict and str(result).endswith(result.verdict)
    assert result.table.loc["invariant", "elpd_diff"] == pytest.approx(20, rel=0.1)
    assert {"n_high_k", "max_k"} <= set(result.table.columns)
    assert result.diagnostics == []


def test_negligible_difference_is_called_so():
    result = compare_models({"a": loglik_idata(-1.0, seed=2), "b": loglik_idata(-1.001, seed=3)})
    assert "do not distinguish" in result.verdict


def test_three_models_rank_and_person_pointwise():
    fits = {
        "1pl": loglik_idata(-1.2, seed=4),
        "2pl": loglik_idata(-1.0, seed=5),
        "3pl": loglik_idata(-1.1, seed=6),
    }
    result = compare_models(fits, pointwise="person")
    assert list(result.table.index) == ["2pl", "3pl", "1pl"]
    assert "ranking: '2pl', '3pl', '1pl'" in result.verdict
    assert "leave one person out" in str(result)


def test_high_pareto_k_warns():
    # A few observations with extreme log-likelihood variance across draws give high k.
    wild = loglik_idata(-1.0, seed=7, spread=0.05)
    rng = np.random.default_rng(8)
    wild.log_likelihood["y"][..., :5] = -1 - 20 * rng.standard_exponential(size=(2, 100, 5))
    with pytest.warns(UserWarning, match="Pareto k above"):
        result = compare_models({"wild": wild, "tame": loglik_idata(-1.0, seed=9)})
    assert result.table.loc["wild", "n_high_k"] >= 1
    assert "Warning: Pareto k" in str(result)


def test_bad_inputs():
    with pytest.raises(ValueError, match="at least two"):
        compare_models({"only": loglik_idata(-1.0)})
    with pytest.raises(ValueError, match="pointwise"):
        compare_models({"a": loglik_idata(-1.0), "b": loglik_idata(-1.0)}, pointwise="item")
    with pytest.raises(ValueError, match="not fitted to the same data"):
        compare_models({"a": loglik_idata(-1.0), "b": loglik_idata(-1.0, n_obs=300)})
    no_ll = az.from_dict(posterior={"difficulty": np.zeros((2, 10, 3))})
    with pytest.raises(ValueError, match="log_likelihood.y"):
        compare_models({"a": no_ll, "b": loglik_idata(-1.0)})
    one_draw = az.from_dict(
        posterior={"difficulty": np.zeros((1, 1, 3))},
        log_likelihood={"y": np.zeros((1, 1, 400))},
    )
    with pytest.raises(ValueError, match="MAP"):
        compare_models({"map": one_draw, "b": loglik_idata(-1.0)})


def test_svi_fits_are_compared_with_a_warning():
    approximate = loglik_idata(-1.0, seed=1)
    approximate.attrs["method"] = "svi"
    with pytest.warns(UserWarning, match="approximation of the posterior"):
        compare_models({"svi": approximate, "nuts": loglik_idata(-1.05, seed=2)})


# ----------------------------------------------------------------------------- real fits
@pytest.fixture(scope="module")
def planted_fits():
    """Rasch data, 300 persons in 2 groups, 20 items, 6 items with +-1.0 logit DIF.

    Small enough for CI (two 1PL NUTS fits of 2 x 200 draws); the planted DIF changes the
    log-likelihood of ~900 focal responses, far more than the elpd SE of the difference.
    """
    from bayes_align import fit, simulate

    data, _ = simulate(
        n_persons=300, n_items=20, groups=("human", "lm"), n_dif_items=6, dif_size=1.0,
        irt="1pl", seed=11,
    )  # fmt: skip
    kwargs = dict(model="1pl", chains=2, draws=200, warmup=200, seed=3, progress_bar=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # short chains: R-hat/ESS advice is expected here
        return {
            "invariant": fit(data, dif="none", **kwargs),
            "dif": fit(data, dif="normal", **kwargs),
        }


@pytest.mark.slow
def test_compare_models_prefers_dif_on_planted_dif(planted_fits):
    result = compare_models(planted_fits)
    assert result.table.index[0] == "dif"
    assert result.verdict.startswith("The data prefer 'dif' over 'invariant'")
    diff = result.table.loc["invariant", "elpd_diff"]
    dse = result.table.loc["invariant", "dse"]
    assert diff > 2 * dse
    # ArviZ's own defaults work on the fits (one log-likelihood variable)
    table = az.compare({name: f.idata for name, f in planted_fits.items()})
    assert table.index[0] == "dif"
    print("\n" + str(result))
