"""Parsers for the answers of the generative expression methods.

``sequence`` (:func:`parse_sequence`): the LM writes ``N`` answers in one completion
(``"A B A C ..."``, ``"A, B, A"``, ``"ABAC..."``, ``"1. A 2. B"``); the answers are
the longest run of label tokens, and the distribution is their share per label.

``verbalized`` (:func:`parse_verbalized`): the LM states the distribution
(``{"A": "45%", "B": "30%", ...}``, ``{'A': 0.45, ...}``, ``A: 45%, B: 30%``, or option
texts instead of labels); values are read as percentages (as fractions when every value
is at most 1 and none has a ``%``), and renormalised to sum to one.

Both return a :class:`ParseResult` whose ``status`` is ``"ok"`` or says what was
repaired, so no answer is silently dropped or silently changed:

- ``ok``: clean;
- ``renormalised``: verbalised values that did not sum to 100% (within 1 point);
- ``partial``: something was off but a distribution came out (answers missing or extra
  in a sequence, text around the answers, options missing or given twice, keys that are
  not options); ``detail`` says what;
- ``failed``: no distribution (``probs`` all NaN).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["ParseResult", "parse_sequence", "parse_verbalized", "STATUSES"]

STATUSES = ("ok", "renormalised", "partial", "failed")
_WORD = re.compile(r"[^\s,;|/\[\]\(\)\{\}\"'`.:*#-]+")


@dataclass(frozen=True)
class ParseResult:
    """``probs`` (label positions; NaN when failed), ``status`` (:data:`STATUSES`),
    ``detail`` (what was repaired or why it failed) and ``n`` (answers or keys read)."""

    probs: np.ndarray
    status: str
    detail: str = ""
    n: int = 0


def _failed(k: int, detail: str) -> ParseResult:
    return ParseResult(np.full(k, np.nan), "failed", detail, 0)


def parse_sequence(text: str, labels: Sequence[str], n_expected: int | None = None) -> ParseResult:
    """Share of each label among the answers written in ``text``.

    Words are split at white space and punctuation; a word of several single-character
    labels (``"ABAC"``) is read as that many answers (capital letters in it that are not
    labels are counted as invalid answers and reported); numbers are list markers unless
    the labels are numbers. The answers are the longest run of consecutive label words;
    label words outside it are reported, not counted.
    """
    k = len(labels)
    index = {label: j for j, label in enumerate(labels)}
    single = all(len(label) == 1 for label in labels)
    numeric_labels = any(label.isdigit() for label in labels)
    runs: list[list[int]] = [[]]
    outside_words = 0
    invalid = 0
    for word in _WORD.findall(text or ""):
        if word in index:
            runs[-1].append(index[word])
        elif single and len(word) > 1 and all(ch in index for ch in word):
            runs[-1].extend(index[ch] for ch in word)
        elif single and len(word) > 1 and word.isalpha() and word.isupper() and any(
            ch in index for ch in word
        ):  # glued answers with letters that are not options ("ABCAE" for A-D)
            runs[-1].extend(index[ch] for ch in word if ch in index)
            invalid += sum(ch not in index for ch in word)
        elif word.isdigit() and not numeric_labels:
            continue
        else:
            outside_words += 1
            if runs[-1]:
                runs.append([])
    best = max(runs, key=len)
    if not best:
        return _failed(k, "no option label found in the completion")
    counts = np.bincount(best, minlength=k).astype(np.float64)
    problems = []
    if n_expected is not None and len(best) != n_expected:
        problems.append(f"{len(best)} answers instead of {n_expected}")
    stray = sum(len(r) for r in runs) - len(best)
    if stray:
        problems.append(f"{stray} label(s) outside the answer sequence ignored")
    if invalid:
        problems.append(f"{invalid} answer letter(s) that are not options ignored")
    if outside_words and not stray:
        problems.append(f"{outside_words} other word(s) around the answers")
    status = "partial" if problems else "ok"
    return ParseResult(counts / counts.sum(), status, "; ".join(problems), len(best))


# any "key: number" pair: a quoted key or a bare capital letter
_ANY_KEY = re.compile(
    r"(?:['\"`](?P<q>[^'\"`\n]{1,80})['\"`]|(?<![\w'\"`])(?P<w>[A-Z])(?![\w'\"`]))"
    r"\s*[:=]\s*['\"`]?\s*-?\d"
)


def _key_pattern(labels: Sequence[str], options: Sequence[str]) -> re.Pattern[str]:
    keys = sorted({*labels, *options}, key=len, reverse=True)
    alternatives = "|".join(re.escape(key) for key in keys if key)
    return re.compile(
        rf"(?<![\w])['\"`]?(?P<key>{alternatives})['\"`]?\s*(?:[:=)]|-(?!\d)|\bis\b)\s*['\"`]?\s*"
        rf"(?P<value>-?(?:\d+(?:\.\d+)?|\.\d+))\s*(?P<pct>%)?",
        re.IGNORECASE,
    )


def parse_verbalized(
    text: str, labels: Sequence[str], options: Sequence[str] | None = None
) -> ParseResult:
    """The distribution stated in ``text`` over the options shown with ``labels``.

    Keys may be the labels (case-sensitive when they are single letters) or the option
    texts (``options``, in the same positions, case-insensitive). A key given twice keeps
    its first value; missing options get 0 and are reported.
    """
    k = len(labels)
    options = list(options or [])
    pattern = _key_pattern(labels, options)
    by_label = {label: j for j, label in enumerate(labels)}
    by_option = {option.casefold(): j for j, option in enumerate(options)}
    values: dict[int, float] = {}
    problems: list[str] = []
    percent_signs = 0
    n_read = 0
    for match in pattern.finditer(text or ""):
        key = match.group("key")
        if key in by_label:
            j = by_label[key]
        elif key.casefold() in by_option:
            j = by_option[key.casefold()]
        else:  # a single-letter label matched in the wrong case: not a key
            continue
        value = float(match.group("value"))
        n_read += 1
        percent_signs += match.group("pct") is not None
        if value < 0:
            problems.append(f"negative value {value:g} for {labels[j]!r} read as 0")
            value = 0.0
        if j in values:
            if values[j] != value:
                problems.append(
                    f"{labels[j]!r} given twice ({values[j]:g}, {value:g}); first kept"
                )
            continue
        values[j] = value
    if not values:
        return _failed(k, "no option with a number found in the completion")
    known = {*labels, *(o.casefold() for o in options)}
    extra = sorted(
        {key for key in (m.group("q") or m.group("w") for m in _ANY_KEY.finditer(text))
         if key not in known and key.casefold() not in known}
    )
    if extra:
        problems.append(f"key(s) {extra} are not options and were ignored")
    raw = np.zeros(k)
    for j, value in values.items():
        raw[j] = value
    scale = 1.0 if (percent_signs == 0 and raw.max() <= 1.0) else 100.0
    total = raw.sum()
    if total <= 0:
        return _failed(k, "all stated shares are 0")
    absent = [labels[j] for j in range(k) if j not in values]
    if absent:
        problems.append(f"option(s) {absent} not given (probability 0)")
    status = "partial" if problems else "ok"
    if abs(total - scale) > 0.01 * scale:
        unit = "%" if scale == 100.0 else ""
        problems.append(f"shares summed to {total:g}{unit}, renormalised")
        status = "partial" if status == "partial" else "renormalised"
    return ParseResult(raw / total, status, "; ".join(problems), n_read)
