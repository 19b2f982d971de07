"""Fit arguments and designs refused before anything is compiled (bayes_align.checks)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import bayes_align as ba
from bayes_align.checks import check_fit_arguments


def _data(groups=("human", "lm"), responses=None, kind=None, n_items=3):
    """Two persons per group answering ``n_items`` items, responses cycling 0, 1."""
    rows = [
        (f"{g}{p}", f"i{i}", g)
        for g in groups
        for p in range(2)
        for i in range(n_items)
    ]
    frame = pd.DataFrame(rows, columns=["person", "item", "group"])
    values = responses if responses is not None else [0, 1]
    frame["response"] = np.resize(np.asarray(values, dtype=float), len(frame))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ba.ResponseData.from_long(frame, kind=kind)


@pytest.fixture(scope="module")
def binary():
    return _data()


def test_valid_arguments_pass(binary):
    assert check_fit_arguments(binary) is None
    check_fit_arguments(binary, model="1pl", method="svi", chains=1, draws=1, warmup=0)
    check_fit_arguments(binary, model="grm")  # binary data: the GRM with K = 2 is the 2PL
    check_fit_arguments(binary, anchors=["i0"])
    check_fit_arguments(binary, model=ba.ModelSpec(irt="2pl", dif="none"))


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (dict(chains=0), "chains must be a whole number >= 1, got 0"),
        (dict(chains=2.5), "chains must be a whole number >= 1, got 2.5"),
        (dict(chains=True), "chains must be a whole number"),
        (dict(draws=0), "draws must be a whole number >= 1"),
        (dict(draws="100"), "draws must be a whole number >= 1, got '100'"),
        (dict(warmup=-1), "warmup must be a whole number >= 0"),
        (dict(model="4pl"), "model must be one of 1pl, 2pl, 3pl, grm"),
        (dict(dif="lasso"), "dif must be one of normal, horseshoe, none"),
        (dict(method="hmc"), "method must be one of nuts, svi, map"),
        (dict(anchors=["nope"]), r"Anchor\(s\) 'nope' are not items"),
        (dict(anchors="i0"), "list of item labels"),
        (dict(anchors=["i0", "i1", "i2"]), r"Every item \(3\) is an anchor"),
        (dict(identification="anchors"), "needs anchors="),
        (dict(model=ba.ModelSpec(irt="1pl", anchors=("i0", "i1", "i2"))), "Every item"),
    ],
)
def test_bad_arguments_name_the_argument(binary, arguments, message):
    with pytest.raises(ValueError, match=message):
        check_fit_arguments(binary, **arguments)


def test_one_group_only_needs_dif_none():
    data = _data(groups=("human",))
    with pytest.raises(ValueError, match="one group only .*dif='none'"):
        check_fit_arguments(data)
    check_fit_arguments(data, dif="none")


def test_dif_with_one_item_is_refused():
    data = _data(n_items=1)
    with pytest.raises(ValueError, match="one item only"):
        check_fit_arguments(data)
    check_fit_arguments(data, dif="none")


def test_ordinal_data_with_a_binary_model_names_the_items():
    data = _data(responses=[0, 1, 2, 2, 2, 0], kind="ordinal")
    for model in ("1pl", "2pl", "3pl"):
        with pytest.raises(ValueError, match=r"Item\(s\) 'i0', 'i1', 'i2' have more than 2"):
            check_fit_arguments(data, model=model)
    check_fit_arguments(data, model="grm")


def test_soft_data_with_the_graded_model():
    data = _data(responses=[0.2, 0.9, 0.5])
    assert data.kind == "soft"
    with pytest.raises(ValueError, match="soft.*graded response model"):
        check_fit_arguments(data, model="grm")
    check_fit_arguments(data, model="2pl")


def test_not_data():
    with pytest.raises(ValueError, match="expects a ResponseData .* got DataFrame"):
        check_fit_arguments(pd.DataFrame({"a": [1]}))


def test_aggregated_data():
    frame = pd.DataFrame(
        {
            "item": ["a", "b", "c"] * 2,
            "group": ["human"] * 3 + ["lm"] * 3,
            "n_correct": [5.0, 3.0, 7.0, 4.0, 6.0, 2.0],
            "n_total": 10.0,
        }
    )
    data = ba.AggregatedData.from_frame(frame)
    check_fit_arguments(data, model="1pl", method="svi")
    with pytest.raises(ValueError, match="model='grm' reads aggregated rows as counts of ordered"):
        check_fit_arguments(data, model="grm")
    with pytest.raises(ValueError, match="needs the counts of every option"):
        check_fit_arguments(data, model="1pl", likelihood="nominal")
    with pytest.raises(ValueError, match="supports irt='1pl' or '2pl'"):
        check_fit_arguments(data, model="3pl", likelihood="nominal")
    only_humans = ba.AggregatedData.from_frame(frame[frame["group"] == "human"])
    with pytest.raises(ValueError, match="one group only"):
        check_fit_arguments(only_humans, model="1pl")
