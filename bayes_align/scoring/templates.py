"""Prompt templates: how an item (and a persona) becomes the text sent to an LM.

A prompt is built from blocks joined by ``separator``::

    [instructions_before_passage] [passage] [instructions_before_item] stem
    <label><sep><option> ... (one line per option, in the presented order)
    [instructions_after_item]

This user message goes through the model's chat template (with the system prompt and,
depending on ``persona_placement``, the persona preamble as the system message) when the
tokenizer has one; otherwise the blocks are joined as plain text and ``answer_prefix``
(default ``"Answer:"``) is appended. The LM's answer is read at the next token: the
option label (``label_prefix + label``, e.g. ``"A"`` after a chat template or ``" A"``
after ``"Answer:"``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from .items import Item

__all__ = ["PromptTemplate", "load_template"]

_DEFAULT_LABELS = tuple("ABCDEFGHIJ")


@dataclass(frozen=True)
class PromptTemplate:
    """Prompt layout for scoring items; load from YAML with :func:`load_template`."""

    system_prompt: str | None = None
    instructions_before_passage: str | None = None
    instructions_before_item: str | None = None
    instructions_after_item: str | None = None
    option_labels: tuple[str, ...] = _DEFAULT_LABELS
    option_format: str = "{label}) {option}"
    option_separator: str = "\n"
    separator: str = "\n\n"
    persona_placement: str = "system"
    use_chat_template: bool | None = None
    answer_prefix: str | None = None
    label_prefix: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "option_labels", tuple(str(x) for x in self.option_labels))
        if len(set(self.option_labels)) != len(self.option_labels):
            raise ValueError(f"option_labels {self.option_labels} contain duplicates.")
        if self.persona_placement not in ("system", "user"):
            raise ValueError(
                f"persona_placement must be 'system' or 'user', got {self.persona_placement!r}."
            )
        for name in ("{label}", "{option}"):
            if name not in self.option_format:
                raise ValueError(f"option_format {self.option_format!r} must contain {name}.")

    # ------------------------------------------------------------------ rendering
    def labels_for(self, item: Item) -> tuple[str, ...]:
        """The labels of the item's option positions (first ``n_options`` labels)."""
        if item.n_options > len(self.option_labels):
            raise ValueError(
                f"Item {item.item_id!r} has {item.n_options} options but the template has only "
                f"{len(self.option_labels)} option_labels {self.option_labels}; add labels."
            )
        return self.option_labels[: item.n_options]

    def user_message(
        self, item: Item, permutation: Sequence[int], persona_text: str | None = None
    ) -> str:
        """The user turn: position ``j`` shows ``item.options[permutation[j]]``."""
        labels = self.labels_for(item)
        option_lines = self.option_separator.join(
            self.option_format.format(label=labels[j], option=item.options[o])
            for j, o in enumerate(permutation)
        )
        blocks = []
        if persona_text and self.persona_placement == "user":
            blocks.append(persona_text)
        if item.passage:
            blocks += [self.instructions_before_passage, item.passage]
        blocks += [self.instructions_before_item, item.stem, option_lines]
        blocks.append(self.instructions_after_item)
        return self.separator.join(b for b in blocks if b)

    def system_message(self, persona_text: str | None = None) -> str | None:
        parts = []
        if persona_text and self.persona_placement == "system":
            parts.append(persona_text)
        if self.system_prompt:
            parts.append(self.system_prompt)
        return self.separator.join(parts) if parts else None

    def messages(
        self, item: Item, permutation: Sequence[int], persona_text: str | None = None
    ) -> list[dict[str, str]]:
        """Chat messages (``[{"role": "system", ...}, {"role": "user", ...}]``)."""
        system = self.system_message(persona_text)
        user = self.user_message(item, permutation, persona_text)
        return ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": user}
        ]

    def chat_for(self, tokenizer: Any) -> bool:
        """Whether prompts for this tokenizer go through its chat template."""
        has_template = bool(getattr(tokenizer, "chat_template", None))
        if self.use_chat_template is None:
            return has_template
        if self.use_chat_template and not has_template:
            raise ValueError(
                "The template sets use_chat_template: true but the tokenizer has no chat "
                "template; set use_chat_template: false (plain-text prompt)."
            )
        return bool(self.use_chat_template)

    def answer_prefix_for(self, chat: bool) -> str:
        if self.answer_prefix is not None:
            return self.answer_prefix
        return "" if chat else self.separator + "Answer:"

    def label_prefix_for(self, chat: bool) -> str:
        if self.label_prefix is not None:
            return self.label_prefix
        return "" if chat else " "

    def render(
        self,
        tokenizer: Any,
        item: Item,
        permutation: Sequence[int],
        persona_text: str | None = None,
    ) -> str:
        """The full prompt text, exactly as passed to the tokenizer."""
        chat = self.chat_for(tokenizer)
        if chat:
            text = tokenizer.apply_chat_template(
                self.messages(item, permutation, persona_text),
                tokenize=False,
                add_generation_prompt=True,
            )
        else:
            system = self.system_message(persona_text)
            user = self.user_message(item, permutation, persona_text)
            text = self.separator.join(b for b in (system, user) if b)
        return text + self.answer_prefix_for(chat)

    # ------------------------------------------------------------------ identity
    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["option_labels"] = list(self.option_labels)
        return data

    def content_hash(self) -> str:
        payload = json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PromptTemplate:
        """Build from a mapping; unknown keys are an error (a typo must not be ignored)."""
        known = {f.name for f in fields(cls)}
        aliases = {"system": "system_prompt", "labels": "option_labels"}
        data = {aliases.get(k, k): v for k, v in dict(data or {}).items()}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"Unknown prompt template key(s) {unknown}; valid keys are {sorted(known)}."
            )
        if "option_labels" in data:
            labels = data["option_labels"]
            data["option_labels"] = tuple(labels.split(",") if isinstance(labels, str) else labels)
        return cls(**data)


def load_template(source: str | Path | Mapping[str, Any] | PromptTemplate) -> PromptTemplate:
    """A PromptTemplate from a YAML file, a mapping, or an existing template.

    The YAML keys are the field names, e.g. the NAEP ``prompt-without-passage.yaml``::

        instructions_before_item: "Select the correct answer to the following question."
        instructions_after_item: "Respond only with the letter of the answer (A, B, C, or D)."
    """
    if isinstance(source, PromptTemplate):
        return source
    if isinstance(source, Mapping):
        return PromptTemplate.from_dict(source)
    path = Path(source)
    if not path.is_file():
        raise ValueError(f"Prompt template file {path} does not exist.")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if data is not None and not isinstance(data, Mapping):
        raise ValueError(f"{path} must hold a YAML mapping of template fields.")
    return PromptTemplate.from_dict(data or {})
