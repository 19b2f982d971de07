"""ResponseData: indexing, kinds, validation errors and identification caveats."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from bayes_align.data import ResponseData


def _frame(**overrides) -> pd.DataFrame:
    base = {
        "person": ["a", "a", "b", "b", "c", "c", "d", "d"],
        "item": ["i1", "i2", "i1", "i2", "i1", "i2", "i1", "i2"],
        "group": ["human", "human", "human", "human", "lm", "lm", "lm", "lm"],
        "response": [0, 1, 1, 0, 1, 0, 0, 1],
    }
    base.update(overrides)
    return pd.DataFrame(base)


def test_indices_labels_and_groups():
    data = ResponseData.from_long(_frame())
    assert data.kind == "binary"
    assert data.persons == ("a", "b", "c", "d")
    assert data.items == ("i1", "i2")
    assert data.groups == ("human", "lm")
    assert data.focal_groups == ("lm",)
    assert data.reference_index == 0
    assert data.person_idx.dtype == np.int32 and data.item_idx.dtype == np.int32
    assert data.response.dtype == np.float64
    np.testing.assert_array_equal(data.person_group, [0, 0, 1, 1])
    np.testing.assert_array_equal(data.group_idx, data.person_group[data.person_idx])
    np.testing.assert_array_equal(data.weight, np.ones(8))
    assert (data.n_obs, data.n_persons, data.n_items, data.n_groups) == (8, 4, 2, 2)
    assert data.dif_unidentified == frozenset()
    frame = data.to_frame()
    assert list(frame["person"].astype(str)) == list(_frame()["person"])


def test_kinds_inferred():
    soft = ResponseData.from_long(_frame(response=[0.1, 0.9, 0.5, 0.2, 1, 0, 0.3, 0.7]))
    assert soft.kind == "soft"
    ordinal = ResponseData.from_long(_frame(response=[0, 2, 1, 0, 2, 1, 0, 1]))
    assert ordinal.kind == "ordinal"
    np.testing.assert_array_equal(ordinal.n_categories, [3, 3])
    per_item = ResponseData.from_long(
        _frame(response=[0, 2, 1, 0, 2, 1, 0, 1]), n_categories={"i2": 4}
    )
    np.testing.assert_array_equal(per_item.n_categories, [3, 4])


def test_weights_allow_aggregated_duplicates():
    df = _frame(person=["a", "a", "a", "a", "c", "c", "d", "d"])
    df["n"] = [3, 2, 1, 1, 1, 1, 2, 2]
    data = ResponseData.from_long(df, weight="n")
    np.testing.assert_array_equal(data.weight, df["n"].to_numpy(float))
    assert data.has_weights


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"response": [0, 1, np.nan, 0, 1, 0, 0, 1]}, r"NaN.*rows 2"),
        ({"response": [0, 1, 1, 0, 1, 0, 0, 2.5]}, r"rows 7"),
        ({"response": [0, 1, 1, -1, 1, 0, 0, 1]}, r"rows 3"),
        ({"group": ["human", "lm", "human", "human", "lm", "lm", "lm", "lm"]}, r"'a' in \['human', 'lm'\]"),
        ({"person": ["a", "a", "a", "b", "c", "c", "d", "d"]}, r"Duplicate.*\('a', 'i1'\)"),
    ],
)
def test_bad_input_names_rows(overrides, match):
    with pytest.raises(ValueError, match=match):
        ResponseData.from_long(_frame(**overrides))


def test_binary_kind_rejects_fractions_and_soft_rejects_above_one():
    with pytest.raises(ValueError, match="kind='soft'"):
        ResponseData.from_long(_frame(response=[0, 1, 1, 0, 1, 0, 0, 0.5]), kind="binary")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ResponseData.from_long(_frame(response=[0, 1, 1, 0, 1, 0, 0, 1.5]), kind="soft")


def test_unknown_reference_group_and_missing_column():
    with pytest.raises(ValueError, match="Reference group 'people'"):
        ResponseData.from_long(_frame(), reference_group="people")
    with pytest.raises(ValueError, match="response='answer'"):
        ResponseData.from_long(_frame(), response="answer")


def test_bad_weights():
    df = _frame()
    df["w"] = [1, 1, 0, 1, 1, 1, 1, np.nan]
    with pytest.raises(ValueError, match=r"rows 2, 7"):
        ResponseData.from_long(df, weight="w")


def test_single_group_item_is_kept_and_flagged():
    df = _frame()
    extra = pd.DataFrame(
        {"person": ["c", "d"], "item": ["i3", "i3"], "group": ["lm", "lm"], "response": [0, 1]}
    )
    with pytest.warns(UserWarning, match="DIF is not identified"):
        data = ResponseData.from_long(pd.concat([df, extra], ignore_index=True))
    assert "i3" in data.items
    assert ("i3", "lm") in data.dif_unidentified
    assert ("i1", "lm") not in data.dif_unidentified


def test_constant_item_warns_and_is_flagged():
    df = _frame(response=[1, 1, 0, 1, 1, 0, 0, 1])  # i2 is always 1 for humans
    with pytest.warns(UserWarning, match="no response variance"):
        data = ResponseData.from_long(df)
    assert data.dif_unidentified == frozenset({("i2", "lm")})


def test_subset_groups():
    df = pd.concat(
        [
            _frame(),
            pd.DataFrame(
                {"person": ["e", "e"], "item": ["i1", "i2"], "group": ["lm2", "lm2"], "response": [1, 0]}
            ),
        ],
        ignore_index=True,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = ResponseData.from_long(df)
        sub = data.subset_groups(["human", "lm2"])
    assert sub.groups == ("human", "lm2")
    assert sub.persons == ("a", "b", "e")
    assert sub.n_obs == 6
    np.testing.assert_array_equal(sub.person_group, [0, 0, 1])
    with pytest.raises(ValueError, match="reference group"):
        data.subset_groups(["lm"])


def test_group_counts():
    counts = ResponseData.from_long(_frame()).group_counts()
    assert counts.loc["human", "persons"] == 2
    assert counts.loc["lm", "observations"] == 4
