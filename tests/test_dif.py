"""DIF screens: the posterior screen on hand-built posteriors and Mantel-Haenszel by hand."""

from __future__ import annotations

import json

import arviz as az
import numpy as np
import pandas as pd
import pytest

from bayes_align.data import ResponseData
from bayes_align.dif import (
    ETS_B_LOGIT,
    ETS_C_LOGIT,
    dif_screen,
    ets_category_posterior,
    mantel_haenszel,
)


# ----------------------------------------------------------------------------- posterior screen
def shift_posterior(shift: np.ndarray, discrimination: np.ndarray | None = None) -> az.InferenceData:
    """Posterior with dif_shift (chain, draw, focal_group, item) as in DESIGN.md."""
    n_items = shift.shape[-1]
    posterior = {"difficulty": np.zeros(shift.shape[:2] + (n_items,)), "dif_shift": shift}
    dims = {"difficulty": ["item"], "dif_shift": ["focal_group", "item"]}
    if discrimination is not None:
        posterior["discrimination"] = discrimination
        dims["discrimination"] = ["item"]
    return az.from_dict(
        posterior=posterior,
        dims=dims,
        coords={"item": [f"q{i}" for i in range(n_items)], "focal_group": ["lm", "persona"]},
    )


def test_ets_bands_are_the_delta_bands_in_logits():
    assert ETS_B_LOGIT == pytest.approx(0.4255, abs=1e-4)
    assert ETS_C_LOGIT == pytest.approx(0.6383, abs=1e-4)


@pytest.mark.parametrize(
    ("mean", "low", "high", "expected"),
    [
        (0.9, 0.5, 1.3, "C"),  # large, interval beyond 0.426
        (-0.9, -1.3, -0.5, "C"),  # same, negative direction
        (0.9, 0.3, 1.5, "B"),  # large but interval reaches below 0.426
        (0.5, 0.1, 0.9, "B"),  # moderate, interval excludes 0
        (0.5, -0.1, 1.1, "A"),  # moderate but interval includes 0
        (0.3, 0.2, 0.4, "A"),  # clearly non-zero but negligible
    ],
)
def test_posterior_ets_category(mean, low, high, expected):
    assert ets_category_posterior(np.array(mean), np.array(low), np.array(high)) == expected


def test_dif_screen_probabilities_are_posterior_frequencies():
    # Item q0 of "lm": 80 of 100 draws at 1.0, 20 at -0.1 -> P(s > 0) = 0.8,
    # P(|s| > 0.426) = 0.8. Item q1: every draw 0.7 -> P(|s| > rope) = 1, flagged, C.
    shift = np.zeros((2, 50, 2, 3))
    values = np.where(np.arange(100) < 80, 1.0, -0.1).reshape(2, 50)
    shift[:, :, 0, 0] = values
    shift[:, :, 0, 1] = 0.7
    shift[:, :, 1, 2] = -0.2
    table = dif_screen(shift_posterior(shift), rope=0.426, prob=0.9)
    assert list(table.columns[:10]) == [
        "item", "group", "mean", "sd", "hdi_low", "hdi_high",
        "prob_positive", "prob_abs_gt_rope", "category", "flagged",
    ]  # fmt: skip
    assert list(table["group"]) == ["lm"] * 3 + ["persona"] * 3
    rows = table.set_index(["group", "item"])
    assert rows.loc[("lm", "q0"), "prob_positive"] == pytest.approx(0.8)
    assert rows.loc[("lm", "q0"), "prob_abs_gt_rope"] == pytest.approx(0.8)
    assert rows.loc[("lm", "q0"), "mean"] == pytest.approx(0.78)
    assert not rows.loc[("lm", "q0"), "flagged"]
    assert rows.loc[("lm", "q1"), "flagged"] and rows.loc[("lm", "q1"), "category"] == "C"
    assert rows.loc[("persona", "q2"), "prob_positive"] == 0.0
    assert rows.loc[("persona", "q2"), "category"] == "A"
    assert table["identified"].all()
    # A looser requirement flags q0 too.
    assert dif_screen(shift_posterior(shift), prob=0.75).set_index(["group", "item"]).loc[
        ("lm", "q0"), "flagged"
    ]


def test_unidentified_pairs_are_reported_but_never_flagged():
    shift = np.full((2, 50, 2, 3), 2.0)
    idata = shift_posterior(shift)
    idata.attrs["dif_unidentified"] = json.dumps([["q1", "persona"]])
    rows = dif_screen(idata).set_index(["group", "item"])
    assert not rows.loc[("persona", "q1"), "identified"]
    assert not rows.loc[("persona", "q1"), "flagged"]
    assert rows.loc[("persona", "q1"), "category"] == "n/a"
    assert rows.drop(index=("persona", "q1"))["flagged"].all()


def test_logit_scale_multiplies_by_discrimination():
    shift = np.full((2, 50, 2, 3), 0.5)
    discrimination = np.tile(np.array([0.5, 1.0, 2.0]), (2, 50, 1))
    table = dif_screen(shift_posterior(shift, discrimination), scale="logit")
    np.testing.assert_allclose(table["mean"], np.tile([0.25, 0.5, 1.0], 2))
    assert list(table["flagged"]) == [False, True, True] * 2


def test_dif_screen_rejects_bad_input():
    idata = az.from_dict(posterior={"difficulty": np.zeros((1, 5, 3))})
    with pytest.raises(ValueError, match="dif_shift"):
        dif_screen(idata)
    with pytest.raises(ValueError, match="prob"):
        dif_screen(shift_posterior(np.zeros((1, 5, 2, 3))), prob=0)


# ----------------------------------------------------------------------------- Mantel-Haenszel
# Two items: the studied item "q" and an anchor "a", so the rest score of "q" is the answer
# to "a" (two strata). Cell counts (right, wrong) per stratum:
#   stratum 0: reference A=10, B=20; focal C=5,  D=25
#   stratum 1: reference A=30, B=10; focal C=20, D=20
HAND_TABLES = {
    ("ref", 0): (10, 20),
    ("foc", 0): (5, 25),
    ("ref", 1): (30, 10),
    ("foc", 1): (20, 20),
}


def hand_data() -> ResponseData:
    rows = []
    for (group, stratum), (right, wrong) in HAND_TABLES.items():
        for k, answer in enumerate([1] * right + [0] * wrong):
            person = f"{group}{stratum}_{k}"
            rows.append((person, "q", group, answer))
            rows.append((person, "a", group, stratum))
    frame = pd.DataFrame(rows, columns=["person", "item", "group", "response"])
    with pytest.warns(UserWarning, match="no response variance"):  # 2-item persons
        return ResponseData.from_long(frame, reference_group="ref", kind="binary")


def test_mantel_haenszel_matches_hand_computation():
    # R_k = A D / T: 10*25/60 + 30*20/80 = 4.1667 + 7.5 = 11.6667
    # S_k = B C / T: 20*5/60  + 10*20/80 = 1.6667 + 2.5 =  4.1667
    # alpha (focal over reference) = S / R = 1 / 2.8; delta = -2.35 ln(alpha) = 2.35 ln 2.8.
    # RBG: P = (A + D) / T = (0.58333, 0.625), Q = (0.41667, 0.375)
    #   var = sum PR / (2 R^2) + sum (PS + QR) / (2 R S) + sum QS / (2 S^2)
    #       = 7.11806 / 272.222 + 7.08333 / 97.2222 + 1.63194 / 34.7222 = 0.146005
    # Chi-square: E A = 30*15/60 + 40*50/80 = 32.5, sum A = 40,
    #   Var A = 30*30*15*45 / (60^2 * 59) + 40*40*50*30 / (80^2 * 79) = 7.60701,
    #   chi2 = (|40 - 32.5| - 0.5)^2 / 7.60701 = 6.44143.
    table = mantel_haenszel(hand_data())
    row = table.set_index("item").loc["q"]
    assert row["group"] == "foc"
    assert (row["n_reference"], row["n_focal"]) == (70, 70)
    assert row["alpha_mh"] == pytest.approx(1 / 2.8)
    assert row["log_odds_ratio"] == pytest.approx(np.log(2.8))
    assert row["delta"] == pytest.approx(2.35 * np.log(2.8))
    assert row["delta_se"] == pytest.approx(2.35 * np.sqrt(0.146005), rel=1e-4)
    assert row["chi2"] == pytest.approx(6.44143, rel=1e-4)
    assert row["p_value"] == pytest.approx(0.011146, rel=1e-3)
    # |delta| = 2.42 >= 1.5 but (2.42 - 1) / 0.898 = 1.58 < 1.645: not C; significant: B.
    assert row["category"] == "B"


def test_mantel_haenszel_recovers_rasch_shift_with_positive_sign():
    # Rasch data, equal abilities; item 0 is 0.8 logits harder for the focal group.
    rng = np.random.default_rng(5)
    n_persons, n_items = 2000, 10
    theta = rng.normal(size=n_persons)
    group = np.where(np.arange(n_persons) < n_persons // 2, "human", "lm")
    b = np.linspace(-1.5, 1.5, n_items)
    shift = np.zeros((n_persons, n_items))
    shift[group == "lm", 0] = 0.8
    p = 1 / (1 + np.exp(-(theta[:, None] - b - shift)))
    y = (rng.random(p.shape) < p).astype(int)
    frame = pd.DataFrame(
        {
            "person": np.repeat(np.arange(n_persons), n_items),
            "item": np.tile([f"i{j}" for j in range(n_items)], n_persons),
            "group": np.repeat(group, n_items),
            "response": y.ravel(),
        }
    )
    # Drop 10% of responses at random: the rest score is then over observed items.
    frame = frame[rng.random(len(frame)) > 0.1]
    table = mantel_haenszel(ResponseData.from_long(frame, kind="binary")).set_index("item")
    studied = table.loc["i0"]
    assert studied["delta"] > 0 and studied["category"] in ("B", "C")
    # The sum-score-matched MH is consistent for Rasch DIF; the rest-score version is close
    # with equal abilities. SE of the log odds ratio here is about 0.11; allow 3 SE.
    assert studied["log_odds_ratio"] == pytest.approx(0.8, abs=3 * studied["delta_se"] / 2.35)
    others = table.drop(index="i0")
    assert (others["category"] == "A").sum() >= 8


def test_mantel_haenszel_ordinal_and_errors():
    frame = pd.DataFrame(
        {
            "person": np.repeat(np.arange(60), 3),
            "item": np.tile(["x", "y", "z"], 60),
            "group": np.repeat(np.where(np.arange(60) < 30, "human", "lm"), 3),
            "response": np.random.default_rng(6).integers(0, 3, size=180),
        }
    )
    data = ResponseData.from_long(frame, kind="ordinal")
    table = mantel_haenszel(data)
    assert len(table) == 3
    assert "dichotomised at >= 1" in table.attrs["dichotomisation"]
    assert mantel_haenszel(data, cut=2).attrs["dichotomisation"].startswith("ordinal")
    with pytest.raises(ValueError, match="reference group 'nobody'"):
        mantel_haenszel(data, reference_group="nobody")


def test_mantel_haenszel_not_estimable_item():
    # Every focal person answers item "q" right: the odds ratio has a zero sum -> n/a.
    frame = pd.DataFrame(
        {
            "person": np.repeat(np.arange(40), 2),
            "item": np.tile(["q", "a"], 40),
            "group": np.repeat(np.where(np.arange(40) < 20, "human", "lm"), 2),
            "response": np.column_stack(
                [np.where(np.arange(40) < 20, np.arange(40) % 2, 1), np.arange(40) % 3 == 0]
            ).ravel().astype(int),
        }
    )
    with pytest.warns(UserWarning):
        data = ResponseData.from_long(frame, kind="binary")
    row = mantel_haenszel(data).set_index("item").loc["q"]
    assert row["category"] == "n/a" and np.isnan(row["delta"])
