"""Posterior alignment of opinion distributions on a small synthetic folder.

One attribute (SEX), 14 items. Twelve have a four-point scale whose alphabetical order
differs from the scale order ("Agree" 2, "Disagree" 3, "Strongly agree" 1, "Strongly
disagree" 4) plus "Refused" without a position; Q_NOM has tied positions (nominal) and
Q_NOINFO no info.csv row. Female and Male answer counts are drawn from item-specific
distributions. LM conditions steered to Female:

- ``copy`` / verbalized: the Female shares exactly (Refused included);
- ``reversed`` / verbalized: the same shares with the scale reversed;
- ``copy`` / sequence: the Female shares, except a parse failure (no mass) on Q00 and all
  mass on Refused on Q01;
- ``certain`` / logprobs: all mass on "Agree" on the twelve scale items: no item shift is
  identified (one answer only), so the condition is left out.

Both fits of this module (the study function and the CLI) have the same data, so the
second reuses the compiled program.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bayes_align.cli import main
from bayes_align.distributional_alignment import ALIGNMENT_COLUMNS, distributional_alignment
from bayes_align.opinion_model import opinion_fit_data, ordinal_layout
from bayes_align.opinions import lm_distributions_from_frame, load_opinions

SCALE = ["Strongly agree", "Agree", "Disagree", "Strongly disagree"]  # positions 1..4
N_SCALE_ITEMS = 12
FIT_OPTIONS = {"draws": 400}


def _write_json(path: Path, content) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content))


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("opinion_alignment")
    rng = np.random.default_rng(3)
    data, info = {}, []
    items = [f"Q{i:02d}" for i in range(N_SCALE_ITEMS)]
    for item in items:
        # items differ in where answers sit on the scale: that is what alignment correlates
        shares = rng.dirichlet(np.exp(rng.normal(0, 1.2, size=4)) * 2)
        female = rng.multinomial(600, 0.97 * shares).tolist() + [int(rng.integers(3, 12))]
        male = rng.multinomial(500, 0.97 * rng.dirichlet(shares * 40)).tolist() + [int(rng.integers(3, 12))]
        data[item] = {"MC_options": [*SCALE, "Refused"], "question_text": f"{item}?",
                      "Female": dict(sorted(zip([*SCALE, "Refused"], map(float, female), strict=True))),
                      "Male": dict(sorted(zip([*SCALE, "Refused"], map(float, male), strict=True)))}
        info.append({"key": item, "references": str([*SCALE, "Refused"]), "option_ordinal": str([1.0, 2.0, 3.0, 4.0])})
    for item, ordinal in (("Q_NOM", [1.0, 1.0, 1.0]), ("Q_NOINFO", None)):
        counts = {"Blue": 40.0, "Green": 30.0, "Red": 30.0}
        data[item] = {"MC_options": ["Red", "Green", "Blue"], "question_text": "Colour?",
                      "Female": counts, "Male": counts}
        if ordinal is not None:
            info.append({"key": item, "references": str(["Red", "Green", "Blue"]), "option_ordinal": str(ordinal)})
    _write_json(root / "human" / "SEX_data.json", data)
    pd.DataFrame(info).to_csv(root / "human" / "info.csv", index=False)

    human = load_opinions(root / "human")
    long = human.to_frame()
    female = long.loc[long["group"] == "Female"].copy()
    female["probability"] = female["count"] / female.groupby("item")["count"].transform("sum")
    reversed_ = female.copy()
    flip = dict(zip(SCALE, SCALE[::-1], strict=True))
    reversed_["option"] = reversed_["option"].map(lambda o: flip.get(o, o))
    sequence = female.copy()
    sequence.loc[sequence["item"] == "Q00", "probability"] = 0.0
    sequence.loc[sequence["item"] == "Q01", "probability"] = (sequence["option"] == "Refused").astype(float)
    certain = female.loc[female["item"].str.match(r"Q\d\d$")].copy()
    certain["probability"] = (certain["option"] == "Agree").astype(float)
    frames = [female.assign(model="copy", method="verbalized"),
              reversed_.assign(model="reversed", method="verbalized"),
              sequence.assign(model="copy", method="sequence"),
              certain.assign(model="certain", method="logprobs")]
    table = pd.concat(frames, ignore_index=True).assign(steering="persona")
    table[["model", "method", "steering", "attribute", "group", "item", "option", "probability"]].to_csv(
        root / "lm.csv", index=False)
    return root


@pytest.fixture(scope="module")
def human(folder):
    return load_opinions(folder / "human")


@pytest.fixture(scope="module")
def lm(folder, human):
    return lm_distributions_from_frame(pd.read_csv(folder / "lm.csv"), human)


@pytest.fixture(scope="module")
def study(human, lm):
    return distributional_alignment(human, lm, human_groups=["Male"], progress=False, seed=0,
                                    fit_options=FIT_OPTIONS, n_boot=200)


def test_ordered_counts_follow_the_scale_and_drop_refused(human, lm):
    order, n_ordered, items = ordinal_layout(human)
    assert items.set_index("item")["reason"].to_dict() == {
        **{f"Q{i:02d}": "" for i in range(N_SCALE_ITEMS)}, "Q_NOM": "tied_positions", "Q_NOINFO": "no_positions"}
    fd = opinion_fit_data(human, lm, "SEX", "Female", lm_n=50, human_groups=False)
    assert fd.reference == "human | Female"
    data = fd.data
    assert data.groups[0] == "human | Female" and len(data.items) == N_SCALE_ITEMS
    counts = human.to_frame().query("group == 'Female' and item == 'Q03'").set_index("option")["count"]
    ref_row = np.flatnonzero((data.group_idx == 0) & (np.asarray(data.items)[data.item_idx] == "Q03"))[0]
    np.testing.assert_array_equal(data.option_counts[ref_row], counts[SCALE].to_numpy())
    # an LM copying the shares, Refused included: lm_n times the shares of the scale options
    copy = np.flatnonzero((np.asarray(data.groups)[data.group_idx] == "copy | verbalized | persona")
                          & (np.asarray(data.items)[data.item_idx] == "Q03"))[0]
    np.testing.assert_allclose(data.option_counts[copy], 50 * counts[SCALE].to_numpy() / counts.sum())
    assert fd.groups.set_index("label").loc["copy | verbalized | persona", "dropped_share"] > 0


def test_excluded_comparisons_are_counted(human, lm, study):
    fd = opinion_fit_data(human, lm, "SEX", "Female", human_groups=False)
    counts = fd.excluded.groupby(["model", "method", "reason"]).size().to_dict()
    assert counts == {
        ("copy", "sequence", "no_ordered_mass"): 1, ("copy", "sequence", "parse_failure"): 1,
        ("copy", "sequence", "no_positions"): 1, ("copy", "sequence", "tied_positions"): 1,
        ("copy", "verbalized", "no_positions"): 1, ("copy", "verbalized", "tied_positions"): 1,
        ("reversed", "verbalized", "no_positions"): 1, ("reversed", "verbalized", "tied_positions"): 1,
        ("certain", "logprobs", "too_few_identified"): N_SCALE_ITEMS,
    }
    assert "certain | logprobs | persona" not in fd.data.groups
    sequence = study.table.set_index("method").loc["sequence"]
    assert sequence["n_items"] == sequence["n_identified"] == N_SCALE_ITEMS - 2
    assert len(study.excluded) == len(fd.excluded)
    with pytest.raises(ValueError, match="natural"):
        opinion_fit_data(human, lm, "SEX", "Female", lm_n={"sequence": "natural"})


def test_copy_aligns_better_than_reversed(study):
    table = study.table.set_index(["model", "method"])
    copy, rev = table.loc[("copy", "verbalized")], table.loc[("reversed", "verbalized")]
    print("\n" + study.table.round(3).to_string())
    assert copy["pearson_mean"] > 0.9 and rev["pearson_mean"] < 0
    assert copy["pearson_low"] > rev["pearson_high"]  # 90% HDIs apart
    assert copy["n_items"] == N_SCALE_ITEMS and copy["n_identified"] == N_SCALE_ITEMS
    assert abs(copy["group_mean"]) < 0.2 and copy["group_sd"] == 1.0
    # TV: the copy is at distance 0, the reversed scale far
    assert copy["tv_mean"] == pytest.approx(0, abs=1e-12) and rev["tv_low"] > 0.1
    comparison = study.compare(factor="model", by=("method", "steering"))
    row = comparison.set_index(["method", "a", "b"]).loc[("verbalized", "copy", "reversed")]
    assert row["prob_better"] > 0.99 and row["posterior_credible"] and row["tv_credible"]
    assert row["tv_diff"] < 0  # copy closer
    human_row = study.human_alignment.query("metric == 'pearson'").iloc[0]
    assert human_row["other"] == "Male" and 0.5 < human_row["mean"] <= 1


def test_alignment_table_columns_and_summary(study):
    assert list(study.alignment.columns) == ALIGNMENT_COLUMNS
    assert set(study.alignment["metric"]) == {"pearson", "spearman", "dif_scale", "invariant_share"}
    assert set(study.alignment["group"]) == {"Female"}
    summary = study.summary()
    assert len(summary) == 3 and summary["tv_cells"].tolist() == [14, 14, 13]  # Q_NOM/Q_NOINFO have TVs
    fig = study.plot()
    assert len(fig.axes) == 2


def test_cli_writes_alignment_csv(folder, tmp_path, study):
    out = tmp_path / "out"
    code = main(["opinions", "--data", str(folder / "human"), "--lm-results", str(folder / "lm.csv"),
                 "--out", str(out), "--human-group", "Male", "--draws", str(FIT_OPTIONS["draws"]),
                 "--n-boot", "200"])
    assert code == 0
    written = pd.read_csv(out / "alignment.csv")
    assert list(written.columns) == ALIGNMENT_COLUMNS
    assert (out / "alignment.png").is_file() and (out / "excluded.csv").is_file()
    pearson = written.query("metric == 'pearson'").set_index("model")["mean"]
    expected = study.alignment.query("metric == 'pearson' and method == 'verbalized'").set_index("model")["mean"]
    assert pearson.loc["copy"].max() > 0.9 and pearson.loc["reversed"] < 0
    assert abs(expected.loc["copy"] - written.query("metric == 'pearson' and model == 'copy' "
                                                  "and method == 'verbalized'")["mean"].iloc[0]) < 1e-6


def test_nothing_to_fit_gives_empty_tables(human, lm):
    """Only the ``certain`` condition: left out, so no fit; the outputs stay well-formed."""
    study = distributional_alignment(human, lm.subset(models=["certain"]), human_groups=False,
                                     progress=False, n_boot=50)
    assert study.fits == {} and study.alignment.empty and list(study.alignment.columns) == ALIGNMENT_COLUMNS
    assert study.excluded["reason"].value_counts().to_dict() == {"too_few_identified": N_SCALE_ITEMS}
    assert study.compare().empty and study.summary().empty
    assert len(study.plot().axes) == 1


def test_cli_lm_n_and_target_arguments():
    from bayes_align.cli.opinion_commands import _lm_n, _targets

    assert _lm_n(None) == 100.0 and _lm_n(["50"]) == 50.0
    assert _lm_n(["sequence=natural", "verbalized=30"]) == {"sequence": "natural", "verbalized": 30.0}
    with pytest.raises(ValueError, match="one number or METHOD=N"):
        _lm_n(["50", "sequence=natural"])
    assert _targets(["POLPARTY:Democrat", "SEX:Female"]) == [("POLPARTY", "Democrat"), ("SEX", "Female")]
    with pytest.raises(ValueError, match="ATTRIBUTE:Group"):
        _targets(["Democrat"])
