"""Test items: a stem, its answer options, an optional key and an optional passage.

Loaders read JSON Lines (the NAEP format: ``item_id, stem, options, correct_option_index``),
CSV (one column per option) and pandas DataFrames. Keyed items (a correct option) become
binary/soft responses; opinion items (``key is None``) become ordinal responses.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

__all__ = ["Item", "load_items", "items_from_frame", "items_from_jsonl", "items_from_csv"]

_ID_COLUMNS = ("item_id", "id", "item")
_KEY_COLUMNS = ("correct_option_index", "key")


@dataclass(frozen=True)
class Item:
    """One multiple-choice or opinion item.

    Attributes
    ----------
    item_id : unique label of the item.
    stem : the question text.
    options : the answer options in their original order (at least 2).
    key : 0-based index of the correct option, or ``None`` for opinion/ordinal items.
    passage : optional reading passage shown before the item.
    """

    item_id: str
    stem: str
    options: tuple[str, ...]
    key: int | None = None
    passage: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "item_id", str(self.item_id))
        object.__setattr__(self, "options", tuple(str(o) for o in self.options))
        if len(self.options) < 2:
            raise ValueError(
                f"Item {self.item_id!r} has {len(self.options)} option(s); an item needs at least 2."
            )
        if self.key is not None:
            key = int(self.key)
            if not 0 <= key < len(self.options):
                raise ValueError(
                    f"Item {self.item_id!r} has key {self.key} but only {len(self.options)} options "
                    "(keys are 0-based option indices; use None for opinion items)."
                )
            object.__setattr__(self, "key", key)

    @property
    def n_options(self) -> int:
        return len(self.options)

    def content_hash(self) -> str:
        """SHA-256 of everything a prompt is built from (id, stem, options, passage, key)."""
        payload = json.dumps(
            [self.item_id, self.stem, list(self.options), self.key, self.passage],
            ensure_ascii=False,
        )
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


def _check_unique(items: Sequence[Item]) -> list[Item]:
    items = list(items)
    seen: dict[str, int] = {}
    dups = []
    for item in items:
        if item.item_id in seen:
            dups.append(item.item_id)
        seen[item.item_id] = 1
    if dups:
        raise ValueError(f"Duplicate item ids {sorted(set(dups))[:10]}; item ids must be unique.")
    return items


def _first_present(columns: Iterable[str], candidates: Sequence[str]) -> str | None:
    columns = list(columns)
    return next((c for c in candidates if c in columns), None)


def _parse_key(value: object, item_id: str) -> int | None:
    if value is None or (isinstance(value, float) and pd.isna(value)) or value is pd.NA:
        return None
    if isinstance(value, str):
        if value.strip() == "":
            return None
        try:
            number = float(value)
            if not number.is_integer():
                raise ValueError(value)
            return int(number)
        except ValueError as err:
            raise ValueError(
                f"Item {item_id!r}: key {value!r} is not a 0-based option index."
            ) from err
    if isinstance(value, float) and not value.is_integer():
        raise ValueError(f"Item {item_id!r}: key {value!r} is not a 0-based option index.")
    return int(value)


def items_from_frame(
    df: pd.DataFrame,
    item_id: str | None = None,
    stem: str = "stem",
    options: str | Sequence[str] | None = None,
    key: str | None = None,
    passage: str | None = "passage",
) -> list[Item]:
    """Build items from a DataFrame.

    ``options`` is either one column holding a list per row, or a list of columns (one
    option each; empty cells are dropped so items may have different numbers of options).
    By default a column ``options`` is used if present, else every column whose name starts
    with ``option`` in frame order. ``item_id`` defaults to ``item_id``/``id``/``item``;
    ``key`` to ``correct_option_index``/``key`` (absent: all items are opinion items).
    """
    item_id = item_id or _first_present(df.columns, _ID_COLUMNS)
    if item_id is None or item_id not in df.columns:
        raise ValueError(
            f"No item id column (tried {list(_ID_COLUMNS)}); columns are {list(df.columns)}. "
            "Pass item_id=<column>."
        )
    if stem not in df.columns:
        raise ValueError(f"No stem column {stem!r}; columns are {list(df.columns)}. Pass stem=.")
    if options is None:
        if "options" in df.columns:
            options = "options"
        else:
            options = [c for c in df.columns if str(c).lower().startswith("option")]
            if not options:
                raise ValueError(
                    f"No option columns (a list column 'options' or columns named option*); "
                    f"columns are {list(df.columns)}. Pass options=."
                )
    if key is None:
        key = _first_present(df.columns, _KEY_COLUMNS)
    has_passage = passage is not None and passage in df.columns

    items = []
    for row_number, (_, row) in enumerate(df.iterrows()):
        this_id = str(row[item_id])
        if isinstance(options, str):
            raw = row[options]
            if isinstance(raw, str):
                raw = json.loads(raw)
            option_texts = [str(o) for o in raw]
        else:
            option_texts = [
                str(row[c]) for c in options if not (pd.isna(row[c]) or str(row[c]).strip() == "")
            ]
        text = row[stem]
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"Item {this_id!r} (row {row_number}) has an empty stem.")
        item_passage = row[passage] if has_passage else None
        if item_passage is not None and (pd.isna(item_passage) or str(item_passage) == ""):
            item_passage = None
        items.append(
            Item(
                item_id=this_id,
                stem=text,
                options=tuple(option_texts),
                key=_parse_key(row[key], this_id) if key else None,
                passage=item_passage,
            )
        )
    return _check_unique(items)


def _check_record(record: object, where: str, columns: dict[str, str]) -> None:
    """One item record has an id, a stem and at least two options (error names ``where``)."""
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected a JSON object (an item), got {type(record).__name__}.")
    id_column = columns.get("item_id") or _first_present(record, _ID_COLUMNS)
    if id_column is None or record.get(id_column) in (None, ""):
        raise ValueError(
            f"{where}: the item has no id (one of {list(_ID_COLUMNS)}, or the item_id= column)."
        )
    stem = columns.get("stem", "stem")
    if not isinstance(record.get(stem), str) or not record[stem].strip():
        raise ValueError(f"{where}: item {record[id_column]!r} has no {stem!r} text.")
    option_column = columns.get("options")
    if isinstance(option_column, str) or (option_column is None and "options" in record):
        options = record.get(option_column or "options")
        if not isinstance(options, list) or len(options) < 2:
            raise ValueError(
                f"{where}: item {record[id_column]!r} needs 'options', a list of at least 2 "
                f"answer texts; got {options!r}."
            )
    elif option_column is None:
        present = [k for k in record if str(k).lower().startswith("option") and record[k] not in (None, "")]
        if len(present) < 2:
            raise ValueError(
                f"{where}: item {record[id_column]!r} has no options (an 'options' list or at "
                "least two option_* fields)."
            )


def items_from_jsonl(path: str | Path, **columns: str) -> list[Item]:
    """Read items from JSON Lines (one object per line, e.g. the NAEP item files).

    Every line is checked before any item is built: an object with an id, a stem and an
    ``options`` list (or ``option_*`` fields) of at least two answers; errors name the line.
    """
    path = Path(path)
    records = []
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}: line {line_number} is not valid JSON ({err}).") from err
            _check_record(record, f"{path}: line {line_number}", columns)
            records.append(record)
    if not records:
        raise ValueError(f"{path} holds no items.")
    return items_from_frame(pd.DataFrame.from_records(records), **columns)


def items_from_csv(path: str | Path, **columns: str) -> list[Item]:
    """Read items from CSV: columns ``item_id, stem, option_1 ... option_k`` (+ ``key``)."""
    return load_items(Path(path), **columns) if Path(path).suffix.lower() in (".csv", ".tsv") else (
        items_from_frame(pd.read_csv(path, dtype=str), **columns)
    )


def load_items(source: str | Path | pd.DataFrame | Iterable[Item], **columns: str) -> list[Item]:
    """Items from a ``.jsonl``/``.json``/``.csv`` path, a DataFrame or an iterable of Item."""
    if isinstance(source, pd.DataFrame):
        return items_from_frame(source, **columns)
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise ValueError(f"Item file {path} does not exist.")
        suffix = path.suffix.lower()
        if suffix in (".jsonl", ".json", ".ndjson"):
            return items_from_jsonl(path, **columns)
        if suffix in (".csv", ".tsv"):
            frame = pd.read_csv(
                path, sep="\t" if suffix == ".tsv" else ",", dtype=str, keep_default_na=False
            )
            frame = frame.astype(object).where(frame != "", None)
            for number, record in enumerate(frame.to_dict(orient="records"), start=2):
                _check_record(record, f"{path}: line {number}", columns)
            return items_from_frame(frame, **columns)
        raise ValueError(f"Unknown item file type {suffix!r} for {path}; use .jsonl or .csv.")
    items = list(source)
    bad = [type(i).__name__ for i in items if not isinstance(i, Item)]
    if bad:
        raise ValueError(f"Expected Item objects, got {sorted(set(bad))}.")
    return _check_unique(items)
