"""Property-based tests of the response reader and ResponseData.from_long (Hypothesis).

Valid long tables with arbitrary labels (numbers, "NA", "null", spaces, quotes, commas,
non-ASCII) must round-trip exactly through a CSV file, a TSV file and a DataFrame;
tables broken in one of the ways users break them must raise ValueError and nothing else.
"""

from __future__ import annotations

import csv
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from bayes_align import ResponseData  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # identification warnings

SETTINGS = settings(max_examples=60, deadline=None)

# Any text but surrogates (not encodable) and NUL; labels users write include numbers,
# missing-value words and separators, so those are drawn often on purpose.
TRICKY = ["0", "007", "1.0", "1e3", "NA", "N/A", "nan", "NaN", "null", "None", "#N/A",
          "TRUE", "-", " a", "a ", "a,b", 'say "hi"', "x\ny", "é", "人"]  # fmt: skip
LABEL = st.one_of(
    st.sampled_from(TRICKY),
    st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), min_size=1, max_size=6),
)


@st.composite
def long_tables(draw) -> tuple[pd.DataFrame, str]:
    """A valid long table (labels as str) and its reference group."""
    groups = draw(st.lists(LABEL, min_size=1, max_size=3, unique=True))
    items = draw(st.lists(LABEL, min_size=1, max_size=4, unique=True))
    persons = draw(st.lists(LABEL, min_size=1, max_size=6, unique=True))
    person_group = [groups[0]] + [draw(st.sampled_from(groups)) for _ in persons[1:]]
    kind = draw(st.sampled_from(["binary", "soft", "ordinal"]))
    values = {
        "binary": st.sampled_from([0.0, 1.0]),
        "soft": st.floats(0.0, 1.0),
        "ordinal": st.sampled_from([0.0, 1.0, 2.0, 3.0]),
    }[kind]
    rows = []
    for person, group in zip(persons, person_group, strict=True):
        answered = draw(st.lists(st.sampled_from(items), min_size=1, unique=True))
        rows += [(person, item, group, draw(values)) for item in answered]
    frame = pd.DataFrame(rows, columns=["person", "item", "group", "response"])
    if draw(st.booleans()):
        frame["weight"] = draw(
            st.lists(st.floats(0.01, 1e6), min_size=len(frame), max_size=len(frame))
        )
    frame = frame.sample(frac=1.0, random_state=draw(st.integers(0, 2**16))).reset_index(drop=True)
    return frame, groups[0]


def _assert_round_trip(data: ResponseData, frame: pd.DataFrame, reference: str) -> None:
    back = data.to_frame()
    for column in ("person", "item", "group"):
        assert back[column].astype(str).tolist() == frame[column].tolist()
    np.testing.assert_array_equal(back["response"].to_numpy(), frame["response"].to_numpy())
    weight = frame["weight"].to_numpy() if "weight" in frame else np.ones(len(frame))
    np.testing.assert_array_equal(back["weight"].to_numpy(), weight)
    assert data.reference_group == reference
    assert set(data.persons) == set(frame["person"])


@SETTINGS
@given(long_tables(), st.sampled_from([".csv", ".tsv", ".csv.gz", ".parquet"]), st.booleans())
def test_valid_files_round_trip_exactly(table, suffix, quote_all):
    frame, reference = table
    # A bare carriage return ends a CSV line; it must be quoted (pandas and the csv module
    # quote only "\n"), so labels holding one are written fully quoted.
    if frame[["person", "item", "group"]].apply(lambda c: c.str.contains("\r")).any(axis=None):
        quote_all = True
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"responses{suffix}"
        if suffix == ".parquet":
            frame.to_parquet(path, index=False)
        else:
            frame.to_csv(
                path, index=False, sep="\t" if suffix == ".tsv" else ",",
                quoting=csv.QUOTE_ALL if quote_all else csv.QUOTE_MINIMAL,
            )  # fmt: skip
        data = ResponseData.from_long(path, reference_group=reference)
    _assert_round_trip(data, frame, reference)


@SETTINGS
@given(long_tables())
def test_valid_frames_round_trip_exactly(table):
    frame, reference = table
    _assert_round_trip(ResponseData.from_long(frame, reference_group=reference), frame, reference)


def _break(frame: pd.DataFrame, reference: str, how: str, draw) -> tuple[pd.DataFrame, str]:
    """Break a valid table in one way users do."""
    frame = frame.copy()
    row = draw(st.integers(0, len(frame) - 1))
    if how == "empty label":
        frame.loc[row, draw(st.sampled_from(["person", "item", "group"]))] = ""
    elif how == "missing response":
        frame["response"] = frame["response"].astype(object)
        frame.loc[row, "response"] = draw(st.sampled_from(["", "NA", "nan", "inf", "x", "1,5"]))
    elif how == "negative response":
        frame.loc[row, "response"] = -draw(st.floats(0.001, 10))
    elif how == "duplicate":
        frame = pd.concat([frame, frame.iloc[[row]]], ignore_index=True).drop(
            columns="weight", errors="ignore"
        )
    elif how == "two groups":
        other = frame.iloc[[row]].assign(group=frame.loc[row, "group"] + "+", item="new item")
        frame = pd.concat([frame, other], ignore_index=True)
    elif how == "no reference":
        reference = reference + "?"
        while reference in set(frame["group"]):
            reference += "?"
    elif how == "missing column":
        frame = frame.drop(columns=draw(st.sampled_from(["person", "item", "group", "response"])))
    elif how == "bad weight":
        weight = frame["weight"].astype(object) if "weight" in frame else pd.Series(1.0, frame.index, dtype=object)
        weight[row] = draw(st.sampled_from([0.0, -1.0, "", "NA", "heavy"]))
        frame["weight"] = weight
    elif how == "no rows":
        frame = frame.iloc[:0]
    return frame, reference


BREAKS = ["empty label", "missing response", "negative response", "duplicate", "two groups",
          "no reference", "missing column", "bad weight", "no rows"]  # fmt: skip


@SETTINGS
@given(long_tables(), st.sampled_from(BREAKS), st.data())
def test_broken_files_raise_value_error_only(table, how, data):
    frame, reference = _break(*table, how, data.draw)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "responses.csv"
        frame.to_csv(path, index=False)
        with pytest.raises(ValueError):
            ResponseData.from_long(path, reference_group=reference)


@SETTINGS
@given(long_tables(), st.sampled_from([b for b in BREAKS if b != "no rows"]), st.data())
def test_broken_frames_raise_value_error_only(table, how, data):
    frame, reference = _break(*table, how, data.draw)
    with pytest.raises(ValueError):
        ResponseData.from_long(frame, reference_group=reference)


@SETTINGS
@given(st.binary(max_size=200), st.sampled_from([".csv", ".tsv", ".parquet"]))
def test_arbitrary_bytes_raise_value_error_only(content, suffix):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"responses{suffix}"
        path.write_bytes(content)
        with pytest.raises(ValueError):
            ResponseData.from_long(path)
