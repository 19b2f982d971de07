"""Steering: whom the LM is asked to speak for.

- ``"none"``: the bare question;
- ``"persona"``: the group (or person) described in the prompt (:class:`Persona` text,
  placed as the template's ``persona_placement`` says);
- ``"few_shot"``: the group's answer distributions on the ``k`` most similar *other*
  questions are shown before the question (:class:`FewShot`), as in Meister et al.
  (2024). Similar questions come from a table (``{item: [similar items, best first]}``,
  e.g. the paper's ``question_similarity_top10.json``) or, without one, from the cosine
  similarity of TF-IDF bag-of-words vectors of question and option texts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .items import Item

__all__ = ["STEERING", "FewShot", "bag_of_words_similarity"]

STEERING = ("none", "persona", "few_shot")
_TOKEN = re.compile(r"[a-z0-9]+")


def bag_of_words_similarity(texts: Sequence[str]) -> np.ndarray:
    """Cosine similarity ``(n, n)`` of TF-IDF bag-of-words vectors (lower-cased words).

    ``tfidf[d, w] = count[d, w] * log((1 + n) / (1 + df[w]))``; rows are L2-normalised,
    so the similarity is their dot product.
    """
    docs = [_TOKEN.findall(text.lower()) for text in texts]
    vocabulary: dict[str, int] = {}
    rows, cols = [], []
    for d, words in enumerate(docs):
        for word in words:
            rows.append(d)
            cols.append(vocabulary.setdefault(word, len(vocabulary)))
    counts = np.zeros((len(docs), max(len(vocabulary), 1)))
    np.add.at(counts, (np.asarray(rows, dtype=int), np.asarray(cols, dtype=int)), 1.0)
    document_frequency = (counts > 0).sum(axis=0)
    tfidf = counts * np.log((1.0 + len(docs)) / (1.0 + document_frequency))
    norms = np.linalg.norm(tfidf, axis=1, keepdims=True)
    tfidf = tfidf / np.where(norms > 0, norms, 1.0)
    return tfidf @ tfidf.T


@dataclass(frozen=True)
class FewShot:
    """Few-shot steering data: groups' answer shares on a pool of questions.

    Parameters
    ----------
    items : the question pool (texts and options); may include the scored items (an
        item is never its own example).
    shares : long table with ``item``, ``group``, ``option`` (an answer text of the item,
        or its 0-based index) and ``share`` or ``count`` (normalised per item and group).
        With an ``attribute`` column the group key is ``"ATTRIBUTE:Group"`` (the layout
        of ``OpinionData.to_frame()``), and the group is named ``Group`` in the prompt.
    k : examples per question.
    similarity : ``{item: [other items, most similar first]}``; items it lacks, or all
        when None, use :func:`bag_of_words_similarity` over the pool.
    names : display names of group keys in the prompt (default: the group).
    """

    items: Sequence[Item]
    shares: pd.DataFrame
    k: int = 5
    similarity: Mapping[str, Sequence[str]] | None = None
    names: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"FewShot k must be at least 1, got {self.k}.")
        pool = {item.item_id: item for item in self.items}
        object.__setattr__(self, "_pool", pool)
        object.__setattr__(self, "_table", self._share_table(pool))
        object.__setattr__(self, "_ranked", {})

    def _share_table(self, pool: Mapping[str, Item]) -> dict[tuple[str, str], np.ndarray]:
        frame = self.shares
        value = "share" if "share" in frame.columns else "count" if "count" in frame.columns else None
        missing = [c for c in ("item", "group", "option") if c not in frame.columns]
        if missing or value is None:
            raise ValueError(
                f"FewShot shares need columns item, group, option and share (or count); "
                f"missing {missing + ([] if value else ['share or count'])}."
            )
        frame = frame.assign(item=frame["item"].astype(str), group=frame["group"].astype(str))
        if "attribute" in frame.columns:
            display = frame["group"]
            frame = frame.assign(group=frame["attribute"].astype(str) + ":" + frame["group"])
            names = dict(zip(frame["group"], display, strict=True))
            object.__setattr__(self, "names", {**names, **dict(self.names)})
        unknown = sorted(set(frame["item"]) - set(pool))
        if unknown:
            raise ValueError(f"FewShot shares name items not in the pool: {unknown[:10]}.")
        table: dict[tuple[str, str], np.ndarray] = {}
        for (item_id, group), part in frame.groupby(["item", "group"], sort=False):
            options = pool[item_id].options
            vector = np.zeros(len(options))
            for option, share in zip(part["option"], part[value], strict=True):
                if isinstance(option, (int, np.integer)):
                    j = int(option)
                elif str(option) in options:
                    j = options.index(str(option))
                else:
                    raise ValueError(
                        f"FewShot shares: option {option!r} of item {item_id!r} is neither an "
                        f"answer text ({list(options)}) nor an index."
                    )
                vector[j] += float(share)
            total = vector.sum()
            if total > 0:
                table[item_id, group] = vector / total
        return table

    @property
    def groups(self) -> list[str]:
        """Group keys with shares, in table order."""
        return list(dict.fromkeys(group for _, group in self._table))  # type: ignore[attr-defined]

    def name(self, group: str) -> str:
        return self.names.get(group, group)

    def _ranking(self, item: Item) -> list[str]:
        ranked: dict[str, list[str]] = self._ranked  # type: ignore[attr-defined]
        if item.item_id not in ranked:
            if self.similarity is not None and item.item_id in self.similarity:
                ranked[item.item_id] = [str(x) for x in self.similarity[item.item_id]]
            else:
                pool = [p for p in self.items if p.item_id != item.item_id]
                texts = [" ".join((p.stem, *p.options)) for p in [item, *pool]]
                sim = bag_of_words_similarity(texts)[0, 1:]
                ranked[item.item_id] = [pool[j].item_id for j in np.argsort(-sim, kind="stable")]
        return ranked[item.item_id]

    def examples(self, item: Item, group: str) -> list[tuple[Item, np.ndarray]]:
        """The ``k`` most similar other pool items with shares for ``group``."""
        table = self._table  # type: ignore[attr-defined]
        pool = self._pool  # type: ignore[attr-defined]
        chosen = []
        for other in self._ranking(item):
            if other != item.item_id and (other, group) in table and other in pool:
                chosen.append((pool[other], table[other, group]))
                if len(chosen) == self.k:
                    break
        if not chosen:
            raise ValueError(
                f"FewShot: no other question with shares of group {group!r} for item "
                f"{item.item_id!r}; add shares or use steering='persona'."
            )
        return chosen

    def context(self, item: Item, group: str, example_format: str) -> str:
        """The few-shot block: one ``example_format`` entry per similar question, with
        ``{question}``, ``{group}`` and ``{distribution}`` (``'option': 46%, ...``)."""
        blocks = []
        for other, share in self.examples(item, group):
            distribution = ", ".join(
                f"'{option}': {round(100 * p)}%" for option, p in zip(other.options, share, strict=True)
            )
            blocks.append(
                example_format.format(question=other.stem, group=self.name(group),
                                      distribution=distribution)
            )
        return "\n".join(blocks)
