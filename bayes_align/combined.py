"""Person-level and aggregated groups in one dataset: what :func:`bayes_align.fit` fits.

A study may hold human *persons* and LM *option shares*, or NAEP *shares* and LM
*persons*. :func:`combine` joins :class:`~bayes_align.data.ResponseData` and
:class:`~bayes_align.aggregated.AggregatedData` objects that share item labels into one
:class:`CombinedData`: every group is either *person-level* (a latent ability per
person) or *aggregated* (counts per item, ability integrated over the group's
population), and all groups share the items' parameters and the DIF term.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from bayes_align.aggregated import AggregatedData
from bayes_align.data import GroupedItems, ResponseData, _list_some

__all__ = ["CombinedData", "as_combined", "as_response_data", "combine"]

GROUP_KINDS = ("persons", "aggregated")


@dataclass(frozen=True, eq=False)
class CombinedData(GroupedItems):
    """Person-level observations and aggregated rows over shared items and groups.

    Person part (empty arrays when no group is person-level): ``person_idx``,
    ``item_idx``, ``group_idx``, ``response``, ``weight`` ``(n_obs,)``,
    ``person_group`` ``(n_persons,)``, ``persons`` labels, ``response_kind``
    (``"binary" | "soft" | "ordinal"``, None without persons) and
    ``person_categories`` ``(n_items,)`` (2 for binary and soft).

    Aggregated part (empty without aggregated groups): ``row_item``, ``row_group``,
    ``n_correct``, ``n_total`` ``(n_rows,)``, optional ``option_counts``
    ``(n_rows, K_max)`` (NaN after an item's last option), ``key`` ``(n_items,)``
    (None: opinion items without a key, or no option counts) and ``item_prior``.

    ``group_kind[g]`` is ``"persons"`` or ``"aggregated"``; ``dif_unidentified`` holds
    the ``(item, focal_group)`` pairs whose DIF the data cannot identify (the item was
    not answered, or answered without variation, by the reference or by that group).
    """

    items: tuple[str, ...]
    groups: tuple[str, ...]
    reference_group: str
    group_kind: tuple[str, ...]
    person_idx: np.ndarray
    item_idx: np.ndarray
    group_idx: np.ndarray
    response: np.ndarray
    weight: np.ndarray
    person_group: np.ndarray
    persons: tuple[str, ...]
    response_kind: str | None
    person_categories: np.ndarray
    row_item: np.ndarray
    row_group: np.ndarray
    n_correct: np.ndarray
    n_total: np.ndarray
    option_counts: np.ndarray | None = None
    key: np.ndarray | None = None
    item_prior: Mapping[str, np.ndarray] | None = None
    dif_unidentified: frozenset[tuple[str, str]] = field(default_factory=frozenset)

    # ------------------------------------------------------------------ sizes
    @property
    def n_obs(self) -> int:
        return int(self.response.shape[0])

    @property
    def n_rows(self) -> int:
        return int(self.row_item.shape[0])

    @property
    def n_persons(self) -> int:
        return len(self.persons)

    @property
    def n_units(self) -> int:
        """Observations of the likelihood: person responses, then aggregated rows."""
        return self.n_obs + self.n_rows

    @property
    def has_persons(self) -> bool:
        return self.n_obs > 0

    @property
    def has_rows(self) -> bool:
        return self.n_rows > 0

    @property
    def has_weights(self) -> bool:
        return bool(np.any(self.weight != 1.0))

    @property
    def kind(self) -> str:
        """``binary``, ``soft`` or ``ordinal`` (persons only), ``aggregated`` or ``mixed``."""
        if not self.has_rows:
            return str(self.response_kind)
        return "mixed" if self.has_persons else "aggregated"

    @property
    def has_key(self) -> bool:
        return self.option_counts is None or self.key is not None

    @property
    def n_options(self) -> np.ndarray:
        """int ``(n_items,)`` options counted per item in the aggregated rows (2 without
        option counts; 0 for items without rows)."""
        out = np.zeros(self.n_items, dtype=np.int64)
        if self.option_counts is None:
            out[self.row_item] = 2
        else:
            out[self.row_item] = (~np.isnan(self.option_counts)).sum(axis=1)
        return out

    @property
    def n_categories(self) -> np.ndarray:
        """int ``(n_items,)``: the most categories an item has in either part."""
        return np.maximum(self.person_categories, self.n_options).astype(np.int32)

    def __repr__(self) -> str:
        kinds = dict(zip(self.groups, self.group_kind, strict=True))
        return (
            f"CombinedData(kind={self.kind!r}, n_obs={self.n_obs}, n_persons={self.n_persons}, "
            f"n_rows={self.n_rows}, n_items={self.n_items}, groups={kinds}, "
            f"reference_group={self.reference_group!r})"
        )

    def group_summary(self) -> pd.DataFrame:
        """Per group: kind, persons, person responses, aggregated rows and their total count."""
        n = self.n_groups
        return pd.DataFrame(
            {
                "kind": list(self.group_kind),
                "persons": np.bincount(self.person_group, minlength=n),
                "responses": np.bincount(self.group_idx, weights=self.weight, minlength=n),
                "rows": np.bincount(self.row_group, minlength=n),
                "row_total": np.bincount(self.row_group, weights=self.n_total, minlength=n),
            },
            index=pd.Index(self.groups, name="group"),
        )

    def row_categories(self, likelihood: str, graded: bool) -> np.ndarray:
        """``(n_rows, K)`` counts per answer category of the aggregated rows, 0 for
        categories an item does not have: ``[n_total - n_correct, n_correct]`` for the
        binary likelihood, the option counts for the nominal and graded ones."""
        if likelihood == "binary" and not graded:
            if not self.has_key:
                raise ValueError(
                    "these aggregated rows have no key (opinion items): fit them with "
                    "model='grm' (ordered options) or likelihood='nominal'"
                )
            return np.stack([self.n_total - self.n_correct, self.n_correct], axis=1)
        if self.option_counts is None:
            raise ValueError(
                f"the {'graded' if graded else 'nominal'} likelihood of aggregated rows needs "
                "option counts, but the rows hold only key counts (n_correct of n_total); build "
                "them with AggregatedData.from_frame(..., option_columns=[...]) or "
                "AggregatedData.from_naep(..., option_counts=True)"
            )
        return np.nan_to_num(np.asarray(self.option_counts, np.float64), nan=0.0)


# ------------------------------------------------------------------------- constructors
def as_response_data(data: ResponseData | CombinedData) -> ResponseData:
    """Person-level data as a ResponseData (a CombinedData whose groups are all
    person-level, e.g. a loaded fit's ``data``, converts; aggregated rows cannot)."""
    if isinstance(data, ResponseData):
        return data
    if isinstance(data, CombinedData) and not data.has_rows:
        return ResponseData.from_indices(
            person_idx=data.person_idx, item_idx=data.item_idx, person_group=data.person_group,
            response=data.response, weight=data.weight, persons=data.persons, items=data.items,
            groups=data.groups, reference_group=data.reference_group, kind=data.response_kind,
            n_categories=data.person_categories, warn=False,
        )
    raise ValueError(
        "this analysis needs person-level responses (a ResponseData); aggregated rows have no "
        f"persons to match or refit one by one, got {type(data).__name__}"
        + (" with aggregated groups" if isinstance(data, CombinedData) else "")
    )


def as_combined(data: ResponseData | AggregatedData | CombinedData) -> CombinedData:
    """Any dataset as a :class:`CombinedData` (single datasets keep their own checks)."""
    if isinstance(data, CombinedData):
        return data
    if isinstance(data, (ResponseData, AggregatedData)):
        if data.reference_group is None:
            raise ValueError(
                f"this {type(data).__name__} holds no reference group (reference_group=None); "
                "combine it with the reference population's data: bayes_align.combine(...)"
            )
        return _join([data], data.reference_group, warn=False)
    raise ValueError(
        "expected a ResponseData, an AggregatedData or their combination (bayes_align.combine), "
        f"got {type(data).__name__}"
    )


def combine(
    *datasets: ResponseData | AggregatedData, reference_group: str | None = None
) -> CombinedData:
    """Join person-level and aggregated datasets over shared items into one.

    Every group must be in exactly one dataset; the reference group may be in either.
    ``reference_group`` defaults to the one reference label the datasets agree on
    (build a dataset without the reference with ``reference_group=None``). Person labels
    must be distinct across datasets. All person-level datasets must have compatible
    response kinds (binary with soft gives soft; binary with ordinal gives ordinal).
    Aggregated datasets keep their option counts only if all of them have them.
    """
    if not datasets:
        raise ValueError("combine needs at least one dataset")
    for d in datasets:
        if not isinstance(d, (ResponseData, AggregatedData)):
            raise ValueError(
                f"combine joins ResponseData and AggregatedData objects, got {type(d).__name__}"
            )
    owner: dict[str, int] = {}
    for k, d in enumerate(datasets):
        for g in d.groups:
            if g in owner:
                raise ValueError(
                    f"group {g!r} is in datasets {owner[g]} and {k}; every group must be in "
                    "exactly one dataset (rename one of them)"
                )
            owner[g] = k
    if reference_group is None:
        named = {d.reference_group for d in datasets if d.reference_group is not None}
        if len(named) != 1:
            raise ValueError(
                f"the datasets name reference groups {sorted(named)}; pass reference_group= "
                "(the label of the reference population)"
            )
        reference_group = named.pop()
    if reference_group not in owner:
        raise ValueError(
            f"reference group {reference_group!r} is in none of the datasets (groups: {list(owner)})"
        )
    return _join(list(datasets), str(reference_group), warn=True)


def _join(datasets: list, reference_group: str, warn: bool) -> CombinedData:
    items = tuple(dict.fromkeys(i for d in datasets for i in d.items))
    groups = tuple(g for d in datasets for g in d.groups)
    item_pos = {label: i for i, label in enumerate(items)}
    group_pos = {label: g for g, label in enumerate(groups)}
    group_kind = tuple(
        "persons" if isinstance(d, ResponseData) else "aggregated" for d in datasets for _ in d.groups
    )
    people = [d for d in datasets if isinstance(d, ResponseData)]
    aggregates = [d for d in datasets if isinstance(d, AggregatedData)]
    persons_part = _join_persons(people, items, item_pos, group_pos)
    rows_part = _join_rows(aggregates, items, item_pos, group_pos)
    data = CombinedData(
        items=items, groups=groups, reference_group=reference_group, group_kind=group_kind,
        **persons_part, **rows_part,
    )
    if len(datasets) == 1 and people:
        unidentified = people[0].dif_unidentified
    else:
        unidentified = _unidentified_pairs(data, warn=warn)
    object.__setattr__(data, "dif_unidentified", frozenset(unidentified))
    return data


def _join_persons(parts: list[ResponseData], items, item_pos, group_pos) -> dict:
    n_items = len(items)
    if not parts:
        empty_i, empty_f = np.zeros(0, np.int32), np.zeros(0, np.float64)
        return dict(
            person_idx=empty_i, item_idx=empty_i, group_idx=empty_i, response=empty_f,
            weight=empty_f, person_group=empty_i, persons=(), response_kind=None,
            person_categories=np.zeros(n_items, np.int32),
        )
    kinds = {p.kind for p in parts}
    if kinds <= {"binary"}:
        kind = "binary"
    elif kinds <= {"binary", "soft"}:
        kind = "soft"
    elif kinds <= {"binary", "ordinal"}:
        kind = "ordinal"
    else:
        raise ValueError(
            f"person-level datasets with response kinds {sorted(kinds)} cannot be fitted together; "
            "soft (fractional) responses need a binary model, ordinal ones the graded model"
        )
    persons = tuple(p for part in parts for p in part.persons)
    if len(set(persons)) != len(persons):
        seen: set[str] = set()
        dup = [p for p in persons if p in seen or seen.add(p)]
        raise ValueError(
            f"person labels {_list_some(dup)} appear in more than one dataset; give persons of "
            "different datasets distinct ids"
        )
    offsets = np.cumsum([0] + [p.n_persons for p in parts])
    categories = np.zeros(n_items, np.int32)
    pieces = {k: [] for k in ("person_idx", "item_idx", "group_idx", "response", "weight")}
    person_group = []
    for part, offset in zip(parts, offsets, strict=False):
        imap = np.array([item_pos[i] for i in part.items], np.int32)
        gmap = np.array([group_pos[g] for g in part.groups], np.int32)
        pieces["person_idx"].append(part.person_idx + offset)
        pieces["item_idx"].append(imap[part.item_idx])
        pieces["group_idx"].append(gmap[part.group_idx])
        pieces["response"].append(part.response)
        pieces["weight"].append(part.weight)
        person_group.append(gmap[part.person_group])
        np.maximum.at(categories, imap, part.n_categories.astype(np.int32))
    out = {k: np.concatenate(v) for k, v in pieces.items()}
    for k in ("person_idx", "item_idx", "group_idx"):
        out[k] = out[k].astype(np.int32)
    out["person_group"] = np.concatenate(person_group).astype(np.int32)
    out["persons"] = persons
    out["response_kind"] = kind
    out["person_categories"] = categories
    return out


def _join_rows(parts: list[AggregatedData], items, item_pos, group_pos) -> dict:
    n_items = len(items)
    if not parts:
        empty_i, empty_f = np.zeros(0, np.int32), np.zeros(0, np.float64)
        return dict(row_item=empty_i, row_group=empty_i, n_correct=empty_f, n_total=empty_f)
    maps = [
        (np.array([item_pos[i] for i in p.items], np.int32),
         np.array([group_pos[g] for g in p.groups], np.int32))
        for p in parts
    ]
    row_item = np.concatenate([imap[p.item_idx] for p, (imap, _) in zip(parts, maps, strict=True)])
    row_group = np.concatenate([gmap[p.group_idx] for p, (_, gmap) in zip(parts, maps, strict=True)])
    out: dict = dict(
        row_item=row_item.astype(np.int32),
        row_group=row_group.astype(np.int32),
        n_correct=np.concatenate([p.n_correct for p in parts]),
        n_total=np.concatenate([p.n_total for p in parts]),
    )
    if all(p.option_counts is not None for p in parts):
        k_max = max(p.option_counts.shape[1] for p in parts)
        out["option_counts"] = np.concatenate([
            np.pad(np.asarray(p.option_counts, np.float64),
                   ((0, 0), (0, k_max - p.option_counts.shape[1])), constant_values=np.nan)
            for p in parts
        ])
        n_opts = (~np.isnan(out["option_counts"])).sum(axis=1)
        per_item = pd.Series(n_opts).groupby(row_item).nunique()
        if (per_item > 1).any():
            labels = [items[i] for i in per_item.index[per_item > 1]]
            raise ValueError(
                f"items {_list_some(labels)} count different numbers of options in different "
                "datasets; every row of an item must count the same options"
            )
        if all(p.key is not None for p in parts):
            key = np.full(n_items, -1, np.int64)
            for p, (imap, _) in zip(parts, maps, strict=True):
                known = key[imap] >= 0
                clash = known & (key[imap] != np.asarray(p.key))
                if clash.any():
                    labels = [p.items[i] for i in np.flatnonzero(clash)]
                    raise ValueError(f"items {_list_some(labels)} have different keys in different datasets")
                key[imap] = np.asarray(p.key)
            out["key"] = key
    priors = [(p, imap) for p, (imap, _) in zip(parts, maps, strict=True) if p.item_prior is not None]
    if priors:
        merged = {name: np.full(n_items, np.nan) for name in ("difficulty", "log_discrimination", "guessing")}
        for p, imap in priors:
            for name, values in p.item_prior.items():
                if values is None:
                    continue
                target = merged.setdefault(name, np.full(n_items, np.nan))
                values = np.asarray(values, np.float64)
                fill = np.isnan(target[imap])
                target[imap[fill]] = values[fill]
        out["item_prior"] = merged
    return out


def category_counts_and_variation(data: CombinedData) -> tuple[np.ndarray, np.ndarray]:
    """``(n_items, n_groups)`` number of responses and whether they vary, over both parts."""
    n_items, n_groups = data.n_items, data.n_groups
    size = n_items * n_groups
    count = np.zeros(size)
    varies = np.zeros(size, bool)
    if data.has_persons:
        cell = data.item_idx.astype(np.int64) * n_groups + data.group_idx
        count += np.bincount(cell, weights=data.weight, minlength=size)
        lo, hi = np.full(size, np.inf), np.full(size, -np.inf)
        np.minimum.at(lo, cell, data.response)
        np.maximum.at(hi, cell, data.response)
        varies |= hi > lo
    if data.has_rows:
        cell = data.row_item.astype(np.int64) * n_groups + data.row_group
        count += np.bincount(cell, weights=data.n_total, minlength=size)
        if data.option_counts is not None:
            per_row = np.nan_to_num(data.option_counts)
        else:
            per_row = np.stack([data.n_total - data.n_correct, data.n_correct], axis=1)
        row_varies = (per_row > 0).sum(axis=1) >= 2
        varies[cell[row_varies]] = True
    return count.reshape(n_items, n_groups), varies.reshape(n_items, n_groups)


def _unidentified_pairs(data: CombinedData, warn: bool) -> set[tuple[str, str]]:
    count, varies = category_counts_and_variation(data)
    ref = data.reference_index
    missing, flat = [], []
    for g in data.focal_index:
        absent = (count[:, ref] == 0) | (count[:, g] == 0)
        constant = ~absent & (~varies[:, ref] | ~varies[:, g])
        missing += [(data.items[i], data.groups[g]) for i in np.flatnonzero(absent)]
        flat += [(data.items[i], data.groups[g]) for i in np.flatnonzero(constant)]
    if warn and (missing or flat):
        warnings.warn(
            f"{len(missing)} (item, group) pair(s) lack responses from the reference or that "
            f"group ({_list_some(['/'.join(p) for p in missing])}) and {len(flat)} have no "
            f"variation in one of the two ({_list_some(['/'.join(p) for p in flat])}); their "
            "DIF is not identified (CombinedData.dif_unidentified) and the DIF screen says so.",
            UserWarning,
            stacklevel=4,
        )
    return set(missing) | set(flat)

