"""The request interface every scoring backend implements.

A backend turns rendered prompts into two kinds of answers, as lm-evaluation-harness
and vLLM do:

- :meth:`Backend.label_logprobs`: the next-token log-probabilities of given label
  strings (``"A"``, ``" B"``, ...) after each prompt, the basis of ``method="logprobs"``;
- :meth:`Backend.complete`: sampled text completions (``n``, ``temperature``,
  ``max_tokens``, ``stop``, ``seed``), the basis of ``method="sequence"`` and
  ``"verbalized"``.

Both take the whole list of pending prompts and yield ``(indices, results)`` chunks as
they finish, in any order, so the caller can append every chunk to its cache at once
and a killed run loses at most the chunks in flight. :meth:`Backend.fingerprint` names
everything that determines the numbers and goes into every cache key.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = ["Backend", "LabelScores", "MissingLabelError", "Prompt"]


class MissingLabelError(ValueError):
    """A label's log-probability was not among those the server returned."""


@dataclass(frozen=True)
class Prompt:
    """One rendered prompt.

    ``text`` is exactly what a completion endpoint or a local model reads; ``chat`` says
    whether it already holds a chat template's special tokens (tokenize it without adding
    special tokens); ``messages`` are the chat messages for chat endpoints, which apply
    the template server-side (``text`` is then their JSON, kept for the audit trail).
    """

    text: str
    chat: bool = False
    messages: tuple[Mapping[str, str], ...] | None = None


@dataclass
class LabelScores:
    """Label scores of one prompt, in label (position) order.

    ``scores`` are log-probabilities up to one additive constant per prompt (raw logits
    for local models, log-probs for servers; softmax over them is the label
    distribution); NaN where the backend could not see a label (``missing`` lists those
    positions). ``label_mass`` is the total next-token probability of the labels over
    the whole vocabulary (NaN when unknown). ``info`` holds audit data such as token ids.
    """

    scores: np.ndarray
    label_mass: float
    missing: tuple[int, ...] = ()
    info: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Backend(Protocol):
    """What :func:`bayes_align.scoring.score` needs from an LM."""

    name: str

    def fingerprint(self) -> str:
        """Short hash of everything that determines this backend's numbers."""
        ...

    def uses_chat(self, template: Any) -> bool:
        """Whether prompts rendered with ``template`` go through a chat template."""
        ...

    def render(self, template: Any, messages: Sequence[Mapping[str, str]]) -> Prompt:
        """The prompt for chat ``messages`` built by ``template`` (see PromptTemplate)."""
        ...

    def label_logprobs(
        self,
        prompts: Sequence[Prompt],
        labels: Sequence[tuple[str, ...]],
        groups: Sequence[Hashable],
        batch_size: int | None = None,
        share_prefix: bool = True,
        progress: bool = True,
    ) -> Iterator[tuple[list[int], list[LabelScores]]]:
        """Label scores of ``labels[i]`` (full label texts, prefix included) after
        ``prompts[i]``; prompts with equal ``groups`` share most of their text (the
        option orders of one item and persona), which local backends exploit.
        ``batch_size`` and ``share_prefix`` are hints a backend may ignore."""
        ...

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
        """``n`` sampled completions of each prompt."""
        ...
