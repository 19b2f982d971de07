"""Generation-based answers: sample a short completion and parse the option label.

This is how chat-only LMs (no logits) are used; any backend's ``complete`` serves. For each (item, persona) ``n_samples``
completions are drawn; sample ``s`` shows the options in order ``s mod R`` of the
``debias`` orders, so positions are balanced across samples. The completion is parsed
to a label (leading label such as ``"B"``, ``"(B)"``, ``"B) ..."``, else the single label
that occurs as a word); unparsed answers get ``choice = NaN`` and the parse-failure rate
is reported. The output has the same identifying columns as :func:`score` and feeds
:func:`bayes_align.scoring.to_responses` (each persona x sample is one simulated person).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from .backends import Backend, as_backend
from .cache import ScoreCache
from .items import Item, load_items
from .lm import LM
from .personas import Persona
from .score import DEBIAS, _hash, option_orders
from .templates import PromptTemplate, load_template

__all__ = ["generate", "parse_choice"]


def parse_choice(text: str, labels: Sequence[str]) -> int | None:
    """Position of the label the completion ``text`` answers with, or None."""
    flags = re.IGNORECASE if all(len(label) > 1 for label in labels) else 0
    stripped = text.strip()
    for position, label in enumerate(labels):
        if re.match(rf"^[\s\(\[\*\"']*{re.escape(label)}(?!\w)", stripped, flags):
            return position
    found = [
        position
        for position, label in enumerate(labels)
        if re.search(rf"(?<!\w){re.escape(label)}(?!\w)", stripped, flags)
    ]
    return found[0] if len(found) == 1 else None


def generate(
    lm: LM | Backend | str | Path,
    items: Sequence[Item] | str | Path | pd.DataFrame,
    template: PromptTemplate | str | Path | None = None,
    personas: Sequence[Persona] | None = None,
    n_samples: int = 1,
    debias: str | None = "cyclic",
    temperature: float = 1.0,
    max_new_tokens: int = 8,
    seed: int = 0,
    batch_size: int = 16,
    cache: str | Path | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Sampled answers, one row per (item, persona, sample), from any backend.

    Columns: ``model, item, persona, sample, order, permutation, n_options, key,
    completion, position`` (label position parsed, NaN if none), ``choice`` (original
    option index, NaN if unparsed), ``prompt``, ``cache_key``. ``df.attrs["parse_failure_rate"]``
    holds the share of unparsed completions (also warned about when positive).
    """
    if debias not in DEBIAS:
        raise ValueError(f"debias must be one of {DEBIAS}, got {debias!r}.")
    if n_samples < 1 or max_new_tokens < 1 or temperature <= 0:
        raise ValueError("n_samples and max_new_tokens must be >= 1 and temperature > 0.")
    backend = as_backend(lm)
    items = load_items(items)
    template = load_template(template) if template is not None else PromptTemplate()
    model_fp, template_fp = backend.fingerprint(), template.content_hash()
    config = {
        "method": "generate",
        "model": backend.name,
        "model_fingerprint": model_fp,
        "template_hash": template_fp,
        "temperature": temperature,
        "max_new_tokens": max_new_tokens,
        "seed": seed,
    }
    store = ScoreCache(cache, config) if cache is not None else None

    requests = []
    for item in items:
        orders = option_orders(item.n_options, debias)
        for persona in list(personas) if personas else [None]:
            text = persona.text if persona is not None else None
            for sample in range(n_samples):
                k = sample % len(orders)
                requests.append(
                    {
                        "item": item,
                        "persona": persona.persona_id if persona is not None else "default",
                        "sample": sample,
                        "order": k,
                        "permutation": orders[k],
                        "prompt": backend.render(template, template.messages(item, orders[k], text)),
                        "cache_key": _hash(
                            model_fp,
                            template_fp,
                            item.content_hash(),
                            persona.content_hash() if persona is not None else "none",
                            orders[k],
                            sample,
                        ),
                    }
                )
    results: dict[str, dict[str, Any]] = {}
    pending = []
    for request in requests:
        if store is not None and request["cache_key"] in store:
            results[request["cache_key"]] = store.rows[request["cache_key"]]
        else:
            pending.append(request)
    chunks = backend.complete(
        [r["prompt"] for r in pending],
        n=1,
        temperature=temperature,
        max_tokens=max_new_tokens,
        seed=seed,
        batch_size=batch_size,
        progress=progress,
    )
    for index, texts in chunks:
        rows = []
        for i, completions in zip(index, texts, strict=True):
            request, completion = pending[i], completions[0]
            item = request["item"]
            position = parse_choice(completion, template.labels_for(item))
            rows.append(
                {
                    "model": backend.name,
                    "item": item.item_id,
                    "persona": request["persona"],
                    "sample": request["sample"],
                    "order": request["order"],
                    "permutation": list(request["permutation"]),
                    "n_options": item.n_options,
                    "key": item.key,
                    "completion": completion,
                    "position": position,
                    "choice": None if position is None else request["permutation"][position],
                    "prompt": request["prompt"].text,
                    "cache_key": request["cache_key"],
                }
            )
        if store is not None:
            store.append(rows)
        results.update({row["cache_key"]: row for row in rows})
    frame = pd.DataFrame([results[r["cache_key"]] for r in requests])
    frame["key"] = frame["key"].astype("Int64")
    frame["choice"] = frame["choice"].astype("Float64").astype("float64")
    rate = float(frame["choice"].isna().mean())
    frame.attrs["parse_failure_rate"] = rate
    if rate > 0:
        warnings.warn(
            f"{rate:.1%} of the {len(frame)} completions could not be parsed to an option label.",
            stacklevel=2,
        )
    return frame
