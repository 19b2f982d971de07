"""From LM scores (or generated answers) to responses of simulated persons.

For a (persona, item) with option orders ``r = 1..R`` and label logits ``l_r`` (in the
original option order) the LM's option distribution is the order-averaged softmax::

    p = (1 / R) * sum_r softmax(l_r / temperature)

``mode="expected"`` gives one soft response per persona x item: ``p[key]`` for keyed
items (kind ``soft``); for opinion items one row per option ``k`` with response
``score_k`` and weight ``p_k`` (the expected log-likelihood of an ordinal response).
``mode="sample"`` draws ``n_samples`` discrete answers per persona x item (one simulated
person per persona x sample): ``1[choice == key]`` for keyed items, ``score[choice]``
for opinion items. ``score`` maps option index -> ordinal category (``option_scores``;
default the option index).

:func:`to_long_frame` returns the long DataFrame (``person, item, group, response,
weight, persona, sample, choice``) to concatenate with human data;
:func:`to_responses` wraps it in :class:`bayes_align.data.ResponseData`.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["option_probabilities", "option_table", "to_long_frame", "to_responses"]


def softmax_seen(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis; NaN entries (labels a server did not return) get
    probability 0; a row with no finite entry stays NaN."""
    z = np.where(np.isnan(x), -np.inf, x)
    with np.errstate(invalid="ignore"):  # all -inf rows give NaN, as documented
        e = np.exp(z - z.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)


def _prompt_probabilities(part: pd.DataFrame, n_options: int, temperature: float) -> np.ndarray:
    """``(rows, n_options)`` distribution of each prompt: softmax of the label logits at
    ``temperature`` (logprobs rows), else the parsed ``probs`` (NaN rows: parse failed)."""
    probs = np.full((len(part), n_options), np.nan)
    has_logits = (
        part["logits"].map(lambda v: isinstance(v, (list, tuple, np.ndarray))).to_numpy()
        if "logits" in part.columns
        else np.zeros(len(part), dtype=bool)
    )
    if has_logits.any():
        logits = np.stack(part["logits"][has_logits].map(np.asarray).to_numpy()).astype(np.float64)
        if logits.shape[1] != n_options:
            raise ValueError(f"logit lists of length {logits.shape[1]} for {n_options}-option items.")
        probs[has_logits] = softmax_seen(logits / temperature)
    rest = ~has_logits
    if rest.any():
        if "probs" not in part.columns:
            raise ValueError("rows without logits need a 'probs' column (the output of score()).")
        if temperature != 1.0:
            raise ValueError(
                "temperature applies to logprobs rows only; sequence and verbalized "
                "distributions are used as parsed (temperature=1)."
            )
        stated = part["probs"][rest].map(
            lambda v: np.full(n_options, np.nan) if v is None else np.asarray(v, dtype=np.float64)
        )
        probs[rest] = np.stack(stated.to_numpy())
    return probs


def option_probabilities(scores: pd.DataFrame, temperature: float = 1.0) -> pd.DataFrame:
    """Order-averaged option probabilities, one row per (model, [method, steering,] item,
    persona).

    A prompt's distribution is the softmax of its label logits at ``temperature``
    (``method="logprobs"``) or its parsed ``probs`` (sequence, verbalized); prompts whose
    answer could not be parsed are left out of the average and counted. Columns:
    ``model, [method, steering,] item, persona, key, n_options, n_orders`` (prompts
    averaged), ``n_failed``, ``probs`` (list, original option order; NaN when every
    order failed).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}.")
    missing = {"model", "item", "persona", "n_options"} - set(scores.columns)
    if missing or not {"logits", "probs"} & set(scores.columns):
        raise ValueError(
            f"scores lack column(s) {sorted(missing) or ['logits or probs']}; pass the "
            "DataFrame returned by score()."
        )
    keys = ["model", *[c for c in ("method", "steering") if c in scores.columns], "item", "persona"]
    pieces = []
    for n_options, part in scores.groupby("n_options", sort=False):
        probs = _prompt_probabilities(part, int(n_options), temperature)
        columns = [f"p{k}" for k in range(int(n_options))]
        frame = part[[*keys, "key", "n_options"]].copy()
        frame[columns] = probs
        frame["_failed"] = np.isnan(probs).all(axis=1)
        grouped = frame.groupby(keys, sort=False, dropna=False)
        mean = grouped[columns].mean()
        first = grouped[["key", "n_options"]].first()
        first["n_failed"] = grouped["_failed"].sum().astype(np.int64)
        first["n_orders"] = grouped.size() - first["n_failed"]
        first["probs"] = list(mean.to_numpy())
        pieces.append(first.reset_index())
    out = pd.concat(pieces, ignore_index=True)
    out["probs"] = out["probs"].map(lambda p: [float(v) for v in p])
    return out


def option_table(scores: pd.DataFrame, temperature: float = 1.0) -> pd.DataFrame:
    """The long table of answer distributions, the same for every expression method.

    One row per (model, method, steering, item, persona, option): ``option`` (answer
    text), ``option_index``, ``probability`` (averaged over the option orders whose
    answer parsed), ``n_orders``, ``n_failed``, ``parse_status`` (``ok`` when every order
    parsed cleanly, else the count of each status, e.g. ``"ok 3, partial 1"``) and
    ``completions`` (the raw completions of the orders, for audit; empty for logprobs).
    """
    probs = option_probabilities(scores, temperature)
    keys = [c for c in ("model", "method", "steering", "item", "persona") if c in probs.columns]
    status = (
        scores.groupby(keys, sort=False, dropna=False)["parse_status"].agg(_status_summary)
        if "parse_status" in scores.columns else None
    )
    raw = (
        scores.groupby(keys, sort=False, dropna=False)["completion"].agg(
            lambda c: [str(x) for x in c if isinstance(x, str)]
        )
        if "completion" in scores.columns else None
    )
    texts = (
        scores.drop_duplicates("item").set_index("item")["options"].to_dict()
        if "options" in scores.columns else {}
    )
    lengths = probs["n_options"].to_numpy(dtype=np.int64)
    long = probs.loc[np.repeat(np.arange(len(probs)), lengths), [*keys, "n_orders", "n_failed"]]
    long = long.reset_index(drop=True)
    long["option_index"] = np.concatenate([np.arange(n) for n in lengths])
    long["option"] = [
        texts[i][k] if isinstance(texts.get(i), (list, tuple, np.ndarray)) else None
        for i, k in zip(long["item"], long["option_index"], strict=True)
    ]
    long["probability"] = np.concatenate([np.asarray(p, dtype=np.float64) for p in probs["probs"]])
    index = pd.MultiIndex.from_frame(long[keys])
    long["parse_status"] = status.reindex(index).to_numpy() if status is not None else "ok"
    long["completions"] = raw.reindex(index).to_numpy() if raw is not None else [[]] * len(long)
    columns = [*keys, "option", "option_index", "probability", "n_orders", "n_failed",
               "parse_status", "completions"]
    return long[columns]


def _status_summary(statuses: pd.Series) -> str:
    counts = statuses.value_counts()
    if set(counts.index) == {"ok"}:
        return "ok"
    return ", ".join(f"{name} {int(counts[name])}" for name in sorted(counts.index))


def _score_table(
    items: Sequence[str], n_options: Sequence[int], option_scores: Any
) -> dict[str, np.ndarray]:
    """item -> array mapping option index to ordinal category, validated."""
    table = {}
    for item, k in zip(items, n_options, strict=True):
        if option_scores is None:
            scores = np.arange(k)
        elif isinstance(option_scores, Mapping) and item in option_scores:
            scores = np.asarray(option_scores[item])
        elif isinstance(option_scores, Mapping):
            raise ValueError(
                f"option_scores has no entry for item {item!r}; give every opinion item one "
                "(or one list for all items)."
            )
        else:
            scores = np.asarray(option_scores)
        if scores.shape != (k,):
            raise ValueError(
                f"option_scores for item {item!r} has {scores.size} entries but the item has "
                f"{k} options; give one ordinal score per option in the original option order."
            )
        if not np.all(np.equal(np.mod(scores, 1), 0)) or scores.min() < 0 or scores.max() > k - 1:
            raise ValueError(
                f"option_scores for item {item!r} must be integers in 0..{k - 1}, got "
                f"{scores.tolist()}."
            )
        table[item] = scores.astype(np.int64)
    return table


def _item_kind(keys: pd.Series) -> str:
    keyed = keys.notna()
    if keyed.all():
        return "keyed"
    if (~keyed).all():
        return "opinion"
    raise ValueError(
        f"Keyed items {keys[keyed].index.tolist()[:5]} and opinion items "
        f"{keys[~keyed].index.tolist()[:5]} are mixed; convert them separately (binary/soft "
        "and ordinal responses cannot share one ResponseData)."
    )


def _draw(probs: np.ndarray, n_samples: int, rng: np.random.Generator) -> np.ndarray:
    """Categorical draws ``(rows, n_samples)`` from rows of ``probs`` by inverse CDF."""
    cdf = np.cumsum(probs, axis=1)
    cdf[:, -1] = 1.0
    u = rng.random((probs.shape[0], n_samples))
    return (u[:, :, None] > cdf[:, None, :]).sum(axis=-1)


def to_long_frame(
    scores: pd.DataFrame,
    temperature: float = 1.0,
    mode: str | None = None,
    n_samples: int = 1,
    seed: int = 0,
    group: str | None = None,
    option_scores: Sequence[int] | Mapping[str, Sequence[int]] | None = None,
) -> pd.DataFrame:
    """Long response frame of the simulated persons (see module docstring).

    ``scores`` is the output of :func:`score` (logits) or of :func:`generate` (parsed
    choices; only ``mode="sample"``, each persona x sample is one person and unparsed
    answers are dropped with a warning that gives the parse-failure rate).
    ``group`` defaults to ``"lm:<model>"``. Person ids are ``"<group>:<persona>"``
    (expected) or ``"<group>:<persona>#<sample>"`` (sample).
    """
    if len(scores) == 0:
        raise ValueError("scores is empty; nothing to convert.")
    generated = "choice" in scores.columns and "logits" not in scores.columns
    mode = mode or ("sample" if generated else "expected")
    if mode not in ("expected", "sample"):
        raise ValueError(f"mode must be 'expected' or 'sample', got {mode!r}.")
    if n_samples < 1:
        raise ValueError(f"n_samples must be at least 1, got {n_samples}.")
    models = scores["model"].unique()
    if len(models) != 1:
        raise ValueError(f"scores hold several models {list(models)}; convert one at a time.")
    group = group or f"lm:{models[0]}"

    if generated:
        if mode != "sample":
            raise ValueError("Generated answers are discrete: use mode='sample'.")
        failed = scores["choice"].isna()
        if failed.any():
            warnings.warn(
                f"{failed.mean():.1%} of generated answers ({int(failed.sum())} of {len(scores)}) "
                "could not be parsed to an option and are left out (missing responses).",
                stacklevel=2,
            )
        table = scores.loc[~failed]
        choices = table["choice"].to_numpy(dtype=np.int64)
        person = group + ":" + table["persona"].astype(str) + "#" + table["sample"].astype(str)
        long = pd.DataFrame(
            {
                "person": person.to_numpy(),
                "item": table["item"].astype(str).to_numpy(),
                "persona": table["persona"].astype(str).to_numpy(),
                "sample": table["sample"].to_numpy(),
                "choice": choices,
                "key": table["key"].to_numpy(),
                "n_options": table["n_options"].to_numpy(),
            }
        )
    else:
        for column in ("method", "steering"):
            if column in scores.columns and scores[column].nunique(dropna=False) > 1:
                raise ValueError(
                    f"scores hold several {column}s {sorted(map(str, scores[column].unique()))}; "
                    "convert one at a time."
                )
        probs = option_probabilities(scores, temperature)
        lost = probs["probs"].map(lambda p: bool(np.isnan(p).any())).to_numpy()
        if lost.any():
            warnings.warn(
                f"{int(lost.sum())} of {len(probs)} (item, persona) distributions are left out: "
                "no option order gave a parsable answer (parse_status 'failed').",
                stacklevel=2,
            )
            probs = probs.loc[~lost].reset_index(drop=True)
        long = _expected_or_sampled(probs, mode, n_samples, seed, group)

    keys = long.drop_duplicates("item").set_index("item")["key"]
    kind = _item_kind(pd.Series(pd.array(keys, dtype="Int64"), index=keys.index))
    if "response" not in long.columns:  # discrete choices -> responses
        if kind == "keyed":
            long["response"] = (long["choice"] == long["key"].astype(np.int64)).astype(np.float64)
        else:
            firsts = long.drop_duplicates("item")
            table_map = _score_table(
                firsts["item"].tolist(), firsts["n_options"].tolist(), option_scores
            )
            long["response"] = [
                float(table_map[i][c]) for i, c in zip(long["item"], long["choice"], strict=True)
            ]
    elif kind == "opinion":  # expected mode: option rows weighted by p_k
        firsts = long.drop_duplicates("item")
        table_map = _score_table(firsts["item"].tolist(), firsts["n_options"].tolist(), option_scores)
        long["response"] = [
            float(table_map[i][c]) for i, c in zip(long["item"], long["choice"], strict=True)
        ]
    long["group"] = group
    if "weight" not in long.columns:
        long["weight"] = 1.0
    columns = ["person", "item", "group", "response", "weight", "persona", "sample", "choice"]
    return long[columns].reset_index(drop=True)


def _expected_or_sampled(
    probs: pd.DataFrame, mode: str, n_samples: int, seed: int, group: str
) -> pd.DataFrame:
    keys = probs.drop_duplicates("item").set_index("item")["key"]
    kind = _item_kind(pd.Series(pd.array(keys, dtype="Int64"), index=keys.index))
    pieces = []
    if mode == "expected":
        if kind == "keyed":
            p_key = [p[int(k)] for p, k in zip(probs["probs"], probs["key"], strict=True)]
            return pd.DataFrame(
                {
                    "person": (group + ":" + probs["persona"].astype(str)).to_numpy(),
                    "item": probs["item"].astype(str).to_numpy(),
                    "persona": probs["persona"].astype(str).to_numpy(),
                    "sample": -1,
                    "choice": -1,
                    "key": probs["key"].to_numpy(),
                    "n_options": probs["n_options"].to_numpy(),
                    "response": np.asarray(p_key, dtype=np.float64),
                    "weight": 1.0,
                }
            )
        for _, row in probs.iterrows():  # opinion: one weighted row per option
            p = np.asarray(row["probs"])
            keep = p > 0
            pieces.append(
                pd.DataFrame(
                    {
                        "person": f"{group}:{row['persona']}",
                        "item": str(row["item"]),
                        "persona": str(row["persona"]),
                        "sample": -1,
                        "choice": np.flatnonzero(keep),
                        "key": row["key"],
                        "n_options": row["n_options"],
                        "weight": p[keep],
                    }
                )
            )
        return pd.concat(pieces, ignore_index=True)
    rng = np.random.default_rng(seed)
    for n_options, part in probs.groupby("n_options", sort=False):
        matrix = np.stack(part["probs"].map(np.asarray).to_numpy())
        draws = _draw(matrix, n_samples, rng)  # (rows, samples)
        samples = np.tile(np.arange(n_samples), len(part))
        persona = np.repeat(part["persona"].astype(str).to_numpy(), n_samples)
        pieces.append(
            pd.DataFrame(
                {
                    "person": [f"{group}:{p}#{s}" for p, s in zip(persona, samples, strict=True)],
                    "item": np.repeat(part["item"].astype(str).to_numpy(), n_samples),
                    "persona": persona,
                    "sample": samples,
                    "choice": draws.reshape(-1),
                    "key": np.repeat(part["key"].to_numpy(), n_samples),
                    "n_options": n_options,
                }
            )
        )
    return pd.concat(pieces, ignore_index=True)


def to_responses(
    scores: pd.DataFrame,
    temperature: float = 1.0,
    mode: str | None = None,
    n_samples: int = 1,
    seed: int = 0,
    group: str | None = None,
    option_scores: Sequence[int] | Mapping[str, Sequence[int]] | None = None,
    human: pd.DataFrame | None = None,
    reference_group: str | None = None,
) -> Any:
    """:class:`bayes_align.data.ResponseData` of the simulated persons (plus ``human``).

    ``human`` is an optional long DataFrame (``person, item, group, response`` and
    optionally ``weight``) concatenated before indexing; ``reference_group`` defaults to
    ``"human"`` when it is given, else to the LM group.
    """
    from bayes_align.data import ResponseData

    long = to_long_frame(scores, temperature, mode, n_samples, seed, group, option_scores)
    lm_group = long["group"].iloc[0]
    if human is not None:
        human = human.copy()
        if "weight" not in human.columns:
            human["weight"] = 1.0
        long = pd.concat([human, long], ignore_index=True, sort=False)
        reference_group = reference_group or "human"
    firsts = scores.drop_duplicates("item")
    keyed = _item_kind(pd.Series(pd.array(firsts["key"], dtype="Int64"), index=firsts["item"]))
    n_categories = None
    if keyed == "keyed":
        kind = "soft" if (long["response"] % 1 != 0).any() else "binary"
    else:
        kind = "ordinal"
        table = _score_table(firsts["item"].tolist(), firsts["n_options"].tolist(), option_scores)
        n_categories = {item: int(values.max()) + 1 for item, values in table.items()}
        if human is not None:  # human-only items keep from_long's default (highest seen + 1)
            for item, values in long.groupby("item")["response"]:
                n_categories.setdefault(str(item), int(values.max()) + 1)
    return ResponseData.from_long(
        long,
        weight="weight",
        reference_group=reference_group or lm_group,
        kind=kind,
        n_categories=n_categories,
    )
