"""Bootstrap intervals of mean TV and the human split-half baseline (fixed seeds)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bayes_align.distributional import bootstrap_mean, human_split_baseline
from bayes_align.opinions import load_opinions


def _table(values, items=None, series=None) -> pd.DataFrame:
    n = len(values)
    return pd.DataFrame({
        "model": "m" if series is None else series, "method": "verbalized", "steering": "persona",
        "item": np.arange(n).astype(str) if items is None else items, "tv": values,
    })


def test_constant_values_give_a_point_interval():
    summary = bootstrap_mean(_table(np.full(50, 0.3)), n_boot=200)
    row = summary.iloc[0]
    assert (row["mean"], row["low"], row["high"]) == pytest.approx((0.3, 0.3, 0.3))
    assert row["n_cells"] == 50 and row["n_missing"] == 0


def test_cell_interval_matches_the_normal_approximation():
    """n = 400 iid values: the 95% percentile interval is about mean +- 1.96 sd / sqrt(n).

    With 4000 resamples the Monte Carlo error of each quantile is about 2% of the
    half-width, so a 10% tolerance cannot fail by chance at this seed and would catch a
    wrong scale (e.g. resampling fewer or more units than there are).
    """
    rng = np.random.default_rng(3)
    values = rng.gamma(2.0, 0.1, size=400)
    row = bootstrap_mean(_table(values), n_boot=4000, seed=1).iloc[0]
    half = 1.96 * values.std(ddof=1) / np.sqrt(len(values))
    assert row["mean"] == pytest.approx(values.mean(), abs=1e-15)
    assert (row["high"] - row["low"]) / 2 == pytest.approx(half, rel=0.1)
    assert row["low"] < row["mean"] < row["high"]


def test_item_bootstrap_widens_for_correlated_groups():
    """Eight identical groups per item: resampling items gives sqrt(8) x the cells' width."""
    rng = np.random.default_rng(4)
    per_item = rng.uniform(0.1, 0.5, size=120)
    values = np.repeat(per_item, 8)
    items = np.repeat(np.arange(120).astype(str), 8)
    cells = bootstrap_mean(_table(values, items), n_boot=4000, unit="cells", seed=2).iloc[0]
    whole = bootstrap_mean(_table(values, items), n_boot=4000, unit="items", seed=2).iloc[0]
    ratio = (whole["high"] - whole["low"]) / (cells["high"] - cells["low"])
    assert ratio == pytest.approx(np.sqrt(8), rel=0.12)
    assert whole["n_items"] == 120 and whole["n_cells"] == 960


def test_missing_values_series_and_replicates():
    values = np.array([0.1, np.nan, 0.3, 0.5, 0.2, 0.4])
    table = _table(values, series=["a", "a", "a", "b", "b", "b"])
    summary = bootstrap_mean(table, n_boot=300, seed=5)
    assert summary["model"].tolist() == ["a", "b"]
    assert summary["n_missing"].tolist() == [1, 0]
    np.testing.assert_allclose(summary["mean"], [0.2, np.mean([0.5, 0.2, 0.4])])
    # replicates equal to the values reproduce the plain bootstrap draw for draw
    same = bootstrap_mean(table, n_boot=300, seed=5, replicates=np.tile(values, (300, 1)))
    pd.testing.assert_frame_equal(summary, same)
    with pytest.raises(ValueError, match="replicates must have shape"):
        bootstrap_mean(table, n_boot=300, replicates=np.zeros((2, 6)))
    with pytest.raises(ValueError, match="unit"):
        bootstrap_mean(table, unit="groups")
    with pytest.raises(ValueError, match="level"):
        bootstrap_mean(table, level=95)


def _human(tmp_path: Path, cells: dict[str, dict[str, float]]):
    folder = tmp_path / "human"
    folder.mkdir()
    entry = {"MC_options": ["a", "b", "c"], "question_text": "q", **cells}
    (folder / "G_data.json").write_text(json.dumps({"Q": entry}))
    return load_opinions(folder, info=False)


def test_split_half_exact_cases(tmp_path):
    human = _human(tmp_path, {"same": {"a": 40.0}, "two": {"a": 1.0, "b": 1.0},
                              "few": {"a": 1.0}, "none": {}})
    table = human_split_baseline(human, n_splits=50, min_respondents=2).set_index("group")
    assert table.loc["same", "tv"] == 0.0  # everybody gave the same answer
    assert table.loc["two", "tv"] == 1.0  # halves of one respondent each always disagree
    assert table.loc["few", "status"] == "too_few_respondents" and np.isnan(table.loc["few", "tv"])
    assert table.loc["none", "status"] == "no_respondents"
    only = human_split_baseline(human, n_splits=50, min_respondents=2, groups=[("G", "two")])
    assert only["group"].tolist() == ["two"]


def test_split_half_matches_shuffling_respondents(tmp_path):
    """The hypergeometric split equals shuffling the respondents and cutting in two.

    Both estimate E[TV(half, other half)] for counts (30, 20, 11) (n odd: halves 30 and
    31) from 4000 splits each; the difference of the two means is tested against 4
    standard errors of that difference.
    """
    counts = np.array([30, 20, 11])
    human = _human(tmp_path, {"g": dict(zip("abc", counts.astype(float), strict=True))})
    ours = human_split_baseline(human, n_splits=4000, seed=6).iloc[0]
    rng = np.random.default_rng(7)
    people = np.repeat(np.arange(3), counts)
    reference = []
    for _ in range(4000):
        shuffled = rng.permutation(people)
        first, second = shuffled[:30], shuffled[30:]
        reference.append(0.5 * np.abs(np.bincount(first, minlength=3) / 30
                                      - np.bincount(second, minlength=3) / 31).sum())
    reference = np.array(reference)
    se = np.sqrt(ours["tv_sd"] ** 2 / 4000 + reference.var(ddof=1) / 4000)
    assert abs(ours["tv"] - reference.mean()) < 4 * se
    assert ours["tv_sd"] == pytest.approx(reference.std(ddof=1), rel=0.1)
