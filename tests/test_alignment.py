"""Posterior alignment metrics: exact checks on hand-built posteriors, then real fits."""

from __future__ import annotations

import json

import arviz as az
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from bayes_align.alignment import (
    METRICS,
    alignment,
    alignment_draws,
    compare_alignment,
)
from bayes_align.results import as_idata

N_CHAINS, N_DRAWS, N_ITEMS = 2, 50, 12
ITEMS = [f"q{i}" for i in range(N_ITEMS)]


def make_posterior(
    difficulty: np.ndarray,
    shift: np.ndarray,
    groups: list[str],
    dif_scale: np.ndarray | None = None,
) -> az.InferenceData:
    """An InferenceData laid out as DESIGN.md prescribes (posterior group only)."""
    posterior = {"difficulty": difficulty, "dif_shift": shift}
    dims = {"difficulty": ["item"], "dif_shift": ["focal_group", "item"]}
    if dif_scale is not None:
        posterior["dif_scale"] = dif_scale
        dims["dif_scale"] = ["focal_group"]
    idata = az.from_dict(
        posterior=posterior,
        dims=dims,
        coords={"item": ITEMS[: difficulty.shape[-1]], "focal_group": groups},
    )
    idata.attrs["reference_group"] = "human"
    return idata


@pytest.fixture(scope="module")
def difficulty() -> np.ndarray:
    return np.random.default_rng(1).normal(size=(N_CHAINS, N_DRAWS, N_ITEMS))


def test_linear_shifts_give_exact_metrics(difficulty):
    # Group "same": shift = 0.5 b, so b_g = 1.5 b: r = rho = 1 and
    # invariant share = var(b) / (var(b) + 0.25 var(b)) = 0.8 exactly.
    # Group "reversed": shift = -2 b, so b_g = -b: r = rho = -1, share = 1 / (1 + 4) = 0.2.
    shift = np.stack([0.5 * difficulty, -2.0 * difficulty], axis=2)
    draws = alignment_draws(make_posterior(difficulty, shift, ["same", "reversed"]))
    assert set(draws.data_vars) == set(METRICS)
    assert draws["pearson"].dims == ("chain", "draw", "focal_group")
    np.testing.assert_allclose(draws["pearson"].sel(focal_group="same"), 1.0, atol=1e-12)
    np.testing.assert_allclose(draws["spearman"].sel(focal_group="same"), 1.0, atol=1e-12)
    np.testing.assert_allclose(draws["invariant_share"].sel(focal_group="same"), 0.8, atol=1e-12)
    np.testing.assert_allclose(draws["pearson"].sel(focal_group="reversed"), -1.0, atol=1e-12)
    np.testing.assert_allclose(draws["spearman"].sel(focal_group="reversed"), -1.0, atol=1e-12)
    np.testing.assert_allclose(
        draws["invariant_share"].sel(focal_group="reversed"), 0.2, atol=1e-12
    )
    # Without dif_scale in the posterior, the scale is the sd of the shifts over items.
    np.testing.assert_allclose(
        draws["dif_scale"].sel(focal_group="same"), 0.5 * difficulty.std(axis=-1, ddof=1)
    )


def test_per_draw_metrics_match_scipy(difficulty):
    rng = np.random.default_rng(2)
    shift = rng.normal(scale=[0.3, 1.5], size=(N_CHAINS, N_DRAWS, N_ITEMS, 2)).transpose(0, 1, 3, 2)
    scale = np.abs(rng.normal(size=(N_CHAINS, N_DRAWS, 2)))
    draws = alignment_draws(make_posterior(difficulty, shift, ["a", "b"], dif_scale=scale))
    for c, d, g in [(0, 0, 0), (1, 17, 1), (0, 49, 1)]:
        b, bg = difficulty[c, d], difficulty[c, d] + shift[c, d, g]
        assert draws["pearson"][c, d, g] == pytest.approx(stats.pearsonr(b, bg).statistic)
        assert draws["spearman"][c, d, g] == pytest.approx(stats.spearmanr(b, bg).statistic)
        share = b.var() / (b.var() + shift[c, d, g].var())
        assert draws["invariant_share"][c, d, g] == pytest.approx(share)
    np.testing.assert_array_equal(draws["dif_scale"].to_numpy(), scale)


def test_alignment_table_summarises_draws(difficulty):
    rng = np.random.default_rng(3)
    shift = rng.normal(scale=0.5, size=(N_CHAINS, N_DRAWS, 2, N_ITEMS))
    result = alignment(make_posterior(difficulty, shift, ["lm_a", "lm_b"]), prob=0.8)
    table = result.table
    assert list(table.columns) == ["group", "metric", "mean", "sd", "hdi_low", "hdi_high"]
    assert list(table["group"]) == ["lm_a"] * 4 + ["lm_b"] * 4
    assert list(table["metric"]) == list(METRICS) * 2
    row = table[(table.group == "lm_b") & (table.metric == "pearson")].iloc[0]
    values = result.draws["pearson"].sel(focal_group="lm_b").to_numpy().ravel()
    assert row["mean"] == pytest.approx(values.mean())
    assert row["sd"] == pytest.approx(values.std(ddof=1))
    assert values.min() <= row["hdi_low"] < row["hdi_high"] <= values.max()
    assert ((values >= row["hdi_low"]) & (values <= row["hdi_high"])).mean() >= 0.79
    assert result.wide().shape == (2, 4)
    assert "reference 'human'" in str(result)


def test_compare_alignment_exact_probabilities(difficulty):
    # A fixed shift pattern e, uncorrelated with nothing in particular; per draw the group's
    # Pearson r falls as |x| grows, so P(a better than b) = P(|x_a| < |x_b|) exactly.
    rng = np.random.default_rng(4)
    e = rng.normal(size=N_ITEMS)
    n = N_CHAINS * N_DRAWS
    x_a = np.full(n, 0.5)
    x_b = np.where(np.arange(n) % 4 == 0, 0.1, 2.0)  # b better in 1/4 of the draws
    x_c = np.full(n, 5.0)  # c always worst
    mult = np.stack([x_a, x_b, x_c], axis=1).reshape(N_CHAINS, N_DRAWS, 3, 1)
    shift = mult * e
    result = compare_alignment(make_posterior(difficulty, shift, ["a", "b", "c"]))
    prob = result.matrix()
    assert prob.loc["a", "b"] == pytest.approx(0.75)
    assert prob.loc["b", "a"] == pytest.approx(0.25)
    assert prob.loc["a", "c"] == 1.0 and prob.loc["c", "b"] == 0.0
    ranking = result.ranking.set_index("group")
    assert list(result.ranking["group"]) == ["a", "b", "c"]
    assert ranking.loc["a", "expected_rank"] == pytest.approx(1.25)
    assert ranking.loc["b", "prob_best"] == pytest.approx(0.25)
    assert (ranking.loc["c", "rank_low"], ranking.loc["c", "rank_high"]) == (3, 3)
    assert (ranking.loc["a", "rank_low"], ranking.loc["a", "rank_high"]) == (1, 2)
    # dif_scale: smaller is better aligned, so the comparison flips the sign.
    by_scale = compare_alignment(make_posterior(difficulty, shift, ["a", "b", "c"]), "dif_scale")
    assert by_scale.ranking["group"].iloc[-1] == "c"
    assert "P(row better aligned than column)" in str(result)


def test_bad_inputs_raise_clear_errors(difficulty):
    no_dif = az.from_dict(
        posterior={"difficulty": difficulty}, dims={"difficulty": ["item"]}, coords={"item": ITEMS}
    )
    with pytest.raises(ValueError, match="dif='normal'"):
        alignment(no_dif)
    shift = np.zeros((N_CHAINS, N_DRAWS, 1, N_ITEMS))
    one_group = make_posterior(difficulty, shift, ["only"])
    with pytest.raises(ValueError, match="at least two focal groups"):
        compare_alignment(one_group)
    with pytest.raises(ValueError, match="unknown metric"):
        compare_alignment(one_group, metric="kendall")
    with pytest.raises(ValueError, match="prob"):
        alignment(one_group, prob=1.5)
    with pytest.raises(TypeError, match="Fit or an arviz InferenceData"):
        as_idata(pd.DataFrame())


def test_unidentified_items_are_left_out_of_the_metrics(difficulty):
    # Items q0 and q1 were not answered by "lm": their shifts are prior noise (here huge).
    # On the 10 identified items shift = 0.5 b, so r = 1 exactly once q0, q1 are excluded.
    shift = 0.5 * difficulty[:, :, None, :].copy()
    shift[..., :2] = np.random.default_rng(5).normal(scale=10, size=(N_CHAINS, N_DRAWS, 1, 2))
    idata = make_posterior(difficulty, shift, ["lm"])
    assert alignment_draws(idata)["pearson"].min() < 0.9  # polluted without the record
    idata.attrs["dif_unidentified"] = '[["q0", "lm"], ["q1", "lm"]]'
    draws = alignment_draws(idata)
    np.testing.assert_allclose(draws["pearson"], 1.0, atol=1e-12)
    np.testing.assert_allclose(draws["spearman"], 1.0, atol=1e-12)
    kept = difficulty[..., 2:]
    np.testing.assert_allclose(draws["dif_scale"][..., 0], 0.5 * kept.std(axis=-1, ddof=1))
    idata.attrs["dif_unidentified"] = json.dumps([[f"q{i}", "lm"] for i in range(10)])
    with pytest.raises(ValueError, match="fewer than 3 items"):
        alignment_draws(idata)


def test_items_restricts_the_metrics_to_those_items(difficulty):
    # Aligned on the first 6 items (shift 0), reversed on the last 6 (b_g = -b): the
    # correlation over all items mixes both, over each half it is exactly 1 and -1.
    shift = np.concatenate(
        [np.zeros_like(difficulty[..., :6]), -2.0 * difficulty[..., 6:]], axis=-1
    )[:, :, None, :]
    idata = make_posterior(difficulty, shift, ["half"])
    first = alignment(idata, items=ITEMS[:6]).draws["pearson"]
    second = alignment(idata, items=ITEMS[6:]).draws["pearson"]
    np.testing.assert_allclose(first, 1.0, atol=1e-12)
    np.testing.assert_allclose(second, -1.0, atol=1e-12)
    full = alignment(idata).draws["pearson"]
    assert float(abs(full).max()) < 1.0 - 1e-6
    with pytest.raises(ValueError, match="not items of the fit"):
        alignment(idata, items=["q0", "q1", "nope"])
    with pytest.raises(ValueError, match="at least 3 items"):
        alignment(idata, items=["q0", "q1"])
    with pytest.raises(ValueError, match="list of item labels"):
        alignment(idata, items="q0")
