"""Nominal (multinomial over options) likelihood of the aggregated-data IRT model."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from scipy import special

from bayes_align import fit_aggregated
from bayes_align.aggregated import AggregatedData
from bayes_align.combined import as_combined
from bayes_align.model.inputs import build_model_inputs
from bayes_align.model.irt import gauss_hermite
from bayes_align.model.joint import irt_model, pointwise_log_likelihood, row_category_log_probs
from bayes_align.model.spec import ModelSpec, Priors

GROUPS = {"human": 0.0, "high": 0.8, "low": -0.8, "odd": 0.3}  # group means
N_ITEMS = 30


def _option_probs(mu, a, b, shift, zeta, lam, delta, valid, key, nodes, weights):
    """Marginal option probabilities of the nested-logit model, written out per item
    with NumPy (no padding tricks: absent options get probability 0 explicitly)."""
    theta = mu + nodes  # (Q,)
    p_key = special.expit(a[:, None] * (theta[None, :] - b[:, None] - shift[:, None]))  # (I, Q)
    z = zeta[:, None, :] + delta[:, None, :] + lam[:, None, :] * theta[None, :, None]  # (I, Q, K)
    distractor = valid & (np.arange(valid.shape[1])[None, :] != key[:, None])
    z = np.where(distractor[:, None, :], z, -np.inf)
    soft = special.softmax(z, axis=-1)
    probs = np.where(distractor[:, None, :], (1 - p_key)[..., None] * soft, 0.0)
    probs[np.arange(len(key)), :, key] = p_key
    return (probs * weights[None, :, None]).sum(axis=1)  # (I, K)


def _centre(x, distractor):
    m = np.where(distractor, x, 0).sum(1, keepdims=True) / distractor.sum(1, keepdims=True)
    return np.where(distractor, x - m, 0.0)


def simulate_nominal(seed: int = 3, n: float = 4000.0):
    """30 items (24 with 4 options, 4 with 3, 2 with 2), 4 groups, multinomial counts.

    'odd' has planted key DIF (+-1.5 on 4 items) and planted distractor DIF (+-2 on the
    first two distractors of 6 other 4-option items); 'high' and 'low' have none.
    """
    rng = np.random.default_rng(seed)
    n_options = np.array([4] * 24 + [3] * 4 + [2] * 2)
    k_max = 4
    valid = np.arange(k_max)[None, :] < n_options[:, None]
    key = rng.integers(0, n_options)
    distractor = valid & (np.arange(k_max)[None, :] != key[:, None])
    b = np.linspace(-1.5, 1.5, N_ITEMS)
    rng.shuffle(b)
    zeta = _centre(rng.normal(0, 1.0, (N_ITEMS, k_max)), distractor)
    lam = _centre(rng.normal(0, 0.8, (N_ITEMS, k_max)), distractor)
    shift = {g: np.zeros(N_ITEMS) for g in GROUPS}
    key_dif = np.array([1, 8, 15, 22])
    shift["odd"][key_dif] = [1.5, -1.5, 1.5, -1.5]
    delta = {g: np.zeros((N_ITEMS, k_max)) for g in GROUPS}
    dist_dif = np.array([3, 6, 11, 17, 19, 23])
    first_two = np.argsort(~distractor, axis=1, kind="stable")[:, :2]  # two distractor columns
    for i in dist_dif:
        delta["odd"][i, first_two[i]] = [2.0, -2.0]
    delta["odd"] = _centre(delta["odd"], distractor)
    nodes, weights = gauss_hermite(41)
    rows = []
    for g, mu in GROUPS.items():
        probs = _option_probs(mu, np.ones(N_ITEMS), b, shift[g], zeta, lam, delta[g], valid, key, nodes, weights)
        for i in range(N_ITEMS):
            counts = rng.multinomial(int(n), probs[i, : n_options[i]] / probs[i, : n_options[i]].sum())
            row = {"item": f"i{i}", "group": g, "key": key[i]}
            row.update({f"o{k}": (counts[k] if k < n_options[i] else np.nan) for k in range(k_max)})
            rows.append(row)
    data = AggregatedData.from_frame(pd.DataFrame(rows), option_columns=["o0", "o1", "o2", "o3"])
    truth = {"b": b, "zeta": zeta, "lam": lam, "delta": delta["odd"], "key_dif": key_dif,
             "dist_dif": dist_dif, "distractor": distractor}
    return data, truth


# ----------------------------------------------------------------------------- exactness


def _nominal_inputs(data: AggregatedData, n_nodes: int = 21, likelihood: str = "nominal"):
    spec = ModelSpec(irt="2pl", likelihood=likelihood, distractor_slopes=True, n_nodes=n_nodes)
    return build_model_inputs(as_combined(data), spec, Priors(), np.float64), spec


def _one_hot_log_probs(params, data: AggregatedData, n_nodes: int = 21) -> np.ndarray:
    """``log P_gik`` per row and option (NaN at options an item does not have)."""
    inputs, spec = _nominal_inputs(data, n_nodes)
    log_p = np.asarray(row_category_log_probs(params, inputs, spec))
    return np.where(np.arange(log_p.shape[1])[None, :] < data.n_options[data.item_idx][:, None], log_p, np.nan)


def test_nominal_option_probabilities_match_direct_computation():
    """Padded 4/3/2-option items: the vectorised marginal equals a direct per-item sum."""
    data, truth = simulate_nominal(seed=5, n=50)
    rng = np.random.default_rng(0)
    distractor = truth["distractor"]
    mean = np.array(list(GROUPS.values()))
    params = {
        "difficulty": truth["b"], "discrimination": np.exp(rng.normal(0, 0.3, N_ITEMS)),
        "dif_shift": rng.normal(0, 0.5, (3, N_ITEMS)), "group_mean": mean, "group_sd": np.ones(4),
        "distractor_intercept": truth["zeta"], "distractor_slope": truth["lam"],
        "dif_distractor": np.stack([_centre(rng.normal(0, 1, (N_ITEMS, 4)), distractor) for _ in range(3)]),
    }
    with jax.enable_x64(True):
        log_p = _one_hot_log_probs({k: jnp.asarray(v) for k, v in params.items()}, data, n_nodes=41)
    nodes, weights = gauss_hermite(41)
    valid = np.arange(4)[None, :] < data.n_options[:, None]
    for g, label in enumerate(data.groups):
        rows = np.flatnonzero(data.group_idx == g)
        shift = np.zeros(N_ITEMS) if g == 0 else params["dif_shift"][g - 1]
        delta = np.zeros((N_ITEMS, 4)) if g == 0 else params["dif_distractor"][g - 1]
        expected = _option_probs(
            mean[g], params["discrimination"], truth["b"], shift, truth["zeta"], truth["lam"], delta,
            valid, np.asarray(data.key), nodes, weights,
        )
        got = np.exp(log_p[rows[np.argsort(data.item_idx[rows])]])
        np.testing.assert_allclose(got[valid], expected[valid], rtol=1e-10, err_msg=label)
        np.testing.assert_allclose(np.nansum(got, axis=1), 1.0, rtol=1e-10)


def _two_option_data(seed: int = 0) -> AggregatedData:
    """12 items x 3 groups with two options each and soft (fractional) counts."""
    rng = np.random.default_rng(seed)
    rows = []
    for g in ("human", "lm1", "lm2"):
        for i in range(12):
            p = rng.uniform(0.1, 0.9)
            n = 100.0 if g != "human" else 2000.0
            key = i % 2
            counts = [n * (1 - p), n * p] if key == 1 else [n * p, n * (1 - p)]
            rows.append({"item": f"i{i}", "group": g, "key": key, "A": counts[0], "B": counts[1]})
    return AggregatedData.from_frame(pd.DataFrame(rows), option_columns=["A", "B"])


def test_two_option_nominal_equals_binary_exactly():
    """With two options the distractor softmax is 1: the multinomial row is the binomial row
    (coefficient included), and the two models have the same sites and the same density."""
    from numpyro import handlers

    data = _two_option_data()
    with jax.enable_x64(True):
        traces, inputs = {}, {}
        for name in ("binary", "nominal"):
            inputs[name], spec = _nominal_inputs(data, likelihood=name)
            traces[name] = handlers.trace(handlers.seed(irt_model, 7)).get_trace(
                inputs=inputs[name], spec=spec, priors=Priors())
        assert {k for k, v in traces["binary"].items() if v["type"] == "sample"} == {
            k for k, v in traces["nominal"].items() if v["type"] == "sample"
        }
        site = {k: float(t["counts"]["fn"].log_prob(t["counts"]["value"]).sum()) for k, t in traces.items()}
        assert site["nominal"] == pytest.approx(site["binary"], rel=1e-12)
        # full row log-likelihoods (stored for LOO) at a draw with DIF and discriminations
        rng = np.random.default_rng(1)
        params = {
            "difficulty": jnp.asarray(rng.normal(0, 1, data.n_items)),
            "discrimination": jnp.asarray(np.exp(rng.normal(0, 0.4, data.n_items))),
            "dif_shift": jnp.asarray(rng.normal(0, 0.7, (2, data.n_items))),
            "group_mean": jnp.asarray([0.0, 0.4, -0.6]),
            "group_sd": jnp.asarray([1.0, 1.0, 0.5]),
        }
        spec = ModelSpec(irt="2pl")
        ll = {name: np.asarray(pointwise_log_likelihood(params, inputs[name], spec)) for name in inputs}
    # the binomial row by hand: C(n, k) p^k (1 - p)^(n - k) with the quadrature P
    nodes, weights = gauss_hermite(21)
    g, i = data.group_idx, data.item_idx
    shift = np.vstack([np.zeros(data.n_items), np.asarray(params["dif_shift"])])[g, i]
    theta = np.asarray(params["group_mean"])[g][:, None] + np.asarray(params["group_sd"])[g][:, None] * nodes
    a = np.asarray(params["discrimination"])[i][:, None]
    p = (special.expit(a * (theta - np.asarray(params["difficulty"])[i][:, None] - shift[:, None])) * weights).sum(1)
    k, n = data.n_correct, data.n_total
    expected = special.gammaln(n + 1) - special.gammaln(k + 1) - special.gammaln(n - k + 1) + k * np.log(p) + (n - k) * np.log1p(-p)
    np.testing.assert_allclose(ll["binary"], expected, rtol=1e-9)
    np.testing.assert_allclose(ll["nominal"], ll["binary"], rtol=1e-12, atol=1e-9)


# ---------------------------------------------------------------------------- validation


def _frame():
    return pd.DataFrame(
        {"item": ["i1", "i2", "i3"] * 2, "group": ["human"] * 3 + ["lm"] * 3, "key": [0, 1, 2] * 2,
         "A": [5.0, 1, 2, 3, 4, 5], "B": [3.0, 6, 1, 3, 2, 1], "C": [2.0, 3, 7, 4, 4, 4]}
    )


def test_option_count_errors():
    cols = ["A", "B", "C"]
    data = AggregatedData.from_frame(_frame(), option_columns=cols)
    np.testing.assert_allclose(data.n_correct, [5, 6, 7, 3, 2, 4])
    np.testing.assert_allclose(data.n_total, [10] * 6)
    np.testing.assert_array_equal(data.n_options, [3, 3, 3])
    bad = _frame()
    bad.loc[4, "B"] = -1.0
    with pytest.raises(ValueError, match=r"(?s)option counts must be finite and >= 0; offending rows:.*i2\s+lm"):
        AggregatedData.from_frame(bad, option_columns=cols)
    bad = _frame()
    bad.loc[1, "B"] = np.nan  # a hole before option C
    with pytest.raises(ValueError, match=r"fill options 0..K_i-1"):
        AggregatedData.from_frame(bad, option_columns=cols)
    bad = _frame()
    bad.loc[3, "C"] = np.nan  # i1 has 3 options for the humans, 2 for the LM
    with pytest.raises(ValueError, match=r"items \['i1'\] have rows with different numbers of options"):
        AggregatedData.from_frame(bad, option_columns=cols)
    bad = _frame()
    bad.loc[[2, 5], "C"] = np.nan  # i3 now has 2 options but its key is option 2
    with pytest.raises(ValueError, match=r"key option outside .* \['i3'\]"):
        AggregatedData.from_frame(bad, option_columns=cols)
    bad = _frame()
    bad.loc[5, "key"] = 0
    with pytest.raises(ValueError, match=r"one key per item.*\['i3'\]"):
        AggregatedData.from_frame(bad, option_columns=cols)
    with pytest.raises(ValueError, match=r"columns \['D'\] not in the frame"):
        AggregatedData.from_frame(_frame(), option_columns=[*cols, "D"])
    with pytest.raises(ValueError, match="must equal the key's option count"):
        AggregatedData(
            item_idx=data.item_idx, group_idx=data.group_idx, n_correct=data.n_correct + 1,
            n_total=data.n_total, items=data.items, groups=data.groups, reference_group="human",
            option_counts=data.option_counts, key=data.key,
        )
    with pytest.raises(ValueError, match="without a key, n_total must be"):
        AggregatedData(
            item_idx=data.item_idx, group_idx=data.group_idx, n_correct=data.n_correct,
            n_total=data.n_total, items=data.items, groups=data.groups, reference_group="human",
            option_counts=data.option_counts,
        )
    key_only = AggregatedData.from_frame(data.to_frame())
    assert not key_only.has_options
    with pytest.raises(ValueError, match=r"needs the counts of every option and the items. keys"):
        fit_aggregated(key_only, likelihood="nominal")
    with pytest.raises(ValueError, match="supports irt='1pl' or '2pl'"):
        fit_aggregated(data, likelihood="nominal", irt="3pl")
    with pytest.raises(ValueError, match="likelihood must be one of"):
        fit_aggregated(data, likelihood="multinomial")
    keyless = AggregatedData.from_frame(_frame(), option_columns=cols, key=None)
    assert not keyless.has_key and np.isnan(keyless.n_correct).all()
    with pytest.raises(ValueError, match="for opinion items without a key model='grm'"):
        fit_aggregated(keyless, likelihood="nominal")
    with pytest.raises(ValueError, match="no key"):
        fit_aggregated(keyless)


# ------------------------------------------------------------------------------ recovery


@pytest.fixture(scope="module")
def nominal_fit():
    data, truth = simulate_nominal()
    fit = fit_aggregated(
        data, likelihood="nominal", distractor_slopes=True, method="svi", draws=200, max_steps=4000,
        learning_rate=0.03, seed=1,
    )
    return data, truth, fit


def test_nominal_recovers_simulation(nominal_fit):
    """Tolerances from the data size: every row has n = 4000 answers, so a key logit has a
    sampling sd of 1 / sqrt(n p (1 - p)) = 0.03-0.07 and a distractor log-ratio, resting on
    the n (1 - p) ~ 1000-3000 wrong answers split over 1-3 distractors, 0.03-0.1. Item
    difficulties and group means therefore come back to ~0.05 (we allow 0.1) and distractor
    intercepts to ~0.05 (allowed 0.15). Slopes are identified only by the groups' spread of
    means (-0.8..0.8), so their sd is ~0.1 / 0.8 ~ 0.12 (allowed RMSE 0.25, r > 0.9).
    Measured with this seed: RMSE(b) 0.028, |mu error| <= 0.013, RMSE(zeta) 0.044,
    RMSE(lambda) 0.08 (r 0.99), planted distractor DIF 1.54-2.13 in size (truth 2),
    dif_distractor_scale 0.77 for 'odd' vs 0.02-0.04 for the groups without any."""
    data, truth, fit = nominal_fit
    post = fit.idata.posterior.mean(("chain", "draw"))
    b = post["difficulty"].to_numpy()
    assert np.sqrt(np.mean((b - truth["b"]) ** 2)) < 0.1
    for g, mu in GROUPS.items():
        assert abs(float(post["group_mean"].sel(group=g)) - mu) < 0.1, g
    free = truth["distractor"] & (data.n_options > 2)[:, None]  # 1-distractor items have nothing free
    zeta, lam = post["distractor_intercept"].to_numpy(), post["distractor_slope"].to_numpy()
    assert np.sqrt(np.mean((zeta[free] - truth["zeta"][free]) ** 2)) < 0.15
    assert np.corrcoef(zeta[free], truth["zeta"][free])[0, 1] > 0.97
    assert np.sqrt(np.mean((lam[free] - truth["lam"][free]) ** 2)) < 0.25
    assert np.corrcoef(lam[free], truth["lam"][free])[0, 1] > 0.9
    # key and absent options are not distractors: NaN; sum to zero over distractors
    np.testing.assert_array_equal(np.isnan(zeta), ~truth["distractor"])
    np.testing.assert_allclose(np.nansum(zeta, axis=1), 0.0, atol=1e-5)
    # planted distractor DIF (+-2 before centring) is found with the right sign
    delta = post["dif_distractor"].sel(focal_group="odd").to_numpy()
    planted = truth["delta"][truth["dist_dif"]]
    found = delta[truth["dist_dif"]]
    big = np.abs(planted) > 1.0
    np.testing.assert_array_equal(np.sign(found[big]), np.sign(planted[big]))
    assert np.abs(found[big]).min() > 1.0
    scale = post["dif_distractor_scale"].to_series()
    assert scale["odd"] > 0.5 and scale["odd"] > 5 * max(scale["high"], scale["low"])
    # key DIF is still the binary model's dif_shift
    shift = post["dif_shift"].sel(focal_group="odd").to_numpy()
    np.testing.assert_array_equal(np.sign(shift[truth["key_dif"]]), [1, -1, 1, -1])
    assert np.abs(np.delete(shift, truth["key_dif"])).max() < 0.35
    ll = fit.idata.log_likelihood["y"]
    assert ll.shape[-1] == data.n_rows and np.isfinite(ll).all()
    assert fit.idata.attrs["likelihood"] == "nominal"


def test_alignment_and_dif_screen_run_on_nominal_fit(nominal_fit):
    from bayes_align.alignment import alignment
    from bayes_align.dif import dif_screen

    _, truth, fit = nominal_fit
    r = alignment(fit).table.query("metric == 'pearson'").set_index("group")["mean"]
    assert r["high"] > r["odd"] and r["low"] > r["odd"]
    screen = dif_screen(fit)
    flagged = set(screen.loc[screen["flagged"] & (screen["group"] == "odd"), "item"])
    assert flagged == {f"i{i}" for i in truth["key_dif"]}


# ---------------------------------------------------------------------------- real data


@pytest.mark.filterwarnings("ignore:SVI did not converge")
def test_naep_economics_nominal_end_to_end(naep_dir):
    """Plumbing on the real data: option counts from the loader, a short SVI run (300 steps,
    not converged: the point is the path), alignment for all 18 LMs."""
    from bayes_align.alignment import alignment
    from bayes_align.classical import optimize_temperature
    from bayes_align.naep import load_naep
    from bayes_align.naep_alignment import rank_alignment

    econ = load_naep(naep_dir, "economics")
    econ = econ.select(models=econ.language_models)
    temperature = optimize_temperature(econ.logits, econ.human_probs)
    data = AggregatedData.from_naep(econ, human_n=2000, model_n=100, temperature=temperature, option_counts=True)
    assert data.option_counts.shape == (93 * 19, 4) and data.has_options
    np.testing.assert_allclose(data.option_counts[:93], 2000 * econ.human_probs)
    np.testing.assert_allclose(data.option_shares()[93:186], econ.model_probs(temperature)[0], rtol=1e-12)
    np.testing.assert_array_equal(data.key, econ.key)
    fit = fit_aggregated(data, likelihood="nominal", method="svi", draws=50, max_steps=300, eval_every=100, seed=0)
    r = alignment(fit).table.query("metric == 'pearson'")
    assert set(r["group"]) == set(econ.models) and len(econ.models) == 18
    assert r["mean"].between(-1, 1).all()
    assert fit.idata.posterior["dif_distractor"].sizes["option"] == 4
    ranking = rank_alignment(fit)
    assert ranking["distractor_dif_scale"].gt(0).all()
    assert fit.idata.log_likelihood["y"].shape[-1] == 93 * 19


def test_cli_nominal_option_is_wired(tmp_path, capsys):
    """--likelihood reaches the fit: nominal with the 3PL is refused before any fitting."""
    import json

    from bayes_align.cli import main

    root = tmp_path / "data"
    (root / "items").mkdir(parents=True)
    (root / "llm-responses").mkdir()
    ids = [f"I{i}" for i in range(4)]
    (root / "items" / "naep-econ-items.jsonl").write_text("".join(
        json.dumps({"item_id": i, "stem": "?", "options": list("abcd"), "correct_option_index": 0}) + "\n" for i in ids
    ))
    (root / "items" / "naep-econ-response-distributions.jsonl").write_text("".join(
        json.dumps({"item_id": i, "grade": 12, "response_distribution": [0.4, 0.3, 0.2, 0.1]}) + "\n" for i in ids
    ))
    (root / "llm-responses" / "naep-econ-responses-LM1.jsonl").write_text("".join(
        json.dumps({"item_id": i, "logits": np.eye(4).tolist()}) + "\n" for i in ids
    ))
    args = ["naep-alignment", "--data", str(root), "--subject", "econ", "--likelihood", "nominal", "--irt", "3pl"]
    assert main(args) == 2
    assert "supports --irt 1pl or 2pl" in capsys.readouterr().err
