"""Person-level and aggregated groups in one fit (bayes_align.combine)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import bayes_align as ba

# 2 x 250 draws: posterior means to within ~0.1 posterior sd (ESS of a few hundred), well
# inside the 2 sd the agreement test allows
NUTS = dict(method="nuts", chains=2, draws=250, warmup=250, progress_bar=False, check=False, seed=1)


def test_combine_checks_and_layout(split_counts):
    data, _ = ba.simulate(n_persons=60, n_items=5, groups=("human", "lm_a", "lm_b"), n_dif_items=2, seed=0)
    persons, rows = split_counts(data, ["lm_a", "lm_b"])
    combined = ba.combine(persons, rows)
    assert combined.kind == "mixed" and combined.reference_group == "human"
    assert combined.group_kind == ("persons", "aggregated", "aggregated")
    assert combined.n_obs == 100 and combined.n_rows == 10 and combined.n_units == 110
    summary = combined.group_summary()
    assert summary.loc["lm_a", "row_total"] == 100 and summary.loc["human", "persons"] == 20
    with pytest.raises(ValueError, match="group 'human' is in datasets 0 and 1"):
        ba.combine(persons, persons)
    with pytest.raises(ValueError, match="reference group 'nobody' is in none"):
        ba.combine(persons, rows, reference_group="nobody")
    lm_persons = ba.ResponseData.from_long(
        data.to_frame().query("group == 'lm_a'"), reference_group=None
    )
    with pytest.raises(ValueError, match="holds no reference group"):
        ba.fit(lm_persons)
    with pytest.raises(ValueError, match="combine joins ResponseData and AggregatedData"):
        ba.combine(persons, data.to_frame())


@pytest.fixture(scope="module")
def planted(split_counts):
    """One set of parameters: 20 items, 3 groups of 300 persons (ability sd 1, as the
    aggregated model assumes by default), 6 planted DIF items per focal group (0.9 logits)."""
    data, truth = ba.simulate(
        n_persons=900, n_items=20, groups=("human", "lm_a", "lm_b"), n_dif_items=6, dif_size=0.9,
        irt="1pl", group_means=(0.0, 0.4, -0.3), group_sds=(1.0, 1.0, 1.0), seed=7,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        everyone = ba.fit(data, model="1pl", **NUTS)
        persons, rows = split_counts(data, ["lm_a", "lm_b"])
        mixed = ba.fit(ba.combine(persons, rows), model="1pl", **NUTS)
    return truth, everyone, mixed


def test_mixed_fit_recovers_planted_dif(planted):
    """Each LM group's 300 answers per item fix its shifts to ~0.15 (binomial sd of a
    logit at n = 300): the posterior mean shifts correlate >= 0.9 with the truth (measured
    0.916 for both groups; the posterior means, not the number of draws, set r)."""
    truth, _, mixed = planted
    shift = mixed.posterior["dif_shift"].mean(("chain", "draw"))
    for row, group in enumerate(truth["focal_groups"]):
        r = np.corrcoef(shift.sel(focal_group=group).values, truth["dif_shift"][row])[0, 1]
        assert r >= 0.9, (group, r)
    assert mixed.idata.attrs["kind"] == "mixed"
    assert mixed.idata.log_likelihood["y"].sizes["obs"] == 300 * 20 + 2 * 20


def test_mixed_fit_agrees_with_all_persons(planted):
    """Aggregating a group's persons loses nothing the 1PL needs (the sum score is
    sufficient): item and group parameters agree within 2 posterior sd (measured: at most
    0.15 sd, the Monte-Carlo error of two runs of 2 x 250 draws)."""
    _, everyone, mixed = planted
    for name in ("difficulty", "dif_shift", "group_mean"):
        a = everyone.posterior[name]
        b = mixed.posterior[name]
        gap = np.abs(a.mean(("chain", "draw")) - b.mean(("chain", "draw")))
        sd = np.maximum(a.std(("chain", "draw")), b.std(("chain", "draw")))
        assert float((gap / sd).max()) < 2.0, name
    r_everyone = ba.alignment(everyone).table.set_index(["group", "metric"])["mean"]
    r_mixed = ba.alignment(mixed).table.set_index(["group", "metric"])["mean"]
    np.testing.assert_allclose(r_mixed.loc[:, "pearson"], r_everyone.loc[:, "pearson"], atol=0.05)


def test_mixed_fit_round_trips_and_compares(planted, tmp_path):
    _, _, mixed = planted
    loaded = ba.load_fit(mixed.to_netcdf(tmp_path / "mixed.nc"))
    assert loaded.data.kind == "mixed" and loaded.data.n_rows == 40
    np.testing.assert_allclose(loaded.idata.log_likelihood["y"].values,
                               mixed.idata.log_likelihood["y"].values, rtol=1e-5)
    # the invariant model loses by ~125 elpd here (measured): 2 x 100 draws rank it
    invariant = ba.fit(loaded.data, model="1pl", dif="none", **(NUTS | dict(draws=100, warmup=100)))
    result = ba.compare_models({"dif": loaded, "invariant": invariant})
    assert result.table.index[0] == "dif"
    by_person = ba.compare_models({"dif": loaded, "invariant": invariant}, pointwise="person")
    assert by_person.loo["dif"].n_data_points == 300 + 40


def test_graded_opinion_counts_without_key():
    """Opinion items: ordered options counted per group, no key, the graded model."""
    rng = np.random.default_rng(0)
    rows = []
    for group, n, flip in (("human", 500, False), ("same", 200, False), ("reversed", 200, True)):
        for i in range(12):
            probs = np.array([3.0, 2.0, 1.0]) if i % 3 else np.array([1.0, 2.0, 4.0])
            probs = probs[::-1] if flip else probs
            counts = rng.multinomial(n, probs / probs.sum())
            rows.append({"item": f"q{i}", "group": group, "A": counts[0], "B": counts[1], "C": counts[2]})
    data = ba.AggregatedData.from_frame(pd.DataFrame(rows), option_columns=["A", "B", "C"], key=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fitted = ba.fit(data, model="grm", method="svi", max_steps=3000, progress_bar=False)
    r = ba.alignment(fitted).table.query("metric == 'pearson'").set_index("group")
    assert r.loc["same", "mean"] > 0.8 and r.loc["reversed", "mean"] < 0
    assert r.loc["same", "hdi_low"] > r.loc["reversed", "hdi_high"]
    y = fitted.idata.observed_data["y"].values  # mean category per row
    assert ((y >= 0) & (y <= 2)).all()
