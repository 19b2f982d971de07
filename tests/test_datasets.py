"""VerbAgg loader and item texts."""

from __future__ import annotations

import numpy as np
import pytest

from bayes_align.datasets import load_verbagg, verbagg_items


def test_load_verbagg_ordinal_shape_and_codes():
    frame = load_verbagg("ordinal")
    assert len(frame) == 316 * 24
    assert {"person", "item", "group", "response", "gender", "anger"} <= set(frame.columns)
    assert frame["person"].nunique() == 316
    assert frame["item"].nunique() == 24
    assert set(frame["response"].unique()) == {0, 1, 2}
    persons = frame.groupby("person")["group"].first().value_counts()
    assert persons["human:F"] == 243 and persons["human:M"] == 73
    # each person answered every item exactly once
    assert not frame.duplicated(["person", "item"]).any()
    # the ordinal code follows no < perhaps < yes
    codes = frame.groupby("answer")["response"].unique()
    assert codes["no"] == [0] and codes["perhaps"] == [1] and codes["yes"] == [2]


def test_load_verbagg_binary_is_lme4_r2():
    ordinal = load_verbagg("ordinal")
    binary = load_verbagg("binary")
    np.testing.assert_array_equal(binary["response"], (ordinal["response"] > 0).astype(int))
    # gender and anger are person attributes
    assert (binary.groupby("person")["anger"].nunique() == 1).all()
    assert (binary.groupby("person")["gender"].nunique() == 1).all()


def test_load_verbagg_rejects_unknown_response():
    with pytest.raises(ValueError, match="binary"):
        load_verbagg("likert")


def test_verbagg_items_texts_and_facets():
    items = verbagg_items()
    assert len(items) == 24
    assert "S4wantCurse" in set(items["id"])  # the real, irregular id is kept
    row = items.set_index("id").loc["S1WantCurse"]
    assert row["stem"] == "A bus fails to stop for me. I would want to curse."
    assert tuple(row["options"]) == ("yes", "perhaps", "no")
    assert items.set_index("id").loc["S3DoShout", "stem"].endswith("I would shout.")
    assert set(items.loc[items["situation"].isin(["S1", "S2"]), "blame"]) == {"other"}
    assert set(items.loc[items["situation"].isin(["S3", "S4"]), "blame"]) == {"self"}
    assert items.groupby(["mode", "behaviour"]).size().eq(4).all()
    assert set(items["id"]) == set(load_verbagg()["item"])
