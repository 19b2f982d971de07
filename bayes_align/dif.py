"""Differential item functioning: a posterior DIF screen and the classical Mantel-Haenszel one.

Scales and bands
----------------
ETS classifies DIF on the *delta* scale, :math:`\\Delta = -2.35 \\ln \\alpha_{MH}`, with
bands at :math:`|\\Delta| = 1.0` and :math:`1.5` (Dorans & Holland, 1993; Zwick, 2012).
Dividing by 2.35 puts them on the logit (log odds ratio) scale:

.. math::

    1.0 / 2.35 = 0.4255, \\qquad 1.5 / 2.35 = 0.6383 \\text{ logits},

the thresholds used by both screens (:data:`ETS_B_LOGIT`, :data:`ETS_C_LOGIT`).

Sign convention (the package's, see DESIGN.md): **positive means the item is harder for
the focal group than for the reference** -- ``dif_shift > 0`` in the model, and
``delta > 0`` in :func:`mantel_haenszel`. Note that this is the *opposite* of the sign
ETS publishes (there, negative D-DIF disadvantages the focal group); the magnitudes and
categories are the same.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, Literal

import arviz as az
import numpy as np
import pandas as pd
from scipy import stats

from bayes_align.alignment import identified_mask
from bayes_align.combined import as_response_data
from bayes_align.results import as_idata

if TYPE_CHECKING:  # pragma: no cover
    from bayes_align.data import ResponseData

__all__ = [
    "DELTA_PER_LOGIT",
    "ETS_B_LOGIT",
    "ETS_C_LOGIT",
    "dif_screen",
    "ets_category_posterior",
    "mantel_haenszel",
]

#: ETS delta units per logit: :math:`\\Delta = -2.35 \\ln \\alpha`.
DELTA_PER_LOGIT = 2.35
#: ETS band between A and B (:math:`|\\Delta| = 1.0`) on the logit scale.
ETS_B_LOGIT = 1.0 / DELTA_PER_LOGIT
#: ETS band between B and C (:math:`|\\Delta| = 1.5`) on the logit scale.
ETS_C_LOGIT = 1.5 / DELTA_PER_LOGIT
#: Category of a pair whose DIF cannot be estimated (not identified / empty tables).
NOT_ESTIMABLE = "n/a"

_DIF_COLUMNS = [
    "item",
    "group",
    "mean",
    "sd",
    "hdi_low",
    "hdi_high",
    "prob_positive",
    "prob_abs_gt_rope",
    "category",
    "flagged",
    "identified",
]


# --------------------------------------------------------------------------- posterior screen
def ets_category_posterior(
    mean: np.ndarray, hdi_low: np.ndarray, hdi_high: np.ndarray
) -> np.ndarray:
    """ETS A/B/C category from a posterior summary on the logit scale.

    The ETS rule (Zwick, 2012) with the posterior mean in place of the MH point estimate
    and "the ``prob`` HDI excludes x" in place of "significantly different from x":

    - **C** (moderate to large): :math:`|\\bar s| \\ge 0.638` and the HDI lies entirely
      beyond 0.426 on the same side (``hdi_low > 0.426`` or ``hdi_high < -0.426``);
    - **B** (slight to moderate): not C, :math:`|\\bar s| \\ge 0.426` and the HDI
      excludes 0;
    - **A** (negligible): otherwise.

    We apply the rule to the HDI (rather than, say, to P(|s| > 0.638)) because it
    mirrors the ETS definition one for one and can be checked by eye from the columns
    ``mean, hdi_low, hdi_high`` of the DIF table.
    """
    mean = np.asarray(mean, dtype=float)
    low = np.asarray(hdi_low, dtype=float)
    high = np.asarray(hdi_high, dtype=float)
    is_c = (np.abs(mean) >= ETS_C_LOGIT) & ((low > ETS_B_LOGIT) | (high < -ETS_B_LOGIT))
    is_b = ~is_c & (np.abs(mean) >= ETS_B_LOGIT) & ((low > 0) | (high < 0))
    return np.where(is_c, "C", np.where(is_b, "B", "A"))


def _logit_shift(posterior: Any, shift: Any) -> Any:
    """``discrimination[i] * dif_shift[g, i]`` (the shift itself for 1PL fits)."""
    if "discrimination" in posterior:
        return shift * posterior["discrimination"]
    return shift


def dif_screen(
    fit: Any,
    rope: float = 0.426,
    prob: float = 0.9,
    scale: Literal["shift", "logit"] = "shift",
) -> pd.DataFrame:
    """Posterior DIF screen of every (item, focal group) pair.

    For each pair with shift :math:`s_{gi}` (``dif_shift``; positive = harder for the
    group than for the reference), over the posterior draws:

    - ``mean``, ``sd``, ``hdi_low``, ``hdi_high`` (``prob`` highest-density interval);
    - ``prob_positive`` :math:`= P(s_{gi} > 0)`;
    - ``prob_abs_gt_rope`` :math:`= P(|s_{gi}| > \\text{rope})`, the posterior mass outside
      the region of practical equivalence;
    - ``category``: ETS A/B/C from :func:`ets_category_posterior` (bands 0.426 / 0.638
      logits); ``"n/a"`` for pairs that are not identified;
    - ``flagged`` :math:`= P(|s_{gi}| > \\text{rope}) \\ge \\text{prob}` and identified;
    - ``identified``: False for pairs the data cannot identify (the item was not answered,
      or answered without variation, by the reference or by the group; recorded by
      :func:`bayes_align.fit` in ``idata.attrs["dif_unidentified"]``). Such pairs are
      reported with their (prior-dominated) posterior but never flagged.

    Parameters
    ----------
    fit
        A :class:`~bayes_align.inference.Fit` or ``InferenceData`` with ``dif_shift``.
    rope
        Half-width of the region of practical equivalence on the screened scale. The
        default is the ETS A/B band, :math:`1.0 / 2.35` logits.
    prob
        HDI mass and the posterior probability needed to flag, in (0, 1).
    scale
        ``"shift"`` (default): screen ``dif_shift`` itself, in the ability (theta) units of
        the model. ``"logit"``: screen ``discrimination[i] * dif_shift[g, i]``, the change in
        the log odds of the item at any fixed ability, which is what the Mantel-Haenszel
        log odds ratio estimates and what the ETS bands were defined on. Both coincide for
        1PL fits; for 2PL/GRM they differ by the item's (reference) discrimination.

    Returns
    -------
    DataFrame with columns ``item, group, mean, sd, hdi_low, hdi_high, prob_positive,
    prob_abs_gt_rope, category, flagged, identified``, focal-group major in the fit's
    order; fits with non-uniform DIF (``dif_discrimination=True``) add the shift of the
    log-discrimination ``lambda_gi``: ``discrimination_shift`` (mean),
    ``discrimination_shift_hdi_low``/``_high`` and ``discrimination_shift_prob_positive``.
    ``attrs`` records ``rope``, ``prob`` and ``scale``.
    """
    if not 0 < prob < 1:
        raise ValueError(f"prob must lie strictly between 0 and 1, got {prob}")
    if not rope >= 0:
        raise ValueError(f"rope must be a non-negative number of logits, got {rope}")
    if scale not in ("shift", "logit"):
        raise ValueError(f"scale must be 'shift' or 'logit', got {scale!r}")
    idata = as_idata(fit)
    if "posterior" not in idata.groups() or "dif_shift" not in idata.posterior:
        raise ValueError(
            "the fit has no dif_shift in its posterior; the DIF screen needs a model fitted "
            "with dif='normal' or dif='horseshoe'"
        )
    posterior = idata.posterior
    if posterior.sizes["chain"] * posterior.sizes["draw"] < 2:
        raise ValueError(
            "the fit has a single draw (a MAP fit?), so posterior probabilities of DIF are "
            "undefined; refit with method='nuts' (or 'svi'), or use mantel_haenszel(data)"
        )
    shift_da = posterior["dif_shift"]
    if scale == "logit":
        shift_da = _logit_shift(posterior, shift_da)
    shift_da = shift_da.transpose("chain", "draw", "focal_group", "item")
    draws = shift_da.to_numpy().reshape(-1, shift_da.sizes["focal_group"], shift_da.sizes["item"])

    hdi = az.hdi(shift_da.to_dataset(name="s"), hdi_prob=prob)["s"]
    low = hdi.sel(hdi="lower").transpose("focal_group", "item").to_numpy()
    high = hdi.sel(hdi="higher").transpose("focal_group", "item").to_numpy()
    mean = draws.mean(axis=0)
    sd = draws.std(axis=0, ddof=1)
    prob_positive = (draws > 0).mean(axis=0)
    prob_outside = (np.abs(draws) > rope).mean(axis=0)

    groups = shift_da["focal_group"].to_numpy().astype(str)
    items = shift_da["item"].to_numpy().astype(str)
    group_col = np.repeat(groups, len(items))
    item_col = np.tile(items, len(groups))
    identified = identified_mask(idata, groups, items).ravel()
    category = ets_category_posterior(mean, low, high).ravel()
    flagged = (prob_outside.ravel() >= prob) & identified
    table = pd.DataFrame(
        {
            "item": item_col,
            "group": group_col,
            "mean": mean.ravel(),
            "sd": sd.ravel(),
            "hdi_low": low.ravel(),
            "hdi_high": high.ravel(),
            "prob_positive": prob_positive.ravel(),
            "prob_abs_gt_rope": prob_outside.ravel(),
            "category": np.where(identified, category, NOT_ESTIMABLE),
            "flagged": flagged,
            "identified": identified,
        },
        columns=_DIF_COLUMNS,
    )
    if "dif_log_discrimination" in posterior:
        lam = posterior["dif_log_discrimination"].transpose("chain", "draw", "focal_group", "item")
        lam_hdi = az.hdi(lam.to_dataset(name="l"), hdi_prob=prob)["l"].transpose("focal_group", "item", "hdi")
        lam_draws = lam.to_numpy().reshape(-1, *lam.shape[2:])
        table["discrimination_shift"] = lam_draws.mean(axis=0).ravel()
        table["discrimination_shift_hdi_low"] = lam_hdi.sel(hdi="lower").to_numpy().ravel()
        table["discrimination_shift_hdi_high"] = lam_hdi.sel(hdi="higher").to_numpy().ravel()
        table["discrimination_shift_prob_positive"] = (lam_draws > 0).mean(axis=0).ravel()
    table.attrs.update({"rope": float(rope), "prob": float(prob), "scale": scale})
    return table


# --------------------------------------------------------------------------- Mantel-Haenszel
def _dichotomise(data: ResponseData, cut: float | None) -> tuple[np.ndarray, str]:
    """0/1 studied-item responses and a sentence saying how they were obtained."""
    response = data.response
    if data.kind == "binary":
        return response.astype(np.int64), "binary responses"
    if data.kind == "soft":
        threshold = 0.5 if cut is None else cut
        return (response >= threshold).astype(
            np.int64
        ), f"soft responses dichotomised at >= {threshold}"
    threshold = 1 if cut is None else cut
    return (
        (response >= threshold).astype(np.int64),
        f"ordinal responses dichotomised at >= {threshold} (matching on the ordinal rest score)",
    )


def _mh_counts(
    data: ResponseData, keyed: np.ndarray, reference: int, focal: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """2 x 2 x K tables for every (focal group, item) via ``bincount``.

    Stratum of observation ``o`` (person ``p``, item ``i``): the rest score
    :math:`\\sum_{j \\ne i,\\ j \\text{ observed for } p} x_{pj}`, the person's total over
    the items they answered minus the studied response (ordinal scores for ordinal data).

    Returns ``reference (item, K, 2)`` and ``focal (n_focal, item, K, 2)`` counts, last
    axis ``[wrong, right]`` of the dichotomised studied item.
    """
    score = data.response if data.kind != "soft" else keyed.astype(float)
    total = np.bincount(data.person_idx, weights=score, minlength=data.n_persons)
    rest = np.rint(total[data.person_idx] - score).astype(np.int64)
    n_strata = int(rest.max()) + 1
    n_items = data.n_items
    cell = (data.item_idx.astype(np.int64) * n_strata + rest) * 2 + keyed

    is_ref = data.group_idx == reference
    ref_counts = np.bincount(cell[is_ref], minlength=n_items * n_strata * 2).reshape(
        n_items, n_strata, 2
    )
    focal_pos = np.full(data.n_groups, -1, dtype=np.int64)
    focal_pos[focal] = np.arange(len(focal))
    pos = focal_pos[data.group_idx]
    is_focal = pos >= 0
    size = n_items * n_strata * 2
    focal_counts = np.bincount(
        pos[is_focal] * size + cell[is_focal], minlength=len(focal) * size
    ).reshape(len(focal), n_items, n_strata, 2)
    return ref_counts.astype(float), focal_counts.astype(float)


def mantel_haenszel(
    data: ResponseData,
    reference_group: str | None = None,
    cut: float | None = None,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Classical Mantel-Haenszel DIF screen with the ETS A/B/C rule.

    For every item ``i`` and focal group ``g``, persons of the reference and of ``g`` who
    answered ``i`` are stratified by their rest score ``k`` (see below). In stratum ``k``,
    with :math:`A_k, B_k` the reference persons answering right / wrong, :math:`C_k, D_k`
    the focal ones and :math:`T_k` their total:

    - common odds ratio (focal vs reference odds of a right / keyed answer)
      :math:`\\alpha = \\sum_k B_k C_k / T_k \\big/ \\sum_k A_k D_k / T_k`;
    - ``log_odds_ratio`` :math:`= -\\ln\\alpha`, on the logit scale of ``dif_shift``
      (for a Rasch item with uniform DIF it estimates the shift; for 2PL, discrimination
      times the shift);
    - ``delta`` :math:`= -2.35 \\ln \\alpha` (ETS delta units). Because :math:`\\alpha` is
      focal-over-reference, **delta > 0 means the item is harder for the focal group**,
      matching ``dif_shift > 0``; ETS's published D-DIF has the opposite sign;
    - ``delta_se``: 2.35 times the Robins-Breslow-Greenland (1986) standard error of
      :math:`\\ln\\alpha`;
    - ``chi2``, ``p_value``: the MH chi-square with continuity correction,
      :math:`(|\\sum_k A_k - E A_k| - 1/2)^2 / \\sum_k \\mathrm{Var} A_k` with the
      hypergeometric moments, on 1 degree of freedom;
    - ``category`` (ETS): **C** if :math:`|\\Delta| \\ge 1.5` and :math:`|\\Delta|` is
      significantly above 1.0 (one-sided z test, :math:`(|\\Delta| - 1) / se > z_{1-\\alpha}`);
      **B** if :math:`|\\Delta| \\ge 1.0`, the chi-square is significant at ``alpha`` and not
      C; **A** otherwise; ``"n/a"`` when the odds ratio is not estimable (a sum is zero).

    Matching: the rest score is the person's total over the *other items they answered*
    (with missing responses it therefore mixes persons who answered different numbers of
    items; with complete data it is the usual rest score). Strata with fewer than two
    persons carry no information and drop out.

    Response kinds: binary responses are used as they are. Ordinal responses are
    dichotomised at ``response >= cut`` (default 1: any category above the lowest) for the
    studied item, while the matching rest score sums the ordinal scores of the other
    items. Soft responses are dichotomised at ``>= cut`` (default 0.5). Weights are
    ignored (a warning says so when they are not all one).

    Parameters
    ----------
    data
        The multi-group :class:`~bayes_align.data.ResponseData`.
    reference_group
        Reference label; default ``data.reference_group``.
    cut
        Dichotomisation threshold for ordinal / soft data.
    alpha
        Significance level of the ETS rule.

    Returns
    -------
    DataFrame with columns ``item, group, n_reference, n_focal, alpha_mh, log_odds_ratio,
    delta, delta_se, chi2, p_value, category`` (focal-group major).
    """
    data = as_response_data(data)
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie strictly between 0 and 1, got {alpha}")
    reference_group = data.reference_group if reference_group is None else str(reference_group)
    if reference_group not in data.groups:
        raise ValueError(
            f"reference group {reference_group!r} is not among the groups {list(data.groups)}"
        )
    reference = data.groups.index(reference_group)
    focal = np.array([g for g in range(data.n_groups) if g != reference], dtype=np.int64)
    if focal.size == 0:
        raise ValueError("Mantel-Haenszel needs at least one focal group besides the reference")
    if data.has_weights:
        warnings.warn(
            "mantel_haenszel ignores the response weights (counts every row once)",
            UserWarning,
            stacklevel=2,
        )
    keyed, _how = _dichotomise(data, cut)
    ref_counts, focal_counts = _mh_counts(data, keyed, reference, focal)

    a = ref_counts[None, :, :, 1]  # reference right      (1, item, K)
    b = ref_counts[None, :, :, 0]  # reference wrong
    c = focal_counts[..., 1]  # focal right          (focal, item, K)
    d = focal_counts[..., 0]  # focal wrong
    n_ref = a + b
    n_foc = c + d
    t = n_ref + n_foc
    informative = (n_ref > 0) & (n_foc > 0) & (t >= 2)
    t_safe = np.where(informative, t, 1.0)
    r = np.where(informative, a * d / t_safe, 0.0)  # reference-favouring terms
    s = np.where(informative, b * c / t_safe, 0.0)  # focal-favouring terms
    p_ = (a + d) / t_safe
    q_ = (b + c) / t_safe
    sum_r = r.sum(-1)
    sum_s = s.sum(-1)
    estimable = (sum_r > 0) & (sum_s > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_ratio = np.where(estimable, np.log(sum_r) - np.log(sum_s), np.nan)  # = -ln alpha
        var_log = (
            (np.where(informative, p_ * r, 0.0)).sum(-1) / (2 * sum_r**2)
            + (np.where(informative, p_ * s + q_ * r, 0.0)).sum(-1) / (2 * sum_r * sum_s)
            + (np.where(informative, q_ * s, 0.0)).sum(-1) / (2 * sum_s**2)
        )
        var_log = np.where(estimable, var_log, np.nan)
        m1 = a + c  # right in stratum
        m0 = b + d
        expected_a = np.where(informative, n_ref * m1 / t_safe, 0.0)
        var_a = np.where(
            informative, n_ref * n_foc * m1 * m0 / (t_safe**2 * np.maximum(t_safe - 1, 1)), 0.0
        )
        sum_var = var_a.sum(-1)
        diff = np.abs((np.where(informative, a, 0.0) - expected_a).sum(-1))
        chi2 = np.where(sum_var > 0, np.maximum(diff - 0.5, 0.0) ** 2 / sum_var, np.nan)
    p_value = stats.chi2.sf(chi2, df=1)
    delta = DELTA_PER_LOGIT * log_ratio
    delta_se = DELTA_PER_LOGIT * np.sqrt(var_log)

    abs_delta = np.abs(delta)
    z_crit = stats.norm.ppf(1 - alpha)
    with np.errstate(invalid="ignore"):
        is_c = (abs_delta >= 1.5) & ((abs_delta - 1.0) / delta_se > z_crit)
        is_b = ~is_c & (abs_delta >= 1.0) & (p_value < alpha)
    category = np.where(is_c, "C", np.where(is_b, "B", "A"))
    category = np.where(np.isfinite(delta), category, NOT_ESTIMABLE)

    groups = np.asarray(data.groups, dtype=object)[focal].astype(str)
    items = np.asarray(data.items, dtype=str)
    table = pd.DataFrame(
        {
            "item": np.tile(items, len(groups)),
            "group": np.repeat(groups, len(items)),
            "n_reference": np.broadcast_to(n_ref.sum(-1), sum_r.shape).ravel().astype(np.int64),
            "n_focal": n_foc.sum(-1).ravel().astype(np.int64),
            "alpha_mh": np.exp(-log_ratio).ravel(),
            "log_odds_ratio": log_ratio.ravel(),
            "delta": delta.ravel(),
            "delta_se": delta_se.ravel(),
            "chi2": chi2.ravel(),
            "p_value": p_value.ravel(),
            "category": category.ravel(),
        }
    )
    table.attrs.update(
        {"reference_group": reference_group, "dichotomisation": _how, "alpha": float(alpha)}
    )
    return table
