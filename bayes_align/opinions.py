"""Opinion survey data (items without a correct answer) and LM answer distributions on them.

Human data, in the layout of the Pew folders of Meister, Guestrin & Hashimoto (2024)
(any item set in that layout)::

    {ATTRIBUTE}_data.json            {question_id: {"MC_options": [...], "question_text": str,
                                                    group: {answer text: count, ...}, ...}}
    info.csv                         optional: key, references, option_ordinal, survey, ...
    question_similarity_top10.json   optional: {question_id: [similar question ids]}

A *cell* is one (item, attribute, group), e.g. (``GAP21Q33_g_W82``, ``SEX``, ``Female``).
The answer texts present in a cell's counts are the truth about the options: answers
nobody in the group chose are absent, and ``MC_options`` has warts (options split at a
comma inside them, quote marks kept) that :func:`load_opinions` repairs and reports.

Option order. Each item's ``options`` are the answer texts present in any cell's counts,
sorted alphabetically (``Refused`` included unless dropped). An LM result file names the
options with letters A, B, ... in the order of the keys of *its group's* counts (the
paper's prompts listed those keys in that order), so the letter of an option depends on
the cell: an answer absent from a group's counts shifts the later letters.
``OpinionData.cell_options`` keeps, per cell, the texts behind the letters; the LM loader
maps letters with it and checks the mapping against the ``expected_results`` stored in
every result file (the group's counts, normalised, under the same letters).

LM results, in the layout of the paper's outputs (or a long table, see
:func:`lm_distributions_from_frame`)::

    {method}/{model}/{task}/{ATTRIBUTE}/{Group}.json
        {question_id: {"avg_actual_results": {letter: p}, "actual_results": {letter: [p per run]},
                       "response": [raw completion per run], "expected_results": {letter: share}}}

``task0`` (no steering) has one file, ``NONE/Democrat.json``: its letters follow the
Democrats' answers and its rows get an empty attribute and group (an unsteered
distribution is compared with every group). Task and method folder names are mapped
to the names used by :mod:`bayes_align.scoring` (``STEERING_NAMES``, ``METHOD_NAMES``);
unknown names are kept as they are and reported.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = [
    "METHOD_NAMES",
    "STEERING_NAMES",
    "UNSTEERED",
    "LMDistributions",
    "OpinionData",
    "lm_distributions_from_frame",
    "load_lm_results",
    "load_opinions",
]

STEERING_NAMES = {"task0": "none", "task1": "persona", "task3_easy_hard": "few_shot"}
"""Task folder of the paper's outputs -> steering method."""

METHOD_NAMES = {
    "model_logprobs": "logprobs",
    "sequence": "sequence",
    "express_distribution": "verbalized",
    # the paper's temperature-scaled log-probs: one temperature per model x steering
    # fitted to minimise the summed TV against the human data being evaluated
    "rescaled_model_logprobs": "logprobs_rescaled",
}
"""Method folder of the paper's outputs -> expression method."""

UNSTEERED = ""
"""Attribute and group label of an unsteered LM distribution (compared with every group)."""

_META_KEYS = ("MC_options", "question_text")
_ISSUE_COLUMNS = ["kind", "item", "attribute", "group", "detail"]
_CELL_KEY = ["item", "attribute", "group"]
_LM_CELL_KEY = ["model", "method", "steering", "attribute", "group", "item"]
_EXPECTED_ATOL = 1e-9


def _issues(rows: Iterable[dict]) -> pd.DataFrame:
    return pd.DataFrame(list(rows), columns=_ISSUE_COLUMNS)


# --------------------------------------------------------------------------- container


@dataclass(frozen=True)
class OpinionData:
    """Answer counts of human groups on opinion items, one row per (item, attribute, group) cell.

    Attributes
    ----------
    items, question_text : tuples of question ids and texts.
    options : per item, the answer texts present in any cell's counts, alphabetical.
    survey_options : per item, the answer texts in the survey's order (``info.csv``
        ``references`` when present, otherwise ``MC_options`` repaired).
    ordinal : float64 ``(n_items, K_max)``: position of each option on the item's scale
        (``info.csv`` ``option_ordinal``); NaN for ``Refused``, ``Not sure``, items without
        ``info.csv`` and after an item's last option.
    ordered : bool ``(n_items,)``: the item has ordinal positions for at least two
        options, all distinct (items whose positions are all equal are nominal).
    groups : tuple of ``(attribute, group)`` pairs, in file order.
    cell_item, cell_group : int32 ``(n_cells,)`` indices into ``items`` and ``groups``.
    counts : float64 ``(n_cells, K_max)``: column ``k`` counts option ``options[item][k]``;
        0 for an answer nobody in the group chose, NaN after the item's last option.
    cell_options : per cell, the answer texts behind the LM letters A, B, ... (the keys of
        the group's counts in file order; ``Refused`` kept even when dropped from
        ``options``, because the LM saw it).
    letter_counts : float64 ``(n_cells, L_max)``: the counts in ``cell_options`` order, as
        in the file (NaN after the cell's last answer); what LM result files were built on.
    refused : the option label treated as a refusal; ``refused_dropped`` says whether it
        was removed from ``options`` and ``counts``.
    similar : ``{item: (similar item ids, ...)}`` from ``question_similarity_top10.json``.
    issues : DataFrame ``kind, item, attribute, group, detail`` of every wart found.
    """

    items: tuple[str, ...]
    question_text: tuple[str, ...]
    options: tuple[tuple[str, ...], ...]
    survey_options: tuple[tuple[str, ...], ...]
    ordinal: np.ndarray
    ordered: np.ndarray
    groups: tuple[tuple[str, str], ...]
    cell_item: np.ndarray
    cell_group: np.ndarray
    counts: np.ndarray
    cell_options: tuple[tuple[str, ...], ...]
    letter_counts: np.ndarray
    refused: str = "Refused"
    refused_dropped: bool = False
    similar: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    issues: pd.DataFrame = field(default_factory=lambda: _issues([]))

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def n_cells(self) -> int:
        return int(self.cell_item.shape[0])

    @property
    def attributes(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(a for a, _ in self.groups))

    @property
    def n_options(self) -> np.ndarray:
        """int ``(n_items,)``: options per item."""
        return np.array([len(o) for o in self.options], dtype=np.int64)

    @property
    def n_respondents(self) -> np.ndarray:
        """float64 ``(n_cells,)``: respondents per cell (sum of its counts)."""
        return np.nansum(self.counts, axis=1)

    def proportions(self) -> np.ndarray:
        """``(n_cells, K_max)`` counts over the cell total (NaN rows for empty cells)."""
        n = self.n_respondents
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.counts / np.where(n > 0, n, np.nan)[:, None]

    def cells(self) -> pd.DataFrame:
        """One row per cell: ``cell, item, attribute, group, n_respondents``."""
        groups = np.array(self.groups, dtype=object).reshape(-1, 2)
        return pd.DataFrame(
            {
                "cell": np.arange(self.n_cells),
                "item": np.asarray(self.items, dtype=object)[self.cell_item],
                "attribute": groups[self.cell_group, 0],
                "group": groups[self.cell_group, 1],
                "n_respondents": self.n_respondents,
            }
        )

    def option_index(self) -> pd.DataFrame:
        """One row per (item, option): ``item, option, k`` (column of ``counts``)."""
        lengths = self.n_options
        return pd.DataFrame(
            {
                "item": np.repeat(np.asarray(self.items, dtype=object), lengths),
                "option": [text for opts in self.options for text in opts],
                "k": np.concatenate([np.arange(n) for n in lengths]) if len(lengths) else [],
            }
        )

    def to_frame(self) -> pd.DataFrame:
        """Long table ``item, attribute, group, option, count, ordinal``, zeros included."""
        cells = self.cells()
        k_max = self.counts.shape[1]
        cell_rep = np.repeat(np.arange(self.n_cells), k_max)
        k_rep = np.tile(np.arange(k_max), self.n_cells)
        keep = ~np.isnan(self.counts.ravel())
        cell_rep, k_rep = cell_rep[keep], k_rep[keep]
        item_rep = self.cell_item[cell_rep]
        return pd.DataFrame(
            {
                "item": cells["item"].to_numpy()[cell_rep],
                "attribute": cells["attribute"].to_numpy()[cell_rep],
                "group": cells["group"].to_numpy()[cell_rep],
                "option": [self.options[i][k] for i, k in zip(item_rep, k_rep, strict=True)],
                "count": self.counts[cell_rep, k_rep],
                "ordinal": self.ordinal[item_rep, k_rep],
            }
        )

    def without_refused(self) -> OpinionData:
        """The same data with the ``refused`` option removed from ``options`` and ``counts``.

        Cell totals shrink by the refusals, so shares are renormalised over the other
        answers. ``cell_options`` (the LM letters) are unchanged.
        """
        if self.refused_dropped:
            return self
        keep_item = np.zeros(self.ordinal.shape, dtype=bool)
        for i, opts in enumerate(self.options):
            keep_item[i, : len(opts)] = [text != self.refused for text in opts]
        new_n = keep_item.sum(axis=1)
        counts = _compress(self.counts, keep_item[self.cell_item])
        ordinal = _compress(self.ordinal, keep_item)
        k_new = max(int(new_n.max(initial=0)), 1)
        return replace(
            self,
            options=tuple(tuple(t for t in opts if t != self.refused) for opts in self.options),
            survey_options=tuple(tuple(t for t in o if t != self.refused) for o in self.survey_options),
            counts=counts[:, :k_new],
            ordinal=ordinal[:, :k_new],
            refused_dropped=True,
        )


def _compress(values: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Move the kept columns of each row to the front (order kept), NaN after them."""
    order = np.argsort(~keep, axis=1, kind="stable")
    out = np.take_along_axis(values, order, axis=1).astype(np.float64)
    out[np.arange(out.shape[1])[None, :] >= keep.sum(axis=1, keepdims=True)] = np.nan
    return out


# ----------------------------------------------------------------------- human loader


def _strip_quotes(text: str) -> tuple[str, bool]:
    stripped = text.strip()
    if len(stripped) >= 2 and stripped[0] == stripped[-1] and stripped[0] in "\"'":
        return stripped[1:-1].strip(), True
    return stripped, False


def _repair_survey_options(pieces: Sequence[str], known: set[str]) -> tuple[list[str], int, int]:
    """Undo ``MC_options`` split at commas and strip quote marks.

    Returns the repaired options, how many were rejoined and how many lost quote marks.
    A run of pieces is rejoined with ``", "`` when the result, without surrounding quote
    marks, is a known answer text (present in some group's counts); the longest such run
    wins. Quote marks may open in one piece and close in a later one.
    """
    pieces = [p.strip() for p in pieces]
    out, i, n_joined, n_quoted = [], 0, 0, 0
    while i < len(pieces):
        end = next(
            (j for j in range(len(pieces), i + 1, -1)
             if _strip_quotes(", ".join(pieces[i:j]))[0] in known),
            i + 1,
        )
        text, quoted = _strip_quotes(", ".join(pieces[i:end]))
        out.append(text)
        n_joined += end > i + 1
        n_quoted += quoted
        i = end
    return out, n_joined, n_quoted


def _read_info(path: Path) -> tuple[dict[str, tuple[list[str], list[float]]], list[dict]]:
    """``{key: (references, option_ordinal)}`` from ``info.csv`` and the issues found."""
    frame = pd.read_csv(path)
    missing = [c for c in ("key", "references", "option_ordinal") if c not in frame.columns]
    if missing:
        raise ValueError(f"{path} lacks the columns {missing}; it has {list(frame.columns)}")
    info, issues = {}, []
    for key, rows in frame.groupby("key", sort=False):
        if len(rows) > 1:
            distinct = rows[["references", "option_ordinal"]].drop_duplicates()
            issues.append(
                dict(kind="info_duplicate_rows", item=key, attribute="", group="",
                     detail=f"{len(rows)} rows, {len(distinct)} distinct; the first is used")
            )
        row = rows.iloc[0]
        try:
            references = [str(t) for t in ast.literal_eval(row["references"])]
            ordinal = [float(v) for v in ast.literal_eval(row["option_ordinal"])]
        except (ValueError, SyntaxError, TypeError) as err:
            issues.append(dict(kind="info_unparseable", item=key, attribute="", group="", detail=str(err)))
            continue
        info[str(key)] = (references, ordinal)
    return info, issues


def load_opinions(
    folder: str | Path,
    attributes: Sequence[str] | None = None,
    info: str | Path | None | bool = True,
    drop_refused: bool = False,
    refused: str = "Refused",
    min_respondents: int = 10,
) -> OpinionData:
    """Load every ``{ATTRIBUTE}_data.json`` of ``folder`` into an :class:`OpinionData`.

    Parameters
    ----------
    folder : the human data folder.
    attributes : attributes to load (default: every ``*_data.json`` file, sorted).
    info : ``True`` reads ``folder/info.csv`` when it exists; a path reads that file
        (e.g. a larger item set's ``info.csv`` covering these items); ``False``/``None``
        reads none. It supplies the survey order of the options and their ordinal
        positions; items it lacks get neither (reported as ``no_info_row``).
    drop_refused : remove the ``refused`` option (see :meth:`OpinionData.without_refused`).
    min_respondents : cells with fewer respondents are reported (``few_respondents``);
        they are kept.

    Every wart found is listed in ``OpinionData.issues`` (kinds: ``split_option_repaired``,
    ``quote_marks_stripped``, ``answer_not_in_survey_options``, ``mc_options_differ``,
    ``no_info_row``, ``info_duplicate_rows``, ``info_unparseable``,
    ``info_references_mismatch``, ``item_missing``, ``empty_cell``, ``few_respondents``,
    ``counts_not_alphabetical``, ``non_integer_counts``, ``nominal_ordinal``).
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"human data folder {folder} does not exist")
    found = {p.name[: -len("_data.json")]: p for p in sorted(folder.glob("*_data.json"))}
    if not found:
        raise ValueError(f"{folder} holds no {{ATTRIBUTE}}_data.json file")
    if attributes is None:
        attributes = list(found)
    unknown = [a for a in attributes if a not in found]
    if unknown:
        raise ValueError(f"attributes {unknown} have no file in {folder}; found {list(found)}")

    issues: list[dict] = []
    raw = {a: json.loads(found[a].read_text(encoding="utf-8")) for a in attributes}
    items = list(dict.fromkeys(q for a in attributes for q in raw[a]))
    records: list[tuple] = []  # (item, attribute, group, text, count, position in the file)
    cell_keys: list[tuple] = []  # (item, attribute, group, texts in file order)
    mc_options: dict[str, list[str]] = {}
    question_text: dict[str, str] = {}
    groups: dict[tuple[str, str], None] = {}
    for attribute in attributes:
        for item in items:
            entry = raw[attribute].get(item)
            if entry is None:
                issues.append(dict(kind="item_missing", item=item, attribute=attribute, group="",
                                   detail=f"not in {attribute}_data.json"))
                continue
            mc = [str(t) for t in entry.get("MC_options", [])]
            if item in mc_options and mc != mc_options[item]:
                issues.append(dict(kind="mc_options_differ", item=item, attribute=attribute, group="",
                                   detail="MC_options differ from the first file's; the first are used"))
            mc_options.setdefault(item, mc)
            question_text.setdefault(item, str(entry.get("question_text", "")))
            for group, counts in entry.items():
                if group in _META_KEYS or not isinstance(counts, dict):
                    continue
                groups[(attribute, group)] = None
                texts = tuple(str(t) for t in counts)
                cell_keys.append((item, attribute, group, texts))
                records.extend((item, attribute, group, str(t), c, o) for o, (t, c) in enumerate(counts.items()))

    long = pd.DataFrame(records, columns=["item", "attribute", "group", "option", "count", "order"])
    long["count"] = pd.to_numeric(long["count"], errors="raise").astype(np.float64)
    if (long["count"] < 0).any() or not np.isfinite(long["count"]).all():
        bad = long.loc[(long["count"] < 0) | ~np.isfinite(long["count"])].head(10)
        raise ValueError(f"counts must be finite and >= 0; offending rows:\n{bad.to_string()}")
    fractional = long.loc[long["count"] != np.round(long["count"])]
    issues.extend(
        dict(kind="non_integer_counts", item=r.item, attribute=r.attribute, group=r.group,
             detail=f"{r.option!r}: {r.count}")
        for r in fractional.itertuples()
    )

    # options: answer texts present in any cell, alphabetical
    present = long.groupby("item", sort=False)["option"].unique()
    options = tuple(tuple(sorted(present.get(item, []))) for item in items)

    # survey order and ordinal positions
    info_path = None
    if info is True:
        info_path = folder / "info.csv" if (folder / "info.csv").is_file() else None
    elif info:
        info_path = Path(info).expanduser()
        if not info_path.is_file():
            raise FileNotFoundError(f"info file {info_path} does not exist")
    info_rows, info_issues = _read_info(info_path) if info_path is not None else ({}, [])
    issues.extend(info_issues)
    k_max = max((len(o) for o in options), default=1)
    ordinal = np.full((len(items), max(k_max, 1)), np.nan)
    survey: list[tuple[str, ...]] = []
    for i, item in enumerate(items):
        known = set(options[i])
        repaired, n_joined, n_quoted = _repair_survey_options(mc_options.get(item, []), known)
        if n_joined:
            issues.append(dict(kind="split_option_repaired", item=item, attribute="", group="",
                               detail=f"{n_joined} option(s) rejoined at commas: {repaired}"))
        if n_quoted:
            issues.append(dict(kind="quote_marks_stripped", item=item, attribute="", group="",
                               detail=f"{n_quoted} option(s)"))
        if item in info_rows:
            references, positions = info_rows[item]
            if references != repaired:
                issues.append(dict(kind="info_references_mismatch", item=item, attribute="", group="",
                                   detail=f"MC_options (repaired) {repaired} vs info.csv {references}; info.csv is used"))
            # positions cover the first references; Not sure / Refused come after them
            position_of = {t: p for t, p in zip(references, positions, strict=False) if t != refused}
            ordinal[i, : len(options[i])] = [position_of.get(t, np.nan) for t in options[i]]
            survey.append(tuple(references))
        else:
            if info_path is not None:
                issues.append(dict(kind="no_info_row", item=item, attribute="", group="",
                                   detail=f"not in {info_path.name}: no ordinal positions"))
            survey.append(tuple(repaired))
        missing = sorted(known - set(survey[-1]))
        if missing:
            issues.append(dict(kind="answer_not_in_survey_options", item=item, attribute="", group="",
                               detail=f"{missing}"))
    finite = np.isfinite(ordinal)
    n_distinct = np.array([len(set(row[ok])) for row, ok in zip(ordinal, finite, strict=True)])
    ordered = (finite.sum(axis=1) >= 2) & (n_distinct == finite.sum(axis=1))
    issues.extend(
        dict(kind="nominal_ordinal", item=items[i], attribute="", group="",
             detail="all ordinal positions equal: treated as unordered")
        for i in np.flatnonzero((finite.sum(axis=1) >= 2) & (n_distinct == 1))
    )

    # cells and padded counts
    cells = pd.DataFrame(cell_keys, columns=[*_CELL_KEY, "cell_options"])
    group_list = tuple(groups)
    cells["cell"] = np.arange(len(cells))
    item_pos = {item: i for i, item in enumerate(items)}
    group_pos = {g: j for j, g in enumerate(group_list)}
    cell_item = cells["item"].map(item_pos).to_numpy(np.int32)
    cell_group = np.array([group_pos[(a, g)] for a, g in zip(cells["attribute"], cells["group"], strict=True)],
                          dtype=np.int32)
    option_k = pd.DataFrame(
        {"item": np.repeat(items, [len(o) for o in options]),
         "option": [t for o in options for t in o],
         "k": np.concatenate([np.arange(len(o)) for o in options]) if options else []}
    )
    long = long.merge(cells[[*_CELL_KEY, "cell"]], on=_CELL_KEY).merge(option_k, on=["item", "option"])
    counts = np.zeros((len(cells), ordinal.shape[1]))
    counts[np.arange(ordinal.shape[1])[None, :] >= np.array([len(o) for o in options])[cell_item][:, None]] = np.nan
    np.add.at(counts, (long["cell"].to_numpy(), long["k"].to_numpy()), long["count"].to_numpy())

    n = np.nansum(counts, axis=1)
    cell_options = tuple(cells["cell_options"])
    lengths = np.array([len(t) for t in cell_options], dtype=np.int64)
    letter_counts = np.full((len(cells), max(int(lengths.max(initial=0)), 1)), np.nan)
    letter_counts[np.repeat(np.arange(len(cells)), lengths),
                  np.concatenate([np.arange(m) for m in lengths]) if len(lengths) else []] = (
        long.sort_values(["cell", "order"])["count"].to_numpy()
    )
    for c in np.flatnonzero(n == 0):
        issues.append(dict(kind="empty_cell", item=cells["item"][c], attribute=cells["attribute"][c],
                           group=cells["group"][c], detail="no respondents"))
    for c in np.flatnonzero((n > 0) & (n < min_respondents)):
        issues.append(dict(kind="few_respondents", item=cells["item"][c], attribute=cells["attribute"][c],
                           group=cells["group"][c], detail=f"{n[c]:g} respondents"))
    for c, texts in enumerate(cell_options):
        if list(texts) != sorted(texts):
            issues.append(dict(kind="counts_not_alphabetical", item=cells["item"][c],
                               attribute=cells["attribute"][c], group=cells["group"][c],
                               detail="LM letters follow the file's key order"))

    similar: dict[str, tuple[str, ...]] = {}
    similar_path = folder / "question_similarity_top10.json"
    if similar_path.is_file():
        similar = {str(k): tuple(map(str, v)) for k, v in json.loads(similar_path.read_text()).items()}

    data = OpinionData(
        items=tuple(items),
        question_text=tuple(question_text[i] for i in items),
        options=options,
        survey_options=tuple(survey),
        ordinal=ordinal,
        ordered=ordered,
        groups=group_list,
        cell_item=cell_item,
        cell_group=cell_group,
        counts=counts,
        cell_options=cell_options,
        letter_counts=letter_counts,
        refused=refused,
        similar=similar,
        issues=_issues(issues),
    )
    return data.without_refused() if drop_refused else data


# ------------------------------------------------------------------------ LM results


@dataclass(frozen=True)
class LMDistributions:
    """LM answer distributions per (model, method, steering, attribute, group, item) cell.

    Attributes
    ----------
    cells : one row per LM cell: ``model, method, steering, attribute, group, item,
        mapping, n_runs, response_chars, source``. ``attribute``/``group`` are
        ``UNSTEERED`` (``""``) for an unsteered distribution. ``mapping``: ``verified``
        (the file's ``expected_results`` equal the group's counts under the letters
        used), ``unverified`` (nothing to check against), ``mismatch`` (they differ: the
        letters cannot be trusted) or ``no_human`` (the group has no counts for the item).
        ``n_runs`` and ``response_chars`` (raw completions: number, total length) are NaN
        where unknown.
    probabilities : one row per (cell, option): ``cell`` (row of ``cells``), ``letter``,
        ``option`` (answer text; None where a letter lies beyond the group's answers),
        ``probability`` as reported (not renormalised).
    issues : ``kind, item, attribute, group, detail`` (``detail`` names the source).
    """

    cells: pd.DataFrame
    probabilities: pd.DataFrame
    issues: pd.DataFrame

    def to_frame(self) -> pd.DataFrame:
        """Long table ``model, method, steering, attribute, group, item, option, probability,
        letter, mapping, n_runs, response_chars`` (cells without any probability are absent:
        see ``cells``)."""
        cells = self.cells.drop(columns=["source"]).reset_index(names="cell")
        merged = self.probabilities.merge(cells, on="cell", how="left")
        return merged[[*_LM_CELL_KEY, "option", "probability", "letter", "mapping", "n_runs",
                       "response_chars"]]

    def subset(
        self,
        models: Sequence[str] | None = None,
        methods: Sequence[str] | None = None,
        steering: Sequence[str] | None = None,
        items: Sequence[str] | None = None,
    ) -> LMDistributions:
        """The cells of the given models, methods, steering methods and items (None: all).

        ``issues`` are kept whole (they describe the inputs)."""
        keep = np.ones(len(self.cells), dtype=bool)
        for column, wanted in (("model", models), ("method", methods), ("steering", steering), ("item", items)):
            if wanted is not None:
                wanted = [wanted] if isinstance(wanted, str) else list(wanted)
                unknown = sorted(set(wanted) - set(self.cells[column]))
                if unknown:
                    raise ValueError(f"{column} {unknown} not in the LM distributions; "
                                     f"they have {sorted(set(self.cells[column]))}")
                keep &= self.cells[column].isin(wanted).to_numpy()
        new_index = np.full(len(self.cells), -1, dtype=np.int64)
        new_index[keep] = np.arange(int(keep.sum()))
        probs = self.probabilities.loc[keep[self.probabilities["cell"].to_numpy()]]
        probs = probs.assign(cell=new_index[probs["cell"].to_numpy()]).reset_index(drop=True)
        return LMDistributions(cells=self.cells.loc[keep].reset_index(drop=True), probabilities=probs,
                               issues=self.issues)

    @staticmethod
    def concat(parts: Sequence[LMDistributions]) -> LMDistributions:
        """One :class:`LMDistributions` of several (cell numbers shifted); a cell in two parts raises."""
        parts = list(parts)
        if len(parts) == 1:
            return parts[0]
        offsets = np.cumsum([0] + [len(p.cells) for p in parts[:-1]])
        cells = pd.concat([p.cells for p in parts], ignore_index=True)
        dup = cells.duplicated(_LM_CELL_KEY, keep=False)
        if dup.any():
            raise ValueError("the same (model, method, steering, attribute, group, item) cell is in several "
                             f"tables:\n{cells.loc[dup, _LM_CELL_KEY].head(10).to_string()}")
        probs = pd.concat([p.probabilities.assign(cell=p.probabilities["cell"] + o)
                           for p, o in zip(parts, offsets, strict=True)], ignore_index=True)
        return LMDistributions(cells=cells, probabilities=probs,
                               issues=pd.concat([p.issues for p in parts], ignore_index=True))

    def summary(self) -> pd.DataFrame:
        """Cells per ``model, method, steering`` and mapping status."""
        return (self.cells.groupby(["model", "method", "steering", "mapping"], sort=False)
                .size().unstack("mapping", fill_value=0).reset_index())


def _letter_index(letters: pd.Series) -> np.ndarray:
    """0 for "A", 1 for "B", ...; -1 for anything that is not one Latin letter."""
    text = letters.astype(str).str.strip().str.upper()
    return text.map(lambda t: ord(t) - 65 if len(t) == 1 and "A" <= t <= "Z" else -1).to_numpy(np.int64)


def _cell_letter_table(human: OpinionData) -> pd.DataFrame:
    """``hcell, letter_index, option, share`` for every letter of every human cell.

    Shares are over the whole cell, ``Refused`` included, as the result files store them.
    """
    lengths = np.array([len(t) for t in human.cell_options], dtype=np.int64)
    cell = np.repeat(np.arange(human.n_cells), lengths)
    index = np.concatenate([np.arange(n) for n in lengths]) if len(lengths) else np.zeros(0, np.int64)
    total = np.nansum(human.letter_counts, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = human.letter_counts[cell, index] / total[cell]
    return pd.DataFrame(
        {"hcell": cell, "letter_index": index,
         "option": [t for texts in human.cell_options for t in texts], "share": share}
    )


def _attach_mapping(
    human: OpinionData,
    files: pd.DataFrame,
    letters: pd.DataFrame,
    expected: pd.DataFrame,
    runs: pd.DataFrame,
) -> LMDistributions:
    """Map letters to answer texts through the human cells and verify them.

    ``files``: ``file, model, method, steering, attribute, group, map_attribute,
    map_group, source``; ``letters``: ``file, item, letter, probability``;
    ``expected``: ``file, item, letter, expected``; ``runs``: ``file, item, n_runs,
    response_chars``.
    """
    issues: list[dict] = []
    human_cells = human.cells()
    key = human_cells.set_index(_CELL_KEY)["cell"]
    cells = runs.merge(files, on="file", how="left")
    lookup = pd.MultiIndex.from_arrays([cells["item"], cells["map_attribute"], cells["map_group"]])
    cells["hcell"] = key.reindex(lookup).to_numpy()
    unknown_item = ~cells["item"].isin(set(human.items))
    for r in cells.loc[unknown_item].itertuples():
        issues.append(dict(kind="unknown_item", item=r.item, attribute=r.attribute, group=r.group,
                           detail=f"not in the human data; {r.source}"))
    unknown_group = ~unknown_item & cells["hcell"].isna()
    for r in cells.loc[unknown_group].drop_duplicates("file").itertuples():
        issues.append(dict(kind="unknown_group", item="", attribute=r.map_attribute, group=r.map_group,
                           detail=f"group not in the human data; {r.source}"))
    cells = cells.loc[~unknown_item & ~unknown_group].reset_index(drop=True)
    cells["hcell"] = cells["hcell"].astype(np.int64)
    cells["cell"] = np.arange(len(cells))
    n_human = human.n_respondents[cells["hcell"].to_numpy()]

    letter_table = _cell_letter_table(human)
    probs = letters.merge(cells[["file", "item", "cell", "hcell"]], on=["file", "item"], how="inner")
    probs["letter_index"] = _letter_index(probs["letter"])
    probs = probs.merge(letter_table, on=["hcell", "letter_index"], how="left")
    beyond = probs["option"].isna()
    for r in (probs.loc[beyond].groupby("cell")
              .agg(letters=("letter", lambda s: "".join(map(str, s))), mass=("probability", "sum"))
              .itertuples()):
        c = cells.loc[r.Index]
        issues.append(dict(kind="letters_beyond_options", item=c["item"], attribute=c["attribute"],
                           group=c["group"], detail=f"letters {r.letters} carry {r.mass:.4g}; {c['source']}"))

    # verify the letters against expected_results: same letters, same shares
    mapping = np.where(n_human > 0, "unverified", "no_human").astype(object)
    if len(expected):
        exp = expected.merge(cells[["file", "item", "cell", "hcell"]], on=["file", "item"], how="inner")
        exp["letter_index"] = _letter_index(exp["letter"])
        exp = exp.merge(letter_table, on=["hcell", "letter_index"], how="left")
        exp["bad"] = ~(np.abs(exp["expected"] - exp["share"]) <= _EXPECTED_ATOL)
        checked = exp.groupby("cell").agg(bad=("bad", "any"), n=("letter", "size"))
        n_letters = pd.Series([len(t) for t in human.cell_options])[cells["hcell"]].to_numpy()
        has = cells["cell"].isin(checked.index).to_numpy()
        bad = np.zeros(len(cells), dtype=bool)
        bad[checked.index] = checked["bad"].to_numpy() | (checked["n"].to_numpy() != n_letters[checked.index])
        verified = has & ~bad & (n_human > 0)
        mismatch = has & bad & (n_human > 0)
        mapping[verified] = "verified"
        mapping[mismatch] = "mismatch"
        for c in np.flatnonzero(mismatch):
            row = cells.iloc[c]
            issues.append(dict(kind="expected_mismatch", item=row["item"], attribute=row["attribute"],
                               group=row["group"], detail=f"expected_results disagree with the counts; {row['source']}"))
    cells["mapping"] = mapping
    for r in cells.loc[cells["mapping"] == "no_human"].itertuples():
        issues.append(dict(kind="no_human", item=r.item, attribute=r.map_attribute, group=r.map_group,
                           detail=f"the group has no respondents for this item; {r.source}"))
    no_rows = ~cells["cell"].isin(set(probs["cell"])) & (cells["mapping"] != "no_human")
    for r in cells.loc[no_rows].itertuples():
        issues.append(dict(kind="empty_distribution", item=r.item, attribute=r.attribute, group=r.group,
                           detail=f"no probability reported; {r.source}"))

    out_cells = cells[[*_LM_CELL_KEY, "mapping", "n_runs", "response_chars", "source"]].copy()
    out_probs = probs[["cell", "letter", "option", "probability"]].reset_index(drop=True)
    return LMDistributions(cells=out_cells, probabilities=out_probs, issues=_issues(issues))


def _task0_mapping_group(human: OpinionData, group: str, entry: dict) -> tuple[str, str] | None:
    """(attribute, group) of the human cell whose letters an unsteered file used."""
    candidates = [a for a, g in human.groups if g == group]
    if len(candidates) > 1:
        keyed = [a for a in candidates if f"expected_results_{a}_{group}" in entry]
        candidates = keyed or candidates
    return (candidates[0], group) if len(candidates) == 1 else None


def load_lm_results(
    folder: str | Path,
    human: OpinionData,
    methods: Sequence[str] | None = None,
    models: Sequence[str] | None = None,
    progress: bool = True,
) -> LMDistributions:
    """Load ``{method}/{model}/{task}/{ATTRIBUTE}/{Group}.json`` files (see the module docstring).

    The LM distribution of a cell is ``avg_actual_results`` (the mean over runs); ``n_runs``
    is the number of raw completions (``response``) and ``response_chars`` their total
    length. Letters are mapped to answer texts through ``human.cell_options`` and checked
    against ``expected_results`` (``expected_results_NONE_{Group}`` or
    ``expected_results_{ATTRIBUTE}_{Group}`` for an unsteered file). ``methods`` and
    ``models`` select folders by their names on disk. Nothing is dropped silently: every
    file at another depth, unknown item or group, letter beyond the group's answers,
    empty distribution and failed check is listed in ``issues``.
    """
    from tqdm.auto import tqdm

    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"LM results folder {folder} does not exist")
    paths = sorted(folder.rglob("*.json"))
    issues: list[dict] = []
    selected = []
    for path in paths:
        parts = path.relative_to(folder).parts
        if len(parts) != 5:
            issues.append(dict(kind="unexpected_path", item="", attribute="", group="",
                               detail=f"{path}: not {{method}}/{{model}}/{{task}}/{{ATTRIBUTE}}/{{Group}}.json"))
            continue
        if (methods is None or parts[0] in methods) and (models is None or parts[1] in models):
            selected.append((path, parts))
    if not selected:
        raise ValueError(f"no LM result file under {folder} (with methods={methods}, models={models})")
    for task in sorted({parts[2] for _, parts in selected} - set(STEERING_NAMES)):
        issues.append(dict(kind="unknown_task", item="", attribute="", group="",
                           detail=f"task folder {task!r} kept as the steering label"))
    for method in sorted({parts[0] for _, parts in selected} - set(METHOD_NAMES)):
        issues.append(dict(kind="unknown_method", item="", attribute="", group="",
                           detail=f"method folder {method!r} kept as the method label"))

    files, letters, expected, runs = [], [], [], []
    for f, (path, (method, model, task, attribute, name)) in enumerate(
        tqdm(selected, desc="LM result files", unit="file", disable=not progress)
    ):
        group = name[: -len(".json")]
        content = json.loads(path.read_text(encoding="utf-8"))
        steering = STEERING_NAMES.get(task, task)
        unsteered = steering == "none"
        map_attribute, map_group = attribute, group
        if unsteered:
            first = next(iter(content.values()), {})
            found = _task0_mapping_group(human, group, first)
            if found is None:
                issues.append(dict(kind="unknown_group", item="", attribute=attribute, group=group,
                                   detail=f"cannot tell which group's letters {path} uses"))
                continue
            map_attribute, map_group = found
        files.append(dict(
            file=f, model=model, method=METHOD_NAMES.get(method, method), steering=steering,
            attribute=UNSTEERED if unsteered else attribute, group=UNSTEERED if unsteered else group,
            map_attribute=map_attribute, map_group=map_group, source=str(path.relative_to(folder)),
        ))
        expected_keys = (
            (f"expected_results_NONE_{group}", f"expected_results_{map_attribute}_{map_group}")
            if unsteered else ("expected_results",)
        )
        for item, entry in content.items():
            avg = entry.get("avg_actual_results") or {}
            letters.extend((f, item, k, v) for k, v in avg.items())
            key = next((k for k in expected_keys if k in entry), None)
            if key is not None:
                expected.extend((f, item, k, v) for k, v in (entry[key] or {}).items())
            responses = entry.get("response")
            responses = responses if isinstance(responses, list) else ([] if responses is None else [responses])
            runs.append((f, item, float(len(responses)) if "response" in entry else np.nan,
                         float(sum(len(str(r)) for r in responses)) if "response" in entry else np.nan))

    letters_frame = pd.DataFrame(letters, columns=["file", "item", "letter", "probability"])
    letters_frame["probability"] = pd.to_numeric(letters_frame["probability"], errors="coerce")
    result = _attach_mapping(
        human,
        pd.DataFrame(files),
        letters_frame,
        pd.DataFrame(expected, columns=["file", "item", "letter", "expected"]).astype({"expected": np.float64}),
        pd.DataFrame(runs, columns=["file", "item", "n_runs", "response_chars"]),
    )
    return replace(result, issues=pd.concat([_issues(issues), result.issues], ignore_index=True))


def lm_distributions_from_frame(
    frame: pd.DataFrame,
    human: OpinionData,
    model: str | None = None,
    method: str | None = None,
    steering: str | None = None,
) -> LMDistributions:
    """LM distributions from a long table (e.g. one produced by ``bayes_align.scoring.score``).

    Columns: ``item``, ``option`` (answer texts of the human items), ``probability``, and
    ``group`` or ``persona`` (a group name, or ``"ATTRIBUTE:Group"`` when a name occurs in
    several attributes; empty, NaN or ``"none"`` for an unsteered distribution), plus
    ``attribute``, ``model``, ``method``, ``steering``, ``n_runs`` and ``response_chars``
    when present (the keyword arguments fill the first three when the columns are absent).
    Options that are not answer texts of the item are reported (``unknown_option``) and
    left out; a (cell, option) given twice raises ValueError.
    """
    frame = frame.copy()
    group_column = "group" if "group" in frame.columns else "persona" if "persona" in frame.columns else None
    needed = ["item", "option", "probability"]
    missing = [c for c in needed if c not in frame.columns] + ([] if group_column else ["group or persona"])
    if missing:
        raise ValueError(f"columns {missing} not in the table (columns: {list(frame.columns)})")
    for name, value in (("model", model), ("method", method), ("steering", steering)):
        if name not in frame.columns:
            if value is None:
                raise ValueError(f"the table has no {name!r} column; pass {name}=...")
            frame[name] = value
    raw_group = frame[group_column].astype(object)
    unsteered = raw_group.isna() | raw_group.astype(str).str.strip().str.lower().isin(["", "none", "nan"])
    group = raw_group.astype(str).str.strip()
    if "attribute" in frame.columns:
        attribute = frame["attribute"].astype(str)
    else:
        split = group.str.split(":", n=1, expand=True)
        has_attribute = split.shape[1] == 2 and split[1].notna().any()
        attribute = pd.Series("", index=frame.index, dtype=object)
        if has_attribute:
            with_colon = split[1].notna()
            attribute[with_colon] = split.loc[with_colon, 0]
            group[with_colon] = split.loc[with_colon, 1]
        owners: dict[str, list[str]] = {}
        for a, g in human.groups:
            owners.setdefault(g, []).append(a)
        need = (attribute == "") & ~unsteered
        ambiguous = sorted({g for g in group[need] if len(owners.get(g, [])) > 1})
        if ambiguous:
            raise ValueError(f"groups {ambiguous} occur in several attributes; write them as "
                             "'ATTRIBUTE:Group' or add an 'attribute' column")
        attribute[need] = group[need].map(lambda g: owners.get(g, [""])[0])
    frame["attribute"] = np.where(unsteered, UNSTEERED, attribute)
    frame["group"] = np.where(unsteered, UNSTEERED, group)
    frame["item"] = frame["item"].astype(str)
    frame["option"] = frame["option"].astype(str)
    for column in ("n_runs", "response_chars"):
        if column not in frame.columns:
            frame[column] = np.nan

    dup = frame.duplicated([*_LM_CELL_KEY, "option"], keep=False)
    if dup.any():
        raise ValueError(f"several probabilities for one (cell, option):\n{frame.loc[dup].head(10).to_string()}")
    issues: list[dict] = []
    human_cells = human.cells().set_index(_CELL_KEY)
    cells = frame.drop_duplicates(_LM_CELL_KEY)[[*_LM_CELL_KEY, "n_runs", "response_chars"]]
    steered = (cells["attribute"] != UNSTEERED).to_numpy()
    n_human = human_cells["n_respondents"].reindex(
        pd.MultiIndex.from_frame(cells[_CELL_KEY])).to_numpy()
    known = np.where(steered, ~np.isnan(n_human), cells["item"].isin(set(human.items)))
    for r in cells.loc[~known].itertuples():
        kind = "unknown_item" if r.item not in set(human.items) else "unknown_group"
        issues.append(dict(kind=kind, item=r.item, attribute=r.attribute, group=r.group,
                           detail="not in the human data; left out"))
    cells = cells.loc[known].reset_index(drop=True)
    cells["mapping"] = np.where(cells["attribute"].ne(UNSTEERED) & (n_human[known] == 0),
                                "no_human", "unverified")
    cells["source"] = "table"

    probs = frame.merge(cells[_LM_CELL_KEY].reset_index(names="cell"), on=_LM_CELL_KEY, how="inner")
    answers = human.option_index()[["item", "option"]].assign(answer=True)
    probs = probs.merge(answers, on=["item", "option"], how="left")
    dropped = human.refused_dropped & (probs["option"] == human.refused)
    unknown = probs["answer"].isna() & ~dropped
    for r in probs.loc[unknown].itertuples():
        issues.append(dict(kind="unknown_option", item=r.item, attribute=r.attribute, group=r.group,
                           detail=f"{r.option!r} is not an answer of this item; left out"))
    probs = probs.loc[~unknown].assign(
        letter=None, probability=lambda f: pd.to_numeric(f["probability"], errors="coerce")
    )
    return LMDistributions(
        cells=cells[[*_LM_CELL_KEY, "mapping", "n_runs", "response_chars", "source"]],
        probabilities=probs[["cell", "letter", "option", "probability"]].reset_index(drop=True),
        issues=_issues(issues),
    )
