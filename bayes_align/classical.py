"""Classical (non-Bayesian) analyses of LM plausibility against aggregated human data.

These are the field's standard numbers (Säuberli, Frassinelli & Plank, BEA 2025),
computed for every (subset, model) pair at once with NumPy over long row arrays:

- ``optimize_temperature``: the temperature ``T`` minimising the mean over items of
  ``KL(human || p(T))`` with ``p(T)`` the order-averaged softmax of the LM logits.
- ``kl_divergence``: ``KL(h || p) = sum_k h_k log(h_k / p_k)`` (terms with ``h_k = 0`` are 0).
- ``total_variation``: ``TV(h, p) = 1/2 sum_k |h_k - p_k|``.
- ``ctt_correlation``: Pearson r (two-sided p) between human facility ``h_key`` and the
  LM's key probability ``p_key``, per subset x model.
- ``irt_theta0_correlation``: Pearson r between ``p_key`` and NAEP's 3PL probability of
  an average test taker, ``P(theta = 0) = c + (1 - c) / (1 + exp(1.7 a b))``.
- ``accuracy``: share of items whose most probable option is the key (ties split evenly),
  with the human modal answer as a reference row.

Baselines (``*Baseline``: Oracle = logit 1 on the key, Uniform = all zeros) give every
item the same key probability, so their correlations are undefined and they are left
out of the correlation rows, as in the literature; they stay in KL, TV, temperature
and accuracy.

Human distributions are renormalised to sum to one by the loader (omitted responses
and rounding make raw sums range over about 0.91 to 1.01).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import special

from bayes_align.naep import NaepData, option_probabilities

__all__ = [
    "optimize_temperature",
    "kl_divergence",
    "total_variation",
    "ctt_correlation",
    "irt_theta0_correlation",
    "accuracy",
    "classical_table",
    "segment_pearson",
    "plot_correlation_heatmap",
    "plot_kl",
    "plot_temperatures",
    "CORRELATION_METRICS",
    "wide",
]

CORRELATION_METRICS = ("ctt_r", "ctt_r_raw", "theta0_r")
HUMAN_MODE = "HumanMode"
HUMAN = "Human"


# --------------------------------------------------------------------------- distances


def kl_divergence(human: np.ndarray, model: np.ndarray) -> np.ndarray:
    """``KL(h || p) = sum_k h_k log(h_k / p_k)`` over the last axis.

    Terms with ``h_k = 0`` contribute 0; ``p_k = 0`` where ``h_k > 0`` gives ``inf``.
    Inputs broadcast against each other; rows are used as given (normalise first).
    """
    return special.rel_entr(np.asarray(human, np.float64), np.asarray(model, np.float64)).sum(-1)


def total_variation(human: np.ndarray, model: np.ndarray) -> np.ndarray:
    """``TV(h, p) = 1/2 sum_k |h_k - p_k|`` over the last axis (in [0, 1])."""
    return 0.5 * np.abs(np.asarray(human, np.float64) - np.asarray(model, np.float64)).sum(-1)


# ------------------------------------------------------------------ segment helpers


def _segment_weights(segment_idx: np.ndarray, n_segments: int, mask: np.ndarray | None = None):
    """``(..., N, S)`` one-hot membership (times ``mask``) and the counts ``(..., S)``."""
    onehot = (np.asarray(segment_idx)[:, None] == np.arange(n_segments)[None, :]).astype(np.float64)
    if mask is not None:
        onehot = onehot * np.asarray(mask, np.float64)[..., None]
    return onehot, onehot.sum(axis=-2)


def _segment_mean(values: np.ndarray, segment_idx: np.ndarray, n_segments: int) -> np.ndarray:
    """Mean of ``values (..., N)`` within each segment: ``(..., S)``."""
    onehot, counts = _segment_weights(segment_idx, n_segments)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (values @ onehot) / counts


def segment_pearson(
    x: np.ndarray,
    y: np.ndarray,
    segment_idx: np.ndarray,
    n_segments: int,
    mask: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pearson r, two-sided p and n per segment, vectorised over leading axes.

    ``x`` and ``y`` broadcast to ``(..., N)``; rows with ``mask == False`` or a NaN in
    ``x`` or ``y`` are left out. With ``n`` pairs,
    ``r = sum (x - xbar)(y - ybar) / sqrt(sum (x - xbar)^2 sum (y - ybar)^2)`` and
    ``p = 2 P(T_{n-2} > |t|)``, ``t = r sqrt((n - 2) / (1 - r^2))`` (what
    ``scipy.stats.pearsonr`` returns). r is NaN where x or y is constant or n < 3.
    """
    x, y = np.broadcast_arrays(np.asarray(x, np.float64), np.asarray(y, np.float64))
    valid = np.isfinite(x) & np.isfinite(y)
    if mask is not None:
        valid &= np.asarray(mask, bool)
    x = np.where(valid, x, 0.0)
    y = np.where(valid, y, 0.0)
    onehot = (np.asarray(segment_idx)[:, None] == np.arange(n_segments)[None, :]).astype(np.float64)
    w = valid.astype(np.float64)
    n = w @ onehot
    with np.errstate(invalid="ignore", divide="ignore"):
        x_mean = (x @ onehot) / n
        y_mean = (y @ onehot) / n
        xc = (x - x_mean[..., segment_idx]) * w
        yc = (y - y_mean[..., segment_idx]) * w
        sxy = (xc * yc) @ onehot
        sxx = (xc * xc) @ onehot
        syy = (yc * yc) @ onehot
        scale = np.sqrt(sxx * syy)
        # A constant vector has sxx ~ 1e-32 from rounding; treat it as exactly constant.
        constant = (sxx <= 1e-24 * np.maximum(1.0, (x * x * w) @ onehot)) | (
            syy <= 1e-24 * np.maximum(1.0, (y * y * w) @ onehot)
        )
        r = np.where(constant | (n < 3), np.nan, np.clip(sxy / scale, -1.0, 1.0))
        df = n - 2
        t = r * np.sqrt(df / np.maximum(1.0 - r * r, 1e-300))
        p = 2.0 * special.stdtr(df, -np.abs(t))
    return r, np.where(np.isnan(r), np.nan, p), n


# -------------------------------------------------------------- temperature scaling


def _loss_derivatives(logits: np.ndarray, human: np.ndarray, beta: np.ndarray):
    """Per-row ``-sum_k h_k log p_k(beta)`` and its first two derivatives in beta = 1/T.

    With ``s_rk = softmax(beta z_r)_k``, ``zbar_r = sum_k s_rk z_rk`` and
    ``v_r = sum_k s_rk (z_rk - zbar_r)^2``:
    ``p_k = mean_r s_rk``, ``p'_k = mean_r s_rk (z_rk - zbar_r)``,
    ``p''_k = mean_r s_rk ((z_rk - zbar_r)^2 - v_r)``,
    ``l' = -sum_k h_k p'_k / p_k``, ``l'' = -sum_k h_k (p''_k / p_k - (p'_k / p_k)^2)``.
    """
    scaled = logits * beta[..., None, None]
    scaled = scaled - scaled.max(axis=-1, keepdims=True)
    s = np.exp(scaled)
    s /= s.sum(axis=-1, keepdims=True)
    dev = logits - (s * logits).sum(axis=-1, keepdims=True)
    var = (s * dev * dev).sum(axis=-1, keepdims=True)
    p = s.mean(axis=-2)
    dp = (s * dev).mean(axis=-2)
    d2p = (s * (dev * dev - var)).mean(axis=-2)
    p = np.maximum(p, 1e-300)
    ratio = dp / p
    loss = -(special.xlogy(human, p)).sum(-1)
    grad = -(human * ratio).sum(-1)
    hess = -(human * (d2p / p - ratio * ratio)).sum(-1)
    return loss, grad, hess


def optimize_temperature(
    logits: np.ndarray,
    human: np.ndarray,
    segment_idx: np.ndarray | None = None,
    n_segments: int | None = None,
    t_min: float = 1e-2,
    t_max: float = 1e3,
    n_grid: int = 61,
    max_newton: int = 60,
    tol: float = 1e-10,
) -> np.ndarray:
    """Temperatures minimising the mean KL(human || order-averaged softmax(logits / T)).

    For each leading index ``m`` (model) and segment ``s`` (subset), solve

        T*_{ms} = argmin_{t_min <= T <= t_max}  mean_{i in s} KL(h_i || p_i(T)),
        p_i(T) = mean_r softmax(z_{m,i,r} / T).

    This is one-dimensional, smooth and cheap, so it is solved to machine precision
    for all problems at once rather than with a stochastic optimiser. In ``beta = 1/T``
    the derivatives are closed-form (see ``_loss_derivatives``). The objective is convex
    in beta for a single presentation order (log-sum-exp), but the average over orders
    can in principle have several minima, so (1) a log-spaced grid of ``n_grid``
    betas locates the best basin of every problem, (2) the bracket around the best grid
    point is refined by safeguarded Newton on the derivative (a Newton step when it
    stays inside the bracket, bisection otherwise; the bracket shrinks by the sign of the
    derivative), which converges quadratically. Everything is vectorised over models x
    rows; the only loops are over the grid points and Newton iterations.

    A flat objective (e.g. all-zero logits: the Uniform baseline) returns ``T = 1``.
    An optimum at a bound returns the bound.

    Parameters
    ----------
    logits: ``(M, N, R, K)`` (or ``(N, R, K)``) option logits.
    human: ``(N, K)`` human distributions (rows summing to one).
    segment_idx: ``(N,)`` subset of each row (default: one segment).
    n_segments: number of segments (default ``max(segment_idx) + 1``).

    Returns
    -------
    ``(M, S)`` temperatures (``(S,)`` for 3-d logits).
    """
    logits = np.asarray(logits, np.float64)
    squeeze = logits.ndim == 3
    if squeeze:
        logits = logits[None]
    if logits.ndim != 4:
        raise ValueError(f"logits must be (M, N, R, K) or (N, R, K); got shape {logits.shape}")
    human = np.asarray(human, np.float64)
    n_rows = logits.shape[1]
    if human.shape != (n_rows, logits.shape[3]):
        raise ValueError(f"human must be (N, K) = {(n_rows, logits.shape[3])}; got {human.shape}")
    if segment_idx is None:
        segment_idx = np.zeros(n_rows, dtype=np.int64)
    segment_idx = np.asarray(segment_idx)
    n_segments = int(segment_idx.max()) + 1 if n_segments is None else int(n_segments)
    if not 0 < t_min < t_max:
        raise ValueError("need 0 < t_min < t_max")
    onehot, counts = _segment_weights(segment_idx, n_segments)
    if np.any(counts == 0):
        raise ValueError(f"segments {np.flatnonzero(counts == 0).tolist()} have no rows")
    n_models = logits.shape[0]

    def mean_derivs(beta_ms: np.ndarray):
        loss, grad, hess = _loss_derivatives(logits, human, beta_ms[:, segment_idx])
        return (loss @ onehot) / counts, (grad @ onehot) / counts, (hess @ onehot) / counts

    betas = np.geomspace(1.0 / t_max, 1.0 / t_min, n_grid)
    grid_loss = np.empty((n_grid, n_models, n_segments))
    for g, b in enumerate(betas):
        grid_loss[g] = mean_derivs(np.full((n_models, n_segments), b))[0]
    best = grid_loss.argmin(axis=0)
    flat = np.ptp(grid_loss, axis=0) <= 1e-12 * np.maximum(1.0, np.abs(grid_loss).max(axis=0))
    lo = betas[np.maximum(best - 1, 0)]
    hi = betas[np.minimum(best + 1, n_grid - 1)]
    beta = betas[best]
    for _ in range(max_newton):
        _, grad, hess = mean_derivs(beta)
        # Shrink the bracket: a positive derivative means the minimum lies to the left.
        hi = np.where(grad > 0, beta, hi)
        lo = np.where(grad < 0, beta, lo)
        newton = beta - grad / np.where(hess > 0, hess, np.nan)
        inside = np.isfinite(newton) & (newton > lo) & (newton < hi)
        new_beta = np.where(inside, newton, 0.5 * (lo + hi))
        converged = np.abs(new_beta - beta) <= tol * beta
        beta = new_beta
        if np.all(converged | flat):
            break
    temperature = np.where(flat, 1.0, 1.0 / beta)
    return temperature[0] if squeeze else temperature


# ------------------------------------------------------------------ correlations


def ctt_correlation(
    human_key_prob: np.ndarray,
    model_key_prob: np.ndarray,
    segment_idx: np.ndarray,
    n_segments: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Pearson r and two-sided p of human facility vs the LM's key probability.

    ``human_key_prob`` ``(N,)``, ``model_key_prob`` ``(M, N)``; returns ``(M, S)`` arrays.
    """
    r, p, _ = segment_pearson(model_key_prob, human_key_prob, segment_idx, n_segments)
    return r, p


def irt_theta0_correlation(
    a: np.ndarray,
    b: np.ndarray,
    c: np.ndarray,
    model_key_prob: np.ndarray,
    segment_idx: np.ndarray,
    n_segments: int,
    scaling: float = 1.7,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pearson r (two-sided p, n) between the LM's key probability and the 3PL at theta = 0.

    ``P_i(theta = 0) = c_i + (1 - c_i) / (1 + exp(scaling a_i b_i))``; rows without
    published 3PL parameters (NaN) are left out, so n can be smaller than the subset.
    """
    p_theta0 = np.asarray(c) + (1.0 - np.asarray(c)) / (1.0 + np.exp(scaling * np.asarray(a) * np.asarray(b)))
    return segment_pearson(model_key_prob, p_theta0, segment_idx, n_segments)


def _modal_hit(probs: np.ndarray, key: np.ndarray) -> np.ndarray:
    """1 if the key is the unique most probable option, 1/m if it ties with m-1 others."""
    top = probs == probs.max(axis=-1, keepdims=True)
    key_top = np.take_along_axis(top, np.broadcast_to(key[:, None], top.shape[:-1] + (1,)), -1)[..., 0]
    return key_top / top.sum(axis=-1)


def accuracy(probs: np.ndarray, key: np.ndarray, segment_idx: np.ndarray, n_segments: int) -> np.ndarray:
    """Share of items whose most probable option is the key, per segment.

    ``probs`` ``(..., N, K)``; ties are split evenly (the Uniform baseline scores 1/K,
    where ``np.argmax`` would credit the first option). Returns ``(..., S)``.
    """
    return _segment_mean(_modal_hit(np.asarray(probs), np.asarray(key)), segment_idx, n_segments)


# ------------------------------------------------------------------------ table


def _long(values: np.ndarray, subsets, models, metric: str, p_values: np.ndarray | None = None):
    """Long rows from an ``(M, S)`` array."""
    m_idx, s_idx = np.meshgrid(np.arange(len(models)), np.arange(len(subsets)), indexing="ij")
    return pd.DataFrame(
        {
            "subset": np.asarray(subsets, dtype=object)[s_idx.ravel()],
            "model": np.asarray(models, dtype=object)[m_idx.ravel()],
            "metric": metric,
            "value": np.asarray(values, np.float64).ravel(),
            "p_value": np.nan if p_values is None else np.asarray(p_values, np.float64).ravel(),
        }
    )


def classical_table(naep: NaepData, temperatures: np.ndarray | None = None) -> pd.DataFrame:
    """Every classical metric for every (subset, model), long format.

    Columns ``subset, model, metric, value, p_value``. Metrics:

    - ``temperature``: ``T*`` from ``optimize_temperature`` (per subset x model).
    - ``kl``, ``kl_optimized``: mean over items of ``KL(h || p(T))`` at T = 1 and T*.
    - ``tv``, ``tv_optimized``: mean total variation distance at T = 1 and T*.
    - ``ctt_r``: Pearson r of human facility vs ``p_key(T*)`` (as in the paper);
      ``ctt_r_raw`` with ``p_key(1)`` (temperature changes Pearson r, not only scale).
    - ``theta0_r``: Pearson r of ``p_key(T*)`` vs NAEP 3PL ``P(theta = 0)``; the row
      ``model = "Human"`` correlates human facility with ``P(theta = 0)``.
    - ``accuracy``: modal option == key at T = 1; ``model = "HumanMode"`` is the
      human modal answer.

    Baselines are left out of the correlation metrics (constant key probability).
    """
    subsets, models = naep.subsets, naep.models
    n_sub = naep.n_subsets
    if temperatures is None:
        temperatures = optimize_temperature(naep.logits, naep.human_probs, naep.subset_idx, n_sub)
    probs_raw = naep.model_probs(1.0)
    probs_opt = option_probabilities(naep.logits, temperatures[:, naep.subset_idx])
    key = naep.key
    key_raw = np.take_along_axis(probs_raw, key[None, :, None], axis=-1)[..., 0]
    key_opt = np.take_along_axis(probs_opt, key[None, :, None], axis=-1)[..., 0]
    human_key = naep.human_key_prob()
    seg = naep.subset_idx
    frames = [
        _long(temperatures, subsets, models, "temperature"),
        _long(_segment_mean(kl_divergence(naep.human_probs, probs_raw), seg, n_sub), subsets, models, "kl"),
        _long(_segment_mean(kl_divergence(naep.human_probs, probs_opt), seg, n_sub), subsets, models, "kl_optimized"),
        _long(_segment_mean(total_variation(naep.human_probs, probs_raw), seg, n_sub), subsets, models, "tv"),
        _long(_segment_mean(total_variation(naep.human_probs, probs_opt), seg, n_sub), subsets, models, "tv_optimized"),
        _long(accuracy(probs_raw, key, seg, n_sub), subsets, models, "accuracy"),
        _long(accuracy(naep.human_probs[None], key, seg, n_sub), subsets, (HUMAN_MODE,), "accuracy"),
    ]
    lm_pos = [i for i, m in enumerate(models) if m not in naep.baselines]
    lm_names = [models[i] for i in lm_pos]
    r, p = ctt_correlation(human_key, key_opt[lm_pos], seg, n_sub)
    frames.append(_long(r, subsets, lm_names, "ctt_r", p))
    r, p = ctt_correlation(human_key, key_raw[lm_pos], seg, n_sub)
    frames.append(_long(r, subsets, lm_names, "ctt_r_raw", p))
    stacked = np.concatenate([key_opt[lm_pos], human_key[None]])
    r, p, _ = irt_theta0_correlation(naep.irt_a, naep.irt_b, naep.irt_c, stacked, seg, n_sub)
    frames.append(_long(r, subsets, [*lm_names, HUMAN], "theta0_r", p))
    table = pd.concat(frames, ignore_index=True)
    return table.loc[~(table["metric"].isin(CORRELATION_METRICS) & table["value"].isna())].reset_index(drop=True)


def wide(table: pd.DataFrame, metric: str, column: str = "value") -> pd.DataFrame:
    """``subset x model`` view of one metric of a ``classical_table``, in table order."""
    part = table.loc[table["metric"] == metric]
    out = part.pivot(index="subset", columns="model", values=column)
    return out.reindex(index=list(dict.fromkeys(part["subset"])), columns=list(dict.fromkeys(part["model"])))


# ------------------------------------------------------------------------ figures


def plot_correlation_heatmap(table: pd.DataFrame, metric: str = "ctt_r", ax=None, title: str | None = None):
    """Heatmap of a correlation metric (subset x model), a star where p < 0.05."""
    import matplotlib.pyplot as plt

    r = wide(table, metric)
    p = wide(table, metric, "p_value")
    if r.empty:
        raise ValueError(f"the table has no {metric!r} rows (correlations need >= 3 items and an LM)")
    if ax is None:
        _, ax = plt.subplots(figsize=(1.0 + 0.45 * r.shape[1], 1.6 + 0.5 * r.shape[0]))
    image = ax.imshow(r.to_numpy(float), cmap="coolwarm", vmin=-1, vmax=1, aspect="auto")
    for (i, j), value in np.ndenumerate(p.to_numpy(float)):
        if value < 0.05:
            ax.text(j, i, "*", ha="center", va="center", fontsize=12)
    ax.set_xticks(range(r.shape[1]), r.columns, rotation=60, ha="right")
    ax.set_yticks(range(r.shape[0]), r.index)
    ax.set_xlabel("Model")
    ax.set_ylabel("Subset (subject-grade)")
    ax.set_title(title or f"Pearson r ({metric}); * p < 0.05")
    ax.figure.colorbar(image, ax=ax, label="Pearson r")
    return ax


def plot_kl(table: pd.DataFrame, ax=None):
    """Mean KL(human || model) per model at T = 1 and at the optimised temperature."""
    import matplotlib.pyplot as plt

    kl = table.loc[table["metric"].isin(["kl", "kl_optimized"])]
    mean = kl.groupby(["model", "metric"], sort=False)["value"].mean().unstack()
    if ax is None:
        _, ax = plt.subplots(figsize=(1.0 + 0.4 * len(mean), 4))
    x = np.arange(len(mean))
    ax.bar(x - 0.2, mean["kl"], 0.4, label="T = 1")
    ax.bar(x + 0.2, mean["kl_optimized"], 0.4, label="optimised T")
    ax.set_yscale("log")
    ax.set_xticks(x, mean.index, rotation=60, ha="right")
    ax.set_xlabel("Model")
    ax.set_ylabel("Mean KL(human || model) [nats], averaged over subsets")
    ax.set_title("KL divergence before and after temperature scaling")
    ax.legend()
    return ax


def plot_temperatures(table: pd.DataFrame, ax=None):
    """Optimised temperature per model, one bar per subset."""
    import matplotlib.pyplot as plt

    temps = wide(table, "temperature")
    if ax is None:
        _, ax = plt.subplots(figsize=(1.0 + 0.45 * temps.shape[1], 4))
    width = 0.8 / temps.shape[0]
    x = np.arange(temps.shape[1])
    for j, subset in enumerate(temps.index):
        ax.bar(x + (j - (temps.shape[0] - 1) / 2) * width, temps.loc[subset], width, label=subset)
    ax.set_yscale("log")
    ax.set_xticks(x, temps.columns, rotation=60, ha="right")
    ax.set_xlabel("Model")
    ax.set_ylabel("Optimised temperature T*")
    ax.set_title("Temperature minimising mean KL(human || model)")
    ax.legend(title="Subset", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return ax
