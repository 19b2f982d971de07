"""Append-only JSON Lines cache of scored prompts, so that long runs can resume.

Line 1 is a header naming the configuration (model fingerprint, template hash, method);
every further line is one finished prompt, keyed by ``cache_key`` (a hash of model,
template, item, persona and option order). Rows are appended and flushed after every
batch, so a run killed mid-way loses at most the batch in flight.

A file is only ever modified once it is positively recognised as a cache of this
configuration: its first line is read on its own and must be this format's header with
the same configuration; until then the file is opened read-only, and anything else (a
foreign file, a cache of another configuration, a corrupt row) is refused with
:class:`CacheMismatchError` and left untouched. Only then is a torn last line (a kill
during the write) cut off. A new cache is created with its header in one atomic rename;
an empty file counts as new.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from bayes_align.files import write_text

__all__ = ["ScoreCache", "CacheMismatchError", "check_cache_file"]

FORMAT = "bayes_align.score_cache/1"

_HEADER_LIMIT = 1 << 20  # a header line is a few hundred bytes; never read a huge first line


class CacheMismatchError(ValueError):
    """The file is not a score cache, or was written with a different configuration."""


def _read_header(path: Path) -> dict[str, Any] | None:
    """The header of the cache at ``path``; None when the file is absent or empty.

    Reads only the first line, read-only. Raises CacheMismatchError when the file is not
    one of this module's caches.
    """
    if path.is_dir():
        raise CacheMismatchError(f"{path} is a folder; give the cache a file name (.jsonl).")
    if not path.exists() or path.stat().st_size == 0:
        return None
    with path.open("rb") as handle:
        first = handle.readline(_HEADER_LIMIT)
    not_a_cache = f"{path} is not a bayes_align score cache; left untouched, use another path"
    if not first.endswith(b"\n"):
        raise CacheMismatchError(f"{not_a_cache} (no complete header line).")
    try:
        header = json.loads(first.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CacheMismatchError(f"{not_a_cache} (its first line is not a JSON header).") from err
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        found = header.get("format") if isinstance(header, dict) else type(header).__name__
        raise CacheMismatchError(f"{not_a_cache} (format {found!r}, expected {FORMAT!r}).")
    return header


def check_cache_file(path: str | Path) -> None:
    """Refuse, before any work, a ``--cache`` path that is a folder or a foreign file.

    An absent or empty file is fine (a new cache); the configuration is compared later,
    when :class:`ScoreCache` opens the file.
    """
    _read_header(Path(path).expanduser())


class ScoreCache:
    """Rows already scored under one configuration, stored at ``path``."""

    def __init__(self, path: str | Path, config: Mapping[str, Any]):
        self.path = Path(path).expanduser()
        self.config = {"format": FORMAT, **dict(config)}
        self.rows: dict[str, dict[str, Any]] = {}
        header = _read_header(self.path)
        if header is None:
            write_text(json.dumps(self.config, sort_keys=True) + "\n", self.path)
            return
        self._check_config(header)
        self._read()

    def _check_config(self, header: Mapping[str, Any]) -> None:
        if dict(header) == self.config:
            return
        differing = sorted(
            k for k in set(header) | set(self.config) if header.get(k) != self.config.get(k)
        )
        details = "; ".join(
            f"{k}: cache {header.get(k)!r} vs now {self.config.get(k)!r}" for k in differing
        )
        raise CacheMismatchError(
            f"Cache {self.path} was written with another configuration ({details}). "
            "Results are never mixed: pass another cache path or delete the file."
        )

    def _read(self) -> None:
        """Load the rows of a recognised cache; cut a torn last line, refuse corrupt ones."""
        raw = self.path.read_bytes()
        complete = raw[: raw.rfind(b"\n") + 1]
        rows = {}
        for number, line in enumerate(complete.splitlines()[1:], 2):
            try:
                row = json.loads(line.decode("utf-8"))
                rows[row["cache_key"]] = row
            except (UnicodeDecodeError, json.JSONDecodeError, TypeError, KeyError) as err:
                raise CacheMismatchError(
                    f"Cache {self.path} line {number} is not a scored prompt; the file was "
                    "left untouched: delete it (or cut that line) and rerun."
                ) from err
        if len(complete) < len(raw):  # torn last line from a killed run: drop it
            with self.path.open("r+b") as handle:
                handle.truncate(len(complete))
        self.rows = rows

    def __contains__(self, key: str) -> bool:
        return key in self.rows

    def __len__(self) -> int:
        return len(self.rows)

    def append(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Append finished rows and flush them to disk."""
        rows = list(rows)
        lines = "".join(json.dumps(dict(r), ensure_ascii=False) + "\n" for r in rows)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(lines)
            handle.flush()
            os.fsync(handle.fileno())
        for row in rows:
            self.rows[row["cache_key"]] = dict(row)
