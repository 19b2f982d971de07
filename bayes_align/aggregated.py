"""Aggregated responses: counts per (item, group) instead of person ids.

Much human data exists only as aggregates: the share of a population choosing each
option of an item (NAEP, survey toplines); an LM's option probabilities times an
effective sample size are the same kind of data. An :class:`AggregatedData` holds them
as one row per (item, group): the count of the key out of the row total, and
optionally the count of every option. The model integrates ability over each
aggregated group's population (:mod:`bayes_align.model.joint`); combine aggregated and
person-level groups with :func:`bayes_align.combine`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from bayes_align.data import GroupedItems

if TYPE_CHECKING:  # pragma: no cover
    from bayes_align.naep import NaepData

__all__ = ["AggregatedData"]

# ------------------------------------------------------------------------------ data


@dataclass(frozen=True, eq=False)
class AggregatedData(GroupedItems):
    """Aggregated responses per (item, group) row: key counts, optionally option counts.

    ``n_correct`` of ``n_total`` feed the binary likelihood; ``option_counts`` (with the
    items' ``key``) the nominal one (``fit_aggregated(..., likelihood="nominal")``). Counts
    may be fractional (soft counts: an effective sample size times a probability). Build
    with :meth:`from_frame` or :meth:`from_naep`.

    Attributes
    ----------
    item_idx, group_idx : int32 ``(n_rows,)`` indices into ``items`` / ``groups``.
    n_correct, n_total : float64 ``(n_rows,)``. With option counts they must equal the
        key's count and the row's total (the constructors derive them).
    items, groups : tuples of labels; ``reference_group``: the reference label.
    item_prior : optional ``{"difficulty", "log_discrimination", "guessing"}`` arrays of
        shape ``(n_items,)`` with published reference-item parameters (NaN = none).
    option_counts : optional float64 ``(n_rows, K_max)``: column ``k`` is option ``k``;
        an item with ``K_i < K_max`` options has ``NaN`` in columns ``K_i..K_max - 1`` of
        every one of its rows (``n_options`` per item is read from that pattern).
    key : optional int ``(n_items,)``: 0-based option index of every item's key
        (required with ``option_counts``).
    """

    item_idx: np.ndarray
    group_idx: np.ndarray
    n_correct: np.ndarray
    n_total: np.ndarray
    items: tuple[str, ...]
    groups: tuple[str, ...]
    reference_group: str
    item_prior: Mapping[str, np.ndarray] | None = field(default=None)
    option_counts: np.ndarray | None = field(default=None)
    key: np.ndarray | None = field(default=None)

    def __post_init__(self) -> None:
        n = self.item_idx.shape[0]
        for name in ("group_idx", "n_correct", "n_total"):
            if getattr(self, name).shape != (n,):
                raise ValueError(f"{name} must have shape ({n},) like item_idx")
        if self.option_counts is not None:
            self._check_options()
        if self.reference_group is not None and self.reference_group not in self.groups:
            raise ValueError(
                f"reference group {self.reference_group!r} not among the groups {list(self.groups)}; "
                "pass reference_group= with the label of the human population (or None for "
                "data without it, to combine with the reference's data)"
            )
        bad = ~np.isfinite(self.n_total) | (self.n_total <= 0)
        if self.has_key:
            bad |= ~np.isfinite(self.n_correct) | (self.n_correct < 0)
            bad |= self.n_correct > self.n_total * (1 + 1e-12)
        if bad.any():
            rows = self.to_frame().loc[bad].head(10)
            raise ValueError(
                "counts must satisfy 0 <= n_correct <= n_total and n_total > 0; offending rows:\n"
                f"{rows.to_string()}"
            )
        pairs = self.item_idx.astype(np.int64) * len(self.groups) + self.group_idx
        unique, counts = np.unique(pairs, return_counts=True)
        if (counts > 1).any():
            dup = unique[counts > 1][:10]
            labels = [(self.items[p // len(self.groups)], self.groups[p % len(self.groups)]) for p in dup]
            raise ValueError(f"duplicate (item, group) rows {labels}; aggregate them into one row each")
        if self.reference_group is None:
            return
        ref_items = set(self.item_idx[self.group_idx == self.reference_index].tolist())
        missing = [self.items[i] for i in range(len(self.items)) if i not in ref_items]
        if missing:
            raise ValueError(
                f"items {missing[:10]} have no row for the reference group {self.reference_group!r}; "
                "their difficulty and DIF are not identified: drop them"
            )
        for g in self.focal_index:
            if (self.group_idx == g).sum() < 3:
                raise ValueError(f"focal group {self.groups[g]!r} has fewer than 3 items")

    def _check_options(self) -> None:
        counts = np.asarray(self.option_counts)
        n = self.item_idx.shape[0]
        if counts.ndim != 2 or counts.shape[0] != n or counts.shape[1] < 2:
            raise ValueError(
                f"option_counts must have shape (n_rows, K_max) = ({n}, K >= 2), got {counts.shape}"
            )
        if self.key is not None and np.shape(self.key) != (self.n_items,):
            raise ValueError(
                f"key must give the 0-based key option of each of the {self.n_items} items"
            )
        present = ~np.isnan(counts)
        n_opts = present.sum(axis=1)
        prefix = (np.cumsum(~present, axis=1) == 0) == present  # options 0..K_i-1, then NaN only
        bad = ~prefix.all(axis=1) | (n_opts < 2)
        if bad.any():
            rows = self.to_frame().loc[bad].head(10)
            raise ValueError(
                "option counts must fill options 0..K_i-1 of each row (K_i >= 2) and be NaN "
                f"only after them (options the item does not have); offending rows:\n{rows.to_string()}"
            )
        per_item = pd.Series(n_opts).groupby(self.item_idx).nunique()
        if (per_item > 1).any():
            labels = [self.items[i] for i in per_item.index[per_item > 1][:10]]
            raise ValueError(
                f"items {labels} have rows with different numbers of options; every group's "
                "row of an item must count the same options"
            )
        negative = present & ~(np.nan_to_num(counts, nan=0.0) >= 0)
        negative |= present & ~np.isfinite(np.where(present, counts, 0.0))
        if negative.any(axis=1).any():
            rows = self.to_frame().loc[negative.any(axis=1)].head(10)
            raise ValueError(f"option counts must be finite and >= 0; offending rows:\n{rows.to_string()}")
        total = np.nansum(counts, axis=1)
        if self.key is None:  # opinion items: no key, n_correct is undefined
            if not (np.allclose(total, self.n_total, rtol=1e-9, atol=0)
                    and np.isnan(self.n_correct).all()):
                raise ValueError(
                    "without a key, n_total must be the row's total option count and n_correct "
                    "NaN; build the data with from_frame(option_columns=..., key=None)"
                )
            return
        key = np.asarray(self.key)
        n_options = self.n_options
        if not np.issubdtype(key.dtype, np.integer) or (key < 0).any() or (key >= n_options).any():
            bad_items = [self.items[i] for i in np.flatnonzero((key < 0) | (key >= n_options))[:10]]
            raise ValueError(
                f"key must be an integer option index 0..K_i-1 per item; out of range for {bad_items}"
            )
        correct = counts[np.arange(n), key[self.item_idx]]
        if not (np.allclose(total, self.n_total, rtol=1e-9, atol=0)
                and np.allclose(correct, self.n_correct, rtol=1e-9, atol=1e-12)):
            raise ValueError(
                "n_correct and n_total must equal the key's option count and the row's total "
                "option count; build the data with from_frame(option_columns=...) or "
                "from_naep(option_counts=True), which derive them"
            )

    # ------------------------------------------------------------------ properties
    @property
    def n_rows(self) -> int:
        return int(self.item_idx.shape[0])

    @property
    def has_key(self) -> bool:
        """Whether items have a key (False for opinion items counted over options only)."""
        return self.option_counts is None or self.key is not None

    @property
    def has_options(self) -> bool:
        """Whether option counts are held (needed by the nominal likelihood)."""
        return self.option_counts is not None

    @property
    def n_options(self) -> np.ndarray:
        """int ``(n_items,)`` options per item (2 for every item without option counts)."""
        if self.option_counts is None:
            return np.full(self.n_items, 2, dtype=np.int64)
        out = np.zeros(self.n_items, dtype=np.int64)
        out[self.item_idx] = (~np.isnan(self.option_counts)).sum(axis=1)
        return out

    def option_shares(self) -> np.ndarray:
        """``(n_rows, K_max)`` option counts divided by the row totals (NaN = no such option)."""
        if self.option_counts is None:
            raise ValueError("no option counts: this AggregatedData holds only key counts")
        return self.option_counts / self.n_total[:, None]

    def share(self) -> np.ndarray:
        """``n_correct / n_total`` per row."""
        return self.n_correct / self.n_total

    def to_frame(self) -> pd.DataFrame:
        """Long frame: ``item, group, n_correct, n_total`` (+ ``option_0..`` with option counts)."""
        frame = pd.DataFrame(
            {
                "item": np.asarray(self.items, dtype=object)[self.item_idx],
                "group": np.asarray(self.groups, dtype=object)[self.group_idx],
                "n_correct": self.n_correct,
                "n_total": self.n_total,
            }
        )
        if self.option_counts is not None and np.ndim(self.option_counts) == 2:
            for k in range(self.option_counts.shape[1]):
                frame[f"option_{k}"] = self.option_counts[:, k]
        return frame

    # ---------------------------------------------------------------- constructors
    @classmethod
    def from_frame(
        cls,
        frame: pd.DataFrame,
        item: str = "item",
        group: str = "group",
        n_correct: str = "n_correct",
        n_total: str = "n_total",
        reference_group: str | None = "human",
        option_columns: Sequence[str] | None = None,
        key: str | None = "key",
    ) -> AggregatedData:
        """From a long DataFrame with one row per (item, group).

        Group order: the reference first, then the other groups in order of appearance.
        With ``option_columns`` (e.g. ``["A", "B", "C", "D"]``: counts of option 0, 1, ...;
        NaN where the item has fewer options) the counts per option are kept for the
        nominal likelihood and ``n_correct``/``n_total`` are derived from them and the
        ``key`` column (0-based key option, the same on every row of an item); the
        ``n_correct``/``n_total`` columns are then not needed. ``key=None``: items without
        a key (opinion items; fitted with the graded model over ordered options).
        ``reference_group=None``: data without the reference group, to combine with
        the reference's data (:func:`bayes_align.combine`).
        """
        needed = [item, group] + (
            [n_correct, n_total] if option_columns is None
            else [*option_columns] + ([] if key is None else [key])
        )
        missing = [c for c in needed if c not in frame.columns]
        if missing:
            raise ValueError(f"columns {missing} not in the frame (columns: {list(frame.columns)})")
        item_labels = tuple(dict.fromkeys(frame[item].astype(str)))
        seen = list(dict.fromkeys(frame[group].astype(str)))
        group_labels = tuple([reference_group] + [g for g in seen if g != reference_group]) if reference_group in seen else tuple(seen)
        item_idx = pd.Categorical(frame[item].astype(str), categories=item_labels).codes.astype(np.int32)
        counts = key_of_item = None
        if option_columns is None:
            correct, total = frame[n_correct].to_numpy(np.float64), frame[n_total].to_numpy(np.float64)
        else:
            if len(option_columns) < 2:
                raise ValueError("option_columns must name at least two option-count columns")
            counts = frame[list(option_columns)].to_numpy(np.float64)
            total = np.nansum(counts, axis=1)
        if option_columns is not None and key is None:
            correct = np.full(len(frame), np.nan)
        elif option_columns is not None:
            keys = pd.DataFrame({"item": item_idx, "key": frame[key].to_numpy()})
            if keys["key"].isna().any() or keys.groupby("item")["key"].nunique().gt(1).any():
                bad = keys.groupby("item")["key"].nunique()
                labels = [item_labels[i] for i in bad.index[bad > 1][:10]]
                raise ValueError(f"column {key!r} must give one key per item; items with several or none: {labels}")
            key_of_item = keys.groupby("item")["key"].first().reindex(range(len(item_labels))).to_numpy()
            if not np.allclose(key_of_item, np.round(key_of_item)):
                raise ValueError(f"column {key!r} must hold integer option indices (0-based)")
            key_of_item = np.round(key_of_item).astype(np.int64)
            n_opts = (~np.isnan(counts)).sum(axis=1)
            in_range = (key_of_item[item_idx] >= 0) & (key_of_item[item_idx] < n_opts)
            if not in_range.all():
                labels = sorted({item_labels[i] for i in item_idx[~in_range]})[:10]
                raise ValueError(
                    f"key option outside the item's counted options (0..K_i-1) for items {labels}"
                )
            correct = counts[np.arange(len(counts)), key_of_item[item_idx]]
        return cls(
            item_idx=item_idx,
            group_idx=pd.Categorical(frame[group].astype(str), categories=group_labels).codes.astype(np.int32),
            n_correct=correct,
            n_total=total,
            items=item_labels,
            groups=group_labels,
            reference_group=reference_group,
            option_counts=counts,
            key=key_of_item,
        )

    @classmethod
    def from_naep(
        cls,
        naep: NaepData,
        human_n: float,
        model_n: float,
        temperature: float | np.ndarray = 1.0,
        models: Sequence[str] | None = None,
        reference_group: str = "human",
        naep_prior: bool = False,
        option_counts: bool = False,
    ) -> AggregatedData:
        """Humans and LMs of one NAEP subset as aggregated groups.

        The human row of item ``i`` has ``n_total = human_n`` and
        ``n_correct = human_n * h_key`` (renormalised share choosing the key); each LM
        ``m`` has ``n_total = model_n`` and ``n_correct = model_n * p_key`` with its
        order-averaged key probability at ``temperature`` (scalar or ``(n_models, 1)``,
        e.g. from :func:`bayes_align.classical.optimize_temperature`). ``human_n`` and
        ``model_n`` are *effective* sample sizes that you state: they set how much the
        data can move the posterior (intervals shrink like ``1 / sqrt(n)``).

        ``models`` defaults to the LMs (baselines left out: their key probability is
        the same for every item). ``naep_prior=True`` stores NAEP's 3PL parameters as
        the reference items' prior (``difficulty = b``, ``discrimination = 1.7 a``,
        ``guessing = c``), each ``Normal(value, Priors.item_prior_sd)`` (``Beta`` with that
        mean and concentration 100 for guessing) instead of the default priors. ``option_counts=True`` also keeps
        the counts of every option (humans: ``human_n`` x renormalised shares; LMs:
        ``model_n`` x order-averaged option probabilities at ``temperature``) for
        ``fit_aggregated(..., likelihood="nominal")``.
        """
        if naep.n_subsets != 1:
            raise ValueError(
                f"from_naep needs one (subject, grade) subset, got {list(naep.subsets)}; "
                "use naep.select([subset]) first"
            )
        if not (human_n > 0 and model_n > 0):
            raise ValueError("human_n and model_n must be positive effective sample sizes")
        models = tuple(naep.language_models if models is None else models)
        if reference_group in models:
            raise ValueError(f"an LM is called {reference_group!r}; pass another reference_group")
        temperature = np.asarray(temperature, np.float64)
        if temperature.ndim == 2 and temperature.shape[0] == naep.n_models:
            temperature = temperature[[naep.models.index(m) for m in models]]
        naep = naep.select(models=models)
        model_probs = naep.model_probs(temperature)  # (n_models, n_items, K)
        key_prob = np.take_along_axis(model_probs, naep.key[None, :, None], axis=-1)[..., 0]
        items = tuple(naep.rows["item_id"].astype(str))
        n_items = len(items)
        groups = (reference_group, *models)
        shares = np.concatenate([naep.human_key_prob()[None], key_prob])  # (groups, items)
        totals = np.concatenate([np.full((1, n_items), human_n), np.full((len(models), n_items), model_n)])
        prior = None
        if naep_prior:
            prior = {
                "difficulty": naep.irt_b.copy(),
                "log_discrimination": np.log(1.7 * naep.irt_a),
                "guessing": naep.irt_c.copy(),
            }
        counts = None
        if option_counts:
            probs = np.concatenate([naep.human_probs[None], model_probs])  # (groups, items, K)
            counts = (probs * totals[..., None]).reshape(-1, naep.n_options)
        return cls(
            item_idx=np.tile(np.arange(n_items, dtype=np.int32), len(groups)),
            group_idx=np.repeat(np.arange(len(groups), dtype=np.int32), n_items),
            n_correct=(shares * totals).ravel(),
            n_total=totals.ravel() if counts is None else counts.sum(axis=1),
            items=items,
            groups=groups,
            reference_group=reference_group,
            item_prior=prior,
            option_counts=counts,
            key=None if counts is None else naep.key.astype(np.int64),
        )
