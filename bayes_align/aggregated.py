"""Joint multi-group IRT with DIF for *aggregated* data (option counts, no person ids).

Much human data exists only as aggregates: the share of a population answering each
item correctly (NAEP, survey toplines). A group ``g`` then enters the joint IRT model
through its marginal likelihood, integrating ability over the group's population
``theta ~ Normal(mu_g, sigma_g)`` with Gauss-Hermite quadrature:

.. math::

    P_{gi} = c_i + (1 - c_i) \\sum_{q=1}^{Q} w_q\\,
        \\sigma\\big(a_i (\\mu_g + \\sigma_g x_q - b_i - s_{gi})\\big),

with probabilists' Gauss-Hermite nodes ``x_q`` and weights ``w_q`` normalised to sum to
one (``numpy.polynomial.hermite_e.hermegauss``; exact for polynomials of degree
``2Q - 1`` in ``x`` against the standard normal density), ``b`` = ``difficulty``,
``a`` = ``discrimination`` (1 for the 1PL), ``c`` = ``guessing`` (0 except for the 3PL)
and ``s`` = ``dif_shift`` (0 for the reference). Each row (item ``i``, group ``g``)
with ``k`` correct out of ``n`` (both may be fractional: soft counts) contributes, under
the default ``likelihood="binary"``, the binomial log-likelihood

.. math::

    \\ell_{gi} = \\log\\binom{n}{k} + k \\log P_{gi} + (n - k) \\log(1 - P_{gi}),

computed as ``logsumexp_q(log w_q + log sigmoid(+-eta_q))`` for stability, vectorised
over rows x nodes. Priors are DESIGN.md's (``difficulty ~ N(0, 2)``,
``log_discrimination ~ N(0, 0.5)``, ``mu_focal ~ N(0, 2)``, ``sigma_focal ~ HalfNormal(1)``,
``dif_scale ~ HalfNormal(1)``, ``dif_shift = dif_scale (dif_raw - mean_i dif_raw)``,
``dif_raw ~ N(0, 1)``, 3PL ``guessing ~ Beta(20/K, 20(1 - 1/K))``) and so are the
posterior names and dims (``difficulty``, ``discrimination``, ``guessing`` (item),
``dif_shift`` (focal_group, item), ``dif_scale`` (focal_group), ``group_mean``,
``group_sd`` (group)), so :func:`bayes_align.alignment.alignment` and
:func:`bayes_align.dif.dif_screen` work unchanged. The log-likelihood is stored per row
(``log_likelihood["y"]``, dim ``obs``) for PSIS-LOO.

Identification
--------------
The reference has ``mu = 0, sigma = 1`` and every focal group's shifts sum to zero over
items, so ``mu_g`` is identified by the mean difficulty difference. With a single
aggregate per (item, group), ``sigma_g`` is only weakly identified: by the probit
approximation ``P ~ sigmoid(a (mu - b - s) / sqrt(1 + pi^2 a^2 sigma^2 / 8))`` it acts as
a group-specific flattening of all item curves, which item-specific shifts can mimic.
We therefore **fix sigma_g for focal groups by default** (``focal_sd=1.0``, the
reference's value): every group is then read as "a population like the reference",
``mu_g`` is its mean ability on the reference scale and the shifts are item-specific
departures. ``focal_sd=None`` frees it with DESIGN.md's ``HalfNormal(1)`` prior (the
posterior is then prior-sensitive; say so when you report it); ``focal_sd=0`` treats each
group as a single test taker (LMs read at T = 1).

Discriminations are identified only across groups (one aggregate per item and group),
so with few focal groups use ``irt="1pl"``; with many (18 LMs on NAEP) the 2PL is fine.
Optionally, published item parameters (NAEP's 3PL) can enter as an informative prior
for the reference items (``AggregatedData.item_prior``; see :func:`aggregated_model`).

Nominal likelihood (``likelihood="nominal"``)
--------------------------------------------
When a group's data are counts per *option* (humans: option shares x ``human_n``; an LM:
its order-averaged option probabilities x ``model_n``), the row of item ``i`` and group
``g`` with counts ``n_k`` over the item's ``K_i`` options (key ``k*_i``, distractor set
``D_i``) contributes a multinomial. The option probabilities at ability ``theta`` follow a
nominal response model (Bock 1972) in its *nested-logit* form (Suh & Bolt 2010), which
keeps the key tied to the binary model's item parameters and DIF:

.. math::

    P(k^*_i \\mid \\theta) = \\sigma\\big(a_i (\\theta - b_i - s_{gi})\\big), \\qquad
    P(d \\mid \\theta) = \\big(1 - P(k^*_i \\mid \\theta)\\big)\\,
        \\operatorname{softmax}_{d \\in D_i}\\big(\\lambda_{id} \\theta + \\zeta_{id} + \\delta_{gid}\\big),

i.e. ``softmax_k(z_k)`` over all options with ``z_key = a_i (theta - b_i - s_gi)`` and
``z_d = log softmax_D(lambda_id theta + zeta_id + delta_gid)`` for distractors (distractor
logits normalised to log-sum-exp zero at every ``theta``). The marginal over the group's
population is the same Gauss-Hermite sum, per option:
``P_gik = sum_q w_q P(k | mu_g + sigma_g x_q)``, and

.. math::

    \\ell_{gi} = \\log\\Gamma(n + 1) - \\sum_k \\log\\Gamma(n_k + 1) + \\sum_k n_k \\log P_{gik}

(``n = sum_k n_k``; soft counts allowed). ``distractor_intercept`` ``zeta`` (item, option)
says which wrong answer attracts the reference (prior ``N(0, 2)``), ``dif_distractor``
``delta`` (focal_group, item, option) is the group's *distractor DIF*, its departure from
the reference's wrong-answer preferences at equal ability,
``delta_gid = dif_distractor_scale_g (raw_gid - mean_{d in D_i} raw_gid)``,
``raw ~ N(0, 1)``, ``dif_distractor_scale ~ HalfNormal(1)`` (the per-group size of that
departure, in logits), and, optionally, ``distractor_slope`` ``lambda`` (item, option;
prior ``N(0, 1)``) how the preference among distractors changes with ability.

Identification: a softmax is unchanged by adding a constant to all its logits, so
``zeta``, ``lambda`` and ``delta`` are each constrained to **sum to zero over the item's
distractors** (an item with ``K_i`` options has ``K_i - 2`` free values of each; with two
options there are none and the nominal row is *exactly* the binary row). Because the key
probability is the binary 2PL/1PL itself, ``difficulty``, ``discrimination`` and
``dif_shift`` keep their meaning (the binary model is the nominal model's marginal for
key vs not), so alignment and the DIF screen read them unchanged.

DIF moves distractor attractiveness too (``delta``, on by default): LMs and students may
share the key's difficulty order and still pick different wrong answers, and that is what
the nominal likelihood adds over the binary one. **Distractor slopes are off by default**
(``distractor_slopes=False``, ``lambda = 0``). ``lambda`` is not identified by the reference
(a single population gives one distractor profile per item); it is identified only by
groups with different means, i.e. by the focal groups themselves. With one human
reference and a block of LMs that share a way of choosing wrong answers, ``lambda`` then
absorbs the LMs' common distractor preferences and reads them as ability: on NAEP
economics (T*, SVI) 16 of 18 LMs' ``group_mean`` dropped by 0.13-0.34 (Phi-4-14B: -0.15
to -0.46) and ``dif_distractor_scale`` shrank from 0.30-0.36 to 0.04-0.15. With ``lambda = 0`` the likelihood
factorises into the binary likelihood times a ``theta``-free multinomial over the
distractors of the wrong answers, so ``difficulty``, ``dif_shift`` and ``group_mean`` have
the binary posterior and the distractor part estimates ``zeta``, ``delta`` and
``dif_distractor_scale``. Turn the slopes on when the data hold several human populations
with different means (e.g. grades or subgroups of students as groups), which identify
``lambda`` independently of the LMs.

Items may have different numbers of options: the option axis is padded to
``K_max`` and absent options get a logit of ``-1e30`` (not ``-inf``, so gradients stay
finite) and a count of 0; the padded entries of ``distractor_intercept``,
``distractor_slope`` and ``dif_distractor`` (and their key entries) are ``NaN`` in the
posterior. The nominal model supports ``irt="1pl"`` and ``"2pl"`` (a guessing floor has no
natural place in the nested logit).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pandas as pd
import xarray as xr
from scipy import special

from bayes_align.data import GroupedItems

if TYPE_CHECKING:  # pragma: no cover
    from bayes_align.naep import NaepData

__all__ = [
    "AggregatedData",
    "LIKELIHOODS",
    "aggregated_model",
    "fit_aggregated",
    "gauss_hermite",
    "marginal_log_prob",
    "nominal_row_log_likelihood",
    "row_log_likelihood",
]

LIKELIHOODS = ("binary", "nominal")
_MASKED = -1e30  # logit of an option an item does not have (finite: gradients stay finite)


def gauss_hermite(n_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Probabilists' Gauss-Hermite nodes and weights normalised to sum to one.

    ``sum_q w_q f(x_q)`` approximates ``E[f(X)]`` for ``X ~ Normal(0, 1)``, exactly for
    polynomials of degree up to ``2 n_nodes - 1``.
    """
    if n_nodes < 1:
        raise ValueError("n_nodes must be at least 1")
    nodes, weights = np.polynomial.hermite_e.hermegauss(n_nodes)
    return nodes, weights / weights.sum()


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
        if self.reference_group not in self.groups:
            raise ValueError(
                f"reference group {self.reference_group!r} not among the groups {list(self.groups)}; "
                "pass reference_group= with the label of the human population"
            )
        bad = ~np.isfinite(self.n_total) | ~np.isfinite(self.n_correct) | (self.n_total <= 0)
        bad |= (self.n_correct < 0) | (self.n_correct > self.n_total * (1 + 1e-12))
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
        if self.key is None or np.shape(self.key) != (self.n_items,):
            raise ValueError(
                f"option_counts need key: the 0-based key option of each of the {self.n_items} items"
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
        key = np.asarray(self.key)
        n_options = self.n_options
        if not np.issubdtype(key.dtype, np.integer) or (key < 0).any() or (key >= n_options).any():
            bad_items = [self.items[i] for i in np.flatnonzero((key < 0) | (key >= n_options))[:10]]
            raise ValueError(
                f"key must be an integer option index 0..K_i-1 per item; out of range for {bad_items}"
            )
        total = np.nansum(counts, axis=1)
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
        reference_group: str = "human",
        option_columns: Sequence[str] | None = None,
        key: str = "key",
    ) -> AggregatedData:
        """From a long DataFrame with one row per (item, group).

        Group order: the reference first, then the other groups in order of appearance.
        With ``option_columns`` (e.g. ``["A", "B", "C", "D"]``: counts of option 0, 1, ...;
        NaN where the item has fewer options) the counts per option are kept for the
        nominal likelihood and ``n_correct``/``n_total`` are derived from them and the
        ``key`` column (0-based key option, the same on every row of an item); the
        ``n_correct``/``n_total`` columns are then not needed.
        """
        needed = [item, group] + ([n_correct, n_total] if option_columns is None else [*option_columns, key])
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
            total = np.nansum(counts, axis=1)
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
        ``guessing = c``); see :func:`aggregated_model`. ``option_counts=True`` also keeps
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


# ------------------------------------------------------------------------------ model


def marginal_log_prob(
    eta_offset: jnp.ndarray,
    discrimination: jnp.ndarray,
    group_sd: jnp.ndarray,
    nodes: jnp.ndarray,
    log_weights: jnp.ndarray,
    guessing: jnp.ndarray | None = None,
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """``log P`` and ``log(1 - P)`` per row of the quadrature-marginal item response.

    ``eta_offset = mu_g - b_i - s_gi`` ``(rows,)``; ``discrimination``, ``group_sd``
    per row; nodes/log weights ``(Q,)``. Computes
    ``log sum_q w_q sigmoid(+-a (eta_offset + sigma x_q))`` as a logsumexp over the
    ``(rows, Q)`` grid, then mixes in the guessing floor ``c``.
    """
    eta = discrimination[:, None] * (eta_offset[:, None] + group_sd[:, None] * nodes[None, :])
    log_p = jax.scipy.special.logsumexp(log_weights[None, :] + jax.nn.log_sigmoid(eta), axis=1)
    log_q = jax.scipy.special.logsumexp(log_weights[None, :] + jax.nn.log_sigmoid(-eta), axis=1)
    if guessing is not None:
        log_c, log_1mc = jnp.log(guessing), jnp.log1p(-guessing)
        log_p, log_q = jnp.logaddexp(log_c, log_1mc + log_p), log_1mc + log_q
    return log_p, log_q


def row_log_likelihood(
    params: Mapping[str, jnp.ndarray],
    item_idx: jnp.ndarray,
    group_idx: jnp.ndarray,
    n_correct: jnp.ndarray,
    n_total: jnp.ndarray,
    log_coef: jnp.ndarray,
    focal_row: jnp.ndarray,
    nodes: jnp.ndarray,
    log_weights: jnp.ndarray,
) -> jnp.ndarray:
    """Binomial log-likelihood of every (item, group) row for one parameter draw (pure JAX).

    ``params`` holds ``difficulty`` (n_items,), ``dif_shift`` (n_focal, n_items),
    ``group_mean``/``group_sd`` (n_groups,) and optionally ``discrimination`` and
    ``guessing`` (n_items,). ``focal_row[g]`` is the row of group ``g`` in ``dif_shift``
    (the reference points at an appended zero row). Returns
    ``log C(n, k) + k log P + (n - k) log(1 - P)`` of shape (n_rows,).
    """
    difficulty = params["difficulty"]
    n_items = difficulty.shape[-1]
    shift = jnp.concatenate([params["dif_shift"], jnp.zeros((1, n_items), difficulty.dtype)], axis=0)
    offset = params["group_mean"][group_idx] - difficulty[item_idx] - shift[focal_row[group_idx], item_idx]
    a = params["discrimination"][item_idx] if "discrimination" in params else jnp.ones_like(offset)
    c = params["guessing"][item_idx] if "guessing" in params else None
    log_p, log_q = marginal_log_prob(offset, a, params["group_sd"][group_idx], nodes, log_weights, c)
    return log_coef + n_correct * log_p + (n_total - n_correct) * log_q


def nominal_row_log_likelihood(
    params: Mapping[str, jnp.ndarray],
    item_idx: jnp.ndarray,
    group_idx: jnp.ndarray,
    option_counts: jnp.ndarray,
    log_coef: jnp.ndarray,
    focal_row: jnp.ndarray,
    option_valid: jnp.ndarray,
    option_is_key: jnp.ndarray,
    nodes: jnp.ndarray,
    log_weights: jnp.ndarray,
) -> jnp.ndarray:
    """Multinomial log-likelihood of every (item, group) row for one draw (pure JAX).

    ``params`` as for :func:`row_log_likelihood` (no ``guessing``) plus
    ``distractor_intercept`` and optionally ``distractor_slope`` ``(n_items, K_max)`` and
    ``dif_distractor`` ``(n_focal, n_items, K_max)``, each sum-to-zero over the item's
    distractors and 0 at the key and padded options. ``option_counts`` ``(n_rows, K_max)``
    (0 at padded options), ``option_valid``/``option_is_key`` ``(n_items, K_max)`` bool.
    Vectorised over rows x nodes x options: per node ``log P(key) = log sigmoid(eta)`` and
    ``log P(d) = log sigmoid(-eta) + log softmax_D(lambda theta + zeta + delta)``, then
    ``log P_k = logsumexp_q(log w_q + log P(k | theta_q))``. Returns
    ``log_coef + sum_k n_k log P_k`` of shape (n_rows,).
    """
    difficulty = params["difficulty"]
    n_items, k_max = option_valid.shape
    dtype = difficulty.dtype
    shift = jnp.concatenate([params["dif_shift"], jnp.zeros((1, n_items), dtype)], axis=0)
    row_focal = focal_row[group_idx]
    offset = params["group_mean"][group_idx] - difficulty[item_idx] - shift[row_focal, item_idx]
    a = params["discrimination"][item_idx] if "discrimination" in params else jnp.ones_like(offset)
    theta = params["group_mean"][group_idx][:, None] + params["group_sd"][group_idx][:, None] * nodes[None, :]
    eta = a[:, None] * (offset[:, None] + params["group_sd"][group_idx][:, None] * nodes[None, :])  # (R, Q)
    logits = params["distractor_intercept"][item_idx][:, None, :]  # (R, 1, K)
    if "dif_distractor" in params:
        delta = jnp.concatenate(
            [params["dif_distractor"], jnp.zeros((1, n_items, k_max), dtype)], axis=0
        )
        logits = logits + delta[row_focal, item_idx][:, None, :]
    if "distractor_slope" in params:
        logits = logits + params["distractor_slope"][item_idx][:, None, :] * theta[:, :, None]
    distractor = (option_valid & ~option_is_key)[item_idx][:, None, :]  # (R, 1, K)
    logits = jnp.where(distractor, logits, _MASKED)
    log_soft = logits - jax.scipy.special.logsumexp(logits, axis=-1, keepdims=True)  # (R, Q, K)
    log_pk = jnp.where(
        option_is_key[item_idx][:, None, :],
        jax.nn.log_sigmoid(eta)[:, :, None],
        jax.nn.log_sigmoid(-eta)[:, :, None] + log_soft,
    )
    log_p = jax.scipy.special.logsumexp(log_weights[None, :, None] + log_pk, axis=1)  # (R, K)
    terms = jnp.where(option_valid[item_idx], option_counts * log_p, 0.0)
    return log_coef + terms.sum(axis=-1)


def _centring_matrix(distractor: np.ndarray, slot_item: np.ndarray, slot_option: np.ndarray) -> np.ndarray:
    """``(n_slots, n_items * K_max)`` constant matrix ``C`` such that ``raw @ C`` scatters
    flat per-distractor values into ``(n_items, K_max)`` (flattened) and centres them over
    each item's distractors (0 at the key, padded and one-distractor options). A dense
    matmul instead of a scatter, a segment mean and a mask: one cheap op to compile and
    differentiate (279 x 372 on NAEP economics)."""
    n_items, k_max = distractor.shape
    n_slots = slot_item.size
    scatter = np.zeros((n_slots, n_items * k_max))
    scatter[np.arange(n_slots), slot_item * k_max + slot_option] = 1.0
    per_item = np.bincount(slot_item, minlength=n_items)
    same_item = (slot_item[:, None] == slot_item[None, :]) / per_item[slot_item][None, :]
    return scatter - same_item @ scatter  # raw_s - mean over the item's slots, at each slot


def aggregated_model(
    item_idx: np.ndarray,
    group_idx: np.ndarray,
    n_correct: np.ndarray,
    n_total: np.ndarray,
    log_coef: np.ndarray,
    n_items: int,
    n_groups: int,
    focal_index: np.ndarray,
    focal_row: np.ndarray,
    irt: str = "1pl",
    focal_sd: float | None = 1.0,
    n_nodes: int = 21,
    n_options: int = 4,
    prior_difficulty: np.ndarray | None = None,
    prior_log_discrimination: np.ndarray | None = None,
    prior_guessing: np.ndarray | None = None,
    prior_sd: float = 0.25,
    likelihood: str = "binary",
    option_counts: np.ndarray | None = None,
    option_valid: np.ndarray | None = None,
    option_is_key: np.ndarray | None = None,
    distractor_slopes: bool = True,
    distractor_dif: bool = True,
) -> None:
    """NumPyro model for aggregated counts (see the module docstring for the math).

    ``likelihood="nominal"`` uses ``option_counts`` ``(n_rows, K_max)`` (0 at padded
    options), ``option_valid``/``option_is_key`` ``(n_items, K_max)`` and ``log_coef`` the
    multinomial coefficient; it adds ``distractor_intercept``, ``distractor_slope``
    (unless ``distractor_slopes=False``) and ``dif_distractor`` with
    ``dif_distractor_scale`` (unless ``distractor_dif=False``). Free distractor values
    are sampled as flat vectors of the ``sum_i (K_i - 1)`` distractor slots (no padded
    parameters) and scattered into ``(n_items, K_max)``.

    Row arrays have shape ``(n_rows,)``; ``focal_index`` lists the focal groups' indices
    and ``focal_row[g]`` is the row of group ``g`` in ``dif_shift`` (the reference maps to
    an extra all-zero row). ``focal_sd``: fixed sd of every focal group (``None``: free,
    ``HalfNormal(1)``). Informative item prior (optional): where ``prior_difficulty[i]``
    is finite, ``difficulty[i] ~ Normal(prior_difficulty[i], prior_sd)`` instead of
    ``Normal(0, 2)``, likewise ``log_discrimination[i] ~ Normal(prior_log_discrimination[i],
    prior_sd)`` and (3PL) ``guessing[i] ~ Beta`` with mean ``prior_guessing[i]`` and
    concentration 100. The likelihood enters as ``numpyro.factor("y", ...)`` without the
    constant ``log C(n, k)`` (so SVI's relative-ELBO convergence test sees the data's
    scale); the stored per-row log-likelihood includes it (:func:`row_log_likelihood`).
    """
    n_focal = len(focal_index)
    focal_index = jnp.asarray(focal_index)

    def informative(prior, default_loc, default_sd):
        if prior is None:
            return jnp.full(n_items, default_loc), jnp.full(n_items, default_sd)
        prior = np.asarray(prior, np.float64)
        known = np.isfinite(prior)
        return jnp.asarray(np.where(known, prior, default_loc)), jnp.asarray(np.where(known, prior_sd, default_sd))

    params: dict[str, jnp.ndarray] = {}
    loc, scale = informative(prior_difficulty, 0.0, 2.0)
    params["difficulty"] = numpyro.sample("difficulty", dist.Normal(loc, scale).to_event(1))
    if irt != "1pl":
        loc, scale = informative(prior_log_discrimination, 0.0, 0.5)
        log_a = numpyro.sample("log_discrimination", dist.Normal(loc, scale).to_event(1))
        params["discrimination"] = numpyro.deterministic("discrimination", jnp.exp(log_a))
    if irt == "3pl":
        k = float(n_options)
        alpha = np.full(n_items, 20.0 / k)
        beta = np.full(n_items, 20.0 * (1.0 - 1.0 / k))
        if prior_guessing is not None:
            c = np.asarray(prior_guessing, np.float64)
            known = np.isfinite(c)
            alpha = np.where(known, 100.0 * np.nan_to_num(c), alpha)
            beta = np.where(known, 100.0 * (1.0 - np.nan_to_num(c)), beta)
        params["guessing"] = numpyro.sample(
            "guessing", dist.Beta(jnp.asarray(alpha), jnp.asarray(beta)).to_event(1)
        )

    mu_focal = numpyro.sample("mu_focal", dist.Normal(0.0, 2.0).expand([n_focal]).to_event(1))
    if focal_sd is None:
        sigma_focal = numpyro.sample("sigma_focal", dist.HalfNormal(1.0).expand([n_focal]).to_event(1))
    else:
        sigma_focal = jnp.full(n_focal, float(focal_sd))
    params["group_mean"] = numpyro.deterministic(
        "group_mean", jnp.zeros(n_groups).at[focal_index].set(mu_focal)
    )
    params["group_sd"] = numpyro.deterministic(
        "group_sd", jnp.ones(n_groups).at[focal_index].set(sigma_focal)
    )
    dif_scale = numpyro.sample("dif_scale", dist.HalfNormal(1.0).expand([n_focal]).to_event(1))
    dif_raw = numpyro.sample("dif_raw", dist.Normal(0.0, 1.0).expand([n_focal, n_items]).to_event(2))
    params["dif_shift"] = numpyro.deterministic(
        "dif_shift", dif_scale[:, None] * (dif_raw - dif_raw.mean(axis=1, keepdims=True))
    )
    nodes, weights = gauss_hermite(n_nodes)
    if likelihood == "nominal":
        valid = np.asarray(option_valid, bool)
        distractor = valid & ~np.asarray(option_is_key, bool)
        # free slots: distractors of items with at least two (one distractor is fixed at 0)
        slot_item, slot_option = np.nonzero(distractor & (distractor.sum(axis=1) > 1)[:, None])
        n_slots = slot_item.size
        if n_slots:  # items with one distractor have nothing free
            centring = jnp.asarray(_centring_matrix(distractor, slot_item, slot_option), jnp.result_type(float))
            shape = distractor.shape

            def centred(raw):
                return (raw @ centring).reshape(*raw.shape[:-1], *shape)

            raw = numpyro.sample("distractor_raw", dist.Normal(0.0, 2.0).expand([n_slots]).to_event(1))
            params["distractor_intercept"] = numpyro.deterministic("distractor_intercept", centred(raw))
            if distractor_slopes:
                raw = numpyro.sample("distractor_slope_raw", dist.Normal(0.0, 1.0).expand([n_slots]).to_event(1))
                params["distractor_slope"] = numpyro.deterministic("distractor_slope", centred(raw))
            if distractor_dif:
                scale = numpyro.sample(
                    "dif_distractor_scale", dist.HalfNormal(1.0).expand([n_focal]).to_event(1)
                )
                raw = numpyro.sample(
                    "dif_distractor_raw", dist.Normal(0.0, 1.0).expand([n_focal, n_slots]).to_event(2)
                )
                params["dif_distractor"] = numpyro.deterministic(
                    "dif_distractor", scale[:, None, None] * centred(raw)
                )
        else:
            params["distractor_intercept"] = jnp.zeros(valid.shape)
        log_lik = nominal_row_log_likelihood(
            params,
            jnp.asarray(item_idx),
            jnp.asarray(group_idx),
            jnp.asarray(option_counts),
            0.0,  # the multinomial coefficient is constant in the parameters
            jnp.asarray(focal_row),
            jnp.asarray(valid),
            jnp.asarray(np.asarray(option_is_key, bool)),
            jnp.asarray(nodes),
            jnp.asarray(np.log(weights)),
        )
        numpyro.factor("y", log_lik.sum())
        return
    log_lik = row_log_likelihood(
        params,
        jnp.asarray(item_idx),
        jnp.asarray(group_idx),
        jnp.asarray(n_correct),
        jnp.asarray(n_total),
        0.0,  # log C(n, k) is constant in the parameters: kept out of the ELBO's scale
        jnp.asarray(focal_row),
        jnp.asarray(nodes),
        jnp.asarray(np.log(weights)),
    )
    numpyro.factor("y", log_lik.sum())


def _option_arrays(data: AggregatedData) -> dict[str, np.ndarray]:
    """Padded option arrays of the nominal likelihood: counts (0 where absent), masks and
    the multinomial coefficient ``lgamma(n + 1) - sum_k lgamma(n_k + 1)``."""
    counts = np.nan_to_num(np.asarray(data.option_counts, np.float64), nan=0.0)
    k_max = counts.shape[1]
    valid = np.arange(k_max)[None, :] < data.n_options[:, None]
    is_key = np.arange(k_max)[None, :] == np.asarray(data.key)[:, None]
    log_coef = special.gammaln(counts.sum(axis=1) + 1) - special.gammaln(counts + 1).sum(axis=1)
    return {"option_counts": counts, "option_valid": valid, "option_is_key": is_key, "log_coef": log_coef}


def _model_kwargs(
    data: AggregatedData,
    irt: str,
    focal_sd: float | None,
    n_nodes: int,
    prior_sd: float,
    likelihood: str = "binary",
    distractor_slopes: bool = True,
    distractor_dif: bool = True,
) -> dict[str, Any]:
    focal_row = np.full(data.n_groups, len(data.focal_index), dtype=np.int32)
    focal_row[data.focal_index] = np.arange(len(data.focal_index), dtype=np.int32)
    k, n = data.n_correct, data.n_total
    kwargs: dict[str, Any] = {
        "item_idx": data.item_idx,
        "group_idx": data.group_idx,
        "n_correct": k,
        "n_total": n,
        "log_coef": special.gammaln(n + 1) - special.gammaln(k + 1) - special.gammaln(n - k + 1),
        "n_items": data.n_items,
        "n_groups": data.n_groups,
        "focal_index": data.focal_index,
        "focal_row": focal_row,
        "irt": irt,
        "focal_sd": focal_sd,
        "n_nodes": n_nodes,
        "prior_sd": prior_sd,
    }
    if likelihood == "nominal":
        kwargs.update(_option_arrays(data))
        kwargs.update(
            likelihood="nominal", distractor_slopes=distractor_slopes, distractor_dif=distractor_dif
        )
    if data.item_prior is not None:
        kwargs["prior_difficulty"] = data.item_prior.get("difficulty")
        kwargs["prior_log_discrimination"] = data.item_prior.get("log_discrimination")
        kwargs["prior_guessing"] = data.item_prior.get("guessing")
    return kwargs


# ---------------------------------------------------------------------------- inference


def fit_aggregated(
    data: AggregatedData,
    method: str = "svi",
    irt: str = "1pl",
    focal_sd: float | None = 1.0,
    n_nodes: int = 21,
    prior_sd: float = 0.25,
    likelihood: str = "binary",
    distractor_slopes: bool = False,
    distractor_dif: bool = True,
    **inference_kwargs: Any,
):
    """Fit the aggregated-data IRT model with :func:`bayes_align.inference.run_inference`.

    Parameters
    ----------
    data: the :class:`AggregatedData`.
    method: ``"nuts"``, ``"svi"`` (mean-field ``AutoNormal``) or ``"map"``.
    irt: ``"1pl"`` (default) | ``"2pl"`` | ``"3pl"``. The 1PL is the default because
        with one aggregate per (item, group) discriminations are identified only by the
        pattern across groups, and on the ability scale a poorly identified ``a_i``
        inflates the alignment correlation: ``b_i`` and ``b_i + s_gi`` are both
        logits divided by ``a_i``, so variation in ``1 / a_i`` correlates them even when
        the logits do not (see the README, "Aggregated human data" for the NAEP numbers).
    focal_sd: fixed ability sd of every focal group (default 1, the reference's;
        ``None`` = free with a ``HalfNormal(1)`` prior). See the module docstring.
    n_nodes: Gauss-Hermite nodes. With 21 the absolute error of ``P`` is below 4e-6 for
        ``a sigma <= 2`` and 2e-4 for ``a sigma <= 3`` (a binomial sd at n = 2000 is 0.011).
    prior_sd: sd of the informative item prior when ``data.item_prior`` is set.
    likelihood: ``"binary"`` (key vs not, the default) or ``"nominal"`` (multinomial over
        options; needs ``data.option_counts``, ``irt`` "1pl" or "2pl"; see the module
        docstring). The nominal fit adds ``distractor_intercept``, ``distractor_slope``
        (item, option), ``dif_distractor`` (focal_group, item, option) and
        ``dif_distractor_scale`` (focal_group) to the posterior.
    distractor_slopes: nominal only: free distractor slopes ``lambda`` (default False:
        ``lambda = 0``; see the module docstring for why they are off with one reference).
    distractor_dif: nominal only: distractor DIF ``delta`` per focal group (False: none).
    inference_kwargs: passed to ``run_inference`` (``chains``, ``draws``, ``warmup``,
        ``seed``, ``progress_bar``, ``learning_rate``, ``max_steps``, ``float64``, ...).

    Returns
    -------
    :class:`bayes_align.inference.Fit` whose ``idata`` holds ``difficulty`` (item),
    ``discrimination`` (item; 2pl/3pl), ``guessing`` (3pl), ``dif_shift``
    (focal_group, item), ``dif_scale`` (focal_group), ``group_mean``/``group_sd``
    (group), ``log_likelihood["y"]`` (dim ``obs`` = (item, group) row, for PSIS-LOO;
    binomial or multinomial, coefficient included), ``observed_data["y"]`` (n_correct),
    ``constant_data`` (``item_idx``, ``group_idx``, ``n_total``; nominal: also
    ``option_counts`` (obs, option)) and ``attrs`` ``reference_group``, ``method``,
    ``kind = "aggregated"``, ``likelihood``, ``model_spec`` (JSON).
    """
    from bayes_align.inference import run_inference

    if likelihood not in LIKELIHOODS:
        raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")
    if irt not in ("1pl", "2pl", "3pl"):
        raise ValueError(f"irt must be '1pl', '2pl' or '3pl' for aggregated data, got {irt!r}")
    nominal = likelihood == "nominal"
    if nominal and not data.has_options:
        raise ValueError(
            "likelihood='nominal' needs option counts, but this AggregatedData holds only key "
            "counts (n_correct of n_total); build it with AggregatedData.from_frame(..., "
            "option_columns=[...], key=...) or AggregatedData.from_naep(..., option_counts=True)"
        )
    if nominal and irt == "3pl":
        raise ValueError("likelihood='nominal' supports irt='1pl' or '2pl' (no guessing floor)")
    if focal_sd is not None and not focal_sd >= 0:
        raise ValueError("focal_sd must be >= 0 or None")
    kwargs = _model_kwargs(
        data, irt, focal_sd, n_nodes, prior_sd, likelihood, distractor_slopes, distractor_dif
    )
    dims = {
        "difficulty": ["item"],
        "dif_shift": ["focal_group", "item"],
        "dif_scale": ["focal_group"],
        "group_mean": ["group"],
        "group_sd": ["group"],
    }
    if irt != "1pl":
        dims["discrimination"] = ["item"]
    if irt == "3pl":
        dims["guessing"] = ["item"]
    coords = {
        "item": list(data.items),
        "focal_group": list(data.focal_groups),
        "group": list(data.groups),
        "obs": np.arange(data.n_rows),
    }
    free_distractors = nominal and bool((data.n_options > 2).any())
    constant_data = {"item_idx": data.item_idx, "group_idx": data.group_idx, "n_total": data.n_total}
    if nominal:
        coords["option"] = np.arange(kwargs["option_valid"].shape[1])
        constant_data["option_counts"] = data.option_counts
    if free_distractors:
        dims["distractor_intercept"] = ["item", "option"]
        if distractor_slopes:
            dims["distractor_slope"] = ["item", "option"]
        if distractor_dif:
            dims["dif_distractor"] = ["focal_group", "item", "option"]
            dims["dif_distractor_scale"] = ["focal_group"]
    nodes, weights = gauss_hermite(n_nodes)
    names = ("item_idx", "group_idx", "log_coef", "focal_row")
    names += ("option_counts", "option_valid", "option_is_key") if nominal else ("n_correct", "n_total")
    ll_arrays = {name: jnp.asarray(kwargs[name]) for name in names}
    ll_arrays["nodes"] = jnp.asarray(nodes)
    ll_arrays["log_weights"] = jnp.asarray(np.log(weights))
    k_shape = None if not nominal else kwargs["option_valid"].shape

    def log_likelihood_fn(draw: Mapping[str, jnp.ndarray]) -> dict[str, jnp.ndarray]:
        if not nominal:
            return {"y": row_log_likelihood(draw, **ll_arrays)}
        draw = dict(draw)
        draw.setdefault("distractor_intercept", jnp.zeros(k_shape, draw["difficulty"].dtype))
        return {"y": nominal_row_log_likelihood(draw, **ll_arrays)}

    inference_kwargs.setdefault("progress_bar", False)
    fit = run_inference(
        aggregated_model,
        kwargs,
        method=method,
        dims=dims,
        coords=coords,
        log_likelihood_fn=log_likelihood_fn,
        log_likelihood_dims={"y": ["obs"]},
        observed_data={"y": data.n_correct},
        constant_data=constant_data,
        attrs={
            "kind": "aggregated",
            "likelihood": likelihood,
            "model_spec": json.dumps(
                {"irt": irt, "dif": "normal", "identification": "sum_to_zero",
                 "focal_sd": focal_sd, "n_nodes": n_nodes, "likelihood": likelihood}
                | ({"distractor_slopes": distractor_slopes, "distractor_dif": distractor_dif}
                   if nominal else {})
            ),
        },
        reference_group=data.reference_group,
        n_obs=data.n_rows,
        **inference_kwargs,
    )
    if free_distractors:  # key and padded options are not distractors: NaN, as DESIGN.md pads
        not_distractor = ~(kwargs["option_valid"] & ~kwargs["option_is_key"])
        posterior = fit.idata.posterior
        for name in ("distractor_intercept", "distractor_slope", "dif_distractor"):
            if name in posterior:
                posterior[name] = posterior[name].where(
                    ~xr.DataArray(not_distractor, dims=("item", "option"), coords={"item": posterior["item"], "option": posterior["option"]})
                )
    return fit
