"""The local ``transformers`` backend (the default): batched next-token label scores
through prefix trees, and sampled completions through ``model.generate``.

Prompts are tokenized once and run under ``torch.inference_mode``, in batches of whole
groups (the option orders of one item and persona). By default (``share_prefix=True``)
the prefix common to the whole run is computed once and each group is packed into one
prefix tree (:mod:`bayes_align.scoring.prefix`); with ``share_prefix=False`` every
prompt is its own row. Rows are padded to the batch's longest and only the logits where
a prompt ends are computed. Each label must be one token after every prompt
(:class:`LabelTokenError` otherwise).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..lm import LM
from ..prefix import RootCache, common_prefix_length, packed_last_logits
from .base import LabelScores, Prompt

__all__ = ["TransformersBackend", "LabelTokenError", "resolve_label_tokens", "tokenize_with_labels"]


class LabelTokenError(ValueError):
    """An option label is not one token where the LM would answer."""


def _tokenize(tokenizer: Any, prompts: Sequence[Prompt]) -> list[list[int]]:
    ids: list[list[int] | None] = [None] * len(prompts)
    for chat in (True, False):
        index = [i for i, p in enumerate(prompts) if p.chat == chat]
        if index:
            encoded = tokenizer([prompts[i].text for i in index], add_special_tokens=not chat)
            for i, row in zip(index, encoded["input_ids"], strict=True):
                ids[i] = list(row)
    return ids  # type: ignore[return-value]


def resolve_label_tokens(
    tokenizer: Any,
    prompts: Sequence[Prompt],
    prompt_ids: Sequence[Sequence[int]],
    labels: Sequence[str],
) -> list[int]:
    """Token id of each label (full text, prefix included) where the LM would answer,
    checked on every prompt.

    For each prompt ``p`` and label ``l`` the tokenization of ``p + l`` must equal
    ``tokens(p) + [one token]``, and that token must be the same for all prompts and
    differ between labels. Otherwise :class:`LabelTokenError` names the label.
    """
    label_ids = []
    for label in labels:
        extended = _tokenize(tokenizer, [Prompt(p.text + label, p.chat) for p in prompts])
        found: set[int] = set()
        for base, ext, prompt in zip(prompt_ids, extended, prompts, strict=True):
            if len(ext) != len(base) + 1:
                pieces = tokenizer.convert_ids_to_tokens(ext[len(base) - 1 :])
                raise LabelTokenError(
                    f"Option label {label.strip()!r} (text {label!r}) is not a single token after "
                    f"the prompt: the prompt end plus label tokenizes as {pieces}. Use one-token "
                    f"labels (e.g. A, B, C) or set label_prefix in the template. Prompt end: "
                    f"{prompt.text[-60:]!r}"
                )
            if list(ext[: len(base)]) != list(base):
                raise LabelTokenError(
                    f"Option label {label.strip()!r} tokenizes differently after the chat "
                    f"template: appending {label!r} changes the prompt's own tokens (it merges "
                    f"with the prompt end {prompt.text[-30:]!r}). Change label_prefix or "
                    "answer_prefix."
                )
            found.add(int(ext[-1]))
        if len(found) != 1:
            raise LabelTokenError(
                f"Option label {label.strip()!r} maps to different tokens {sorted(found)} in "
                "different prompts; the prompt end must not vary between prompts."
            )
        label_ids.append(found.pop())
    if len(set(label_ids)) != len(label_ids):
        raise LabelTokenError(
            f"Option labels {[lab.strip() for lab in labels]} share tokens {label_ids}; use "
            "labels that tokenize apart."
        )
    return label_ids


def tokenize_with_labels(
    tokenizer: Any, prompts: Sequence[Prompt], labels: Sequence[tuple[str, ...]]
) -> tuple[list[list[int]], dict[tuple[str, ...], list[int]]]:
    """Token ids of every prompt, and the checked token id of each label of every label
    set (:func:`resolve_label_tokens` over the prompts that use that set)."""
    ids = _tokenize(tokenizer, prompts)
    label_ids: dict[tuple[str, ...], list[int]] = {}
    for label_set in dict.fromkeys(labels):
        subset = [i for i, lab in enumerate(labels) if lab == label_set]
        label_ids[label_set] = resolve_label_tokens(
            tokenizer, [prompts[i] for i in subset], [ids[i] for i in subset], label_set
        )
    return ids, label_ids


def plan_batches(
    groups: Sequence[Hashable],
    lengths: Sequence[int],
    batch_size: int,
    share_prefix: bool,
) -> list[list[list[int]]]:
    """Batches of groups of prompt indices; one group is one packed row.

    Without ``share_prefix`` every prompt is its own group, longest first. With it a
    group is all prompts of one ``groups`` key (split into chunks of ``batch_size`` when
    larger), longest groups first within runs of equal first key element (a persona's
    groups stay adjacent), and a batch holds whole groups, up to ``batch_size`` prompts.
    """
    if not share_prefix:
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        return [[[i] for i in order[s : s + batch_size]] for s in range(0, len(order), batch_size)]
    by_key: dict[Hashable, list[int]] = {}
    for i, key in enumerate(groups):
        by_key.setdefault(key, []).append(i)

    def outer(key: Hashable) -> str:
        return str(key[0]) if isinstance(key, tuple) else ""

    ordered = sorted(by_key.items(), key=lambda kv: (outer(kv[0]), -sum(lengths[i] for i in kv[1])))
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


class TransformersBackend:
    """A loaded :class:`LM` behind the :class:`~bayes_align.scoring.backends.Backend`
    interface."""

    def __init__(self, lm: LM):
        self.lm = lm
        self.name = lm.name
        self.tokenizer = lm.tokenizer

    def __repr__(self) -> str:
        return f"TransformersBackend({self.lm!r})"

    def fingerprint(self) -> str:
        return self.lm.fingerprint()

    def uses_chat(self, template: Any) -> bool:
        return template.chat_for(self.tokenizer)

    def render(self, template: Any, messages: Sequence[Mapping[str, str]]) -> Prompt:
        return Prompt(template.render_messages(self.tokenizer, messages), self.uses_chat(template))

    def default_batch_size(self, groups: Sequence[Hashable]) -> int:
        """One group (at least 4 prompts) on a CPU, which measured fastest there (larger
        batches spill the activations out of the CPU caches; benchmarks/README.md, W4);
        64 on a GPU."""
        if self.lm.device != "cpu":
            return 64
        sizes: dict[Hashable, int] = {}
        for key in groups:
            sizes[key] = sizes.get(key, 0) + 1
        return max([4, *sizes.values()])

    def label_logprobs(
        self,
        prompts: Sequence[Prompt],
        labels: Sequence[tuple[str, ...]],
        groups: Sequence[Hashable],
        batch_size: int | None = None,
        share_prefix: bool = True,
        progress: bool = True,
    ) -> Iterator[tuple[list[int], list[LabelScores]]]:
        import torch

        if not prompts:
            return
        ids, label_ids = tokenize_with_labels(self.tokenizer, prompts, labels)
        if batch_size is None:
            batch_size = self.default_batch_size(groups)
        batches = plan_batches(groups, [len(x) for x in ids], batch_size, share_prefix)
        model = self.lm.model
        with (
            torch.inference_mode(),
            tqdm(total=len(prompts), desc=f"scoring {self.name}", unit="prompt",
                 disable=not progress) as bar,
        ):
            root = None
            if share_prefix:
                root_length = common_prefix_length(ids)
                if root_length > 0:
                    root = RootCache.compute(model, ids[0][:root_length], self.lm.device)
            cut = root.length if root is not None else 0
            for batch_groups in batches:
                logits = torch.cat(
                    packed_last_logits(
                        model,
                        [[ids[i][cut:] for i in group] for group in batch_groups],
                        self.tokenizer.pad_token_id,
                        self.lm.device,
                        root,
                    )
                )
                log_norm = torch.logsumexp(logits, dim=-1)
                batch = [i for group in batch_groups for i in group]
                results = []
                for r, i in enumerate(batch):
                    token_ids = label_ids[labels[i]]
                    row = logits[r, token_ids]
                    mass = float(torch.exp(torch.logsumexp(row, 0) - log_norm[r]))
                    results.append(
                        LabelScores(
                            scores=row.cpu().numpy().astype(np.float64),
                            label_mass=mass,
                            info={"label_token_ids": list(token_ids), "n_prompt_tokens": len(ids[i])},
                        )
                    )
                bar.update(len(batch))
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
        """Pure sampling (``top_k=0, top_p=1``) at ``temperature``; ``temperature=0`` is
        greedy. Text after the first ``stop`` string is cut."""
        import torch

        if not prompts:
            return
        batch_size = batch_size or (16 if self.lm.device == "cpu" else 64)
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i].text))
        torch.manual_seed(seed)
        tokenizer = self.tokenizer
        sampling: dict[str, Any] = (
            {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0}
            if temperature > 0
            else {"do_sample": False}
        )
        with (
            torch.inference_mode(),
            tqdm(total=len(prompts), desc=f"generating {self.name}", unit="prompt",
                 disable=not progress) as bar,
        ):
            for start in range(0, len(order), batch_size):
                batch = order[start : start + batch_size]
                texts: dict[int, list[str]] = {}
                for chat in (True, False):
                    part = [i for i in batch if prompts[i].chat == chat]
                    if not part:
                        continue
                    encoded = tokenizer(
                        [prompts[i].text for i in part],
                        add_special_tokens=not chat,
                        padding=True,
                        return_tensors="pt",
                    ).to(self.lm.device)
                    output = self.lm.model.generate(
                        **encoded,
                        **sampling,
                        num_return_sequences=n,
                        max_new_tokens=max_tokens,
                        pad_token_id=tokenizer.pad_token_id,
                        stop_strings=list(stop) or None,
                        tokenizer=tokenizer if stop else None,
                    )
                    decoded = tokenizer.batch_decode(
                        output[:, encoded["input_ids"].shape[1] :], skip_special_tokens=True
                    )
                    for j, i in enumerate(part):
                        texts[i] = [_cut(t, stop) for t in decoded[j * n : (j + 1) * n]]
                bar.update(len(batch))
                yield batch, [texts[i] for i in batch]


def _cut(text: str, stop: Sequence[str]) -> str:
    """``text`` up to the first stop string (generation may overrun it by a token)."""
    ends = [text.find(s) for s in stop if s and s in text]
    return text[: min(ends)] if ends else text
