"""Output files that are never lost: path checks before the work, atomic writes after it.

Every command (and every Python function that writes a file) follows two rules:

1. **Check before working.** :func:`check_output` (one file) and
   :func:`check_output_folder` (a folder of named files) refuse, before any computation,
   an output that resolves to one of the inputs, an output that already exists (unless
   ``overwrite=True``, the CLI's ``--overwrite``), a folder where a file is expected (or a
   file where a folder is expected) and a file name with the wrong extension. A missing
   parent folder is created.
2. **Write atomically.** :func:`atomic_path` yields a temporary path in the same folder
   and renames it onto the destination only when the writer returned normally, so an
   interrupted or failing write leaves the previous file untouched (a ``kill -9`` can at
   worst leave a hidden ``.NAME.*.partial.SUFFIX`` file beside it, never a torn output).
   :func:`write_frame` and :func:`write_text` write a table or a text that way.

Caches the package keeps for later runs (compiled JAX programs, dequantised LM weights)
live under one folder, :func:`user_cache_dir`.

Example::

    out = check_output(args.out, inputs=[args.responses], overwrite=args.overwrite,
                       suffixes=(".nc",))
    ...                                   # minutes of work
    with atomic_path(out) as tmp:
        idata.to_netcdf(tmp)
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

__all__ = [
    "FRAME_SUFFIXES",
    "atomic_path",
    "check_output",
    "check_output_folder",
    "fsync_folder",
    "fsync_tree",
    "user_cache_dir",
    "write_frame",
    "write_text",
]

PathLike = str | os.PathLike

FRAME_SUFFIXES = (".csv", ".tsv", ".json", ".jsonl", ".parquet", ".pq")
"""Extensions :func:`write_frame` understands."""


def _same_file(a: Path, b: Path) -> bool:
    """True when ``a`` and ``b`` name one file (symlinks, ``..`` and hard links included)."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet): compare the resolved paths
        return a.resolve() == b.resolve()


def check_output(
    path: PathLike,
    *,
    inputs: Iterable[PathLike | None] = (),
    overwrite: bool = False,
    suffixes: Sequence[str] | None = None,
) -> Path:
    """Validate an output file path before any work is done; return it as a ``Path``.

    Parameters
    ----------
    path : the output file.
    inputs : files the command reads (and other outputs of the same command); the output
        must not be any of them. ``None`` entries are skipped.
    overwrite : replace an existing file (otherwise an existing file is refused).
    suffixes : allowed file-name endings, e.g. ``(".nc",)`` (case-insensitive); None: any.

    Raises
    ------
    ValueError : the path is a folder, has the wrong extension, is one of ``inputs``, or
        its parent is a file.
    FileExistsError : the file exists and ``overwrite`` is false.
    PermissionError : its folder is not writable.

    The missing parent folders are created.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        example = f"{path / 'out'}{suffixes[0]}" if suffixes else str(path / "NAME")
        raise ValueError(f"{path} is a folder; give a file name such as {example}.")
    if suffixes and not path.name.lower().endswith(tuple(s.lower() for s in suffixes)):
        raise ValueError(
            f"{path} has the wrong extension; the file name must end in {' or '.join(suffixes)}."
        )
    for source in inputs:
        if source is not None and _same_file(path, Path(source).expanduser()):
            raise ValueError(
                f"{path} is also an input or another output of this command ({source}); "
                "choose a different output path."
            )
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"{path} exists; pass --overwrite to replace it (overwrite=True in Python)."
        )
    _make_folder(path.parent)
    return path


def check_output_folder(
    folder: PathLike,
    names: Iterable[str],
    *,
    inputs: Iterable[PathLike | None] = (),
    overwrite: bool = False,
) -> Path:
    """Validate an output folder and the files ``names`` a command will write in it.

    The folder may exist (it is created otherwise); each ``folder / name`` is checked
    with :func:`check_output` against ``inputs`` and ``overwrite``. Raises ValueError when
    ``folder`` is a file.
    """
    folder = Path(folder).expanduser()
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{folder} is a file; the output must be a folder (give a new name).")
    inputs = [p for p in inputs if p is not None]
    for name in names:
        check_output(folder / name, inputs=inputs, overwrite=overwrite)
    _make_folder(folder)
    return folder


def _make_folder(folder: Path) -> None:
    for parent in (folder, *folder.parents):
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"{parent} is a file, so the output folder {folder} cannot exist.")
            break
    folder.mkdir(parents=True, exist_ok=True)
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write to the folder {folder}.")


@contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on normal exit rename it onto ``path``.

    The temporary name keeps the extension (``.fit.3fa9c1d2.partial.nc`` for ``fit.nc``),
    so writers that pick a format from it work. On success the data are flushed to disk
    (``fsync``) and moved into place with one ``os.replace``; on any exception, including
    ``KeyboardInterrupt``, the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.stem}.{secrets.token_hex(4)}.partial{path.suffix}")
    try:
        yield temporary
        if not temporary.exists():
            raise FileNotFoundError(f"the writer of {path} did not create {temporary}.")
        _fsync(temporary)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)


def _fsync(path: Path) -> None:
    with path.open("rb") as handle:
        os.fsync(handle.fileno())


def user_cache_dir() -> Path:
    """The package's cache folder: ``$BAYES_ALIGN_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/bayes_align`` (``~/.cache/bayes_align``), as an absolute path (a
    relative ``XDG_CACHE_HOME`` is ignored, as the XDG specification says)."""
    explicit = os.environ.get("BAYES_ALIGN_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser().resolve()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return (base / "bayes_align").resolve()


def fsync_tree(folder: Path) -> None:
    """Flush every file under ``folder``, and the folder, to disk (before it is renamed
    into place)."""
    for path in folder.rglob("*"):
        if path.is_file():
            _fsync(path)
    fsync_folder(folder)


def fsync_folder(folder: Path) -> None:
    """Make a rename into ``folder`` durable where the platform allows opening a folder."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def write_frame(frame: pd.DataFrame, path: PathLike) -> Path:
    """Write ``frame`` atomically, the format chosen by the extension (no index).

    ``.csv`` / ``.tsv``: delimited text; ``.json``: one array of records (indented);
    ``.jsonl``: one record per line; ``.parquet`` / ``.pq``: Parquet.
    """
    path = Path(path).expanduser()
    suffix = path.suffix.lower()
    if suffix not in FRAME_SUFFIXES:
        raise ValueError(f"{path}: cannot write a table as {suffix!r}; use one of {FRAME_SUFFIXES}.")
    with atomic_path(path) as temporary:
        if suffix in (".csv", ".tsv"):
            frame.to_csv(temporary, index=False, sep="," if suffix == ".csv" else "\t")
        elif suffix == ".json":
            frame.to_json(temporary, orient="records", indent=2, force_ascii=False)
        elif suffix == ".jsonl":
            frame.to_json(temporary, orient="records", lines=True, force_ascii=False)
        else:
            frame.to_parquet(temporary, index=False)
    return path


def write_text(text: str, path: PathLike, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically."""
    path = Path(path).expanduser()
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding=encoding)
    return path
