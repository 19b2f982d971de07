"""The psychometric-alignment study protocol: control populations and held-out items.

An alignment number means little on its own. He-Yueya et al. (2024, "Psychometric
Alignment") calibrate it against *control populations* built from the human data and
fitted together with the groups under study:

- ``control:split_half``: a random half of the reference persons moved into a focal
  group. Two halves of one population differ only by sampling noise, so this is the
  alignment a perfectly human-like group can reach with this many persons and items.
- ``control:shuffled``: reference persons drawn with replacement, each person's responses
  permuted across the items they answered (within items of the same number of
  categories). Person totals and category shares stay, the item ordering is destroyed:
  a group with human-like response rates and no item structure.
- ``control:random``: persons answering uniformly at random over each item's categories,
  on the items of a resampled reference person.

:func:`lm_ensemble` pools persons of several LM groups in equal shares (the paper's
LM ensemble). :func:`control_table` places every real group between the controls, and
:func:`split_items` holds items out (e.g. of fine-tuning) so that
``ba.alignment(fit, items=split.test)`` measures alignment on items a model was not
tuned on. The study of how alignment depends on the human sample size is
:func:`bayes_align.sample_size.sample_size_study` (re-exported here).

Everything here builds :class:`~bayes_align.data.ResponseData` and reads fits through
``bayes_align.fit`` / ``alignment`` / ``compare_alignment``; there is no model math.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

import bayes_align as ba
from bayes_align.sample_size import SampleSizeStudy, sample_size_study

__all__ = [
    "CONTROL_KINDS",
    "CONTROL_PREFIX",
    "ItemSplit",
    "SampleSizeStudy",
    "control_table",
    "controls",
    "lm_ensemble",
    "plot_control_table",
    "sample_size_study",
    "split_items",
]

#: The control populations, in the order :func:`controls` adds them.
CONTROL_KINDS = ("split_half", "shuffled", "random")
#: Group labels of the controls are ``CONTROL_PREFIX + kind``.
CONTROL_PREFIX = "control:"


# ----------------------------------------------------------------------------- building
def _rows_of_persons(data: ba.ResponseData, persons: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Observation rows of ``persons`` (repeats allowed), person by person.

    Returns ``(rows, copy)``: ``rows`` indexes ``data``'s observations and ``copy[k]`` is
    the position in ``persons`` of the copy that row ``k`` belongs to (non-decreasing).
    """
    counts = np.bincount(data.person_idx, minlength=data.n_persons)
    by_person = np.argsort(data.person_idx, kind="stable")
    starts = np.cumsum(counts) - counts
    taken = counts[persons]
    copy = np.repeat(np.arange(persons.size), taken)
    offset = np.arange(taken.sum()) - np.repeat(np.cumsum(taken) - taken, taken)
    return by_person[np.repeat(starts[persons], taken) + offset], copy


class _Population:
    """``data`` plus new focal groups of new persons; :meth:`build` makes the ResponseData."""

    def __init__(self, data: ba.ResponseData) -> None:
        self.data = data
        self.person_group = data.person_group.copy()
        self.groups = list(data.groups)
        self.persons = list(data.persons)
        self.columns: dict[str, list[np.ndarray]] = {
            name: [getattr(data, name)] for name in ("person_idx", "item_idx", "response", "weight")
        }

    def new_group(self, label: str) -> int:
        if label in self.groups:
            raise ValueError(
                f"the data already have a group {label!r}; rename it or drop it before adding "
                "it again"
            )
        self.groups.append(label)
        return len(self.groups) - 1

    def add_group(
        self,
        label: str,
        n_persons: int,
        copy: np.ndarray,
        rows: np.ndarray,
        response: np.ndarray,
        weight: np.ndarray,
    ) -> None:
        """Persons ``label#0..label#<n_persons - 1>``; person ``copy[k]`` answers the item of
        ``data``'s row ``rows[k]`` with ``response[k]`` (weight ``weight[k]``)."""
        group = self.new_group(label)
        first = len(self.persons)
        self.persons.extend(f"{label}#{k}" for k in range(n_persons))
        self.person_group = np.concatenate(
            [self.person_group, np.full(n_persons, group, dtype=self.person_group.dtype)]
        )
        self.columns["person_idx"].append(first + copy)
        self.columns["item_idx"].append(self.data.item_idx[rows])
        self.columns["response"].append(response)
        self.columns["weight"].append(weight)

    def build(self) -> ba.ResponseData:
        data = self.data
        return ba.ResponseData.from_indices(
            **{name: np.concatenate(parts) for name, parts in self.columns.items()},
            person_group=self.person_group,
            persons=self.persons,
            items=data.items,
            groups=self.groups,
            reference_group=data.reference_group,
            kind=data.kind,
            n_categories=data.n_categories,
        )


def _check_size(size: int | None, what: str) -> None:
    if size is not None and (isinstance(size, bool) or int(size) != size or size < 1):
        raise ValueError(f"{what} must be a positive whole number of persons, got {size!r}")


def controls(
    data: ba.ResponseData,
    kinds: Sequence[str] = CONTROL_KINDS,
    size: int | None = None,
    seed: int = 0,
) -> ba.ResponseData:
    """``data`` with control populations added as focal groups ``control:<kind>``.

    Parameters
    ----------
    data
        Responses of the reference (human) group and any focal groups; binary, soft or
        ordinal.
    kinds
        Any of ``"split_half"``, ``"shuffled"``, ``"random"`` (see the module docstring).
    size
        Persons in ``shuffled`` and ``random`` (default: as many as the reference has in
        ``data``); larger controls lower their noise floor. ``split_half`` always moves
        half the reference persons (rounded down).
    seed
        Seed of the random draws.

    Returns
    -------
    A new :class:`ResponseData` with the same items and the controls appended to
    ``groups``; fit it jointly with ``bayes_align.fit`` and read the controls'
    alignment beside the real groups (:func:`control_table`).
    """
    kinds = tuple(kinds)
    unknown = [k for k in kinds if k not in CONTROL_KINDS]
    if unknown or not kinds or len(set(kinds)) != len(kinds):
        raise ValueError(f"kinds must be distinct entries of {CONTROL_KINDS}, got {list(kinds)}")
    _check_size(size, "size")
    rng = np.random.default_rng(seed)
    population = _Population(data)
    reference = np.flatnonzero(data.person_group == data.reference_index)
    if "split_half" in kinds:
        n_move = reference.size // 2
        if n_move < 1:
            raise ValueError(
                f"split_half needs at least 2 persons in the reference {data.reference_group!r}"
            )
        moved = rng.choice(reference, size=n_move, replace=False)
        population.person_group[moved] = population.new_group(CONTROL_PREFIX + "split_half")
    n_new = reference.size if size is None else int(size)
    n_categories = data.n_categories[data.item_idx]
    for kind in kinds:
        if kind == "split_half":
            continue
        source = rng.choice(reference, size=n_new, replace=True)
        rows, copy = _rows_of_persons(data, source)
        if kind == "shuffled":
            # permute (response, weight) pairs within each copy and number of categories:
            # ``slots`` lists the rows block by block, ``drawn`` the same blocks in random order
            slots = np.lexsort((n_categories[rows], copy))
            drawn = np.lexsort((rng.random(rows.size), n_categories[rows], copy))
            permuted = rows.copy()
            permuted[slots] = rows[drawn]
            response, weight = data.response[permuted], data.weight[permuted]
        else:
            response = rng.integers(0, n_categories[rows]).astype(np.float64)
            weight = data.weight[rows]
        population.add_group(CONTROL_PREFIX + kind, n_new, copy, rows, response, weight)
    return population.build()


def lm_ensemble(
    data: ba.ResponseData,
    groups: Sequence[str],
    name: str = "lm:ensemble",
    size: int | None = None,
    seed: int = 0,
) -> ba.ResponseData:
    """``data`` plus a focal group ``name`` of persons pooled from several LM groups.

    The ensemble has ``size`` persons (default: as many as the reference group), drawn
    in equal shares from ``groups`` (the first ``size mod len(groups)`` groups give one
    person more). A group's persons are drawn without replacement while it has enough,
    with replacement otherwise; each drawn person is a new person ``name#k`` with the
    original's responses. The source groups stay in the data.
    """
    groups = [str(g) for g in groups]
    unknown = [g for g in groups if g not in data.focal_groups]
    if unknown:
        raise ValueError(
            f"{unknown} are not focal groups of the data (focal groups: {list(data.focal_groups)})"
        )
    if len(groups) < 2 or len(set(groups)) != len(groups):
        raise ValueError(f"an ensemble pools at least two distinct groups, got {groups}")
    _check_size(size, "size")
    n_total = (
        int(size) if size is not None else int(np.sum(data.person_group == data.reference_index))
    )
    if n_total < len(groups):
        raise ValueError(
            f"size {n_total} is smaller than the number of pooled groups {len(groups)}"
        )
    shares = np.full(len(groups), n_total // len(groups))
    shares[: n_total % len(groups)] += 1
    rng = np.random.default_rng(seed)
    sources = []
    for group, share in zip(groups, shares, strict=True):
        members = np.flatnonzero(data.person_group == data.groups.index(group))
        sources.append(rng.choice(members, size=share, replace=share > members.size))
    source = np.concatenate(sources)
    rows, copy = _rows_of_persons(data, source)
    population = _Population(data)
    population.add_group(str(name), n_total, copy, rows, data.response[rows], data.weight[rows])
    return population.build()


# ----------------------------------------------------------------------------- reading
class ItemSplit(NamedTuple):
    """Item labels for tuning (``train``) and for measuring alignment (``test``)."""

    train: tuple[str, ...]
    test: tuple[str, ...]


def split_items(
    data: ba.ResponseData | Sequence[str], test_share: float = 0.3, seed: int = 0
) -> ItemSplit:
    """Split the items at random into training and held-out (test) items.

    ``test`` holds ``round(test_share * n_items)`` items, at least 3 (the alignment
    correlations need 3) and at most ``n_items - 1``; both parts keep the data's item
    order. ``data`` is a :class:`ResponseData` or a sequence of item labels.
    """
    labels = tuple(str(i) for i in (data.items if isinstance(data, ba.ResponseData) else data))
    if len(set(labels)) != len(labels):
        raise ValueError("item labels must be unique")
    if not 0 < test_share < 1:
        raise ValueError(f"test_share must lie strictly between 0 and 1, got {test_share}")
    if len(labels) < 4:
        raise ValueError(
            f"splitting needs at least 4 items (3 held out, 1 for training), got {len(labels)}"
        )
    n_test = min(max(3, round(test_share * len(labels))), len(labels) - 1)
    test = np.zeros(len(labels), dtype=bool)
    test[np.random.default_rng(seed).choice(len(labels), size=n_test, replace=False)] = True
    return ItemSplit(
        train=tuple(np.asarray(labels)[~test].tolist()),
        test=tuple(np.asarray(labels)[test].tolist()),
    )


def control_table(
    fit: Any, metric: str = "pearson", prob: float = 0.9, items: Sequence[str] | None = None
) -> pd.DataFrame:
    """Every focal group of a fit placed between the control populations.

    Parameters
    ----------
    fit
        A fit of data built with :func:`controls` (and possibly :func:`lm_ensemble`).
    metric, prob, items
        As in :func:`bayes_align.alignment` / :func:`bayes_align.compare_alignment`.

    Returns
    -------
    One row per focal group, best aligned first, with columns ``group``, ``role``
    (``control`` or ``group``), ``mean``, ``hdi_low``, ``hdi_high``, ``expected_rank``,
    ``p_above_<kind>`` for every fitted control (the posterior probability that the
    group is better aligned than that control) and ``verdict``:

    - ``"no better than chance"``: P(better aligned than each of ``shuffled`` and
      ``random``) is below ``prob`` for one of them;
    - ``"as aligned as a human half"``: P(better aligned than ``split_half``) is at least
      ``1 - prob`` (the data cannot tell it from a half of the reference);
    - ``"between the controls"`` otherwise;

    empty for the controls themselves and where the needed controls were not fitted.
    """
    table = ba.alignment(fit, prob=prob, items=items).table
    table = table[table["metric"] == metric].set_index("group")
    comparison = ba.compare_alignment(fit, metric=metric, prob=prob, items=items)
    pairwise = comparison.pairwise.set_index(["group", "other"])["prob_better"]
    groups = comparison.ranking["group"].astype(str).tolist()
    fitted = [k for k in CONTROL_KINDS if CONTROL_PREFIX + k in groups]
    if not fitted:
        raise ValueError(
            f"the fit has no control groups (labels {CONTROL_PREFIX}<kind>); build the data "
            "with bayes_align.protocol.controls before fitting"
        )
    rows = []
    for group, rank in zip(groups, comparison.ranking["expected_rank"], strict=True):
        is_control = group.startswith(CONTROL_PREFIX)
        row: dict[str, Any] = {
            "group": group,
            "role": "control" if is_control else "group",
            "mean": table.loc[group, "mean"],
            "hdi_low": table.loc[group, "hdi_low"],
            "hdi_high": table.loc[group, "hdi_high"],
            "expected_rank": rank,
        }
        above = {}
        for kind in fitted:
            other = CONTROL_PREFIX + kind
            above[kind] = np.nan if other == group else float(pairwise.loc[(group, other)])
            row[f"p_above_{kind}"] = above[kind]
        row["verdict"] = "" if is_control else _verdict(above, prob)
        rows.append(row)
    return pd.DataFrame(rows)


def _verdict(above: dict[str, float], prob: float) -> str:
    nulls = [above[k] for k in ("shuffled", "random") if k in above]
    if nulls and min(nulls) < prob:
        return "no better than chance"
    if "split_half" in above and above["split_half"] >= 1 - prob:
        return "as aligned as a human half"
    if "split_half" in above and nulls:
        return "between the controls"
    return ""


def plot_control_table(table: pd.DataFrame, ax: Any = None, metric: str = "pearson") -> Any:
    """Posterior means and HDIs of :func:`control_table`, controls in grey; returns the figure."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 0.45 * len(table) + 1.2))
    y = np.arange(len(table))[::-1]
    colours = np.where(table["role"] == "control", "0.55", "C0")
    ax.hlines(y, table["hdi_low"], table["hdi_high"], colors=colours, lw=2.5)
    ax.scatter(table["mean"], y, c=colours, zorder=3)
    ax.set_yticks(y, table["group"])
    ax.axvline(0, color="0.8", lw=1, zorder=0)
    ax.set_xlabel(f"alignment ({metric}), posterior mean and HDI")
    ax.set_title("Groups between the control populations")
    ax.figure.tight_layout()
    return ax.figure
