"""A local cache of GGUF weights dequantised by ``transformers``.

``transformers`` reads a GGUF file by parsing it (tokenizer, config, every tensor) and
dequantising each tensor in Python, on every load. :func:`~bayes_align.scoring.load_lm`
keeps the result, once, as an ordinary ``transformers`` folder (``config.json``,
``model.safetensors``, the tokenizer files; :func:`save_folder`) and later loads read that
folder instead. The weights are the same tensors, so the logits are identical.

Where: ``dequantised/`` in the package's cache folder
(:func:`bayes_align.files.user_cache_dir`: ``$BAYES_ALIGN_CACHE_DIR``, else
``~/.cache/bayes_align``). One entry per
(GGUF file, dtype, ``transformers`` and ``gguf`` versions); a GGUF file is known by its
resolved path, size and modification time, taken before it is read, so replacing the file
makes a new entry (a replacement with the same size and modification time, as ``cp -p``
can make, is not noticed: delete the entry then). Delete the folder to reclaim the space;
nothing else refers to it.

When (the config's ``dequantised_cache``): ``auto`` (default) keeps models whose weights
take at most :data:`AUTO_MAX_BYTES`, ``always`` keeps any size, ``never`` reads and writes
nothing. Only plain floating-point weights are kept: where ``transformers`` keeps GGUF
blocks packed (its GGUF kernels), nothing is written.

The parse itself (:func:`parsed_once`, around every GGUF load of ``load_lm``):
``transformers`` builds ``gguf``'s reader of the file three times per load (tokenizer,
config, weights) and ``gguf``'s tensor-name map once per module of the model; within one
load each is built once, which roughly halves a first load (benchmarks/README.md).

Tokenizers alone (:func:`load_gguf_tokenizer`, the local tokenizer of an ``openai``
backend config with a ``gguf_file``): parsing a GGUF file for its tokenizer reads the
whole file too, so the tokenizer files are kept the same way, in an entry of their own
(``tokenizer`` in place of a dtype); an entry of the file's dequantised weights serves
as well, since it holds the same tokenizer files.

An entry is written under a temporary name, flushed to disk and renamed into place, so a
killed load or two processes loading at once never leave a half-written entry (a killed
load may leave its temporary ``.<entry>.*`` folder behind; delete it). A cache that
cannot be written (read-only home, full disk) only costs the speed-up (a warning). An
entry that cannot be read back, or whose weights do not match the model, is reported,
removed and written again by that load.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import tempfile
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bayes_align.files import fsync_folder, fsync_tree, user_cache_dir

__all__ = ["AUTO_MAX_BYTES", "TOKENIZER", "Entry", "discard", "entry_for", "find_entry", "keep",
           "load_gguf_tokenizer", "parsed_once", "save_folder", "should_keep"]

#: ``dequantised_cache: auto`` keeps weights up to this size (bytes).
AUTO_MAX_BYTES = 2 * 1024**3
_FORMAT = 1
_COMPLETE = "source.json"  # written last inside the temporary folder
#: What :func:`entry_for` keeps in place of a dtype for a tokenizer-only entry.
TOKENIZER = "tokenizer"
_WEIGHT_DTYPES = ("float32", "bfloat16", "float16")  # entries whose tokenizer files serve too


_PARSE_LOCK = threading.Lock()


@contextmanager
def parsed_once() -> Iterator[None]:
    """Within the block, ``gguf.GGUFReader(path)`` and ``gguf.get_tensor_name_map(arch,
    n_blocks)`` are built once per argument and shared: ``transformers`` imports both from
    ``gguf`` when it calls them and only reads them, so the loaded tokenizer, config and
    weights are the ones it would build without the block. Blocks run one at a time (a
    lock); outside them ``gguf`` is unchanged. Without ``gguf`` the block does nothing."""
    try:
        import gguf
    except ImportError:
        yield
        return
    real_reader = getattr(gguf, "GGUFReader", None)
    real_name_map = getattr(gguf, "get_tensor_name_map", None)
    if real_reader is None or real_name_map is None:  # another gguf layout: leave it be
        yield
        return
    readers: dict[Any, Any] = {}
    name_maps: dict[Any, Any] = {}

    def reader(path, *args, **kwargs):
        key = (os.fspath(path), args, tuple(sorted(kwargs.items())))
        if key not in readers:
            readers[key] = real_reader(path, *args, **kwargs)
        return readers[key]

    def name_map(*args):
        if args not in name_maps:
            name_maps[args] = real_name_map(*args)
        return name_maps[args]

    with _PARSE_LOCK:
        gguf.GGUFReader, gguf.get_tensor_name_map = reader, name_map
        try:
            yield
        finally:
            gguf.GGUFReader, gguf.get_tensor_name_map = real_reader, real_name_map


@dataclass(frozen=True)
class Entry:
    """Where one GGUF file's dequantised weights live (``folder``) and what they were
    made from (``source``: file, size, modification time, dtype, library versions)."""

    folder: Path
    source: dict[str, Any]


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def entry_for(gguf_path: Path, dtype_name: str) -> Entry:
    """The cache entry of ``gguf_path`` dequantised to ``dtype_name`` (it may not exist);
    ``dtype_name`` :data:`TOKENIZER`: the entry of its tokenizer alone."""
    resolved = gguf_path.resolve()
    stat = resolved.stat()
    source = {
        "format": _FORMAT,
        "gguf_file": str(resolved),
        "bytes": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "dtype": dtype_name,
        "transformers": _version("transformers"),
        "gguf": _version("gguf"),
    }
    digest = hashlib.sha256(json.dumps(source, sort_keys=True).encode("utf-8")).hexdigest()
    folder = user_cache_dir() / "dequantised" / f"{gguf_path.stem}-{dtype_name}-{digest[:16]}"
    return Entry(folder, source)


def find_entry(entry: Entry) -> Path | None:
    """The entry's folder when it is complete, else None."""
    try:
        return entry.folder if (entry.folder / _COMPLETE).is_file() else None
    except OSError:  # e.g. another user's private cache
        return None


def _plain_weights(model: Any) -> bool:
    """Every parameter a floating-point tensor, no GGUF-packed module."""
    if any(type(module).__name__.startswith("Gguf") for module in model.modules()):
        return False
    return all(p.is_floating_point() for p in model.parameters())


def should_keep(model: Any, mode: str) -> bool:
    """Whether to keep this model's weights (``mode``: the config's ``dequantised_cache``)."""
    if mode == "never" or not _plain_weights(model):
        return False
    if mode == "always":
        return True
    tensors = {t.data_ptr(): t for t in model.state_dict().values()}  # tied weights once
    return sum(t.numel() * t.element_size() for t in tensors.values()) <= AUTO_MAX_BYTES


def save_folder(model: Any, tokenizer: Any, folder: Path) -> None:
    """Write a loaded model (GGUF-dequantised or not) and its tokenizer as an ordinary
    ``transformers`` folder (``config.json``, ``model.safetensors``, tokenizer files), which
    ``from_pretrained`` and vLLM load. The model object is left as it was.

    Raises ValueError for a model whose GGUF weights are still packed (nothing to save
    that another loader could read).
    """
    if not _plain_weights(model):
        raise ValueError("the model holds packed GGUF weights; load it dequantised first")
    # transformers refuses to save a model loaded through its GGUF quantizer (whose weights
    # are plain tensors once dequantised), and a quantization_config in config.json would
    # send the folder's loads through that quantizer again
    had_quantizer = hasattr(model, "hf_quantizer")
    quantizer = getattr(model, "hf_quantizer", None)
    quantization = model.config.__dict__.pop("quantization_config", None)
    model.hf_quantizer = None
    try:
        model.save_pretrained(str(folder), safe_serialization=True)
    finally:
        if had_quantizer:
            model.hf_quantizer = quantizer
        else:
            del model.hf_quantizer
        if quantization is not None:
            model.config.quantization_config = quantization
    tokenizer.save_pretrained(str(folder))


def keep(model: Any | None, tokenizer: Any, entry: Entry) -> Path | None:
    """Write the entry from a loaded model and tokenizer (``model`` None: the tokenizer
    alone); its folder, or None (with a warning) when the cache cannot be written."""
    folder = entry.folder
    if find_entry(entry) is not None:
        return folder
    temporary: Path | None = None
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        temporary = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
        os.chmod(temporary, 0o755)  # mkdtemp's folders are private; entries are not
        if model is None:
            tokenizer.save_pretrained(str(temporary))
        else:
            save_folder(model, tokenizer, temporary)
        (temporary / _COMPLETE).write_text(json.dumps(entry.source, indent=2), encoding="utf-8")
        fsync_tree(temporary)
        try:
            os.rename(temporary, folder)
        except OSError:
            if find_entry(entry) is None:  # not a concurrent writer's finished entry
                raise
        else:
            temporary = None
            fsync_folder(folder.parent)
        return folder
    except (OSError, RuntimeError, ValueError) as err:
        what = "tokenizer" if model is None else "dequantised weights"
        warnings.warn(
            f"could not keep the {what} of {Path(entry.source['gguf_file']).name} "
            f"in {folder.parent} ({err}); the next load parses the GGUF file again. Set "
            "BAYES_ALIGN_CACHE_DIR to a writable folder"
            + ("." if model is None else ", or dequantised_cache: never in the model YAML."),
            stacklevel=3,
        )
        return None
    finally:
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)


def discard(folder: Path) -> None:
    """Remove a damaged entry: renamed aside first (a model that maps its weights keeps
    them), then deleted, so the next :func:`keep` writes it again."""
    aside = folder.with_name(f".{folder.name}.damaged-{os.getpid()}")
    try:
        os.rename(folder, aside)
    except OSError:
        return
    shutil.rmtree(aside, ignore_errors=True)


def load_gguf_tokenizer(gguf_path: Path, **kwargs: Any) -> Any:
    """``AutoTokenizer.from_pretrained`` of a GGUF file's tokenizer, read from its
    tokenizer entry when an earlier load kept one (or from an entry of its dequantised
    weights, which holds the same files), else parsed from the file (once:
    :func:`parsed_once`) and kept. An entry that cannot be read is reported, removed and
    written again; a cache folder that cannot be used only costs the speed-up."""
    from transformers import AutoTokenizer

    try:
        entry: Entry | None = entry_for(gguf_path, TOKENIZER)
        weights = [entry_for(gguf_path, name) for name in _WEIGHT_DTYPES]
    except (OSError, RuntimeError) as err:  # e.g. no home folder to put the cache in
        warnings.warn(f"no tokenizer cache for {gguf_path.name} ({err}); set "
                      "BAYES_ALIGN_CACHE_DIR to a writable folder.", stacklevel=2)
        entry, weights = None, []
    folder = find_entry(entry) if entry is not None else None
    if folder is not None:
        try:
            return AutoTokenizer.from_pretrained(folder, **kwargs)
        except Exception as err:  # noqa: BLE001 (the tokenizers library raises plain Exception)
            warnings.warn(f"the kept tokenizer in {folder} is damaged ({err}); removed, "
                          f"reading {gguf_path.name} again.", stacklevel=2)
            discard(folder)
    for other in weights:  # the same tokenizer files, kept beside dequantised weights
        folder = find_entry(other)
        if folder is not None:
            try:
                return AutoTokenizer.from_pretrained(folder, **kwargs)
            except Exception:  # noqa: BLE001, S110
                pass  # the weights' own load reports and replaces a damaged entry
    with parsed_once():
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name,
                                                  **kwargs)
    if entry is not None:
        keep(None, tokenizer, entry)
    return tokenizer
