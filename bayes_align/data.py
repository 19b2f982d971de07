"""Long-format response data for multi-group IRT.

A :class:`ResponseData` holds one row per response (person, item, group, response,
weight) as integer index arrays plus the user's labels. There is never a dense
person x item matrix: every model gathers parameters with ``param[item_idx]``.

Response kinds
--------------
``binary``  responses in {0, 1}.
``soft``    responses in [0, 1] (e.g. an LM's probability of the keyed answer), used as
            a fractional Bernoulli outcome ``y log p + (1 - y) log(1 - p)``.
``ordinal`` integer categories 0..K_i - 1, with K_i allowed to differ per item.

Weights are positive counts for aggregated rows; they multiply the log-likelihood.

Identification caveats are detected here (see :attr:`ResponseData.dif_unidentified`):
the DIF shift of item ``i`` for focal group ``g`` is identified only when both the
reference group and ``g`` answered ``i`` with some variation in their responses.
Such items are kept (their difficulty is still estimated); the pairs are recorded so
the DIF screen can report them as "not identified" instead of a number.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

KINDS = ("binary", "soft", "ordinal")

_MAX_LISTED = 10


def _list_some(values: Iterable[object], limit: int = _MAX_LISTED) -> str:
    """Format at most ``limit`` values for an error message, with a count of the rest."""
    values = list(values)
    shown = ", ".join(repr(v) if isinstance(v, str) else str(v) for v in values[:limit])
    if len(values) > limit:
        shown += f", ... ({len(values) - limit} more)"
    return shown


RESPONSE_FILE_SUFFIXES = (".csv", ".tsv", ".txt", ".parquet", ".pq")
_COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst", ".zip")


def read_responses(path: str | os.PathLike) -> pd.DataFrame:
    """Read a long response table from a CSV, TSV or Parquet file, every cell as written.

    Text files (``.csv``, ``.tsv``, ``.txt``, optionally compressed, e.g. ``.csv.gz``)
    are read as UTF-8 (a leading byte-order mark is dropped) with every column as a
    string: no type inference (``007`` stays ``007``, ``1.0`` stays ``1.0``) and no
    missing-value words (``NA``, ``null`` or ``None`` are labels like any other); an
    empty cell is the empty string, which :meth:`ResponseData.from_long` refuses in a
    label column. The index holds line numbers (the header is line 1), so errors name
    the lines to fix. Parquet columns keep their stored types.

    Raises
    ------
    FileNotFoundError : no file at ``path``.
    ValueError : unknown extension, not UTF-8, malformed CSV, no header, or a column name
        that appears twice.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "does not exist"
        raise FileNotFoundError(f"responses file {path} {what}.")
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in _COMPRESSIONS:
        suffixes = suffixes[:-1]
    suffix = suffixes[-1] if suffixes else ""
    if suffix not in RESPONSE_FILE_SUFFIXES:
        raise ValueError(
            f"{path}: cannot read responses from a {suffix or 'extension-less'} file; save "
            f"them as CSV, TSV or Parquet ({', '.join(RESPONSE_FILE_SUFFIXES)})."
        )
    if suffix in (".parquet", ".pq"):
        return pd.read_parquet(path)
    options = dict(sep="\t" if suffix == ".tsv" else ",", encoding="utf-8-sig", dtype=str)
    try:
        header = pd.read_csv(path, header=None, nrows=1, **options).iloc[0]
        with warnings.catch_warnings():  # more cells than header names: refuse, never shift
            warnings.simplefilter("error", pd.errors.ParserWarning)
            frame = pd.read_csv(path, keep_default_na=False, na_filter=False, index_col=False, **options)
    except pd.errors.ParserWarning as err:
        raise ValueError(
            f"{path}: the rows have more cells than the header has column names; name every "
            "column in the header line."
        ) from err
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{path} is not UTF-8 text (byte {err.start}); save it as UTF-8 CSV."
        ) from err
    except pd.errors.EmptyDataError as err:
        raise ValueError(f"{path} is empty; it needs a header line and one row per response.") from err
    except pd.errors.ParserError as err:
        raise ValueError(f"{path} is not a well-formed {suffix[1:].upper()} file: {str(err).strip()}") from err
    repeated = sorted({str(c) for c in header[header.duplicated()]})
    if repeated:
        raise ValueError(f"{path}: column(s) {repeated} appear more than once in the header.")
    frame.index = pd.RangeIndex(2, len(frame) + 2, name="line")
    frame.attrs["rows"] = "row numbers are line numbers of the file; the header is line 1"
    return frame


class GroupedItems:
    """Sizes and group roles derived from ``items``, ``groups`` and ``reference_group``;
    shared by :class:`ResponseData` and ``aggregated.AggregatedData``."""

    items: tuple[str, ...]
    groups: tuple[str, ...]
    reference_group: str

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def n_groups(self) -> int:
        return len(self.groups)

    @property
    def reference_index(self) -> int:
        if self.reference_group is None:
            raise ValueError(
                "these data hold no reference group (reference_group=None); combine them "
                "with the data of the reference population (bayes_align.combine) to fit them"
            )
        return self.groups.index(self.reference_group)

    @property
    def focal_groups(self) -> tuple[str, ...]:
        """Every group but the reference (every group when the data hold no reference)."""
        return tuple(g for g in self.groups if g != self.reference_group)

    @property
    def focal_index(self) -> np.ndarray:
        """Group indices of the focal groups, in ``focal_groups`` order (int32)."""
        return np.array(
            [i for i, g in enumerate(self.groups) if g != self.reference_group], dtype=np.int32
        )


@dataclass(frozen=True, eq=False)
class ResponseData(GroupedItems):
    """Validated long-format responses with integer indices (see DESIGN.md).

    Build it with :meth:`from_long` (a DataFrame) or :meth:`from_indices` (arrays
    that are already integer coded). Attributes are NumPy arrays of length ``n_obs``
    (per observation) or ``n_persons`` / ``n_items`` (per person / item).

    Attributes
    ----------
    person_idx, item_idx, group_idx : int32 (n_obs,)
        Index of the person, item and the person's group for every observation.
    response : float64 (n_obs,)
        0/1 (binary), [0, 1] (soft) or 0..K-1 stored as float (ordinal).
    weight : float64 (n_obs,)
        Positive counts; ones when no weight column was given.
    person_group : int32 (n_persons,)
        Group index of every person.
    persons, items, groups : tuple[str, ...]
        The user's labels, in order of first appearance.
    reference_group : str
        Label of the reference (human) population; ``reference_index`` is its index.
    kind : {"binary", "soft", "ordinal"}
    n_categories : int (n_items,)
        Number of response categories per item (2 for binary and soft).
    dif_unidentified : frozenset[tuple[str, str]]
        ``(item, focal_group)`` label pairs whose DIF shift the data cannot identify:
        the item was not answered by the reference group or by that focal group, or
        the responses to it within one of the two groups have no variance.
    """

    person_idx: np.ndarray
    item_idx: np.ndarray
    group_idx: np.ndarray
    response: np.ndarray
    weight: np.ndarray
    person_group: np.ndarray
    persons: tuple[str, ...]
    items: tuple[str, ...]
    groups: tuple[str, ...]
    reference_group: str
    kind: str
    n_categories: np.ndarray
    dif_unidentified: frozenset[tuple[str, str]] = field(default_factory=frozenset)

    # ------------------------------------------------------------------ sizes
    @property
    def n_obs(self) -> int:
        return int(self.response.shape[0])

    @property
    def n_persons(self) -> int:
        return len(self.persons)

    @property
    def has_weights(self) -> bool:
        return bool(np.any(self.weight != 1.0))

    def __repr__(self) -> str:
        return (
            f"ResponseData(kind={self.kind!r}, n_obs={self.n_obs}, n_persons={self.n_persons}, "
            f"n_items={self.n_items}, groups={self.groups}, reference_group={self.reference_group!r})"
        )

    # ------------------------------------------------------------ constructors
    @classmethod
    def from_long(
        cls,
        df: pd.DataFrame | str | os.PathLike,
        person: str = "person",
        item: str = "item",
        group: str = "group",
        response: str = "response",
        weight: str | Literal[False] | None = None,
        reference_group: str = "human",
        kind: str | None = None,
        n_categories: int | dict[str, int] | None = None,
    ) -> ResponseData:
        """Validate a long DataFrame (one row per response) and index it.

        Parameters
        ----------
        df : DataFrame with the columns named by ``person``, ``item``, ``group``,
            ``response`` and optionally ``weight``; or the path of a CSV, TSV or Parquet
            file with them, read by :func:`read_responses` (labels exactly as written).
        weight : column of positive counts. None (default): the column named "weight"
            when there is one, else all weights 1; False: ignore any weight column.
        reference_group : label of the reference population (group means 0, sd 1).
        kind : "binary", "soft" or "ordinal"; inferred when None (all 0/1 -> binary,
            fractions in [0, 1] -> soft, integers above 1 -> ordinal).
        n_categories : ordinal only; number of categories for every item (int) or
            per item label (dict). Default: highest observed category + 1 per item.

        Raises
        ------
        ValueError naming the offending rows, persons or items when a column is missing,
        a response is NaN or out of range, a person appears in two groups, the reference
        group is absent, or a (person, item) pair occurs twice without a weight column.
        """
        if isinstance(df, (str, os.PathLike)):
            frame = read_responses(df)
            try:
                return cls.from_long(
                    frame, person, item, group, response, weight, reference_group, kind,
                    n_categories,
                )  # fmt: skip
            except ValueError as err:
                where = frame.attrs.get("rows", "")
                raise ValueError(f"{df}: {err}{f' ({where})' if where else ''}") from err
        if not isinstance(df, pd.DataFrame):
            raise ValueError(f"from_long expects a pandas DataFrame, got {type(df).__name__}.")
        columns = {"person": person, "item": item, "group": group, "response": response}
        if weight is None and "weight" in df.columns and "weight" not in columns.values():
            weight = "weight"
        if weight is False:
            weight = None
        if weight is not None:
            columns["weight"] = weight
        missing = [f"{role}={name!r}" for role, name in columns.items() if name not in df.columns]
        if missing:
            raise ValueError(
                f"Column(s) {', '.join(missing)} not in the DataFrame (columns: {list(df.columns)}). "
                "Pass the right column names to ResponseData.from_long."
            )
        if len(df) == 0:
            raise ValueError("The DataFrame has no rows; there is nothing to fit.")
        row_labels = np.asarray(df.index)

        labels = {}
        for role in ("person", "item", "group"):
            values = df[columns[role]]
            labels[role] = values.astype(str)
            null = (values.isna() | (labels[role] == "")).to_numpy()
            if null.any():
                raise ValueError(
                    f"Column {columns[role]!r} ({role}) is empty or missing in rows "
                    f"{_list_some(row_labels[null])}. Drop or fill those rows."
                )

        response_values = pd.to_numeric(df[response], errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(response_values)
        if bad.any():
            raise ValueError(
                f"Response column {response!r} is NaN, infinite or not numeric in rows "
                f"{_list_some(row_labels[bad])}. Drop unanswered rows (missing responses are "
                "simply absent in long format) or recode them."
            )
        if weight is not None:
            weight_values = pd.to_numeric(df[weight], errors="coerce").to_numpy(dtype=np.float64)
            bad = ~np.isfinite(weight_values) | (weight_values <= 0)
            if bad.any():
                raise ValueError(
                    f"Weight column {weight!r} must be a positive finite count; rows "
                    f"{_list_some(row_labels[bad])} are not. Drop zero-weight rows."
                )
        else:
            weight_values = np.ones_like(response_values)

        person_codes, person_labels = pd.factorize(labels["person"], sort=False)
        item_codes, item_labels = pd.factorize(labels["item"], sort=False)
        group_codes, group_labels = pd.factorize(labels["group"], sort=False)
        persons = tuple(str(v) for v in person_labels)
        items = tuple(str(v) for v in item_labels)
        groups = tuple(str(v) for v in group_labels)

        # A person must belong to exactly one group.
        person_group = np.full(len(persons), -1, dtype=np.int64)
        person_group[person_codes] = group_codes
        conflict = person_group[person_codes] != group_codes
        if conflict.any():
            bad_persons = np.unique(person_codes[conflict])
            details = []
            for p in bad_persons[:_MAX_LISTED]:
                seen = np.unique(group_codes[person_codes == p])
                details.append(f"{persons[p]!r} in {[groups[g] for g in seen]}")
            raise ValueError(
                f"{len(bad_persons)} person(s) appear in more than one group: "
                f"{'; '.join(details)}. Every person belongs to one group; give the persons "
                "of different groups distinct ids."
            )

        if weight is None:
            key = person_codes.astype(np.int64) * len(items) + item_codes
            order = np.argsort(key, kind="stable")
            dup_sorted = np.flatnonzero(np.diff(key[order]) == 0)
            if dup_sorted.size:
                dup_rows = np.unique(np.concatenate([order[dup_sorted], order[dup_sorted + 1]]))
                pairs = sorted({(persons[person_codes[r]], items[item_codes[r]]) for r in dup_rows})
                raise ValueError(
                    f"Duplicate (person, item) responses in rows {_list_some(row_labels[dup_rows])} "
                    f"(pairs {_list_some(pairs)}). Each person answers an item once; aggregate "
                    "repeated rows and pass their counts as weight=, or make the person ids unique."
                )

        return cls.from_indices(
            person_idx=person_codes,
            item_idx=item_codes,
            person_group=person_group,
            response=response_values,
            weight=weight_values,
            persons=persons,
            items=items,
            groups=groups,
            reference_group=None if reference_group is None else str(reference_group),
            kind=kind,
            n_categories=n_categories,
            row_labels=row_labels,
        )

    @classmethod
    def from_indices(
        cls,
        person_idx: np.ndarray,
        item_idx: np.ndarray,
        person_group: np.ndarray,
        response: np.ndarray,
        persons: Sequence[str],
        items: Sequence[str],
        groups: Sequence[str],
        reference_group: str = "human",
        weight: np.ndarray | None = None,
        kind: str | None = None,
        n_categories: int | dict[str, int] | np.ndarray | None = None,
        row_labels: np.ndarray | None = None,
        warn: bool = True,
    ) -> ResponseData:
        """Build from integer codes (fast path used by the simulator and loaders).

        ``person_idx`` and ``item_idx`` index ``persons`` and ``items``;
        ``person_group[p]`` indexes ``groups``. Responses are validated against
        ``kind`` and identification caveats are computed (with warnings when ``warn``).
        """
        persons = tuple(str(p) for p in persons)
        items = tuple(str(i) for i in items)
        groups = tuple(str(g) for g in groups)
        if reference_group is not None and reference_group not in groups:
            raise ValueError(
                f"Reference group {reference_group!r} is not among the groups {list(groups)}. "
                "Pass reference_group= with one of them (the human population)."
            )
        for name, labels in (("person", persons), ("item", items), ("group", groups)):
            if len(set(labels)) != len(labels):
                raise ValueError(f"{name} labels are not unique after conversion to str.")

        person_idx = np.asarray(person_idx, dtype=np.int32)
        item_idx = np.asarray(item_idx, dtype=np.int32)
        person_group = np.asarray(person_group, dtype=np.int32)
        response = np.asarray(response, dtype=np.float64)
        n_obs = response.shape[0]
        weight = (
            np.ones(n_obs, dtype=np.float64) if weight is None else np.asarray(weight, np.float64)
        )
        if not (person_idx.shape == item_idx.shape == response.shape == weight.shape == (n_obs,)):
            raise ValueError(
                "person_idx, item_idx, response and weight must be 1-d of equal length."
            )
        if row_labels is None:
            row_labels = np.arange(n_obs)
        if n_obs == 0:
            raise ValueError("No observations; there is nothing to fit.")
        if person_group.shape != (len(persons),):
            raise ValueError("person_group must have one entry per person.")
        if person_idx.min() < 0 or person_idx.max() >= len(persons):
            raise ValueError("person_idx out of range of the person labels.")
        if item_idx.min() < 0 or item_idx.max() >= len(items):
            raise ValueError("item_idx out of range of the item labels.")
        if person_group.min() < 0 or person_group.max() >= len(groups):
            raise ValueError("person_group out of range of the group labels.")
        bad = ~np.isfinite(response)
        if bad.any():
            raise ValueError(
                f"Responses are NaN or infinite in rows {_list_some(row_labels[bad])}; "
                "drop unanswered rows."
            )
        bad = ~np.isfinite(weight) | (weight <= 0)
        if bad.any():
            raise ValueError(
                f"Weights must be positive and finite; rows {_list_some(row_labels[bad])} are not."
            )

        kind = _infer_kind(response) if kind is None else kind
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}.")
        n_cat = _check_responses(response, item_idx, items, kind, n_categories, row_labels)

        group_idx = person_group[person_idx]
        data = cls(
            person_idx=person_idx,
            item_idx=item_idx,
            group_idx=group_idx.astype(np.int32),
            response=response,
            weight=weight,
            person_group=person_group,
            persons=persons,
            items=items,
            groups=groups,
            reference_group=None if reference_group is None else str(reference_group),
            kind=kind,
            n_categories=n_cat,
        )
        object.__setattr__(data, "dif_unidentified", _identification_report(data, warn=warn))
        return data

    # ---------------------------------------------------------------- helpers
    def to_frame(self) -> pd.DataFrame:
        """The long DataFrame with the user's labels (columns person, item, group, response, weight)."""
        return pd.DataFrame(
            {
                "person": pd.Categorical.from_codes(self.person_idx, self.persons),
                "item": pd.Categorical.from_codes(self.item_idx, self.items),
                "group": pd.Categorical.from_codes(self.group_idx, self.groups),
                "response": self.response,
                "weight": self.weight,
            }
        )

    def subset_groups(self, groups: Iterable[str]) -> ResponseData:
        """A new ResponseData with only the given groups (the reference must be among them).

        Persons and items without responses left are dropped; labels keep their order.
        """
        keep_groups = [str(g) for g in groups]
        unknown = [g for g in keep_groups if g not in self.groups]
        if unknown:
            raise ValueError(f"Unknown group(s) {unknown}; groups are {list(self.groups)}.")
        if self.reference_group not in keep_groups:
            raise ValueError(
                f"subset_groups must keep the reference group {self.reference_group!r}."
            )
        group_keep = np.isin(np.arange(self.n_groups), [self.groups.index(g) for g in keep_groups])
        rows = group_keep[self.group_idx]
        new_groups = tuple(g for g in self.groups if g in keep_groups)
        group_map = np.full(self.n_groups, -1, dtype=np.int32)
        group_map[[self.groups.index(g) for g in new_groups]] = np.arange(len(new_groups))

        used_persons = np.unique(self.person_idx[rows])
        used_items = np.unique(self.item_idx[rows])
        person_map = np.full(self.n_persons, -1, dtype=np.int32)
        person_map[used_persons] = np.arange(used_persons.size)
        item_map = np.full(self.n_items, -1, dtype=np.int32)
        item_map[used_items] = np.arange(used_items.size)
        return ResponseData.from_indices(
            person_idx=person_map[self.person_idx[rows]],
            item_idx=item_map[self.item_idx[rows]],
            person_group=group_map[self.person_group[used_persons]],
            response=self.response[rows],
            weight=self.weight[rows],
            persons=[self.persons[p] for p in used_persons],
            items=[self.items[i] for i in used_items],
            groups=new_groups,
            reference_group=self.reference_group,
            kind=self.kind,
            n_categories=self.n_categories[used_items],
        )

    def group_counts(self) -> pd.DataFrame:
        """Number of persons and observations per group (for summaries and reports)."""
        return pd.DataFrame(
            {
                "persons": np.bincount(self.person_group, minlength=self.n_groups),
                "observations": np.bincount(self.group_idx, minlength=self.n_groups),
            },
            index=pd.Index(self.groups, name="group"),
        )


def _infer_kind(response: np.ndarray) -> str:
    is_integer = np.all(response == np.round(response))
    if is_integer and response.min() >= 0 and response.max() <= 1:
        return "binary"
    if is_integer and response.min() >= 0:
        return "ordinal"
    return "soft"


def _check_responses(
    response: np.ndarray,
    item_idx: np.ndarray,
    items: tuple[str, ...],
    kind: str,
    n_categories: int | dict[str, int] | np.ndarray | None,
    row_labels: np.ndarray,
) -> np.ndarray:
    """Range-check responses for ``kind``; return int32 categories per item."""
    n_items = len(items)
    if kind in ("binary", "soft"):
        if kind == "binary":
            bad = (response != 0) & (response != 1)
            hint = "binary responses must be 0 or 1 (use kind='soft' for probabilities)"
        else:
            bad = (response < 0) | (response > 1)
            hint = "soft responses must lie in [0, 1]"
        if bad.any():
            raise ValueError(
                f"Out-of-range responses in rows {_list_some(row_labels[bad])} "
                f"(values {_list_some(np.unique(response[bad]))}): {hint}."
            )
        return np.full(n_items, 2, dtype=np.int32)

    bad = (response < 0) | (response != np.round(response))
    if bad.any():
        raise ValueError(
            f"Ordinal responses must be integers 0..K-1; rows {_list_some(row_labels[bad])} have "
            f"{_list_some(np.unique(response[bad]))}. Recode categories to start at 0."
        )
    observed_max = np.full(n_items, -1, dtype=np.int64)
    np.maximum.at(observed_max, item_idx, response.astype(np.int64))
    if n_categories is None:
        n_cat = np.maximum(observed_max + 1, 2)
    elif isinstance(n_categories, dict):
        unknown = [k for k in n_categories if str(k) not in items]
        if unknown:
            raise ValueError(f"n_categories names unknown items {_list_some(unknown)}.")
        lookup = {str(k): int(v) for k, v in n_categories.items()}
        n_cat = np.array(
            [lookup.get(it, max(int(m) + 1, 2)) for it, m in zip(items, observed_max, strict=True)]
        )
    else:
        n_cat = np.broadcast_to(np.asarray(n_categories, dtype=np.int64), (n_items,)).copy()
    too_high = response.astype(np.int64) >= n_cat[item_idx]
    if too_high.any():
        raise ValueError(
            f"Ordinal responses in rows {_list_some(row_labels[too_high])} exceed the item's "
            "number of categories; raise n_categories for those items."
        )
    if np.any(n_cat < 2):
        raise ValueError("Every ordinal item needs at least 2 categories.")
    return n_cat.astype(np.int32)


def _identification_report(data: ResponseData, warn: bool = True) -> frozenset[tuple[str, str]]:
    """Find (item, focal group) pairs whose DIF is not identified, and warn about them.

    Computed with bincounts over (item, group) cells, so it is O(n_obs).
    Also warns (without recording) about persons and items whose responses never vary.
    Data without a reference group (a part of a combination) have no pairs to check.
    """
    if data.reference_group is None:
        return frozenset()
    n_items, n_groups = data.n_items, data.n_groups
    cell = data.item_idx.astype(np.int64) * n_groups + data.group_idx
    size = n_items * n_groups
    count = np.bincount(cell, minlength=size).reshape(n_items, n_groups)
    r = data.response
    lo = np.full(size, np.inf)
    hi = np.full(size, -np.inf)
    np.minimum.at(lo, cell, r)
    np.maximum.at(hi, cell, r)
    varies = (hi > lo).reshape(n_items, n_groups)

    ref = data.reference_index
    unidentified: set[tuple[str, str]] = set()
    missing_cells: list[str] = []
    constant_cells: list[str] = []
    for g in data.focal_index:
        g = int(g)
        gname = data.groups[g]
        absent = (count[:, ref] == 0) | (count[:, g] == 0)
        flat = ~absent & (~varies[:, ref] | ~varies[:, g])
        for i in np.flatnonzero(absent):
            unidentified.add((data.items[i], gname))
            missing_cells.append(f"{data.items[i]}/{gname}")
        for i in np.flatnonzero(flat):
            unidentified.add((data.items[i], gname))
            constant_cells.append(f"{data.items[i]}/{gname}")

    if warn:
        if missing_cells:
            warnings.warn(
                f"{len(missing_cells)} (item, group) pair(s) lack responses from the reference "
                f"group or from that group: {_list_some(missing_cells)}. These items are kept, "
                "but their DIF is not identified (ResponseData.dif_unidentified) and the DIF "
                "screen reports them as such.",
                UserWarning,
                stacklevel=3,
            )
        if constant_cells:
            warnings.warn(
                f"{len(constant_cells)} (item, group) pair(s) have no response variance within "
                f"the reference or that group: {_list_some(constant_cells)}. Their DIF shift is "
                "only bounded by its prior; recorded in ResponseData.dif_unidentified.",
                UserWarning,
                stacklevel=3,
            )
        item_varies = _varies_by(data.item_idx, r, n_items)
        if not item_varies.all():
            warnings.warn(
                f"Items with no response variance: "
                f"{_list_some([data.items[i] for i in np.flatnonzero(~item_varies)])}. They are "
                "kept; their difficulty is determined by the prior only on one side.",
                UserWarning,
                stacklevel=3,
            )
        person_varies = _varies_by(data.person_idx, r, data.n_persons)
        n_flat = int((~person_varies).sum())
        if n_flat and n_flat > 0.5 * data.n_persons:
            # Persons with a single response or all-equal responses are common in sparse
            # designs; only warn when they dominate.
            warnings.warn(
                f"{n_flat} of {data.n_persons} persons have no response variance (e.g. "
                f"{_list_some([data.persons[p] for p in np.flatnonzero(~person_varies)], 5)}); "
                "they are kept, their abilities are shrunk to their group mean by the prior.",
                UserWarning,
                stacklevel=3,
            )
    return frozenset(unidentified)


def _varies_by(index: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    lo = np.full(n, np.inf)
    hi = np.full(n, -np.inf)
    np.minimum.at(lo, index, values)
    np.maximum.at(hi, index, values)
    return hi > lo
