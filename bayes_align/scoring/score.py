"""Batched next-token scoring of option labels.

For every (item, persona, option order) the prompt is rendered (chat template applied),
and the LM's next-token logits at the first generated position are read for the option
labels' tokens. With ``debias="cyclic"`` each item is shown in its ``K`` cyclic shifts
(order ``k`` shows original option ``(j + k) mod K`` at position ``j``), with ``"full"``
in all ``K!`` permutations, so every option appears in every position and position bias
averages out. Logits are mapped back to the original option order::

    logits[permutation[j]] = position_logits[j]      (position j carries label j)

Prompts are tokenized once and run under ``torch.inference_mode``, in batches of whole
(item, persona) groups. By default (``share_prefix=True``) the prefix common to the
whole run is computed once and the option orders of each group are packed into one
prefix tree (:mod:`bayes_align.scoring.prefix`): header, persona preamble and stem once
per group, only the option blocks per order; with ``share_prefix=False`` every prompt is
its own row. Rows are padded to the batch's longest and only the logits where a prompt
ends are computed. Every output row keeps the prompt text and the label token ids so any
number can be reproduced by hand.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .cache import ScoreCache
from .items import Item, load_items
from .lm import LM, load_lm
from .personas import Persona
from .prefix import RootCache, common_prefix_length, packed_last_logits
from .templates import PromptTemplate, load_template

__all__ = [
    "score",
    "option_orders",
    "build_requests",
    "resolve_label_tokens",
    "ScoreRequest",
    "LabelTokenError",
]

DEBIAS = ("cyclic", "full", None)
_MAX_FULL_PERMUTATIONS = 5040  # 7!


class LabelTokenError(ValueError):
    """An option label is not one token where the LM would answer."""


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
    prompt: str
    cache_key: str

    @property
    def persona_id(self) -> str:
        return self.persona.persona_id if self.persona is not None else "default"


def _hash(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode("utf-8")).hexdigest()[:24]


def build_requests(
    lm: LM,
    items: Sequence[Item],
    template: PromptTemplate,
    personas: Sequence[Persona] | None = None,
    debias: str | None = "cyclic",
) -> list[ScoreRequest]:
    """All (item, persona, option order) prompts, in item-major order."""
    model_fp = lm.fingerprint()
    template_fp = template.content_hash()
    persona_list: list[Persona | None] = list(personas) if personas else [None]
    requests = []
    for item in items:
        template.labels_for(item)  # error early when the template has too few labels
        orders = option_orders(item.n_options, debias)
        item_fp = item.content_hash()
        for persona in persona_list:
            persona_text = persona.text if persona is not None else None
            persona_fp = persona.content_hash() if persona is not None else "none"
            for k, perm in enumerate(orders):
                requests.append(
                    ScoreRequest(
                        item=item,
                        persona=persona,
                        order=k,
                        permutation=perm,
                        prompt=template.render(lm.tokenizer, item, perm, persona_text),
                        cache_key=_hash(model_fp, template_fp, item_fp, persona_fp, perm),
                    )
                )
    return requests


def _tokenize(lm: LM, texts: list[str], chat: bool) -> list[list[int]]:
    encoded = lm.tokenizer(texts, add_special_tokens=not chat)["input_ids"]
    return [list(ids) for ids in encoded]


def resolve_label_tokens(
    lm: LM,
    template: PromptTemplate,
    prompts: Sequence[str],
    prompt_ids: Sequence[Sequence[int]],
    n_labels: int,
) -> list[int]:
    """Token id of each label where the LM would answer, checked on every prompt.

    For each prompt ``p`` and label ``l`` the tokenization of ``p + label_prefix + l``
    must equal ``tokens(p) + [one token]``, and that token must be the same for all
    prompts and differ between labels. Otherwise :class:`LabelTokenError` names the label.
    """
    chat = template.chat_for(lm.tokenizer)
    prefix = template.label_prefix_for(chat)
    labels = template.option_labels[:n_labels]
    label_ids: list[int] = []
    for label in labels:
        extended = _tokenize(lm, [p + prefix + label for p in prompts], chat)
        found: set[int] = set()
        for base, ext, prompt in zip(prompt_ids, extended, prompts, strict=True):
            if len(ext) != len(base) + 1:
                pieces = lm.tokenizer.convert_ids_to_tokens(ext[len(base) - 1 :])
                raise LabelTokenError(
                    f"Option label {label!r} (text {prefix + label!r}) is not a single token after "
                    f"the prompt: the prompt end plus label tokenizes as {pieces}. Use one-token "
                    f"labels (e.g. A, B, C) or set label_prefix in the template. Prompt end: "
                    f"{prompt[-60:]!r}"
                )
            if list(ext[: len(base)]) != list(base):
                raise LabelTokenError(
                    f"Option label {label!r} tokenizes differently after the chat template: "
                    f"appending {prefix + label!r} changes the prompt's own tokens (it merges with "
                    f"the prompt end {prompt[-30:]!r}). Change label_prefix or answer_prefix."
                )
            found.add(int(ext[-1]))
        if len(found) != 1:
            raise LabelTokenError(
                f"Option label {label!r} maps to different tokens {sorted(found)} in different "
                "prompts; the prompt end must not vary between prompts."
            )
        label_ids.append(found.pop())
    if len(set(label_ids)) != len(label_ids):
        raise LabelTokenError(
            f"Option labels {labels} share tokens {label_ids}; use labels that tokenize apart."
        )
    return label_ids


def _rows_for_batch(
    lm: LM,
    requests: Sequence[ScoreRequest],
    batch_ids: list[list[int]],
    label_ids: dict[int, list[int]],
    group_sizes: Sequence[int],
    root: RootCache | None = None,
) -> list[dict[str, Any]]:
    """Rows for consecutive groups of requests (each group one packed prefix tree)."""
    import torch

    cut = root.length if root is not None else 0
    bounds = np.cumsum([0, *group_sizes])
    groups = [
        [ids[cut:] for ids in batch_ids[a:b]] for a, b in zip(bounds[:-1], bounds[1:], strict=True)
    ]
    logits = torch.cat(
        packed_last_logits(lm.model, groups, lm.tokenizer.pad_token_id, lm.device, root)
    )
    log_norm = torch.logsumexp(logits, dim=-1)
    rows = []
    for r, request in enumerate(requests):
        ids = label_ids[request.item.n_options]
        position_logits = logits[r, ids]
        label_mass = float(torch.exp(torch.logsumexp(position_logits, 0) - log_norm[r]))
        position_logits = position_logits.cpu().numpy().astype(np.float64)
        original = np.empty_like(position_logits)
        original[list(request.permutation)] = position_logits
        rows.append(
            {
                "model": lm.name,
                "item": request.item.item_id,
                "persona": request.persona_id,
                "order": request.order,
                "permutation": list(request.permutation),
                "n_options": request.item.n_options,
                "key": request.item.key,
                "logits": original.tolist(),
                "position_logits": position_logits.tolist(),
                "label_mass": label_mass,
                "label_token_ids": list(ids),
                "prompt": request.prompt,
                "n_prompt_tokens": len(batch_ids[r]),
                "cache_key": request.cache_key,
            }
        )
    return rows


def cache_config(lm: LM, template: PromptTemplate, method: str = "score") -> dict[str, Any]:
    """What a cache file must agree on before its rows are reused."""
    return {
        "method": method,
        "model": lm.name,
        "model_fingerprint": lm.fingerprint(),
        "template_hash": template.content_hash(),
    }


def score(
    lm: LM | str | Path,
    items: Sequence[Item] | str | Path | pd.DataFrame,
    template: PromptTemplate | str | Path | None = None,
    personas: Sequence[Persona] | None = None,
    debias: str | None = "cyclic",
    batch_size: int | None = None,
    cache: str | Path | None = None,
    progress: bool = True,
    on_batch: Callable[[list[dict[str, Any]]], None] | None = None,
    share_prefix: bool = True,
) -> pd.DataFrame:
    """Next-token logits of the option labels for every (item, persona, option order).

    Parameters
    ----------
    lm : a loaded :class:`LM` or a model YAML path.
    items : Items, an item file (.jsonl/.csv) or a DataFrame.
    template : PromptTemplate or template YAML; default ``PromptTemplate()``.
    personas : optional personas; each item is shown to each persona.
    debias : ``"cyclic"`` (K cyclic shifts), ``"full"`` (K! permutations) or None.
    batch_size : prompts per forward pass. Default: on a CPU one (item, persona) group
        (all its option orders, at least 4 prompts), which was fastest there (larger
        batches spill the activations out of the CPU caches; benchmarks/README.md, W4);
        on a GPU 64. A group larger than ``batch_size`` is split (and shares less).
    cache : JSON Lines file; finished batches are appended, a rerun skips them.
    on_batch : called with the rows of every finished batch (after caching).
    share_prefix : compute every shared token prefix once: the run-wide prefix (chat
        header, system prompt) once per run and the header, persona preamble and stem of
        each (item, persona) once for all its option orders (a prefix tree with a
        tree-attention mask; same logits as one prompt at a time up to float rounding).
        With ``debias="cyclic"`` on the NAEP items it computes about half the tokens;
        ``False`` runs every prompt in full (see benchmarks/README.md, W4).

    Returns
    -------
    DataFrame, one row per prompt, in (item, persona, order) order, with columns
    ``model, item, persona, order, permutation, n_options, key, logits`` (original option
    order), ``position_logits`` (label order A, B, ...), ``label_mass`` (softmax mass of
    the label tokens over the whole vocabulary), ``label_token_ids``, ``prompt``,
    ``n_prompt_tokens``, ``cache_key``.
    """
    import torch

    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    if debias not in DEBIAS:
        raise ValueError(f"debias must be one of {DEBIAS}, got {debias!r}.")
    lm = lm if isinstance(lm, LM) else load_lm(lm)
    items = load_items(items)
    template = load_template(template) if template is not None else PromptTemplate()
    requests = build_requests(lm, items, template, personas, debias)
    chat = template.chat_for(lm.tokenizer)

    store = ScoreCache(cache, cache_config(lm, template)) if cache is not None else None
    pending = [r for r in requests if store is None or r.cache_key not in store]
    pending_ids = _tokenize(lm, [r.prompt for r in pending], chat) if pending else []

    label_ids: dict[int, list[int]] = {}
    for n_options in sorted({r.item.n_options for r in pending}):
        subset = [i for i, r in enumerate(pending) if r.item.n_options == n_options]
        label_ids[n_options] = resolve_label_tokens(
            lm,
            template,
            [pending[i].prompt for i in subset],
            [pending_ids[i] for i in subset],
            n_options,
        )

    results: dict[str, dict[str, Any]] = {}
    if store is not None:
        results.update(
            {r.cache_key: store.rows[r.cache_key] for r in requests if r.cache_key in store}
        )

    if batch_size is None:
        batch_size = _default_batch_size(lm, pending)
    batches = _plan_batches(pending, pending_ids, batch_size, share_prefix)
    with (
        torch.inference_mode(),
        tqdm(
            total=len(pending), desc=f"scoring {lm.name}", unit="prompt", disable=not progress
        ) as bar,
    ):
        root = None
        if share_prefix and pending:
            root_length = common_prefix_length(pending_ids)
            if root_length > 0:
                root = RootCache.compute(lm.model, pending_ids[0][:root_length], lm.device)
        for groups in batches:
            batch = [i for group in groups for i in group]
            rows = _rows_for_batch(
                lm,
                [pending[i] for i in batch],
                [pending_ids[i] for i in batch],
                label_ids,
                [len(group) for group in groups],
                root,
            )
            if store is not None:
                store.append(rows)
            results.update({row["cache_key"]: row for row in rows})
            bar.update(len(batch))
            if on_batch is not None:
                on_batch(rows)
    return _frame([results[r.cache_key] for r in requests])


def _default_batch_size(lm: LM, pending: Sequence[ScoreRequest]) -> int:
    """One (item, persona) group of option orders (at least 4 prompts) on a CPU, 64 on a GPU."""
    if lm.device != "cpu":
        return 64
    sizes: dict[tuple[str, str], int] = {}
    for request in pending:
        key = (request.persona_id, request.item.item_id)
        sizes[key] = sizes.get(key, 0) + 1
    return max([4, *sizes.values()])


def _plan_batches(
    pending: Sequence[ScoreRequest],
    pending_ids: Sequence[Sequence[int]],
    batch_size: int,
    share_prefix: bool,
) -> list[list[list[int]]]:
    """Batches of groups of request indices; one group is one packed row.

    Without ``share_prefix`` every prompt is its own group, longest first. With it a
    group is all option orders of one (item, persona) (split into chunks of
    ``batch_size`` when larger), a persona's groups are adjacent and longest first, and a
    batch holds whole groups, up to ``batch_size`` prompts.
    """
    if not share_prefix:
        order = sorted(range(len(pending)), key=lambda i: -len(pending_ids[i]))
        return [[[i] for i in order[s : s + batch_size]] for s in range(0, len(order), batch_size)]
    by_key: dict[tuple[str, str], list[int]] = {}
    for i, request in enumerate(pending):
        by_key.setdefault((request.persona_id, request.item.item_id), []).append(i)
    ordered = sorted(
        by_key.items(), key=lambda kv: (kv[0][0], -sum(len(pending_ids[i]) for i in kv[1]))
    )
    batches: list[list[list[int]]] = []
    current: list[list[int]] = []
    chunks = [g[s : s + batch_size] for _, g in ordered for s in range(0, len(g), batch_size)]
    for group in chunks:
        if current and sum(map(len, current)) + len(group) > batch_size:
            batches.append(current)
            current = []
        current.append(group)
    if current:
        batches.append(current)
    return batches


def _frame(rows: Iterable[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(list(rows))
    if len(frame):
        frame["key"] = frame["key"].astype("Int64")
    return frame
