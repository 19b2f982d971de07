"""Append-only JSON Lines cache of scored prompts, so that long runs can resume.

Line 1 is a header naming the configuration (model fingerprint, template hash, method);
every further line is one finished prompt, keyed by ``cache_key`` (a hash of model,
template, item, persona and option order). Rows are appended and flushed after every
batch, so a run killed mid-way loses at most the batch in flight; a torn last line (a
kill during the write) is dropped on reopening. A cache written with another
configuration is refused rather than mixed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["ScoreCache", "CacheMismatchError"]

FORMAT = "bayes_align.score_cache/1"


class CacheMismatchError(ValueError):
    """The cache file was written with a different configuration."""


class ScoreCache:
    """Rows already scored under one configuration, stored at ``path``."""

    def __init__(self, path: str | Path, config: Mapping[str, Any]):
        self.path = Path(path)
        self.config = {"format": FORMAT, **dict(config)}
        self.rows: dict[str, dict[str, Any]] = {}
        if self.path.exists() and self.path.stat().st_size > 0:
            self._read()
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("w", encoding="utf-8") as handle:
                handle.write(json.dumps(self.config, sort_keys=True) + "\n")
                handle.flush()
                os.fsync(handle.fileno())

    def _read(self) -> None:
        raw = self.path.read_bytes()
        complete = raw[: raw.rfind(b"\n") + 1]
        if len(complete) < len(raw):  # torn last line from a killed run: drop it
            with self.path.open("r+b") as handle:
                handle.truncate(len(complete))
        lines = complete.decode("utf-8").splitlines()
        if not lines:
            raise CacheMismatchError(
                f"Cache {self.path} has no complete header line; delete it and rerun."
            )
        try:
            header = json.loads(lines[0])
        except json.JSONDecodeError as err:
            raise CacheMismatchError(
                f"{self.path} is not a bayes_align score cache (bad header); use another path."
            ) from err
        if header.get("format") != FORMAT:
            raise CacheMismatchError(
                f"{self.path} is not a bayes_align score cache (format {header.get('format')!r})."
            )
        if header != self.config:
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
        for number, line in enumerate(lines[1:], start=2):
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise CacheMismatchError(
                    f"Cache {self.path} line {number} is corrupt; delete the file and rerun."
                ) from err
            self.rows[row["cache_key"]] = row

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
