"""LoRA adapters (peft ``save_pretrained`` folders) named by ``adapter:`` in a model YAML.

The adapter is applied when the model is loaded: merged into the base weights
(``adapter_merge: true``, the default; scoring then costs what the base model costs) or
attached as a ``PeftModel`` (``false``). Its identity is the SHA-256 of its weight and
config files, so that a retrained adapter in the same folder changes the cache key.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

__all__ = ["adapter_files", "adapter_hash", "apply_adapter"]

_CONFIG = "adapter_config.json"


def adapter_files(folder: str | Path) -> list[Path]:
    """The files that determine an adapter's numbers: its config and weights.

    Raises FileNotFoundError when ``folder`` is not a peft adapter folder.
    """
    folder = Path(folder)
    if not (folder / _CONFIG).is_file():
        raise FileNotFoundError(
            f"Adapter folder {folder} has no {_CONFIG}; 'adapter' must name a folder written by "
            "peft's save_pretrained (e.g. by bayes_align.finetune)."
        )
    weights = sorted(folder.glob("adapter_model.*"))
    if not weights:
        raise FileNotFoundError(
            f"Adapter folder {folder} has no adapter_model.safetensors (or .bin) weights."
        )
    return [folder / _CONFIG, *weights]


def adapter_hash(folder: str | Path) -> str:
    """SHA-256 over the adapter's config and weight files (names and contents)."""
    digest = hashlib.sha256()
    for path in adapter_files(folder):
        digest.update(path.name.encode("utf-8") + b"\0")
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def apply_adapter(model: Any, folder: str | Path, merge: bool) -> Any:
    """``model`` with the adapter at ``folder`` merged in (``merge``) or attached."""
    adapter_files(folder)
    try:
        from peft import PeftModel
    except ImportError as err:
        raise ImportError(
            "A model YAML with 'adapter' needs peft: pip install 'bayes_align[finetune]' "
            "(or pip install peft)."
        ) from err
    wrapped = PeftModel.from_pretrained(model, str(folder), is_trainable=False)
    return wrapped.merge_and_unload() if merge else wrapped
