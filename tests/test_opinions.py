"""Opinion data loaders and per-item TV on small synthetic folders with hand-computed answers.

The human folder has one attribute (SEX) and two items:

- Q1, answers "Don't know", "No", "Refused", "Yes, definitely" (alphabetical), with
  ``MC_options`` split at the comma of "Yes, definitely" and quote marks around
  "Don't know". Female counts 10, 30, 10, 50 (letters A-D); Male chose only "No" (60) and
  "Yes, definitely" (40), so for Male the letters are A = No, B = Yes, definitely.
- Q2, "Agree"/"Disagree": Female 3 and 1 (four respondents), Male nobody.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bayes_align.distributional import tv_table
from bayes_align.opinions import (
    UNSTEERED,
    lm_distributions_from_frame,
    load_lm_results,
    load_opinions,
)

Q1_OPTIONS = ("Don't know", "No", "Refused", "Yes, definitely")


def _write_json(path: Path, content) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content))


@pytest.fixture()
def human_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "human"
    _write_json(folder / "SEX_data.json", {
        "Q1": {
            "MC_options": ["Yes", "definitely", "No", "\"Don't know\"", "Refused"],
            "question_text": "Do you agree?",
            "Female": {"Don't know": 10.0, "No": 30.0, "Refused": 10.0, "Yes, definitely": 50.0},
            "Male": {"No": 60.0, "Yes, definitely": 40.0},
        },
        "Q2": {
            "MC_options": ["Agree", "Disagree", "Refused"],
            "question_text": "Agree or not?",
            "Female": {"Agree": 3.0, "Disagree": 1.0},
            "Male": {},
        },
    })
    pd.DataFrame({
        "key": ["Q1"],
        "references": [str(["Yes, definitely", "No", "Don't know", "Refused"])],
        "option_ordinal": [str([1.0, 2.0])],
    }).to_csv(folder / "info.csv", index=False)
    return folder


def _entry(avg: dict, expected: dict | None, key: str = "expected_results", response: str = "x") -> dict:
    out = {"avg_actual_results": avg, "actual_results": {k: [v] for k, v in avg.items()},
           "response": [response]}
    if expected is not None:
        out[key] = expected
    return out


@pytest.fixture()
def lm_dir(tmp_path: Path) -> Path:
    root = tmp_path / "lm"
    female = {"A": 0.1, "B": 0.3, "C": 0.1, "D": 0.5}
    _write_json(root / "sequence/lmA/task1/SEX/Female.json", {
        "Q1": _entry({"A": 0.1, "B": 0.2, "C": 0.0, "D": 0.7}, female, response="ABDD"),
        "Q2": _entry({"A": 0.5, "B": 0.5}, {"A": 0.75, "B": 0.25}),
    })
    _write_json(root / "sequence/lmA/task1/SEX/Male.json", {
        "Q1": _entry({"A": 0.3, "B": 0.5}, {"A": 0.6, "B": 0.4}),
        "Q2": _entry({}, {}),
    })
    _write_json(root / "express_distribution/lmA/task1/SEX/Female.json", {
        "Q1": _entry({"A": 0.0, "B": 0.0, "C": 0.0, "D": 0.0}, female),  # parse failure
        "Q2": _entry({"A": 0.6, "B": 0.3, "C": 0.1}, {"A": 0.75, "B": 0.25}),  # C: no such answer
    })
    _write_json(root / "express_distribution/lmA/task1/SEX/Male.json", {
        "Q1": _entry({"A": 0.5, "B": 0.5}, {"A": 0.4, "B": 0.6}),  # expected_results disagree
    })
    _write_json(root / "model_logprobs/lmA/task0/NONE/Female.json", {
        "Q1": _entry({"A": 0.25, "B": 0.25, "C": 0.25, "D": 0.25}, female, key="expected_results_NONE_Female"),
        "Q2": _entry({"A": 1.0, "B": 0.0}, {"A": 0.75, "B": 0.25}, key="expected_results_NONE_Female"),
    })
    _write_json(root / "stray.json", {})
    return root


def _tv(table: pd.DataFrame, method: str, steering: str, group: str, item: str) -> pd.Series:
    row = table.loc[(table["method"] == method) & (table["steering"] == steering)
                    & (table["group"] == group) & (table["item"] == item)]
    assert len(row) == 1, row
    return row.iloc[0]


def test_human_loader_repairs_options_and_reports_warts(human_dir):
    data = load_opinions(human_dir)
    assert data.items == ("Q1", "Q2")
    assert data.options == (Q1_OPTIONS, ("Agree", "Disagree"))
    assert data.groups == (("SEX", "Female"), ("SEX", "Male"))
    # survey order: info.csv for Q1, repaired MC_options for Q2
    assert data.survey_options == (("Yes, definitely", "No", "Don't know", "Refused"),
                                   ("Agree", "Disagree", "Refused"))
    np.testing.assert_array_equal(data.counts, [[10, 30, 10, 50], [0, 60, 0, 40],
                                                [3, 1, np.nan, np.nan], [0, 0, np.nan, np.nan]])
    np.testing.assert_array_equal(data.n_respondents, [100, 100, 4, 0])
    # ordinal positions: Yes 1, No 2, Don't know and Refused none; Q2 has no info row
    np.testing.assert_array_equal(data.ordinal, [[np.nan, 2, np.nan, 1], [np.nan] * 4])
    np.testing.assert_array_equal(data.ordered, [True, False])
    assert data.cell_options[1] == ("No", "Yes, definitely")  # Male: letters A, B
    kinds = data.issues.groupby("kind").size().to_dict()
    assert kinds == {"split_option_repaired": 1, "quote_marks_stripped": 1, "no_info_row": 1,
                     "few_respondents": 1, "empty_cell": 1}
    long = data.to_frame()
    assert len(long) == 12 and long["count"].sum() == 204


def test_quote_marks_spanning_a_split_option(tmp_path):
    _write_json(tmp_path / "A_data.json", {"Q": {
        "MC_options": ["\"Yes", "even if they don't\"", "No", "Refused"], "question_text": "q",
        "g": {"No": 2.0, "Yes, even if they don't": 1.0},
    }})
    data = load_opinions(tmp_path, min_respondents=1)
    assert data.survey_options == (("Yes, even if they don't", "No", "Refused"),)
    assert data.issues.groupby("kind").size().to_dict() == {"split_option_repaired": 1,
                                                           "quote_marks_stripped": 1}


def test_drop_refused_renormalises_and_keeps_letters(human_dir):
    data = load_opinions(human_dir, drop_refused=True)
    assert data.options[0] == ("Don't know", "No", "Yes, definitely")
    np.testing.assert_array_equal(data.counts[0, :3], [10, 30, 50])
    np.testing.assert_array_equal(data.proportions()[0, :3], np.array([10, 30, 50]) / 90)
    assert "Refused" in data.cell_options[0]  # the LM saw it: letters unchanged
    assert load_opinions(human_dir).without_refused().options == data.options


def test_lm_loader_maps_verifies_and_reports(human_dir, lm_dir):
    human = load_opinions(human_dir)
    lm = load_lm_results(lm_dir, human, progress=False)
    cells = lm.cells.set_index(["method", "steering", "group", "item"])
    assert cells.loc[("sequence", "persona", "Female", "Q1"), "mapping"] == "verified"
    assert cells.loc[("sequence", "persona", "Male", "Q2"), "mapping"] == "no_human"
    assert cells.loc[("verbalized", "persona", "Male", "Q1"), "mapping"] == "mismatch"
    assert cells.loc[("logprobs", "none", UNSTEERED, "Q1"), "mapping"] == "verified"
    assert cells.loc[("sequence", "persona", "Female", "Q1"), "n_runs"] == 1
    assert cells.loc[("sequence", "persona", "Female", "Q1"), "response_chars"] == 4
    frame = lm.to_frame()
    male = frame.loc[(frame["method"] == "sequence") & (frame["group"] == "Male") & (frame["item"] == "Q1")]
    assert dict(zip(male["letter"], male["option"], strict=True)) == {"A": "No", "B": "Yes, definitely"}
    kinds = lm.issues.groupby("kind").size().to_dict()
    assert kinds == {"unexpected_path": 1, "letters_beyond_options": 1, "expected_mismatch": 1,
                     "no_human": 1}


def test_tv_by_hand(human_dir, lm_dir):
    human = load_opinions(human_dir)
    table = tv_table(human, load_lm_results(lm_dir, human, progress=False))
    # Female Q1: h = (.1, .3, .1, .5), p = (.1, .2, 0, .7)
    row = _tv(table, "sequence", "persona", "Female", "Q1")
    assert row["status"] == "ok" and row["tv"] == pytest.approx(0.2, abs=1e-12)
    assert row["kl"] == np.inf  # the LM gives 0 to "Refused", which 10% chose
    # Male Q1: letters A = No, B = Yes; p = (.3, .5) / .8 against h = (.6, .4)
    assert _tv(table, "sequence", "persona", "Male", "Q1")["tv"] == pytest.approx(0.225, abs=1e-12)
    assert _tv(table, "sequence", "persona", "Female", "Q2")["tv"] == pytest.approx(0.25, abs=1e-12)
    assert _tv(table, "sequence", "persona", "Male", "Q2")["status"] == "no_human"
    assert _tv(table, "verbalized", "persona", "Female", "Q1")["status"] == "parse_failure"
    assert _tv(table, "verbalized", "persona", "Male", "Q1")["status"] == "mapping_mismatch"
    # the letter beyond Q2's answers is left out and reported: p = (.6, .3) / .9
    row = _tv(table, "verbalized", "persona", "Female", "Q2")
    assert row["tv"] == pytest.approx(1 / 12, abs=1e-12) and row["unmapped_mass"] == pytest.approx(0.1)
    # unsteered: compared with both steered groups, by answer text
    assert _tv(table, "logprobs", "none", "Female", "Q1")["tv"] == pytest.approx(0.3, abs=1e-12)
    assert _tv(table, "logprobs", "none", "Male", "Q1")["tv"] == pytest.approx(0.5, abs=1e-12)
    assert _tv(table, "logprobs", "none", "Female", "Q2")["tv"] == pytest.approx(0.25, abs=1e-12)
    assert _tv(table, "logprobs", "none", "Male", "Q2")["status"] == "no_human"
    assert np.isnan(table.loc[table["status"] != "ok", "tv"]).all()


def test_tv_drop_refused_and_raw_probabilities(human_dir, lm_dir):
    human = load_opinions(human_dir, drop_refused=True)
    table = tv_table(human, load_lm_results(lm_dir, human, progress=False))
    # h = (10, 30, 50) / 90, p = (.1, .2, .7): TV = (1/90 + 12/90 + 13/90) / 2
    assert _tv(table, "sequence", "persona", "Female", "Q1")["tv"] == pytest.approx(13 / 90, abs=1e-12)
    # the unsteered LM put .25 on Refused: dropped, the rest renormalised to 1/3 each
    assert _tv(table, "logprobs", "none", "Male", "Q1")["tv"] == pytest.approx(
        0.5 * (1 / 3 + abs(0.6 - 1 / 3) + abs(0.4 - 1 / 3)), abs=1e-12)
    raw = tv_table(load_opinions(human_dir), load_lm_results(lm_dir, human, progress=False),
                   renormalize=False)
    # as reported (the paper's code): p = (.3, .5) against (.6, .4)
    assert _tv(raw, "sequence", "persona", "Male", "Q1")["tv"] == pytest.approx(0.2, abs=1e-12)


def test_unsteered_groups_can_be_chosen(human_dir, lm_dir):
    human = load_opinions(human_dir)
    table = tv_table(human, load_lm_results(lm_dir, human, progress=False),
                     unsteered_groups=[("SEX", "Male")])
    unsteered = table.loc[table["steering"] == "none"]
    assert set(unsteered["group"]) == {"Male"} and len(unsteered) == 2


def test_frame_input_matches_files(human_dir):
    human = load_opinions(human_dir)
    frame = pd.DataFrame({
        "item": ["Q1"] * 4 + ["Q1"] * 2 + ["Q1", "Q1", "Q9"],
        "group": ["Female"] * 4 + ["SEX:Male"] * 2 + ["", "", "Female"],
        "option": [*Q1_OPTIONS, "No", "Yes, definitely", "No", "Maybe", "No"],
        "probability": [0.1, 0.2, 0.0, 0.7, 0.3, 0.5, 1.0, 0.0, 1.0],
        "method": "verbalized",
        "steering": ["persona"] * 6 + ["none", "none", "persona"],
    })
    lm = lm_distributions_from_frame(frame, human, model="m")
    table = tv_table(human, lm)
    assert _tv(table, "verbalized", "persona", "Female", "Q1")["tv"] == pytest.approx(0.2, abs=1e-12)
    assert _tv(table, "verbalized", "persona", "Male", "Q1")["tv"] == pytest.approx(0.225, abs=1e-12)
    # an empty group is an unsteered distribution (all mass on "No"), compared with both groups
    assert _tv(table, "verbalized", "none", "Female", "Q1")["tv"] == pytest.approx(0.7, abs=1e-12)
    assert _tv(table, "verbalized", "none", "Male", "Q1")["tv"] == pytest.approx(0.4, abs=1e-12)
    kinds = lm.issues.groupby("kind").size().to_dict()
    assert kinds == {"unknown_option": 1, "unknown_item": 1}
    with pytest.raises(ValueError, match="several probabilities"):
        lm_distributions_from_frame(pd.concat([frame, frame.iloc[:1]]), human, model="m")
    with pytest.raises(ValueError, match="pass model="):
        lm_distributions_from_frame(frame, human)


def test_bad_inputs_raise_clear_errors(tmp_path, human_dir):
    with pytest.raises(FileNotFoundError):
        load_opinions(tmp_path / "absent")
    with pytest.raises(ValueError, match="no \\{ATTRIBUTE\\}_data.json"):
        load_opinions(tmp_path)
    with pytest.raises(ValueError, match="attributes \\['RACE'\\]"):
        load_opinions(human_dir, attributes=["RACE"])
    with pytest.raises(ValueError, match="no LM result file"):
        load_lm_results(tmp_path, load_opinions(human_dir), progress=False)


def test_cli_writes_outputs_and_refuses_to_overwrite(human_dir, lm_dir, tmp_path, capsys):
    from bayes_align.cli import main

    out = tmp_path / "out"
    args = ["opinions", "--data", str(human_dir), "--lm-results", str(lm_dir), "--out", str(out),
            "--n-boot", "200", "--min-respondents", "4"]
    assert main(args) == 0
    for name in ("tv.csv", "tv_summary.csv", "human_baseline.csv", "issues.csv", "tv.png"):
        assert (out / name).is_file(), name
    table = pd.read_csv(out / "tv.csv", keep_default_na=False, na_values=[""])
    assert list(table.columns[:7]) == ["model", "method", "steering", "attribute", "group", "item", "tv"]
    row = _tv(table, "sequence", "persona", "Male", "Q1")
    assert row["tv"] == pytest.approx(0.225, abs=1e-12)
    summary = pd.read_csv(out / "tv_summary.csv")
    seq = summary.loc[(summary["method"] == "sequence") & (summary["steering"] == "persona")].iloc[0]
    assert seq["mean"] == pytest.approx((0.2 + 0.225 + 0.25) / 3) and seq["n_missing"] == 1
    assert "mean TV per model" in capsys.readouterr().out
    assert main(args) == 2  # outputs exist: refused before any work
    assert "--overwrite" in capsys.readouterr().err
    assert main([*args, "--overwrite", "--drop-refused"]) == 0
    dropped = pd.read_csv(out / "tv.csv")
    assert _tv(dropped, "sequence", "persona", "Female", "Q1")["tv"] == pytest.approx(13 / 90, abs=1e-12)


def test_summary_redraws_human_counts(human_dir):
    """One comparison, Female Q2 (counts 3, 1) against p = (.5, .5).

    Redrawn counts X ~ Binomial(4, 3/4) give TV = |X / 4 - 1/2| in {0, .25, .5} with
    probabilities .21, .47, .32: the 95% interval is [0, .5]; the observed TV is .25 and
    without redrawing the (single-cell) interval is the point .25.
    """
    from bayes_align.distributional import tv_summary

    human = load_opinions(human_dir)
    frame = pd.DataFrame({"item": "Q2", "group": "Female", "option": ["Agree", "Disagree"],
                          "probability": [0.5, 0.5]})
    lm = lm_distributions_from_frame(frame, human, model="m", method="sequence", steering="persona")
    fixed = tv_summary(human, lm, n_boot=2000).iloc[0]
    assert (fixed["mean"], fixed["low"], fixed["high"]) == pytest.approx((0.25, 0.25, 0.25))
    redrawn = tv_summary(human, lm, n_boot=2000, resample_human=True).iloc[0]
    assert (redrawn["mean"], redrawn["low"], redrawn["high"]) == pytest.approx((0.25, 0.0, 0.5))


def test_cli_reads_a_table(human_dir, tmp_path):
    from bayes_align.cli import main

    table = tmp_path / "scores.csv"
    pd.DataFrame({"item": "Q1", "group": "Male", "option": ["No", "Yes, definitely"],
                  "probability": [0.3, 0.5], "model": "m", "method": "sequence",
                  "steering": "persona"}).to_csv(table, index=False)
    out = tmp_path / "out"
    assert main(["opinions", "--data", str(human_dir), "--lm-results", str(table), "--out", str(out),
                 "--n-boot", "50"]) == 0
    result = pd.read_csv(out / "tv.csv")
    assert result["tv"].tolist() == pytest.approx([0.225], abs=1e-12)
