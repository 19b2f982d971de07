"""The OpinionQA data of Meister et al. (2024) in ``../shared/data/opinionqa`` (skipped when absent).

Checks the loaders against the warts the folder's README lists, the letter mapping
against every ``expected_results`` of the paper's outputs, our TV against the paper's
formula, and the paper's main finding on the expression methods (LMs describe a
distribution better than they simulate it).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bayes_align.distributional import tv_summary, tv_table
from bayes_align.opinions import STEERING_NAMES, load_lm_results, load_opinions

pytestmark = pytest.mark.shared


@pytest.fixture(scope="module")
def opinionqa(shared_data_dir: Path) -> Path:
    folder = shared_data_dir / "opinionqa"
    if not (folder / "pew-disagreement-100").is_dir() or not (folder / "lm-results").is_dir():
        pytest.skip(f"OpinionQA data folder {folder} is absent or incomplete")
    return folder


@pytest.fixture(scope="module")
def human(opinionqa):
    # the 100-item folder's own info.csv covers only 18 of its items; the 500's covers all
    return load_opinions(opinionqa / "pew-disagreement-100", info=opinionqa / "pew-disagreement-500/info.csv")


@pytest.fixture(scope="module")
def lm(opinionqa, human):
    return load_lm_results(opinionqa / "lm-results", human, progress=False)


def test_human_warts(opinionqa, human):
    assert human.n_items == 100 and len(human.groups) == 14
    kinds = human.issues.groupby("kind").size().to_dict()
    assert kinds["split_option_repaired"] == 9 and kinds["quote_marks_stripped"] == 5
    assert kinds["empty_cell"] == 12  # e.g. FEM2_W29 was asked of women only
    assert "answer_not_in_survey_options" not in kinds  # every counted answer is a survey option
    assert human.ordered.sum() == 98  # two items have all-equal positions: nominal
    own_info = load_opinions(opinionqa / "pew-disagreement-100")
    assert (own_info.issues["kind"] == "no_info_row").sum() == 82
    assert own_info.options == human.options
    # on all 494 items of the 500 set the repaired MC_options equal info.csv's references
    larger = load_opinions(opinionqa / "pew-disagreement-500")
    kinds = larger.issues.groupby("kind").size().to_dict()
    assert "info_references_mismatch" not in kinds and kinds["split_option_repaired"] == 44


def test_every_letter_mapping_is_verified(lm):
    mapping = lm.cells["mapping"].value_counts().to_dict()
    assert mapping == {"verified": 24768, "no_human": 32}  # no_human: FEM2_W29 for men
    assert (lm.issues["kind"] == "letters_beyond_options").sum() == 3


def test_tv_equals_the_papers_formula(opinionqa, human, lm):
    """Steered files: TV of the reported letters against expected_results, as reported.

    The paper's code computes ``0.5 * sum |avg_actual_results - expected_results|`` over
    the letters; ``renormalize=False`` must give exactly that wherever the LM reported
    some mass, and ``parse_failure`` exactly where it reported none.
    """
    table = tv_table(human, lm, renormalize=False).set_index(
        ["model", "method", "steering", "attribute", "group", "item"]).sort_index()
    methods = {"model_logprobs": "logprobs", "sequence": "sequence", "express_distribution": "verbalized"}
    checked = 0
    for folder, method in methods.items():
        for path in sorted((opinionqa / "lm-results" / folder).glob("*/task[13]*/*/*.json")):
            model, task, attribute = path.parts[-4], path.parts[-3], path.parts[-2]
            for item, entry in json.loads(path.read_text()).items():
                avg, expected = entry["avg_actual_results"], entry["expected_results"]
                if not expected or sorted(avg) != sorted(expected):
                    continue
                row = table.loc[(model, method, STEERING_NAMES[task], attribute, path.stem, item)]
                if sum(avg.values()) == 0:
                    assert row["status"] == "parse_failure"
                    continue
                paper = 0.5 * sum(abs(avg[k] - expected[k]) for k in expected)
                assert row["status"] == "ok" and row["tv"] == pytest.approx(paper, abs=1e-12)
                checked += 1
    assert checked > 15_000


def test_verbalized_beats_sequence_and_logprobs(human, lm):
    """Persona steering: for every LM the verbalised distribution is closer than the
    sampled sequence and the log-probabilities, with disjoint 95% intervals."""
    summary = tv_summary(human, lm, n_boot=1000).set_index(["model", "steering", "method"]).sort_index()
    print("\n" + summary.round(3).to_string())
    for model in summary.index.get_level_values("model").unique():
        persona = summary.loc[(model, "persona")]
        for other in ("sequence", "logprobs"):
            if other in persona.index:
                assert persona.loc["verbalized", "high"] < persona.loc[other, "low"], (model, other)
    assert np.isfinite(summary["mean"]).all()
