"""Loader for NAEP items, human option distributions, NAEP 3PL parameters and LM logits.

The folder layout is the one of the ``naep-llm`` data release (Säuberli, Frassinelli
& Plank, BEA 2025)::

    items/naep-{subject}-items.jsonl                  item_id, stem, options, correct_option_index
    items/naep-{subject}-response-distributions.jsonl item_id, grade, response_distribution
    items/naep-parameters.jsonl                       subject, year, grade, scale, item_id, a, b, c, irt_model
    llm-responses/naep-{subject}-responses-{model}.jsonl  item_id, logits (R x K)

Nothing is assumed about which subjects, grades or models exist: every LM file found
for a subject is loaded. The unit of analysis is a *row* = one (subject, grade, item)
triple: an item administered at two grades is two rows, one per grade population.
A *subset* is a (subject, grade) pair, labelled ``"{subject}-{grade}"``.

Human distributions are renormalised to sum to one (the published shares omit
omitted responses and are rounded, so raw sums range from about 0.91 to 1.01);
the raw sums are kept in ``NaepData.human_total``.

LM option probabilities are order-averaged: row ``r`` of an item's logits holds the
option logits when the options were shown in cyclic order shifted by ``r`` (mapped
back to the original order), and the LM's distribution is

    p_k(T) = (1 / R) sum_r softmax(z_r / T)_k .
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["NaepData", "load_naep", "option_probabilities", "available_subjects"]

_RESPONSE_FILE = re.compile(r"^naep-(?P<subject>.+?)-responses-(?P<model>.+)\.jsonl$")
BASELINE_SUFFIX = "Baseline"


def option_probabilities(logits: np.ndarray, temperature: float | np.ndarray = 1.0) -> np.ndarray:
    """Order-averaged softmax ``p_k = mean_r softmax(z_r / T)_k`` over the last two axes.

    Parameters
    ----------
    logits:
        ``(..., R, K)`` option logits, one row per presentation order.
    temperature:
        scalar or array broadcastable to ``logits.shape[:-2]`` (e.g. one temperature
        per model and row). Must be positive.

    Returns
    -------
    ``(..., K)`` probabilities that sum to one.
    """
    logits = np.asarray(logits, dtype=np.float64)
    temperature = np.asarray(temperature, dtype=np.float64)
    if np.any(~(temperature > 0)):
        raise ValueError("temperature must be positive and finite; got a value <= 0 or NaN")
    scaled = logits / temperature[..., None, None]
    scaled = scaled - scaled.max(axis=-1, keepdims=True)
    exp = np.exp(scaled)
    return (exp / exp.sum(axis=-1, keepdims=True)).mean(axis=-2)


@dataclass(frozen=True)
class NaepData:
    """NAEP items with human and LM option distributions, in long row format.

    Row ``n`` is one (subject, grade, item) triple. Arrays:

    - ``human_probs`` ``(n_rows, K)``: renormalised human shares per option.
    - ``human_total`` ``(n_rows,)``: the raw sum of the published shares.
    - ``key`` ``(n_rows,)`` int: 0-based index of the correct option.
    - ``subset_idx`` ``(n_rows,)`` int into ``subsets``.
    - ``logits`` ``(n_models, n_rows, R, K)``: LM option logits per row (an item's
      logits are repeated for each grade it appears in).
    - ``irt_a``, ``irt_b``, ``irt_c`` ``(n_rows,)``: NAEP 3PL parameters (scaling constant
      1.7 is *not* folded into ``a``); NaN where NAEP published no 3PL for that
      (item, grade). When several years were published, the latest year is used.

    ``rows`` is a DataFrame with ``subject, grade, subset, item_id, key, irt_year, irt_scale``.
    """

    rows: pd.DataFrame
    subsets: tuple[str, ...]
    models: tuple[str, ...]
    subset_idx: np.ndarray
    key: np.ndarray
    human_probs: np.ndarray
    human_total: np.ndarray
    logits: np.ndarray
    irt_a: np.ndarray
    irt_b: np.ndarray
    irt_c: np.ndarray

    @property
    def n_rows(self) -> int:
        return int(self.key.shape[0])

    @property
    def n_models(self) -> int:
        return len(self.models)

    @property
    def n_subsets(self) -> int:
        return len(self.subsets)

    @property
    def n_options(self) -> int:
        return int(self.human_probs.shape[1])

    @property
    def baselines(self) -> tuple[str, ...]:
        """Models whose name ends with ``"Baseline"`` (Oracle, Uniform)."""
        return tuple(m for m in self.models if m.endswith(BASELINE_SUFFIX))

    @property
    def language_models(self) -> tuple[str, ...]:
        return tuple(m for m in self.models if not m.endswith(BASELINE_SUFFIX))

    def model_probs(self, temperature: float | np.ndarray = 1.0) -> np.ndarray:
        """``(n_models, n_rows, K)`` order-averaged LM probabilities.

        ``temperature`` is a scalar, ``(n_models, 1)``, or ``(n_models, n_subsets)``
        (one per subset x model, e.g. from ``classical.optimize_temperature``).
        """
        temperature = np.asarray(temperature, dtype=np.float64)
        if temperature.ndim == 2 and temperature.shape == (self.n_models, self.n_subsets):
            temperature = temperature[:, self.subset_idx]
        return option_probabilities(self.logits, temperature)

    def human_key_prob(self) -> np.ndarray:
        """``(n_rows,)`` human facility: the share choosing the key (renormalised)."""
        return np.take_along_axis(self.human_probs, self.key[:, None], axis=1)[:, 0]

    def theta0_prob(self) -> np.ndarray:
        """``(n_rows,)`` NAEP 3PL probability correct at theta = 0:
        ``c + (1 - c) / (1 + exp(1.7 a b))``; NaN where no 3PL is published."""
        return self.irt_c + (1.0 - self.irt_c) / (1.0 + np.exp(1.7 * self.irt_a * self.irt_b))

    def select(self, subsets: Iterable[str] | None = None, models: Iterable[str] | None = None) -> NaepData:
        """A copy restricted to some subsets and/or models (labels as in ``subsets``/``models``)."""
        keep_subsets = self.subsets if subsets is None else tuple(subsets)
        keep_models = self.models if models is None else tuple(models)
        for label, pool, kind in ((keep_subsets, self.subsets, "subset"), (keep_models, self.models, "model")):
            missing = sorted(set(label) - set(pool))
            if missing:
                raise ValueError(f"unknown {kind}(s) {missing}; available: {list(pool)}")
        subset_pos = np.array([self.subsets.index(s) for s in keep_subsets], dtype=np.int64)
        model_pos = np.array([self.models.index(m) for m in keep_models], dtype=np.int64)
        row_mask = np.isin(self.subset_idx, subset_pos)
        remap = np.full(self.n_subsets, -1, dtype=np.int32)
        remap[subset_pos] = np.arange(len(subset_pos), dtype=np.int32)
        return NaepData(
            rows=self.rows.loc[row_mask].reset_index(drop=True),
            subsets=keep_subsets,
            models=keep_models,
            subset_idx=remap[self.subset_idx[row_mask]],
            key=self.key[row_mask],
            human_probs=self.human_probs[row_mask],
            human_total=self.human_total[row_mask],
            logits=self.logits[model_pos][:, row_mask],
            irt_a=self.irt_a[row_mask],
            irt_b=self.irt_b[row_mask],
            irt_c=self.irt_c[row_mask],
        )


def available_subjects(folder: str | Path) -> tuple[str, ...]:
    """Subjects that have an items file in ``folder/items``."""
    items_dir = Path(folder) / "items"
    found = sorted(
        p.name[len("naep-") : -len("-items.jsonl")] for p in items_dir.glob("naep-*-items.jsonl")
    )
    return tuple(found)


def _read_jsonl(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise ValueError(f"missing file {path}: the NAEP folder must follow the naep-llm layout")
    with path.open(encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle if line.strip()]
    return pd.DataFrame.from_records(records)


def _latest_3pl(parameters: pd.DataFrame, subject: str) -> pd.DataFrame:
    """One 3PL row per (item_id, grade): the latest year NAEP published for the subject."""
    p3 = parameters.loc[(parameters["subject"] == subject) & (parameters["irt_model"] == "3pl")]
    p3 = p3.sort_values(["item_id", "grade", "year"]).drop_duplicates(["item_id", "grade"], keep="last")
    return p3[["item_id", "grade", "a", "b", "c", "year", "scale"]].rename(
        columns={"a": "irt_a", "b": "irt_b", "c": "irt_c", "year": "irt_year", "scale": "irt_scale"}
    )


def _load_subject(folder: Path, subject: str, parameters: pd.DataFrame | None):
    items = _read_jsonl(folder / "items" / f"naep-{subject}-items.jsonl")
    dists = _read_jsonl(folder / "items" / f"naep-{subject}-response-distributions.jsonl")
    n_options = items["options"].map(len)
    if n_options.nunique() != 1:
        raise ValueError(
            f"{subject}: items have different numbers of options "
            f"({n_options.value_counts().to_dict()}); all items of a subject need the same K"
        )
    unknown = sorted(set(dists["item_id"]) - set(items["item_id"]))
    if unknown:
        raise ValueError(f"{subject}: response distributions for items not in the items file: {unknown[:10]}")
    rows = dists.merge(items[["item_id", "correct_option_index"]], on="item_id", how="left")
    rows = rows.sort_values(["grade", "item_id"], kind="stable").reset_index(drop=True)
    if parameters is not None:
        rows = rows.merge(_latest_3pl(parameters, subject), on=["item_id", "grade"], how="left")
    else:
        rows = rows.assign(irt_a=np.nan, irt_b=np.nan, irt_c=np.nan, irt_year=np.nan, irt_scale=None)
    rows.insert(0, "subject", subject)
    rows["subset"] = subject + "-" + rows["grade"].astype(str)
    human_raw = np.array(rows["response_distribution"].tolist(), dtype=np.float64)
    k = int(n_options.iloc[0])
    if human_raw.shape != (len(rows), k):
        raise ValueError(f"{subject}: response distributions must have {k} shares per row")
    bad = rows.loc[~(human_raw.sum(axis=1) > 0) | (human_raw < 0).any(axis=1), "item_id"]
    if len(bad):
        raise ValueError(f"{subject}: response distributions with negative or zero total: {bad.tolist()}")

    files = sorted((folder / "llm-responses").glob(f"naep-{subject}-responses-*.jsonl"))
    models, logits = [], []
    for path in files:
        match = _RESPONSE_FILE.match(path.name)
        if match is None or match["subject"] != subject:
            continue
        frame = _read_jsonl(path)
        by_item = dict(zip(frame["item_id"], frame["logits"], strict=True))
        missing = sorted(set(rows["item_id"]) - set(by_item))
        if missing:
            raise ValueError(
                f"{path.name}: no logits for items {missing[:10]}"
                f"{' ...' if len(missing) > 10 else ''}; rerun the LM on all items or remove the file"
            )
        arr = np.array([by_item[i] for i in rows["item_id"]], dtype=np.float64)
        if arr.ndim != 3 or arr.shape[2] != k:
            raise ValueError(f"{path.name}: logits must be R x {k} per item, got shape {arr.shape[1:]}")
        if not np.isfinite(arr).all():
            bad_items = rows["item_id"][~np.isfinite(arr).all(axis=(1, 2))].tolist()
            raise ValueError(f"{path.name}: non-finite logits for items {bad_items[:10]}")
        models.append(match["model"])
        logits.append(arr)
    return rows.drop(columns=["correct_option_index"]).assign(
        key=rows["correct_option_index"].astype(np.int64)
    ), human_raw, models, logits


def load_naep(
    folder: str | Path,
    subjects: str | Sequence[str] | None = None,
    grades: Sequence[int] | None = None,
    models: Sequence[str] | None = None,
) -> NaepData:
    """Load NAEP items, human distributions, 3PL parameters and every LM's logits.

    Parameters
    ----------
    folder:
        the ``naep-llm`` folder (with ``items/`` and ``llm-responses/``).
    subjects:
        one subject or a list (e.g. ``"economics"``); default: every subject with an items file.
    grades:
        keep only these grades (default: all).
    models:
        keep only these LMs (default: every LM file found). A model must have a file
        for every requested subject.

    Raises
    ------
    ValueError
        naming the file or items when the layout is broken (missing logits for an item,
        a model present for one subject but not another, wrong shapes).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"NAEP folder {folder} does not exist; pass the naep-llm folder")
    all_subjects = available_subjects(folder)
    if subjects is None:
        subjects = all_subjects
    elif isinstance(subjects, str):
        subjects = (subjects,)
    unknown = sorted(set(subjects) - set(all_subjects))
    if unknown:
        raise ValueError(f"no items file for subject(s) {unknown} in {folder / 'items'}; found {list(all_subjects)}")
    param_path = folder / "items" / "naep-parameters.jsonl"
    parameters = _read_jsonl(param_path) if param_path.is_file() else None

    frames, humans, logit_blocks, model_sets = [], [], [], []
    for subject in subjects:
        rows, human_raw, subject_models, subject_logits = _load_subject(folder, subject, parameters)
        if grades is not None:
            keep = rows["grade"].isin(list(grades)).to_numpy()
            rows, human_raw = rows.loc[keep].reset_index(drop=True), human_raw[keep]
            subject_logits = [arr[keep] for arr in subject_logits]
        frames.append(rows)
        humans.append(human_raw)
        logit_blocks.append(dict(zip(subject_models, subject_logits, strict=True)))
        model_sets.append(set(subject_models))

    common = set.intersection(*model_sets) if model_sets else set()
    wanted = sorted(common) if models is None else list(models)
    for subject, found in zip(subjects, model_sets, strict=True):
        missing = sorted(set(wanted) - found)
        if missing:
            raise ValueError(
                f"no LM response file for {missing} and subject {subject!r}; "
                f"pass models= with LMs present for every subject ({sorted(common)})"
            )
    if not wanted:
        raise ValueError(f"no LM response files found in {folder / 'llm-responses'}")
    rows = pd.concat(frames, ignore_index=True)
    if rows.empty:
        raise ValueError(f"no rows left for subjects {list(subjects)} and grades {grades}")
    human_raw = np.concatenate(humans)
    r_counts = {blk[m].shape[1] for blk in logit_blocks for m in wanted}
    if len(r_counts) != 1:
        raise ValueError(f"LM files have different numbers of presentation orders: {sorted(r_counts)}")
    logits = np.stack([np.concatenate([blk[m] for blk in logit_blocks]) for m in wanted])

    # Subsets in subject order, then grade order.
    subset_labels = tuple(dict.fromkeys(rows["subset"]))
    subset_idx = pd.Categorical(rows["subset"], categories=subset_labels).codes.astype(np.int32)
    total = human_raw.sum(axis=1)
    return NaepData(
        rows=rows[["subject", "grade", "subset", "item_id", "key", "irt_year", "irt_scale"]],
        subsets=subset_labels,
        models=tuple(wanted),
        subset_idx=subset_idx,
        key=rows["key"].to_numpy(np.int64),
        human_probs=human_raw / total[:, None],
        human_total=total,
        logits=logits,
        irt_a=rows["irt_a"].to_numpy(np.float64),
        irt_b=rows["irt_b"].to_numpy(np.float64),
        irt_c=rows["irt_c"].to_numpy(np.float64),
    )
