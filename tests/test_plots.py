"""Report figures and the predictive-check table, on small synthetic InferenceData (no fits)."""

from __future__ import annotations

import arviz as az
import matplotlib
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from bayes_align import plots
from bayes_align.model.irt import binary_log_probs

matplotlib.use("Agg")

ITEMS = ["i0", "i1", "i2", "i3"]
GROUPS = ["ref", "lm"]


def _posterior(chains: int = 2, draws: int = 30, seed: int = 0, **extra) -> dict:
    rng = np.random.default_rng(seed)
    shape = (chains, draws)
    return {
        "difficulty": np.array([-1.0, 0.0, 0.5, 1.0]) + 0.05 * rng.normal(size=(*shape, 4)),
        "discrimination": np.exp(0.05 * rng.normal(size=(*shape, 4))),
        "dif_shift": np.array([[0.9, 0.0, 0.0, -0.9]]) + 0.05 * rng.normal(size=(*shape, 1, 4)),
        "dif_scale": np.abs(0.6 + 0.05 * rng.normal(size=(*shape, 1))),
        "group_mean": np.stack([np.zeros(shape), 0.3 + 0.05 * rng.normal(size=shape)], -1),
        "group_sd": np.stack([np.ones(shape), np.ones(shape)], -1),  # aggregated focal: fixed
        **extra,
    }


_DIMS = {
    "difficulty": ["item"], "discrimination": ["item"], "dif_shift": ["focal_group", "item"],
    "dif_scale": ["focal_group"], "group_mean": ["group"], "group_sd": ["group"],
    "dif_log_discrimination": ["focal_group", "item"], "y": ["obs"], "item_idx": ["obs"],
    "group_idx": ["obs"], "n_responses": ["obs"],
}
_COORDS = {"item": ITEMS, "group": GROUPS, "focal_group": ["lm"]}


def _idata(posterior: dict, **groups) -> az.InferenceData:
    idata = az.from_dict(posterior=posterior, coords=_COORDS, dims=_DIMS, **groups)
    idata.attrs["reference_group"] = "ref"
    return idata


def _predictive_idata() -> tuple[az.InferenceData, np.ndarray]:
    """Person responses of the reference (item 0 twice, weights 1 and 3) and one
    aggregated row per item of the focal group (y = share, weight = row total)."""
    item_idx = np.array([0, 0, 1, 2, 3, 0, 1, 2, 3])
    group_idx = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1])
    weight = np.array([1.0, 3.0, 1.0, 1.0, 1.0, 10.0, 10.0, 10.0, 10.0])
    observed = np.array([1.0, 0.0, 1.0, 0.0, 1.0, 0.3, 0.5, 0.7, 0.9])
    simulated = np.tile(observed, (2, 50, 1))
    simulated[:, :, 0] = np.arange(100).reshape(2, 50) % 2  # cell (ref, i0) varies
    simulated[:, :, 8] = 0.2  # cell (lm, i3): observed 0.9 falls outside
    idata = _idata(
        _posterior(draws=50),
        posterior_predictive={"y": simulated},
        observed_data={"y": observed},
        constant_data={"item_idx": item_idx, "group_idx": group_idx, "n_responses": weight},
    )
    return idata, simulated


def test_predictive_item_means_weights_by_n_responses():
    idata, simulated = _predictive_idata()
    table = plots.predictive_item_means(idata, prob=0.9).set_index(["group", "item"])
    assert len(table) == 8
    assert table.loc[("ref", "i0"), "n"] == 4.0
    assert table.loc[("ref", "i0"), "observed"] == pytest.approx(0.25)  # (1 * 1 + 3 * 0) / 4
    assert table.loc[("lm", "i2"), "observed"] == pytest.approx(0.7)
    assert table.loc[("lm", "i2"), "n"] == 10.0
    draws = (simulated[..., 0] * 1 + simulated[..., 1] * 3).ravel() / 4
    assert table.loc[("ref", "i0"), "simulated"] == pytest.approx(draws.mean())
    low, high = np.quantile(draws, [0.05, 0.95])
    assert table.loc[("ref", "i0"), ["low", "high"]].tolist() == pytest.approx([low, high])
    assert not table.loc[("lm", "i3"), "inside"]
    assert table["inside"].sum() == 7
    assert plots.predictive_item_means(idata).attrs["draws"] == 100


def test_predictive_item_means_reads_prior_predictive_and_refuses_missing_groups():
    idata, simulated = _predictive_idata()
    prior = az.from_dict(
        prior=_posterior(chains=1, draws=100), prior_predictive={"y": simulated.reshape(1, 100, -1)},
        observed_data={"y": idata.observed_data["y"].values},
        constant_data={k: idata.constant_data[k].values for k in idata.constant_data.data_vars},
        coords=_COORDS, dims=_DIMS,
    )
    table = plots.predictive_item_means(prior, "prior_predictive")
    assert len(table) == 8 and table.attrs["predictive"] == "prior_predictive"
    with pytest.raises(ValueError, match="no posterior_predictive group"):
        plots.predictive_item_means(prior)
    with pytest.raises(ValueError, match="group must be one of"):
        plots.predictive_item_means(idata, "posterior")
    fig = plots.plot_predictive_check(table)
    assert fig._suptitle.get_text().startswith("Prior predictive check")
    assert len(fig.axes) == 2  # one panel per group


def test_item_curves_come_from_the_model_with_non_uniform_dif():
    lam = np.zeros((2, 30, 1, 4))
    lam[..., 0] = np.log(2.0)  # the LM's discrimination of i0 is doubled
    idata = _idata(_posterior(dif_log_discrimination=lam))
    theta = np.linspace(-3, 3, 61)
    fig = plots.plot_item_curves(idata, ["i0", "i3"], GROUPS, item_labels={"i0": "first"})
    assert isinstance(fig, Figure)
    ref_line, lm_line = fig.axes[0].get_lines()[:2]
    post = idata.posterior
    a = post["discrimination"].sel(item="i0").values.ravel()
    b = post["difficulty"].sel(item="i0").values.ravel()
    s = post["dif_shift"].sel(item="i0", focal_group="lm").values.ravel()
    expected_ref = np.exp(binary_log_probs(a[:, None] * (theta - b[:, None]))[1]).mean(0)
    expected_lm = np.exp(
        binary_log_probs(2 * a[:, None] * (theta - b[:, None] - s[:, None]))[1]
    ).mean(0)
    np.testing.assert_allclose(ref_line.get_ydata(), expected_ref, atol=1e-5)
    np.testing.assert_allclose(lm_line.get_ydata(), expected_lm, atol=1e-5)
    assert "first" in fig.axes[0].get_title()
    with pytest.raises(ValueError, match="at least one item"):
        plots.plot_item_curves(idata, [], GROUPS)


def test_main_parameters_drop_constants_and_trace_rank_plots_draw():
    idata = _idata(_posterior())
    parameters = plots.main_parameters(idata)
    assert set(parameters.data_vars) == {"group_mean", "dif_scale", "difficulty"}  # sds fixed
    assert parameters["group_mean"].sizes["group_mean_group"] == 1  # reference mean fixed at 0
    assert isinstance(plots.plot_trace(idata), Figure)
    rank = plots.plot_rank(idata)
    assert sum(ax.get_visible() and ax.has_data() for ax in rank.axes) == 2  # mean, scale of lm


def test_alignment_dif_comparison_and_loss_figures():
    rng = np.random.default_rng(1)
    draws = az.from_dict(posterior={"pearson": 0.8 + 0.05 * rng.normal(size=(2, 50, 2))},
                         coords={"focal_group": ["a", "b"]}, dims={"pearson": ["focal_group"]})
    table = pd.DataFrame({"group": ["a", "b"], "metric": "pearson", "mean": [0.8, 0.8],
                          "hdi_low": [0.7, 0.7], "hdi_high": [0.9, 0.9]})
    fig = plots.plot_alignment_posterior(draws.posterior["pearson"], table, {"a": 0.6})
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert "a: classical separate fits" in labels and "b (joint model)" in labels
    matrix = pd.DataFrame([[np.nan, 0.7], [0.3, np.nan]], index=["a", "b"], columns=["a", "b"])
    assert isinstance(plots.plot_prob_more_aligned(matrix), Figure)
    dif = pd.DataFrame({"item": ITEMS, "group": "lm", "mean": [0.9, 0, 0, -0.9],
                        "hdi_low": [0.5, -0.3, -0.3, -1.3], "hdi_high": [1.3, 0.3, 0.3, -0.5],
                        "flagged": [True, False, False, True]})
    mh = dif.assign(log_odds_ratio=[0.8, 0.1, 0.0, -0.7])
    assert isinstance(plots.plot_dif_forest(dif, mh, items=ITEMS), Figure)
    with pytest.raises(ValueError, match="columns"):
        plots.plot_dif_forest(dif.drop(columns="hdi_low"))
    assert isinstance(plots.plot_loss([10.0, 5.0, 4.0, 3.9]), Figure)
