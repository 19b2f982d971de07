"""to_long_frame / to_responses on hand-made scores (no LM needed)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bayes_align.scoring.responses import option_probabilities, to_long_frame, to_responses


def _scores(keys, logits_by_item, personas=("p1", "p2")):
    rows = []
    for item, key in keys.items():
        for persona in personas:
            for order, logits in enumerate(logits_by_item[item]):
                rows.append(
                    {
                        "model": "toy",
                        "item": item,
                        "persona": persona,
                        "order": order,
                        "n_options": len(logits),
                        "key": key,
                        "logits": list(logits),
                    }
                )
    frame = pd.DataFrame(rows)
    frame["key"] = frame["key"].astype("Int64")
    return frame


def test_probabilities_average_softmax_over_orders():
    scores = _scores({"i1": 0}, {"i1": [[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]]})
    probs = option_probabilities(scores)
    first = np.exp([2.0, 0, 0]) / np.exp([2.0, 0, 0]).sum()
    expected = (first + np.full(3, 1 / 3)) / 2
    np.testing.assert_allclose(probs["probs"].iloc[0], expected)
    assert probs["n_orders"].iloc[0] == 2
    hot = option_probabilities(scores, temperature=0.5)["probs"].iloc[0]
    assert hot[0] > expected[0]


def test_expected_keyed_gives_soft_probability_of_key():
    scores = _scores({"i1": 1, "i2": 0}, {"i1": [[0.0, np.log(3.0)]], "i2": [[0.0, 0.0]]})
    long = to_long_frame(scores)
    assert set(long["person"]) == {"lm:toy:p1", "lm:toy:p2"}
    np.testing.assert_allclose(long.set_index(["persona", "item"]).loc[("p1", "i1"), "response"], 0.75)
    data = to_responses(scores)
    assert data.kind == "soft" and data.n_persons == 2 and data.n_items == 2
    assert data.groups == ("lm:toy",)


def test_expected_opinion_gives_weighted_option_rows_with_scores():
    scores = _scores({"v1": None}, {"v1": [[np.log(0.5), np.log(0.3), np.log(0.2)]]}, ("p1",))
    long = to_long_frame(scores, option_scores=[2, 1, 0])
    assert long["response"].tolist() == [2.0, 1.0, 0.0]
    np.testing.assert_allclose(long["weight"], [0.5, 0.3, 0.2])
    data = to_responses(scores, option_scores=[2, 1, 0])
    assert data.kind == "ordinal"
    with pytest.raises(ValueError, match="'v1' has 2 entries but the item has 3"):
        to_long_frame(scores, option_scores=[1, 0])


def test_sample_mode_one_person_per_persona_and_sample():
    scores = _scores({"v1": None, "v2": None}, {"v1": [[5.0, 0.0, -5.0]], "v2": [[-9.0, -9.0, 9.0]]})
    long = to_long_frame(scores, mode="sample", n_samples=50, seed=1, option_scores=[2, 1, 0])
    assert long["person"].nunique() == 2 * 50
    assert long.groupby("person").size().eq(2).all()
    v2 = long[long["item"] == "v2"]
    assert (v2["choice"] == 2).all() and (v2["response"] == 0).all()
    v1 = long[long["item"] == "v1"]
    assert 0.9 < (v1["choice"] == 0).mean() <= 1.0
    again = to_long_frame(scores, mode="sample", n_samples=50, seed=1, option_scores=[2, 1, 0])
    pd.testing.assert_frame_equal(long, again)


def test_sample_keyed_is_binary_and_combines_with_humans():
    scores = _scores({"i1": 0}, {"i1": [[9.0, -9.0]]})
    human = pd.DataFrame(
        {"person": ["h1", "h2"], "item": ["i1", "i1"], "group": "human", "response": [1.0, 0.0]}
    )
    data = to_responses(scores, mode="sample", n_samples=3, human=human)
    assert data.kind == "binary" and data.reference_group == "human"
    assert data.n_persons == 2 + 2 * 3


def test_generated_answers_drop_parse_failures_with_warning():
    gen = pd.DataFrame(
        {
            "model": "toy",
            "item": ["i1", "i1", "i1"],
            "persona": ["p1", "p1", "p2"],
            "sample": [0, 1, 0],
            "n_options": 4,
            "key": pd.array([2, 2, 2], dtype="Int64"),
            "choice": [2.0, np.nan, 1.0],
        }
    )
    with pytest.warns(UserWarning, match="33.3% of generated answers"):
        long = to_long_frame(gen)
    assert long["response"].tolist() == [1.0, 0.0]
    assert long["person"].tolist() == ["lm:toy:p1#0", "lm:toy:p2#0"]


def test_mixed_keyed_and_opinion_items_are_refused():
    scores = _scores({"i1": 0, "v1": None}, {"i1": [[0.0, 0.0]], "v1": [[0.0, 0.0]]})
    with pytest.raises(ValueError, match="mixed"):
        to_long_frame(scores)
