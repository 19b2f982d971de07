"""Real data end to end: lme4's VerbAgg (316 persons x 24 items), Gender as groups (F = reference).

Binary (lme4's r2: yes or perhaps = 1) with a 2PL, ordinal (no < perhaps < yes) with the GRM;
each fit's posterior DIF table is printed beside the Mantel-Haenszel one (run ``pytest -s``).
Each model is fitted by SVI (400 draws from the mean-field posterior): what is checked is
the real-data path (loader, fit, posterior screen, alignment) and that the posterior
shift profile agrees with Mantel-Haenszel's, which rests on posterior means (identical
to NUTS' within a few hundredths on this design, see test_recovery's SVI-NUTS
agreement) and on the sign of flagged items. NUTS is tested in test_recovery and
test_dif.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from bayes_align import alignment, dif_screen, fit, mantel_haenszel

pytestmark = pytest.mark.slow

MALE = "human:M"


def verbagg(response: str):
    from bayes_align.datasets import verbagg_response_data

    return verbagg_response_data(response)


def run(response: str, model: str):
    data = verbagg(response)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SVI convergence advice is not what is checked here
        fitted = fit(data, model=model, dif="normal", method="svi", draws=400, seed=1,
                     progress_bar=False)  # fmt: skip
    return data, fitted


@pytest.fixture(scope="module")
def binary_run():
    return run("binary", "2pl")


@pytest.fixture(scope="module")
def ordinal_run():
    return run("ordinal", "grm")


def side_by_side(data, fitted) -> pd.DataFrame:
    """Posterior screen on the log-odds scale merged with the Mantel-Haenszel screen."""
    posterior = dif_screen(fitted, scale="logit")
    mh = mantel_haenszel(data)
    merged = posterior.merge(mh, on=["item", "group"], suffixes=("", "_mh"))
    return merged[
        ["item", "mean", "hdi_low", "hdi_high", "prob_abs_gt_rope", "category", "flagged",
         "log_odds_ratio", "delta", "p_value", "category_mh"]
    ].rename(columns={"mean": "shift_logit", "log_odds_ratio": "mh_logit", "delta": "mh_delta"})  # fmt: skip


def check(data, fitted, label: str) -> None:
    table = side_by_side(data, fitted)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(f"\nVerbAgg {label}: posterior DIF (logit scale) beside Mantel-Haenszel, M vs F")
        print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        print(alignment(fitted).table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    assert len(table) == 24 and set(table["category"]) <= {"A", "B", "C"}
    assert table["shift_logit"].notna().all() and table["mh_logit"].notna().all()
    # Both screens estimate the same per-item log-odds difference between men and women
    # (the model's relative to the sum-to-zero constraint, MH relative to the rest score),
    # from the same 7,584 answers: their item profiles must agree closely.
    r = np.corrcoef(table["shift_logit"], table["mh_logit"])[0, 1]
    print(f"correlation of posterior and MH log-odds shifts: {r:.3f}")
    assert r > 0.7, r
    # A posterior flag needs P(|shift| > 0.426) >= 0.9: MH must at least see a significant
    # difference in the same direction for every flagged item.
    flagged = table[table["flagged"]]
    assert (np.sign(flagged["shift_logit"]) == np.sign(flagged["mh_logit"])).all()
    pearson = alignment(fitted).table.query("metric == 'pearson'")["mean"].item()
    assert 0.5 < pearson <= 1.0


def test_verbagg_binary_end_to_end(binary_run):
    data, fitted = binary_run
    assert fitted.idata.posterior["dif_shift"].sizes == {"chain": 1, "draw": 400,
                                                         "focal_group": 1, "item": 24}  # fmt: skip
    assert list(fitted.idata.posterior["focal_group"].to_numpy()) == [MALE]
    check(data, fitted, "binary (r2), 2PL")


def test_verbagg_ordinal_end_to_end(ordinal_run):
    data, fitted = ordinal_run
    assert data.kind == "ordinal" and "step" in fitted.idata.posterior
    check(data, fitted, "ordinal (no < perhaps < yes), GRM; MH dichotomised at >= perhaps")
