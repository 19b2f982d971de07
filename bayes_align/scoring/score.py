"""Scoring: the LM's answer distribution for every (item, persona, option order).

Three *expression methods* (how the LM states a distribution; Meister et al. 2024):

- ``"logprobs"``: the next-token log-probabilities of the option labels after the
  prompt; the prompt's distribution is their softmax;
- ``"sequence"``: the LM writes ``n_samples`` answers in one completion; the
  distribution is their shares (:func:`~bayes_align.scoring.parsers.parse_sequence`);
- ``"verbalized"``: the LM states the distribution in words or JSON; it is parsed and
  renormalised (:func:`~bayes_align.scoring.parsers.parse_verbalized`).

and three *steering methods* (:mod:`bayes_align.scoring.steering`): ``"none"``,
``"persona"`` and ``"few_shot"``.

With ``debias="cyclic"`` each item is shown in its ``K`` cyclic shifts (order ``k``
shows original option ``(j + k) mod K`` at position ``j``), with ``"full"`` in all
``K!`` permutations, so every option appears in every position and position bias
averages out. Everything is mapped back to the original option order::

    logits[permutation[j]] = position_logits[j]      (position j carries label j)

The LM sits behind a :class:`~bayes_align.scoring.backends.Backend` (local
transformers, an OpenAI-compatible server, vLLM). Every finished chunk of prompts is
appended to the resumable cache, whose keys include the backend fingerprint, the
template, the method, the steering and its data. Every row keeps the prompt text (and
the raw completion) so any number can be reproduced by hand.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .backends import Backend, as_backend
from .backends.base import LabelScores, Prompt
from .backends.transformers import LabelTokenError
from .cache import ScoreCache
from .items import Item, load_items
from .lm import LM
from .parsers import parse_sequence, parse_verbalized
from .personas import Persona
from .responses import softmax_seen
from .steering import STEERING, FewShot
from .templates import PromptTemplate, load_template

__all__ = [
    "METHODS",
    "score",
    "option_orders",
    "build_requests",
    "ScoreRequest",
    "LabelTokenError",
]

DEBIAS = ("cyclic", "full", None)
METHODS = ("logprobs", "sequence", "verbalized")
_MAX_FULL_PERMUTATIONS = 5040  # 7!


def option_orders(n_options: int, debias: str | None) -> list[tuple[int, ...]]:
    """Option orders to present: ``order[j]`` is the original option shown at position ``j``."""
    if debias is None:
        return [tuple(range(n_options))]
    if debias == "cyclic":
        return [tuple((j + k) % n_options for j in range(n_options)) for k in range(n_options)]
    if debias == "full":
        if math.factorial(n_options) > _MAX_FULL_PERMUTATIONS:
            raise ValueError(
                f"debias='full' with {n_options} options gives {math.factorial(n_options)} "
                "prompts per item; use debias='cyclic'."
            )
        return list(itertools.permutations(range(n_options)))
    raise ValueError(f"debias must be one of {DEBIAS}, got {debias!r}.")


@dataclass(frozen=True)
class ScoreRequest:
    """One prompt to score: an item shown to a persona in one option order."""

    item: Item
    persona: Persona | None
    order: int
    permutation: tuple[int, ...]
    prompt: Prompt
    cache_key: str

    @property
    def persona_id(self) -> str:
        return self.persona.persona_id if self.persona is not None else "default"


@dataclass(frozen=True)
class _Settings:
    """What, besides backend, template, item, persona and order, makes a prompt's numbers."""

    method: str
    steering: str
    n_samples: int
    temperature: float
    max_tokens: int | None
    seed: int

    @property
    def generative(self) -> bool:
        return self.method != "logprobs"

    @property
    def first_format(self) -> bool:
        """Logprobs without few-shot: cache keys and headers as before the methods
        existed, so that earlier caches resume."""
        return self.method == "logprobs" and self.steering != "few_shot"

    def key_parts(self) -> tuple[Any, ...]:
        if self.first_format:
            return ()
        if self.generative:
            return (self.method, self.steering, self.n_samples, self.temperature,
                    self.max_tokens, self.seed)
        return (self.method, self.steering)

    def max_tokens_for(self, n_options: int) -> int:
        if self.max_tokens is not None:
            return self.max_tokens
        return 2 * self.n_samples + 16 if self.method == "sequence" else 10 * n_options + 24


def _hash(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode("utf-8")).hexdigest()[:24]


def _resolve_steering(
    steering: str | None, personas: Sequence[Persona] | None, few_shot: FewShot | None
) -> tuple[str, list[Persona | None]]:
    if steering is None:
        steering = "few_shot" if few_shot is not None else ("persona" if personas else "none")
    if steering not in STEERING:
        raise ValueError(f"steering must be one of {STEERING}, got {steering!r}.")
    if steering == "none":
        if personas:
            raise ValueError(
                "steering='none' shows no persona, but personas were given; drop them or use "
                "steering='persona'."
            )
        return steering, [None]
    if steering == "persona":
        if not personas:
            raise ValueError("steering='persona' needs personas (e.g. load_personas(...)).")
        return steering, list(personas)
    if few_shot is None:
        raise ValueError("steering='few_shot' needs few_shot=FewShot(items, shares, k=...).")
    if personas:
        unknown = sorted({p.persona_id for p in personas} - set(few_shot.groups))
        if unknown:
            raise ValueError(
                f"Personas {unknown[:10]} have no shares in few_shot (its groups: "
                f"{few_shot.groups[:10]}); persona ids name the groups under few-shot steering."
            )
        return steering, list(personas)
    return steering, [Persona(group, "", {}) for group in few_shot.groups]


def build_requests(
    lm: LM | Backend,
    items: Sequence[Item],
    template: PromptTemplate,
    personas: Sequence[Persona] | None = None,
    debias: str | None = "cyclic",
    method: str = "logprobs",
    steering: str | None = None,
    few_shot: FewShot | None = None,
    n_samples: int = 30,
    temperature: float = 1.0,
    max_tokens: int | None = None,
    seed: int = 0,
) -> list[ScoreRequest]:
    """All (item, persona, option order) prompts, in item-major order."""
    backend = as_backend(lm)
    steering, persona_list = _resolve_steering(steering, personas, few_shot)
    settings = _Settings(method, steering, n_samples, temperature, max_tokens, seed)
    return _requests(backend, items, template, persona_list, debias, settings, few_shot)


def _requests(
    backend: Backend,
    items: Sequence[Item],
    template: PromptTemplate,
    persona_list: Sequence[Persona | None],
    debias: str | None,
    settings: _Settings,
    few_shot: FewShot | None,
) -> list[ScoreRequest]:
    model_fp = backend.fingerprint()
    template_fp = template.content_hash()
    extra = settings.key_parts()
    requests = []
    for item in items:
        template.labels_for(item)  # error early when the template has too few labels
        orders = option_orders(item.n_options, debias)
        item_fp = item.content_hash()
        for persona in persona_list:
            persona_fp = persona.content_hash() if persona is not None else "none"
            persona_text = persona.text if settings.steering == "persona" and persona else None
            context = None
            if settings.steering == "few_shot":
                context = few_shot.context(item, persona.persona_id, template.few_shot_format)  # type: ignore[union-attr]
            context_part = (_hash(context),) if context is not None else ()
            for k, perm in enumerate(orders):
                messages = template.messages(
                    item, perm, persona_text, context, settings.method, settings.n_samples
                )
                requests.append(
                    ScoreRequest(
                        item=item,
                        persona=persona,
                        order=k,
                        permutation=perm,
                        prompt=backend.render(template, messages),
                        cache_key=_hash(
                            model_fp, template_fp, item_fp, persona_fp, perm, *extra, *context_part
                        ),
                    )
                )
    return requests


def cache_config(
    backend: LM | Backend, template: PromptTemplate, settings: _Settings | None = None
) -> dict[str, Any]:
    """What a cache file must agree on before its rows are reused."""
    backend = as_backend(backend)
    config: dict[str, Any] = {
        "method": "score",
        "model": backend.name,
        "model_fingerprint": backend.fingerprint(),
        "template_hash": template.content_hash(),
    }
    if settings is not None and not settings.first_format:
        config["expression"] = settings.method
        config["steering"] = settings.steering
        if settings.generative:
            config.update(n_samples=settings.n_samples, temperature=settings.temperature,
                          max_tokens=settings.max_tokens, seed=settings.seed)
    return config


def _to_original(values: np.ndarray, permutation: Sequence[int]) -> np.ndarray:
    original = np.empty_like(values)
    original[list(permutation)] = values
    return original


def _base_row(backend: Backend, request: ScoreRequest, settings: _Settings) -> dict[str, Any]:
    return {
        "model": backend.name,
        "method": settings.method,
        "steering": settings.steering,
        "item": request.item.item_id,
        "persona": request.persona_id,
        "order": request.order,
        "permutation": list(request.permutation),
        "n_options": request.item.n_options,
        "key": request.item.key,
        "options": list(request.item.options),
    }


def _nan_to_none(values: np.ndarray) -> list[float | None]:
    return [None if not np.isfinite(v) else float(v) for v in values]


def _logprob_row(
    backend: Backend, request: ScoreRequest, result: LabelScores, settings: _Settings
) -> dict[str, Any]:
    position = np.asarray(result.scores, dtype=np.float64)
    missing = len(result.missing)
    row = _base_row(backend, request, settings)
    row.update(
        logits=_nan_to_none(_to_original(position, request.permutation)),
        position_logits=_nan_to_none(position),
        probs=_to_original(softmax_seen(position), request.permutation).tolist(),
        label_mass=result.label_mass,
        parse_status="partial" if missing else "ok",
        parse_detail=(
            f"{missing} label(s) outside the server's top log-probs; renormalised over the "
            "labels seen" if missing else ""
        ),
        n_missing_labels=missing,
        completion=None,
        label_token_ids=result.info.get("label_token_ids"),
        prompt=request.prompt.text,
        n_prompt_tokens=result.info.get("n_prompt_tokens"),
        cache_key=request.cache_key,
    )
    return row


def _completion_row(
    backend: Backend,
    request: ScoreRequest,
    completion: str,
    labels: Sequence[str],
    settings: _Settings,
) -> dict[str, Any]:
    if settings.method == "sequence":
        parsed = parse_sequence(completion, labels, settings.n_samples)
    else:
        shown = [request.item.options[o] for o in request.permutation]
        parsed = parse_verbalized(completion, labels, shown)
    row = _base_row(backend, request, settings)
    row.update(
        logits=None,
        position_logits=None,
        probs=_nan_to_none(_to_original(parsed.probs, request.permutation)),
        label_mass=None,
        parse_status=parsed.status,
        parse_detail=parsed.detail,
        n_parsed=parsed.n,
        completion=completion,
        prompt=request.prompt.text,
        cache_key=request.cache_key,
    )
    return row


def score(
    lm: LM | Backend | str | Path,
    items: Sequence[Item] | str | Path | pd.DataFrame,
    template: PromptTemplate | str | Path | None = None,
    personas: Sequence[Persona] | None = None,
    debias: str | None = "cyclic",
    batch_size: int | None = None,
    cache: str | Path | None = None,
    progress: bool = True,
    on_batch: Callable[[list[dict[str, Any]]], None] | None = None,
    share_prefix: bool = True,
    method: str = "logprobs",
    steering: str | None = None,
    few_shot: FewShot | None = None,
    n_samples: int = 30,
    temperature: float = 1.0,
    max_tokens: int | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """The LM's answer distribution for every (item, persona, option order).

    Parameters
    ----------
    lm : a :class:`Backend`, a loaded :class:`LM` (transformers) or a model YAML path
        (``backend:`` in the YAML picks transformers, openai or vllm).
    items : Items, an item file (.jsonl/.csv) or a DataFrame.
    template : PromptTemplate or template YAML; default ``PromptTemplate()``.
    personas : personas (``steering="persona"``) or the groups to steer towards
        (``"few_shot"``: persona ids are the groups of ``few_shot``).
    debias : ``"cyclic"`` (K cyclic shifts), ``"full"`` (K! permutations) or None.
    batch_size : prompts per forward pass (transformers, vLLM) or per cache append
        (servers). Transformers default: on a CPU one (item, persona) group (all its
        option orders, at least 4 prompts), which was fastest there; on a GPU 64.
    cache : JSON Lines file; finished chunks are appended, a rerun skips them.
    on_batch : called with the rows of every finished chunk (after caching).
    share_prefix : transformers only: compute every shared token prefix once (a prefix
        tree with a tree-attention mask; same logits as one prompt at a time up to float
        rounding); ``False`` runs every prompt in full (benchmarks/README.md, W4).
    method : ``"logprobs"``, ``"sequence"`` or ``"verbalized"`` (module docstring).
    steering : ``"none"``, ``"persona"`` or ``"few_shot"``; default ``"few_shot"`` when
        ``few_shot`` is given, else ``"persona"`` with personas, else ``"none"``.
    few_shot : :class:`FewShot` data for ``steering="few_shot"``.
    n_samples : ``sequence``: answers asked for in one completion.
    temperature, max_tokens, seed : sampling of ``sequence``/``verbalized`` completions
        (``temperature=0``: greedy; ``max_tokens`` default ``2 n_samples + 16`` for
        sequence, ``10 K + 24`` for verbalized).

    Returns
    -------
    DataFrame, one row per prompt, in (item, persona, order) order, for every method
    with the columns ``model, method, steering, item, persona, order, permutation,
    n_options, key, options, probs`` (the prompt's distribution, original option order;
    NaN when the answer could not be parsed), ``parse_status`` (``ok``,
    ``renormalised``, ``partial``, ``failed``), ``parse_detail``, ``completion`` (the
    raw answer; None for logprobs), ``prompt``, ``cache_key``; ``logprobs`` adds
    ``logits`` (label scores in the original option order: raw logits locally, log-probs
    from servers; None where a label was missing), ``position_logits`` (label order A, B,
    ...), ``label_mass`` (next-token probability of all labels), ``n_missing_labels``,
    ``label_token_ids``, ``n_prompt_tokens``. ``df.attrs`` holds ``parse_status_counts``
    and ``parse_failure_rate``. :func:`~bayes_align.scoring.option_table` turns it into
    the long (item, persona, option) table.
    """
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    if debias not in DEBIAS:
        raise ValueError(f"debias must be one of {DEBIAS}, got {debias!r}.")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
    if n_samples < 1 or temperature < 0 or (max_tokens is not None and max_tokens < 1):
        raise ValueError("n_samples and max_tokens must be >= 1 and temperature >= 0.")
    backend = as_backend(lm)
    items = load_items(items)
    template = load_template(template) if template is not None else PromptTemplate()
    steering, persona_list = _resolve_steering(steering, personas, few_shot)
    settings = _Settings(method, steering, n_samples, temperature, max_tokens, seed)
    requests = _requests(backend, items, template, persona_list, debias, settings, few_shot)

    store = (
        ScoreCache(cache, cache_config(backend, template, settings)) if cache is not None else None
    )
    results: dict[str, dict[str, Any]] = {}
    if store is not None:
        results.update(
            {r.cache_key: store.rows[r.cache_key] for r in requests if r.cache_key in store}
        )
    pending = [r for r in requests if r.cache_key not in results]
    chat = backend.uses_chat(template)
    label_prefix = template.label_prefix_for(chat)

    def finish(rows: list[dict[str, Any]]) -> None:
        if store is not None:
            store.append(rows)
        results.update({row["cache_key"]: row for row in rows})
        if on_batch is not None:
            on_batch(rows)

    if not settings.generative:
        chunks = backend.label_logprobs(
            [r.prompt for r in pending],
            [tuple(label_prefix + lab for lab in template.labels_for(r.item)) for r in pending],
            [(r.persona_id, r.item.item_id) for r in pending],
            batch_size=batch_size,
            share_prefix=share_prefix,
            progress=progress,
        )
        for index, scores in chunks:
            finish([_logprob_row(backend, pending[i], s, settings) for i, s in zip(index, scores, strict=True)])
    else:
        by_length: dict[int, list[int]] = {}
        for i, request in enumerate(pending):
            by_length.setdefault(settings.max_tokens_for(request.item.n_options), []).append(i)
        for length, members in by_length.items():
            chunks = backend.complete(
                [pending[i].prompt for i in members],
                n=1,
                temperature=temperature,
                max_tokens=length,
                stop=template.stop,
                seed=seed,
                batch_size=batch_size,
                progress=progress,
            )
            for index, texts in chunks:
                rows = []
                for j, completions in zip(index, texts, strict=True):
                    request = pending[members[j]]
                    rows.append(
                        _completion_row(
                            backend, request, completions[0], template.labels_for(request.item),
                            settings,
                        )
                    )
                finish(rows)
    return _frame([results[r.cache_key] for r in requests])


def _frame(rows: Iterable[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(list(rows))
    if not len(frame):
        return frame
    frame["key"] = frame["key"].astype("Int64")
    # rows cached before methods existed are logprobs rows without probs
    defaults = {"method": "logprobs", "steering": None, "parse_status": "ok", "parse_detail": ""}
    for column, value in defaults.items():
        if column not in frame.columns:
            frame[column] = value
    if "steering" in frame.columns and frame["steering"].isna().any():
        frame["steering"] = frame["steering"].fillna(
            frame["persona"].map(lambda p: "none" if p == "default" else "persona")
        )
    if "probs" not in frame.columns:
        frame["probs"] = None
    absent = frame["probs"].isna() & frame["method"].eq("logprobs")
    if absent.any():
        frame.loc[absent, "probs"] = pd.Series(
            [
                _to_original(softmax_seen(np.asarray(p, dtype=float)), perm).tolist()
                for p, perm in zip(frame.loc[absent, "position_logits"], frame.loc[absent, "permutation"], strict=True)
            ],
            index=frame.index[absent],
            dtype=object,
        )
    for column in ("logits", "position_logits", "probs"):
        frame[column] = frame[column].map(
            lambda v: None if v is None or (isinstance(v, float) and math.isnan(v))
            else [math.nan if x is None else x for x in v]
        )
    counts = frame["parse_status"].value_counts()
    frame.attrs["parse_status_counts"] = {str(k): int(v) for k, v in counts.items()}
    frame.attrs["parse_failure_rate"] = float(counts.get("failed", 0) / len(frame))
    _report(frame)
    return frame


def _report(frame: pd.DataFrame) -> None:
    """Warn about every answer that was repaired or lost (never silently)."""
    methods = "/".join(sorted(set(frame["method"])))
    failed = int((frame["parse_status"] == "failed").sum())
    if failed:
        warnings.warn(
            f"{failed} of {len(frame)} {methods} answers ({failed / len(frame):.1%}) could not "
            "be parsed (parse_status 'failed'; their probs are NaN and left out of the "
            "order average). See the 'completion' and 'parse_detail' columns.",
            stacklevel=4,
        )
    if "n_missing_labels" in frame.columns:
        missing = frame["n_missing_labels"].fillna(0)
        if (missing > 0).any():
            warnings.warn(
                f"{int((missing > 0).sum())} of {len(frame)} prompts had {int(missing.sum())} "
                "label(s) outside the server's top log-probs; renormalised over the labels seen "
                "(raise top_logprobs or set missing_labels: echo / error in the model YAML).",
                stacklevel=4,
            )
