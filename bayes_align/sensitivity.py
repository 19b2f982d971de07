"""How much of a posterior is prior: power-scaling sensitivity, without refitting.

The method of R's ``priorsense`` (Kallioinen, Paananen, Buerkner and Vehtari 2023,
"Detecting and diagnosing prior and likelihood sensitivity with power-scaling"). Raising
the prior to a power ``alpha`` near 1, ``p(theta)^alpha p(y | theta)``, reweights the
posterior draws by ``p(theta)^(alpha - 1)`` (likelihood scaling by
``p(y | theta)^(alpha - 1)``), smoothed by Pareto-smoothed importance sampling. The
sensitivity of a quantity is the cumulative Jensen-Shannon distance between its
weighted and unweighted draws, per unit of ``log2(alpha)``::

    sensitivity = (CJS(alpha = 1 / 1.01) + CJS(alpha = 1.01)) / (2 log2 1.01)

A quantity with prior sensitivity >= 0.05 and likelihood sensitivity >= 0.05 shows a
*prior-data conflict*; prior sensitivity >= 0.05 with likelihood sensitivity < 0.05
means a *strong prior / weak likelihood* (the data say little; the prior decides).

The likelihood that is power-scaled for a quantity of one focal group (its alignment,
DIF shifts and scale, ability mean and sd) is the likelihood of that group's
observations: how much its own data inform it. For other quantities it is the whole
likelihood. (Scaling the whole likelihood of a model with thousands of persons weights
draws by a sum with a large Monte-Carlo spread, which drowns the signal of a small
group's quantities; ``priorsense`` offers the same selection.)

The prior that is power-scaled is the set of priors whose scales :class:`Priors` sets
(every top-level prior of the model, the "prior" of ``priorsense``'s usual selection;
the hierarchical parts ``theta | group`` and ``dif_shift | dif_scale`` are model
structure and are not scaled). For normal and half-normal priors, power-scaling by
``alpha`` is the same as dividing their scale by ``sqrt(alpha)``: a refit with that
scale gives the same posterior (checked in the tests).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import arviz as az
import numpy as np
import pandas as pd
from scipy import stats

from bayes_align.alignment import alignment_draws
from bayes_align.results import Fit, as_idata, fit_inputs

__all__ = ["COMPONENTS", "cjs_distance", "power_scale_weights", "prior_sensitivity",
           "prior_log_density"]

THRESHOLD = 0.05

#: prior components (Priors fields) and the posterior variable each acts on
COMPONENTS = (
    "difficulty", "log_discrimination", "guessing", "step_log_gap", "group_mean", "group_sd",
    "dif_scale", "dif_discrimination_scale", "distractor_intercept", "distractor_slope",
    "dif_distractor_scale",
)


def _focal(values: np.ndarray, inputs) -> np.ndarray:
    return values[..., np.asarray(inputs.focal_index)]


def prior_log_density(fit: Fit, components: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Log density (up to a constant) of each prior component at every posterior draw:
    ``{component: (chain, draw)}``. ``components=None``: every component the fit has."""
    idata = as_idata(fit)
    inputs, spec, priors = fit_inputs(fit)
    post = idata.posterior
    out: dict[str, np.ndarray] = {}

    def normal(x, loc, sd, axes):
        return np.sum(stats.norm.logpdf(x, loc, sd), axis=axes)

    terms: dict[str, Callable[[], np.ndarray]] = {
        "difficulty": lambda: normal(post["difficulty"].values, inputs.difficulty_loc,
                                     inputs.difficulty_sd, -1),
        "group_mean": lambda: normal(_focal(post["group_mean"].values, inputs), 0.0,
                                     priors.group_mean, -1),
    }
    if "discrimination" in post:
        terms["log_discrimination"] = lambda: normal(
            np.log(post["discrimination"].values), inputs.log_discrimination_loc,
            inputs.log_discrimination_sd, -1)
    if "guessing" in post:
        terms["guessing"] = lambda: np.sum(stats.beta.logpdf(
            post["guessing"].values, inputs.guessing_alpha, inputs.guessing_beta), axis=-1)
    if "step" in post and inputs.gap_item.size:
        def steps():
            gaps = np.diff(np.nan_to_num(post["step"].values), axis=-1)  # (c, d, item, K-2)
            log_gap = np.log(np.maximum(gaps[..., inputs.gap_item, inputs.gap_pos - 1], 1e-300))
            return normal(log_gap, 0.0, priors.step_log_gap, -1)
        terms["step_log_gap"] = steps
    free = np.asarray(inputs.free_sd_index)
    if free.size:
        terms["group_sd"] = lambda: np.sum(stats.halfnorm.logpdf(
            post["group_sd"].values[..., free], scale=priors.group_sd), axis=-1)
    if "dif_scale" in post:
        if spec.dif == "normal":
            terms["dif_scale"] = lambda: np.sum(stats.halfnorm.logpdf(
                post["dif_scale"].values, scale=priors.dif_scale), axis=-1)
        else:
            p0 = max(priors.horseshoe_expected_dif * inputs.n_items, 1.0)
            tau0 = p0 / max(inputs.n_items - p0, 1.0)
            terms["dif_scale"] = lambda: np.sum(stats.halfcauchy.logpdf(
                post["dif_scale"].values, scale=tau0), axis=-1)
    for name, field in (("dif_log_discrimination_scale", "dif_discrimination_scale"),
                        ("dif_distractor_scale", "dif_distractor_scale")):
        if name in post:
            terms[field] = lambda name=name, field=field: np.sum(stats.halfnorm.logpdf(
                post[name].values, scale=getattr(priors, field)), axis=-1)
    for name in ("distractor_intercept", "distractor_slope"):
        if name in post:  # centred over distractors: isotropic normal on that subspace
            terms[name] = lambda name=name: -0.5 * np.nansum(
                post[name].values ** 2, axis=(-2, -1)) / getattr(priors, name) ** 2
    wanted = list(terms) if components is None else list(components)
    unknown = [c for c in wanted if c not in terms]
    if unknown:
        raise ValueError(f"prior components {unknown} are not in this fit; it has {list(terms)}")
    for name in wanted:
        out[name] = terms[name]()
    return out


def power_scale_weights(
    fit: Fit, alpha: float, component: str = "prior", components: Sequence[str] | None = None,
    groups: Sequence[str] | None = None,
) -> tuple[np.ndarray, float]:
    """PSIS-smoothed normalised weights ``(chain * draw,)`` that turn the posterior into
    the one with the prior (``component="prior"``, the ``components`` selected) or the
    likelihood (of the observations of ``groups``; None: all) raised to ``alpha``; and the
    Pareto ``k`` of the weights (above 0.7 the reweighting is unreliable)."""
    if not alpha > 0:
        raise ValueError(f"alpha must be positive, got {alpha}")
    if component == "prior":
        log_density = sum(prior_log_density(fit, components).values())
    elif component == "likelihood":
        idata = as_idata(fit)
        if "log_likelihood" not in idata.groups():
            raise ValueError("likelihood power-scaling needs the fit's log_likelihood group")
        log_lik = idata.log_likelihood["y"]
        if groups is not None:
            labels = np.asarray(idata.posterior["group"].values).astype(str)
            unknown = sorted(set(groups) - set(labels))
            if unknown:
                raise ValueError(f"unknown groups {unknown}")
            codes = [int(np.flatnonzero(labels == g)[0]) for g in groups]
            keep = np.isin(idata.constant_data["group_idx"].values, codes)
            log_lik = log_lik.isel(obs=np.flatnonzero(keep))
        log_density = log_lik.sum("obs").values
    else:
        raise ValueError(f"component must be 'prior' or 'likelihood', got {component!r}")
    log_ratio = (alpha - 1.0) * np.asarray(log_density, np.float64).reshape(-1)
    log_weights, k = az.psislw(log_ratio - log_ratio.max())
    weights = np.exp(log_weights - log_weights.max())
    return weights / weights.sum(), float(k)


def cjs_distance(draws: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Cumulative Jensen-Shannon distance between the unweighted and the weighted
    empirical distribution of each column of ``draws`` ``(S, V)``, normalised by its upper
    bound, the larger of the values for ``x`` and ``-x`` (Nguyen and Vreeken 2015, as in
    ``priorsense::cjs_dist``). Returns ``(V,)`` in [0, 1]."""
    draws = np.asarray(draws, np.float64)
    if draws.ndim == 1:
        draws = draws[:, None]
    n = draws.shape[0]
    order = np.argsort(draws, axis=0, kind="stable")
    x = np.take_along_axis(draws, order, axis=0)
    w = np.asarray(weights, np.float64)[order]
    width = np.diff(x, axis=0)

    def one_side(w_sorted, width):
        q = np.cumsum(w_sorted, axis=0)[:-1] / w_sorted.sum(axis=0)
        p = np.arange(1, n)[:, None] / n
        q = np.broadcast_to(q, width.shape)
        p = np.broadcast_to(p, width.shape)
        mix = 0.5 * (p + q)

        def term(a):
            with np.errstate(divide="ignore", invalid="ignore"):
                return np.where(a > 0, a * (np.log2(a) - np.log2(mix)), 0.0)

        p_int, q_int = np.sum(p * width, axis=0), np.sum(q * width, axis=0)
        cjs_pq = np.sum(width * term(p), axis=0) + 0.5 / np.log(2) * (q_int - p_int)
        cjs_qp = np.sum(width * term(q), axis=0) + 0.5 / np.log(2) * (p_int - q_int)
        bound = p_int + q_int
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.sqrt(np.maximum(np.where(bound > 0, (cjs_pq + cjs_qp) / bound, 0.0), 0.0))

    # x reversed gives the ECDF of -x: weights in reverse order, widths reversed
    return np.maximum(one_side(w, width), one_side(w[::-1], width[::-1]))


def _quantities(fit: Fit, variables: Sequence[str] | None) -> tuple[np.ndarray, pd.DataFrame]:
    """Draws ``(S, V)`` of the quantities checked and their labels."""
    idata = as_idata(fit)
    post = idata.posterior
    available = [v for v in ("pearson", "spearman", "invariant_share", "dif_scale", "dif_shift",
                             "dif_log_discrimination", "group_mean", "group_sd", "difficulty",
                             "discrimination") if v in post or v in ("pearson", "spearman",
                                                                     "invariant_share")]
    wanted = list(variables) if variables is not None else [
        "pearson", "spearman", "invariant_share", "dif_scale", "dif_shift", "group_mean", "group_sd"]
    unknown = [v for v in wanted if v not in available]
    if unknown:
        raise ValueError(f"unknown or absent variables {unknown}; choose from {available}")
    columns, labels = [], []
    metrics = [v for v in wanted if v in ("pearson", "spearman", "invariant_share")]
    if metrics and "dif_shift" in post:
        aligned = alignment_draws(idata)
        for metric in metrics:
            for g in aligned["focal_group"].values:
                columns.append(aligned[metric].sel(focal_group=g).values.reshape(-1))
                labels.append((metric, str(g), ""))
    ref = str(idata.attrs.get("reference_group", ""))
    for name in [v for v in wanted if v not in metrics and v in post]:
        da = post[name]
        extra = [d for d in da.dims if d not in ("chain", "draw")]
        stacked = da.stack(cell=extra) if extra else da.expand_dims(cell=[0], axis=-1)
        values = stacked.values.reshape(-1, stacked.sizes["cell"])
        for j in range(values.shape[1]):
            if name in ("group_mean", "group_sd") and str(da["group"].values[j]) == ref:
                continue  # fixed at 0 / 1
            if not np.isfinite(values[:, j]).all() or np.ptp(values[:, j]) == 0:
                continue  # padded or fixed entries
            coord = {d: str(da[d].values[idx]) for d, idx in zip(
                extra, np.unravel_index(j, [da.sizes[d] for d in extra]), strict=True)}
            group = coord.get("focal_group", coord.get("group", ""))
            labels.append((name, group, coord.get("item", "")))
            columns.append(values[:, j])
    return np.stack(columns, axis=1), pd.DataFrame(labels, columns=["variable", "group", "item"])


def prior_sensitivity(
    fit: Fit,
    variables: Sequence[str] | None = None,
    components: Sequence[str] | None = None,
    lower_alpha: float = 1 / 1.01,
    upper_alpha: float = 1.01,
    threshold: float = THRESHOLD,
) -> pd.DataFrame:
    """Prior and likelihood power-scaling sensitivity of the posterior quantities.

    Parameters
    ----------
    fit : a NUTS fit (SVI draws are not a posterior sample; a warning says so).
    variables : quantities to check: alignment metrics ``pearson``, ``spearman``,
        ``invariant_share`` (per focal group) and posterior variables (``dif_scale``,
        ``dif_shift``, ``group_mean``, ``group_sd``, ``difficulty``, ``discrimination``,
        ``dif_log_discrimination``); default: the alignment metrics, ``dif_scale``,
        ``dif_shift``, ``group_mean`` and ``group_sd``.
    components : prior components to power-scale (:data:`COMPONENTS`; default: all the
        fit has).
    lower_alpha, upper_alpha : the powers of the finite-difference derivative.
    threshold : sensitivity above which a quantity is flagged (priorsense's 0.05).

    Returns
    -------
    DataFrame with columns ``variable, group, item, prior, likelihood, diagnosis``
    (``diagnosis``: "prior-data conflict", "strong prior / weak likelihood" or "-"),
    with the Pareto ``k`` of the four sets of weights in ``.attrs["pareto_k"]``.
    """
    if not (0 < lower_alpha < 1 < upper_alpha):
        raise ValueError("need 0 < lower_alpha < 1 < upper_alpha")
    if getattr(fit, "approximate", False) or str(as_idata(fit).attrs.get("method")) in ("svi", "map"):
        import warnings

        warnings.warn("prior_sensitivity reweights posterior draws; the draws of an SVI/MAP fit "
                      "come from an approximation, so the numbers are only indicative",
                      UserWarning, stacklevel=2)
    draws, table = _quantities(fit, variables)
    step = 2.0 * np.log2(upper_alpha)
    pareto_k = {}
    table["prior"] = 0.0
    for alpha in (lower_alpha, upper_alpha):
        weights, pareto_k[f"prior@{alpha:.4g}"] = power_scale_weights(fit, alpha, "prior", components=components)
        table["prior"] += cjs_distance(draws, weights) / step
    # the likelihood of a group's own observations for its quantities, all of it otherwise
    table["likelihood"] = 0.0
    ref = str(as_idata(fit).attrs.get("reference_group", ""))
    scopes = table["group"].where(table["group"].ne(ref) & table["group"].ne(""), "")
    for scope in scopes.unique():
        rows = np.flatnonzero(scopes.to_numpy() == scope)
        for alpha in (lower_alpha, upper_alpha):
            weights, k = power_scale_weights(fit, alpha, "likelihood",
                                             groups=[scope] if scope else None)
            pareto_k[f"likelihood[{scope or 'all'}]@{alpha:.4g}"] = k
            table.loc[rows, "likelihood"] += cjs_distance(draws[:, rows], weights) / step
    table["diagnosis"] = np.where(
        (table["prior"] >= threshold) & (table["likelihood"] >= threshold), "prior-data conflict",
        np.where((table["prior"] >= threshold) & (table["likelihood"] < threshold),
                 "strong prior / weak likelihood", "-"),
    )
    table.attrs["pareto_k"] = pareto_k
    return table
