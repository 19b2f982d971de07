"""Aggregated-data IRT: quadrature, validation, and recovery of a small simulation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import integrate, special, stats

from bayes_align import fit_aggregated
from bayes_align.aggregated import AggregatedData
from bayes_align.model.irt import binary_log_probs, gauss_hermite, marginal_log_probs


def test_gauss_hermite_marginal_matches_numerical_integral():
    """sum_q w_q P(k | mu + sigma x_q) = E[P(k | theta)], theta ~ N(mu, sigma), with the 3PL floor."""
    nodes, weights = gauss_hermite(21)
    np.testing.assert_allclose(weights.sum(), 1.0)
    offsets = np.array([-2.0, 0.3, 1.5])  # mu - b - shift
    a = np.array([0.7, 1.3, 1.2])
    sd = np.array([1.0, 0.5, 1.5])  # a * sd <= 2: 21 nodes are accurate to ~4e-6
    c = np.array([0.2, 0.25, 0.1])
    eta = a[:, None] * (offsets[:, None] + sd[:, None] * nodes[None, :])
    log_q, log_p = binary_log_probs(eta, c[:, None])
    marginal = np.exp(marginal_log_probs(np.stack([log_q, log_p], axis=-1), np.log(weights)))
    for r in range(3):
        exact, _ = integrate.quad(
            lambda t, r=r: special.expit(a[r] * (offsets[r] + t)) * stats.norm.pdf(t, 0, sd[r]), -12, 12
        )
        exact = c[r] + (1 - c[r]) * exact
        np.testing.assert_allclose(marginal[r, 1], exact, atol=1e-5)
        np.testing.assert_allclose(marginal[r, 0], 1 - exact, atol=1e-5)


def test_validation_names_offending_rows():
    frame = pd.DataFrame(
        {"item": ["i1", "i2", "i3", "i1", "i2", "i3"], "group": ["human"] * 3 + ["lm"] * 3,
         "n_correct": [5, 6, 7, 12, 3, 4], "n_total": [10] * 6}
    )
    with pytest.raises(ValueError, match="n_correct <= n_total"):
        AggregatedData.from_frame(frame)
    frame.loc[3, "n_correct"] = 8
    with pytest.raises(ValueError, match="reference group 'people'"):
        AggregatedData.from_frame(frame, reference_group="people")
    with pytest.raises(ValueError, match=r"i3.*no row for the reference group"):
        AggregatedData.from_frame(frame.drop(index=2))
    data = AggregatedData.from_frame(frame)
    assert data.groups == ("human", "lm") and data.focal_groups == ("lm",)
    np.testing.assert_allclose(data.share()[:3], [0.5, 0.6, 0.7])


def _simulate(seed: int = 11):
    """30 items; reference + 'aligned' (no DIF) + 'shifted' (4 items with |DIF| = 1.5).

    Counts are binomial draws with n = 4000 per row: the sampling sd of a logit is
    about 2 / sqrt(4000) = 0.03, so difficulties are recoverable to ~0.1 after the
    DIF prior and the quadrature marginal.
    """
    rng = np.random.default_rng(seed)
    n_items, n = 30, 4000
    difficulty = np.linspace(-1.8, 1.8, n_items)
    rng.shuffle(difficulty)
    mean = {"human": 0.0, "aligned": 0.7, "shifted": -0.5}
    shift = {g: np.zeros(n_items) for g in mean}
    planted = np.array([2, 9, 17, 25])
    shift["shifted"][planted] = [1.5, -1.5, 1.5, -1.5]
    nodes, weights = gauss_hermite(41)
    rows = []
    for g, mu in mean.items():
        p = (special.expit(mu + nodes[None, :] - difficulty[:, None] - shift[g][:, None]) * weights).sum(1)
        k = rng.binomial(n, p)
        rows += [{"item": f"i{i}", "group": g, "n_correct": k[i], "n_total": n} for i in range(n_items)]
    return AggregatedData.from_frame(pd.DataFrame(rows)), difficulty, mean, planted


@pytest.fixture(scope="module")
def simulated_fit():
    data, difficulty, mean, planted = _simulate()
    fit = fit_aggregated(data, method="svi", irt="1pl", draws=400, max_steps=6000, seed=1)
    return fit, difficulty, mean, planted


def test_recovers_simulation(simulated_fit):
    fit, difficulty, mean, planted = simulated_fit
    post = fit.idata.posterior
    b_hat = post["difficulty"].mean(("chain", "draw")).to_numpy()
    assert np.sqrt(np.mean((b_hat - difficulty) ** 2)) < 0.15
    mu_hat = post["group_mean"].mean(("chain", "draw")).to_series()
    for g, mu in mean.items():
        assert abs(mu_hat[g] - mu) < 0.15, (g, mu_hat[g], mu)
    shift = post["dif_shift"].mean(("chain", "draw")).sel(focal_group="shifted").to_numpy()
    np.testing.assert_array_equal(np.sign(shift[planted]), [1, -1, 1, -1])
    assert np.abs(shift[planted]).min() > 1.0
    others = np.delete(shift, planted)
    assert np.abs(others).max() < 0.35
    aligned = post["dif_shift"].mean(("chain", "draw")).sel(focal_group="aligned").to_numpy()
    assert np.abs(aligned).max() < 0.3
    assert fit.idata.log_likelihood["y"].shape[-1] == 90  # one per (item, group) row, for LOO
    assert fit.idata.attrs["reference_group"] == "human"


def test_alignment_and_dif_screen_run_on_aggregated_fit(simulated_fit):
    alignment_mod = pytest.importorskip("bayes_align.alignment")
    dif_mod = pytest.importorskip("bayes_align.dif")
    fit, _, _, planted = simulated_fit
    table = alignment_mod.alignment(fit).table
    r = table.loc[table["metric"] == "pearson"].set_index("group")["mean"]
    assert r["aligned"] > r["shifted"]
    screen = dif_mod.dif_screen(fit)
    flagged = screen.loc[screen["flagged"] & (screen["group"] == "shifted"), "item"]
    assert set(flagged) == {f"i{i}" for i in planted}
    assert not screen.loc[screen["group"] == "aligned", "flagged"].any()


def test_model_variants_trace_with_published_item_prior():
    """3PL with an informative (NAEP-style) item prior and free focal sds: sites and shapes."""
    from numpyro import handlers

    from bayes_align.combined import as_combined
    from bayes_align.model.inputs import build_model_inputs
    from bayes_align.model.joint import irt_model
    from bayes_align.model.spec import ModelSpec, Priors

    data, *_ = _simulate()
    prior = {
        "difficulty": np.where(np.arange(30) % 3 == 0, np.nan, 0.5),  # NaN: default prior
        "log_discrimination": np.full(30, np.log(1.7)),
        "guessing": np.full(30, 0.2),
    }
    data = AggregatedData(
        item_idx=data.item_idx, group_idx=data.group_idx, n_correct=data.n_correct,
        n_total=data.n_total, items=data.items, groups=data.groups,
        reference_group=data.reference_group, item_prior=prior,
    )
    spec = ModelSpec(irt="3pl", aggregated_sd=None)
    inputs = build_model_inputs(as_combined(data), spec, Priors())
    trace = handlers.trace(handlers.seed(irt_model, 0)).get_trace(inputs=inputs, spec=spec, priors=Priors())
    assert trace["difficulty"]["fn"].base_dist.loc[1] == 0.5
    assert trace["difficulty"]["fn"].base_dist.scale[1] == 0.25
    assert trace["difficulty"]["fn"].base_dist.scale[0] == 2.0  # no published value
    assert trace["guessing"]["value"].shape == (30,)
    assert trace["sigma_focal"]["value"].shape == (2,)
    assert trace["dif_shift"]["value"].shape == (2, 30)
    np.testing.assert_allclose(trace["dif_shift"]["value"].sum(axis=1), 0.0, atol=1e-5)
    assert np.isfinite(trace["counts"]["fn"].log_prob(trace["counts"]["value"])).all()
    assert "z" not in trace and "theta" not in trace  # no persons
