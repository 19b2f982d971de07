"""Opinion counts of one human group and the LM groups steered to it, as one aggregated dataset.

The Bayesian side of distributional alignment fits one graded IRT model per
(attribute, *target* group): the target human group is the reference, every LM
condition (model x expression method x steering) whose distribution is compared with
that group is an aggregated focal group, and optionally the attribute's other human
groups are focal groups too (a human-to-human reference point). Every group shares the
item parameters; ``dif_shift[g, i]`` says how far group ``g``'s answers on item ``i``
sit from the target's at equal latent position, and ``bayes_align.alignment`` turns
the shifts into the posterior of ``corr_i(b_i, b_i + s_gi)``.

Answer order. The graded model needs ordered categories: an item's options enter in
the order of their positions on the item's scale (``OpinionData.ordinal``, from
``info.csv``; only the order of the positions matters, not their values). Options
without a position (``Refused``, ``Not sure``, ...) are dropped: their respondents
leave the human counts, and their share leaves the LM's effective sample size (an LM
giving 20% to ``Refused`` contributes ``0.8 * lm_n`` answers on the ordered options).
Items with fewer than two positioned options (no ``info.csv`` row) or with tied
positions (nominal items such as a list of unordered choices) cannot enter a graded
model and are left out of the Bayesian part (reported; they keep their classical TV).

LM counts. An LM cell's probabilities ``p_k`` (renormalised over the item's answers, as
for TV) become counts ``n_g p_k`` over the positioned options, where ``n_g`` is an
effective sample size: ``lm_n`` (default :data:`DEFAULT_LM_N`), per expression method
if a mapping, and ``"natural"`` for ``sequence`` outputs means ``sequence_length x
n_runs`` (the answers actually drawn). ``lm_n`` sets how much an LM distribution is
trusted as a sample: with a large ``n_g`` its item shifts are pinned down and the
alignment interval reflects mostly the human sample and the model; with a small one
the LM's own sampling noise widens it. It does not move the posterior mean much.

Comparisons left out of the Bayesian data are listed with a reason (:data:`REASONS`).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bayes_align.aggregated import AggregatedData
from bayes_align.combined import combine
from bayes_align.distributional import aligned_distributions
from bayes_align.opinions import UNSTEERED, LMDistributions, OpinionData

__all__ = [
    "DEFAULT_LM_N",
    "LABEL_SEPARATOR",
    "REASONS",
    "SEQUENCE_LENGTH",
    "OpinionFitData",
    "condition_label",
    "opinion_fit_data",
    "ordinal_layout",
    "target_groups",
]

DEFAULT_LM_N = 100.0
"""Effective sample size of an LM distribution (answers per item) unless told otherwise."""

SEQUENCE_LENGTH = 30
"""Answers per completion in the paper's ``sequence`` prompts (``lm_n="natural"``)."""

LABEL_SEPARATOR = " | "
"""Joins model, method and steering into a focal group label (model names may hold ``/``)."""

REASONS = {
    "no_human": "the target group has no respondents for the item",
    "unmapped": "the LM's letters could not be mapped to answers",
    "mapping_mismatch": "the result file's expected_results disagree with the human counts",
    "parse_failure": "the LM reported no probability mass on the item's answers",
    "no_positions": "the item has fewer than two options with a scale position (no info.csv row)",
    "tied_positions": "options share a scale position (a nominal item): no graded model",
    "no_ordered_mass": "the LM put all its mass on options without a position (e.g. Refused)",
    "target_no_ordered_answers": "the target group's respondents all chose options without a position",
    "too_few_items": "the condition has fewer than 3 usable items (alignment needs 3)",
    "too_few_identified": "fewer than 3 of the condition's items have answers on two or more options "
                          "(a shift is identified only there): the whole condition is left out",
}
"""Why an LM comparison (``model, method, steering, attribute, group, item``) is not in the
Bayesian data; the first four are the ``status`` of :func:`bayes_align.distributional.tv_table`."""

_CONDITION = ["model", "method", "steering"]
_COMPARISON = [*_CONDITION, "attribute", "group", "item"]


def condition_label(model: str, method: str, steering: str) -> str:
    """Focal group label of an LM condition, e.g. ``"gpt-4 | verbalized | persona"``."""
    return LABEL_SEPARATOR.join((str(model), str(method), str(steering)))


def _human_label(group: str) -> str:
    return LABEL_SEPARATOR.join(("human", str(group)))


def ordinal_layout(human: OpinionData) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """Where each item's ordered categories come from.

    Returns
    -------
    order : int64 ``(n_items, K_max)``: column ``j`` holds the ``counts`` column of the
        item's ``j``-th option by scale position (ascending), -1 after its last one.
    n_ordered : int64 ``(n_items,)``: options with a position (0 for left-out items).
    items : DataFrame ``item, n_options, n_ordered, dropped_options, usable, reason``
        (``reason`` is ``""``, ``no_positions`` or ``tied_positions``).
    """
    positions = human.ordinal
    finite = np.isfinite(positions)
    n_positioned = finite.sum(axis=1)
    n_distinct = np.array([len(np.unique(row[ok])) for row, ok in zip(positions, finite, strict=True)])
    reason = np.where(n_positioned < 2, "no_positions",
                      np.where(n_distinct < n_positioned, "tied_positions", ""))
    usable = reason == ""
    order = np.argsort(np.where(finite, positions, np.inf), axis=1, kind="stable")
    n_ordered = np.where(usable, n_positioned, 0)
    order = np.where(np.arange(order.shape[1])[None, :] < n_ordered[:, None], order, -1)
    dropped = [
        ", ".join(t for t, ok in zip(opts, finite[i, : len(opts)], strict=True) if not ok)
        for i, opts in enumerate(human.options)
    ]
    items = pd.DataFrame({
        "item": human.items, "n_options": human.n_options, "n_ordered": n_ordered,
        "dropped_options": dropped, "usable": usable, "reason": reason,
    })
    return order.astype(np.int64), n_ordered.astype(np.int64), items


def _reorder(values: np.ndarray, order: np.ndarray) -> np.ndarray:
    """``values[r, order[r, j]]``, NaN where ``order`` is -1 (per row)."""
    out = np.take_along_axis(values, np.maximum(order, 0), axis=1).astype(np.float64)
    out[order < 0] = np.nan
    return out


def _effective_n(cells: pd.DataFrame, lm_n: float | Mapping[str, float | str],
                 sequence_length: int) -> np.ndarray:
    """Effective sample size per LM comparison row (``method`` and ``n_runs`` columns)."""
    def one(method: str) -> float | str:
        value = lm_n.get(method, DEFAULT_LM_N) if isinstance(lm_n, Mapping) else lm_n
        if isinstance(value, str):
            if value != "natural":
                raise ValueError(f"lm_n for {method!r} must be a positive number or 'natural', got {value!r}")
            return value
        if not (np.isfinite(value) and value > 0):
            raise ValueError(f"lm_n for {method!r} must be a positive number, got {value!r}")
        return float(value)

    per_method = {m: one(m) for m in cells["method"].unique()}
    natural = [m for m, v in per_method.items() if v == "natural"]
    n = cells["method"].map({m: (np.nan if v == "natural" else v) for m, v in per_method.items()})
    n = n.to_numpy(np.float64)
    if natural:
        is_natural = cells["method"].isin(natural).to_numpy()
        runs = cells["n_runs"].to_numpy(np.float64)
        unknown = is_natural & ~(runs > 0)
        if unknown.any():
            bad = cells.loc[unknown, _COMPARISON].head(5).to_string(index=False)
            raise ValueError(f"lm_n='natural' needs the number of runs (n_runs) of every {natural} "
                             f"cell; unknown for {int(unknown.sum())} cells, e.g.:\n{bad}")
        n[is_natural] = sequence_length * runs[is_natural]
    return n


@dataclass(frozen=True)
class OpinionFitData:
    """The aggregated dataset of one (attribute, target group) fit and what was left out.

    Attributes
    ----------
    attribute, target : the human group that is the reference (e.g. ``POLPARTY``,
        ``Democrat``); its label in ``data`` is ``reference``.
    data : :class:`~bayes_align.AggregatedData` with option counts in scale order and no key.
    groups : one row per group of ``data``: ``label, kind`` (``reference``, ``lm`` or
        ``human``), ``model, method, steering`` (LM conditions; ``human`` and the group
        name for human groups), ``n_items``, ``mean_n`` (mean count per item),
        ``dropped_share`` (mean share of the group's answers on options without a position).
    rows : one row per (group, item) of ``data``: ``label, item, n, dropped_share``.
    excluded : LM comparisons (``model, method, steering, attribute, group, item``) with
        this target that are not in ``data``, with ``reason`` (:data:`REASONS`).
    items : :func:`ordinal_layout`'s item table for this fit, with ``in_data``.
    """

    attribute: str
    target: str
    reference: str
    data: AggregatedData
    groups: pd.DataFrame
    rows: pd.DataFrame
    excluded: pd.DataFrame
    items: pd.DataFrame

    @property
    def lm_groups(self) -> pd.DataFrame:
        return self.groups.loc[self.groups["kind"] == "lm"]

    def excluded_summary(self) -> pd.DataFrame:
        """Excluded comparisons per ``model, method, steering, reason``."""
        return (self.excluded.groupby([*_CONDITION, "reason"], sort=False).size()
                .rename("n").reset_index())


def target_groups(lm: LMDistributions, human: OpinionData) -> list[tuple[str, str]]:
    """The ``(attribute, group)`` pairs LMs were steered to (every human group when none was)."""
    steered = lm.cells.loc[lm.cells["attribute"] != UNSTEERED, ["attribute", "group"]].drop_duplicates()
    pairs = [p for p in human.groups if p in set(steered.itertuples(index=False, name=None))]
    return pairs or list(human.groups)


def opinion_fit_data(
    human: OpinionData,
    lm: LMDistributions,
    attribute: str,
    target: str,
    lm_n: float | Mapping[str, float | str] = DEFAULT_LM_N,
    human_groups: bool | Sequence[str] = True,
    sequence_length: int = SEQUENCE_LENGTH,
    min_items: int = 3,
) -> OpinionFitData:
    """The aggregated data of one fit: the ``target`` group and every LM condition compared with it.

    Parameters
    ----------
    human, lm : the human counts and the LM distributions (every steering method; the
        unsteered distributions are compared with every target).
    attribute, target : the reference group, e.g. ``("POLPARTY", "Democrat")``.
    lm_n : effective sample size of an LM distribution (see the module docstring): a
        number, or ``{method: number or "natural"}`` (methods not named get
        :data:`DEFAULT_LM_N`).
    human_groups : also add the attribute's other human groups as focal groups: ``True``
        adds those that LMs were steered to (:func:`target_groups`), a list names them,
        ``False`` adds none.
    sequence_length : answers per completion for ``lm_n="natural"``.
    min_items : an LM condition with fewer usable items is left out (``too_few_items``),
        and so is one with fewer items whose shift the data identify (answers on at least
        two options from both the condition and the target; ``too_few_identified``).
    """
    if (attribute, target) not in set(human.groups):
        raise ValueError(f"({attribute!r}, {target!r}) is not a human group; groups: {list(human.groups)}")
    if min_items < 3:
        raise ValueError(f"min_items must be at least 3 (alignment correlations need 3 items), got {min_items}")
    order, n_ordered, items = ordinal_layout(human)
    item_pos = {item: i for i, item in enumerate(human.items)}
    k_max = max(int(n_ordered.max(initial=0)), 2)
    order = order[:, :k_max] if order.shape[1] >= k_max else np.pad(
        order, ((0, 0), (0, k_max - order.shape[1])), constant_values=-1)
    cells = human.cells()

    def ordered_counts(counts: np.ndarray, item_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Counts over the positioned options in scale order, and the share dropped."""
        full = np.nan_to_num(counts)
        kept = _reorder(full, order[item_idx])
        total = full.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            dropped = 1.0 - np.nansum(kept, axis=1) / total
        return kept, dropped

    # the reference: the target group's counts on usable items it answered
    reference = _human_label(target)
    in_attr = (cells["attribute"] == attribute).to_numpy()
    ref_cells = np.flatnonzero(in_attr & (cells["group"] == target).to_numpy())
    ref_item = human.cell_item[ref_cells]
    ref_counts, ref_dropped = ordered_counts(human.counts[ref_cells], ref_item)
    ref_total = np.nansum(ref_counts, axis=1)
    usable = items["usable"].to_numpy()[ref_item]
    answered = human.n_respondents[ref_cells] > 0
    keep_ref = usable & answered & (ref_total > 0)
    fit_items = set(np.asarray(human.items, dtype=object)[ref_item[keep_ref]])
    item_reason = dict(zip(items["item"], items["reason"], strict=True))
    for c, i in zip(ref_cells, ref_item, strict=True):
        if item_reason[human.items[i]] == "" and human.n_respondents[c] > 0 and human.items[i] not in fit_items:
            item_reason[human.items[i]] = "target_no_ordered_answers"
        elif item_reason[human.items[i]] == "" and human.n_respondents[c] == 0:
            item_reason[human.items[i]] = "no_human"

    frames = [_counts_frame(reference, np.asarray(human.items, dtype=object)[ref_item[keep_ref]],
                            ref_counts[keep_ref], ref_dropped[keep_ref])]
    groups = [dict(label=reference, kind="reference", model="human", method="counts", steering=target)]

    # LM comparisons with this target
    aligned = aligned_distributions(human, lm, renormalize=True, unsteered_groups=[(attribute, target)])
    table = aligned.table
    mine = ((table["attribute"] == attribute) & (table["group"] == target)).to_numpy()
    comparisons = table.loc[mine, _COMPARISON + ["status"]].reset_index(drop=True)
    lm_cells = lm.cells.reset_index(drop=True)
    comparisons["n_runs"] = lm_cells["n_runs"].to_numpy()[aligned.lm_cell[mine]]
    probs = aligned.lm_probs[mine]
    row_item = comparisons["item"].map(item_pos).to_numpy(np.int64)
    reason = comparisons["status"].where(comparisons["status"] != "ok", "").to_numpy(object)
    item_why = comparisons["item"].map(item_reason).to_numpy(object)
    reason = np.where((reason == "") & (item_why != ""), item_why, reason)
    n_lm = _effective_n(comparisons, lm_n, sequence_length)
    lm_counts, lm_dropped = ordered_counts(probs, row_item)
    lm_counts *= n_lm[:, None]
    reason = np.where((reason == "") & ~(np.nansum(lm_counts, axis=1) > 0), "no_ordered_mass", reason)
    labels = np.array([condition_label(m, me, s) for m, me, s in
                       comparisons[_CONDITION].itertuples(index=False, name=None)], dtype=object)
    n_usable = pd.Series(reason == "").groupby(labels).transform("sum").to_numpy()
    reason = np.where((reason == "") & (n_usable < min_items), "too_few_items", reason)
    keep = reason == ""
    for label in dict.fromkeys(labels[keep]):
        rows = keep & (labels == label)
        frames.append(_counts_frame(label, comparisons["item"].to_numpy(object)[rows],
                                    lm_counts[rows], lm_dropped[rows]))
        first = comparisons.loc[np.flatnonzero(rows)[0]]
        groups.append(dict(label=label, kind="lm", model=first["model"], method=first["method"],
                           steering=first["steering"]))
    excluded = comparisons.loc[~keep, _COMPARISON].assign(reason=reason[~keep]).reset_index(drop=True)

    # the attribute's other human groups
    if human_groups is True:
        others = [g for a, g in target_groups(lm, human) if a == attribute and g != target]
    elif human_groups is False:
        others = []
    else:
        others = [str(g) for g in human_groups if g != target]
        unknown = [g for g in others if (attribute, g) not in set(human.groups)]
        if unknown:
            raise ValueError(f"human_groups {unknown} are not groups of {attribute!r}")
    for other in others:
        oc = np.flatnonzero(in_attr & (cells["group"] == other).to_numpy())
        o_item = human.cell_item[oc]
        o_counts, o_dropped = ordered_counts(human.counts[oc], o_item)
        names = np.asarray(human.items, dtype=object)[o_item]
        ok = np.isin(names, list(fit_items)) & (np.nansum(o_counts, axis=1) > 0)
        if ok.sum() < min_items:
            continue
        label = _human_label(other)
        frames.append(_counts_frame(label, names[ok], o_counts[ok], o_dropped[ok]))
        groups.append(dict(label=label, kind="human", model="human", method="counts", steering=other))

    frame = pd.concat(frames, ignore_index=True)
    columns = [f"option_{k}" for k in range(k_max)]
    data = AggregatedData.from_frame(frame, item="item", group="label", option_columns=columns,
                                     key=None, reference_group=reference)
    # groups whose answers vary on fewer than min_items items (with the reference's) have no
    # alignment correlation; the model layer says which (item, group) shifts are identified
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        unidentified = combine(data).dif_unidentified
    identified = pd.Series([(i, g) not in unidentified for i, g in zip(frame["item"], frame["label"], strict=True)])
    n_identified = identified.groupby(frame["label"].to_numpy()).sum()
    weak = [g for g in n_identified.index if g != reference and n_identified[g] < min_items]
    if weak:
        dropped = comparisons.assign(label=labels, reason=reason).loc[keep & np.isin(labels, weak)]
        excluded = pd.concat([excluded, dropped[_COMPARISON].assign(reason="too_few_identified")],
                             ignore_index=True)
        frame = frame.loc[~frame["label"].isin(weak)].reset_index(drop=True)
        groups = [g for g in groups if g["label"] not in weak]
        data = AggregatedData.from_frame(frame, item="item", group="label", option_columns=columns,
                                         key=None, reference_group=reference)
    rows = frame[["label", "item", "n", "dropped_share"]]
    per_group = rows.groupby("label", sort=False).agg(
        n_items=("item", "size"), mean_n=("n", "mean"), dropped_share=("dropped_share", "mean"))
    group_table = pd.DataFrame(groups).merge(per_group, left_on="label", right_index=True, how="left")
    item_table = items.assign(reason=items["item"].map(item_reason),
                              in_data=items["item"].isin(fit_items))
    return OpinionFitData(attribute=attribute, target=target, reference=reference, data=data,
                          groups=group_table.reset_index(drop=True), rows=rows, excluded=excluded,
                          items=item_table)


def _counts_frame(label: str, items: Iterable[str], counts: np.ndarray, dropped: np.ndarray) -> pd.DataFrame:
    counts = np.asarray(counts, dtype=np.float64)
    frame = pd.DataFrame(counts, columns=[f"option_{k}" for k in range(counts.shape[1])])
    frame.insert(0, "item", list(items))
    frame.insert(1, "label", label)
    frame["n"] = np.nansum(counts, axis=1)
    frame["dropped_share"] = dropped
    return frame
