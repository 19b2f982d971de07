"""A local cache of GGUF weights dequantised by ``transformers``.

``transformers`` reads a GGUF file by parsing it (tokenizer, config, every tensor) and
dequantising each tensor in Python, on every load. :func:`load_lm` keeps the result, once,
as an ordinary ``transformers`` folder (``config.json``, ``model.safetensors``, the
tokenizer files) and later loads read that folder instead. The weights are the same
tensors, so the logits are identical.

Where: ``$BAYES_ALIGN_CACHE_DIR/dequantised/`` if that variable is set, else
``$XDG_CACHE_HOME/bayes_align/dequantised/`` (``~/.cache/...`` by default). One folder per
(GGUF file, dtype, ``transformers`` version); a GGUF file is known by its resolved path,
size and modification time, so replacing the file makes a new entry. Delete the folder to
reclaim the space; nothing else refers to it.

When (the config's ``dequantised_cache``): ``auto`` (default) keeps models whose
dequantised weights take at most :data:`AUTO_MAX_BYTES` (a 135M-parameter model in
float32 takes 0.54 GB; a 7B one in bfloat16 14 GB, which is not written unasked),
``always`` keeps any size, ``never`` reads and writes nothing.

A folder is written under a temporary name and renamed into place when complete, so a
killed load or two processes loading at once never leave a half-written entry; a cache
that cannot be written (read-only home, full disk) only costs the speed-up (a warning).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

__all__ = ["AUTO_MAX_BYTES", "cache_root", "entry_folder", "lookup", "save_folder", "store",
           "wanted"]

#: ``dequantised_cache: auto`` keeps weights up to this size (bytes).
AUTO_MAX_BYTES = 2 * 1024**3
_FORMAT = 1
_COMPLETE = "source.json"  # written last inside the temporary folder


def cache_root() -> Path:
    """``$BAYES_ALIGN_CACHE_DIR``, else ``$XDG_CACHE_HOME/bayes_align`` (``~/.cache``)."""
    explicit = os.environ.get("BAYES_ALIGN_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "bayes_align"


def _source(gguf_path: Path, dtype_name: str) -> dict[str, Any]:
    import transformers

    resolved = gguf_path.resolve()
    stat = resolved.stat()
    return {
        "format": _FORMAT,
        "gguf_file": str(resolved),
        "bytes": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "dtype": dtype_name,
        "transformers": transformers.__version__,
    }


def entry_folder(gguf_path: Path, dtype_name: str) -> Path:
    """The cache folder of a GGUF file dequantised to ``dtype_name`` (it may not exist)."""
    source = _source(gguf_path, dtype_name)
    digest = hashlib.sha256(json.dumps(source, sort_keys=True).encode("utf-8")).hexdigest()
    return cache_root() / "dequantised" / f"{gguf_path.stem}-{dtype_name}-{digest[:16]}"


def lookup(gguf_path: Path, dtype_name: str, mode: str) -> Path | None:
    """The complete cache folder for this file and dtype, or None (absent or ``never``)."""
    if mode == "never":
        return None
    folder = entry_folder(gguf_path, dtype_name)
    return folder if (folder / _COMPLETE).is_file() else None


def wanted(model: Any, mode: str) -> bool:
    """Whether to keep this model's weights (see the module docstring)."""
    if mode == "never":
        return False
    if mode == "always":
        return True
    size = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    return size <= AUTO_MAX_BYTES


def save_folder(model: Any, tokenizer: Any, folder: Path) -> None:
    """Write a loaded model (GGUF-dequantised or not) and its tokenizer as an ordinary
    ``transformers`` folder (``config.json``, ``model.safetensors``, tokenizer files), which
    ``from_pretrained`` and vLLM load. The model object is left as it was."""
    # transformers refuses to save a model loaded through its GGUF quantizer, and a
    # quantization_config in config.json would send the folder's loads through it again
    quantizer = getattr(model, "hf_quantizer", None)
    quantization = model.config.__dict__.pop("quantization_config", None)
    model.hf_quantizer = None
    try:
        model.save_pretrained(str(folder), safe_serialization=True)
    finally:
        model.hf_quantizer = quantizer
        if quantization is not None:
            model.config.quantization_config = quantization
    tokenizer.save_pretrained(str(folder))


def store(model: Any, tokenizer: Any, gguf_path: Path, dtype_name: str) -> Path | None:
    """Write the loaded model and tokenizer as a ``transformers`` folder; its path, or None
    (with a warning) when the cache cannot be written."""
    folder = entry_folder(gguf_path, dtype_name)
    if (folder / _COMPLETE).is_file():
        return folder
    temporary: Path | None = None
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        temporary = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
        save_folder(model, tokenizer, temporary)
        source = _source(gguf_path, dtype_name)
        (temporary / _COMPLETE).write_text(json.dumps(source, indent=2), encoding="utf-8")
        try:
            os.rename(temporary, folder)
        except OSError:
            if not (folder / _COMPLETE).is_file():  # not a concurrent writer's finished entry
                raise
        else:
            temporary = None
        return folder
    except OSError as err:
        warnings.warn(
            f"could not keep the dequantised weights of {gguf_path.name} in {folder.parent} "
            f"({err}); the next load parses the GGUF file again. Set BAYES_ALIGN_CACHE_DIR "
            "to a writable folder, or dequantised_cache: never in the model YAML.",
            stacklevel=3,
        )
        return None
    finally:
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)
