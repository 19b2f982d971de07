"""Prompt templates: how an item (and a persona) becomes the text sent to an LM.

A prompt is built from blocks joined by ``separator``::

    [instructions_before_passage] [passage] [instructions_before_item] [context]
    stem_format(stem)
    <label><sep><option> ... (one line per option, in the presented order)
    [answer instructions of the expression method]

The answer instructions are ``instructions_after_item`` for ``method="logprobs"``,
``sequence_instructions`` for ``"sequence"`` and ``verbalized_instructions`` for
``"verbalized"`` (placeholders ``{n}``, ``{labels}``, ``{example}``). ``context`` is the
few-shot steering block (``context_format``, one ``few_shot_format`` entry per similar
question; :mod:`bayes_align.scoring.steering`).

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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from .items import Item
from .typed import ConfigError, from_mapping

__all__ = ["PromptTemplate", "load_template", "load_template_folder"]

_DEFAULT_LABELS = tuple("ABCDEFGHIJ")
_SEQUENCE_INSTRUCTIONS = (
    "Imagine {n} different respondents answering this question. Write their {n} answers "
    "as option letters separated by spaces (for example: {example}) and nothing else."
)
_VERBALIZED_INSTRUCTIONS = (
    "Estimate the share of respondents who would choose each option. Answer with a JSON "
    "object mapping every option letter to a percentage (for example: {example}) and "
    "nothing else."
)
_FEW_SHOT_FORMAT = "Question: {question}\nAnswers of {group}: {distribution}"
# Fields added after the first cache format: they enter content_hash() only when they
# differ from their defaults, so that caches written before them stay valid.
_LATER_FIELDS = (
    "stem_format", "context_format", "few_shot_format", "sequence_instructions",
    "verbalized_instructions", "stop",
)


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
    stem_format: str = "{stem}"
    context_format: str = "{context}"
    few_shot_format: str = _FEW_SHOT_FORMAT
    sequence_instructions: str | None = _SEQUENCE_INSTRUCTIONS
    verbalized_instructions: str | None = _VERBALIZED_INSTRUCTIONS
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "option_labels", tuple(str(x) for x in self.option_labels))
        object.__setattr__(self, "stop", tuple(self.stop))
        for name, needed in (
            ("stem_format", "{stem}"),
            ("context_format", "{context}"),
            ("few_shot_format", "{distribution}"),
        ):
            if needed not in getattr(self, name):
                raise ValueError(f"{name} {getattr(self, name)!r} must contain {needed}.")
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

    def answer_instructions(self, method: str, n_options: int, n: int = 30) -> str | None:
        """The block after the options for an expression method (placeholders filled)."""
        if method == "logprobs":
            return self.instructions_after_item
        labels = self.option_labels[:n_options]
        if method == "sequence":
            text = self.sequence_instructions
            example = " ".join(labels[i % n_options] for i in (0, 1, 0, 2, 1)[:n] if i < n_options)
        elif method == "verbalized":
            text = self.verbalized_instructions
            shares = _example_shares(n_options)
            example = "{" + ", ".join(f'"{lab}": "{v}%"' for lab, v in zip(labels, shares, strict=True)) + "}"
        else:
            raise ValueError(f"Unknown expression method {method!r}.")
        if not text:
            return None
        return text.format(n=n, labels=", ".join(labels), example=example)

    def user_message(
        self,
        item: Item,
        permutation: Sequence[int],
        persona_text: str | None = None,
        context: str | None = None,
        method: str = "logprobs",
        n: int = 30,
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
        blocks.append(self.instructions_before_item)
        if context:
            blocks.append(self.context_format.format(context=context))
        blocks += [self.stem_format.format(stem=item.stem), option_lines]
        blocks.append(self.answer_instructions(method, item.n_options, n))
        return self.separator.join(b for b in blocks if b)

    def system_message(self, persona_text: str | None = None) -> str | None:
        parts = []
        if persona_text and self.persona_placement == "system":
            parts.append(persona_text)
        if self.system_prompt:
            parts.append(self.system_prompt)
        return self.separator.join(parts) if parts else None

    def messages(
        self,
        item: Item,
        permutation: Sequence[int],
        persona_text: str | None = None,
        context: str | None = None,
        method: str = "logprobs",
        n: int = 30,
    ) -> list[dict[str, str]]:
        """Chat messages (``[{"role": "system", ...}, {"role": "user", ...}]``)."""
        system = self.system_message(persona_text)
        user = self.user_message(item, permutation, persona_text, context, method, n)
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
        context: str | None = None,
        method: str = "logprobs",
        n: int = 30,
    ) -> str:
        """The full prompt text, exactly as passed to the tokenizer."""
        messages = self.messages(item, permutation, persona_text, context, method, n)
        return self.render_messages(tokenizer, messages)

    def render_messages(self, tokenizer: Any, messages: Sequence[Mapping[str, str]]) -> str:
        """Chat messages as prompt text: through the tokenizer's chat template (with the
        generation prompt) when :meth:`chat_for` says so, else the contents joined by
        ``separator``; then ``answer_prefix``."""
        chat = self.chat_for(tokenizer)
        if chat:
            text = tokenizer.apply_chat_template(
                list(messages), tokenize=False, add_generation_prompt=True
            )
        else:
            text = self.separator.join(m["content"] for m in messages if m["content"])
        return text + self.answer_prefix_for(chat)

    # ------------------------------------------------------------------ identity
    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["option_labels"] = list(self.option_labels)
        data["stop"] = list(self.stop)
        return data

    def content_hash(self) -> str:
        data = self.to_dict()
        defaults = PromptTemplate().to_dict()
        for name in _LATER_FIELDS:
            if data[name] == defaults[name]:
                del data[name]
        payload = json.dumps(data, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<mapping>") -> PromptTemplate:
        """Build from a mapping; unknown keys and mistyped values are errors naming the
        field (a typo must not be ignored). ``option_labels`` may be a comma-separated
        string; ``system`` and ``labels`` are accepted aliases."""
        if data is not None and not isinstance(data, Mapping):
            raise ConfigError(f"Prompt template {source}: expected a mapping of template fields.")
        data = dict(data or {})
        for key in ("option_labels", "labels"):
            if isinstance(data.get(key), str):
                data[key] = data[key].split(",")
            elif isinstance(data.get(key), list):  # numeric labels (1, 2, 3) as written
                data[key] = [str(v) if type(v) is int else v for v in data[key]]
        if isinstance(data.get("stop"), str):
            data["stop"] = [data["stop"]]
        return from_mapping(
            cls, data, f"Prompt template {source}",
            aliases={"system": "system_prompt", "labels": "option_labels"},
        )


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
        raise ConfigError(f"{path} must hold a YAML mapping of template fields.")
    return PromptTemplate.from_dict(data or {}, source=str(path))


def _example_shares(k: int) -> list[int]:
    """Round percentages summing to 100 for the verbalized example (decreasing)."""
    raw = [2 ** (k - i) for i in range(k)]
    shares = [round(100 * r / sum(raw)) for r in raw]
    shares[0] += 100 - sum(shares)
    return shares


# the paper's folders (Meister et al. 2024) -> expression method; files -> steering
_FOLDER_METHODS = {
    "model_logprobs": "logprobs",
    "sequence": "sequence",
    "express_distribution": "verbalized",
}
_TASK_STEERING = {"prompt_task0": "none", "prompt_task1": "persona", "prompt_task2": "few_shot"}


def load_template_folder(folder: str | Path) -> dict[tuple[str, str], PromptTemplate]:
    """The prompt templates of Meister et al. (2024) as PromptTemplates.

    ``folder`` holds ``{model_logprobs,sequence,express_distribution}/prompt_task{0,1,2}.txt``
    (DSPy-style instructions with worked examples). Returns ``{(method, steering):
    PromptTemplate}`` with ``method`` in ``logprobs, sequence, verbalized`` and
    ``steering`` in ``none, persona, few_shot``. Each file's text becomes
    ``instructions_before_item``; the item follows in the files' own format
    (``Question: <stem>``, one ``'A'. <option>`` line per option, ``Context: ...`` for
    few-shot steering), and the answer format is the examples' (no extra instructions).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"Prompt template folder {folder} does not exist.")
    templates: dict[tuple[str, str], PromptTemplate] = {}
    for sub, method in _FOLDER_METHODS.items():
        for stem, steering in _TASK_STEERING.items():
            path = folder / sub / f"{stem}.txt"
            if not path.is_file():
                continue
            text = path.read_text(encoding="utf-8").strip()
            quoted = "'A'." in text
            templates[method, steering] = PromptTemplate(
                instructions_before_item=text + "\n",
                stem_format="Question: {stem}",
                option_format="'{label}'. {option}" if quoted else "{label}. {option}",
                option_separator="\n",
                separator="\n",
                context_format="Context: {context}",
                sequence_instructions=None,
                verbalized_instructions=None,
                stop=("\n\n", "---"),
            )
    if not templates:
        raise ValueError(
            f"{folder} holds none of {sorted(_FOLDER_METHODS)}/prompt_task{{0,1,2}}.txt."
        )
    return templates
