"""Rank the LMs of one NAEP subset by posterior alignment with its student population.

One call does what the ``naep-alignment`` command and the NAEP notebook do for each
(subject, grade) subset:

1. ``T*_m = argmin_T mean_i KL(h_i || p_im(T))`` per LM (``temperature="optimized"``,
   :func:`bayes_align.classical.optimize_temperature`), or ``T = 1`` (``"raw"``), or a
   number you give;
2. the aggregated data: students ``n_correct_i = human_n * h_{i,key}``, each LM
   ``n_correct_im = model_n * p_{im,key}(T_m)`` (or the counts of every option for
   ``likelihood="nominal"``), see :meth:`bayes_align.aggregated.AggregatedData.from_naep`;
3. the joint IRT model with DIF fitted by :func:`bayes_align.fit_aggregated`;
4. the ranking: posterior mean and ``prob`` HDI of the alignment
   ``r_m = corr_i(b_i, b_i + s_mi)`` (:func:`bayes_align.alignment.alignment`), next to
   the classical CTT correlation at the same temperature.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from bayes_align.aggregated import AggregatedData
from bayes_align.alignment import alignment
from bayes_align.classical import classical_table, optimize_temperature, wide
from bayes_align.inference import fit_aggregated
from bayes_align.naep import NaepData
from bayes_align.results import Fit


@dataclass(frozen=True)
class NaepAlignment:
    """Result of :func:`naep_alignment` for one subset.

    ``ranking``: one row per LM, best aligned first (columns of :func:`rank_alignment`
    plus ``classical_ctt_r``); ``fit``: the posterior; ``data``: the aggregated counts;
    ``temperature``: ``(n_models, 1)`` temperatures the LM probabilities were taken at.
    """

    subset: str
    ranking: pd.DataFrame
    fit: Fit
    data: AggregatedData
    temperature: np.ndarray


def naep_alignment(
    naep: NaepData,
    subset: str | None = None,
    *,
    human_n: float = 2000.0,
    model_n: float = 100.0,
    temperature: str | float = "optimized",
    method: str = "svi",
    irt: str = "1pl",
    likelihood: str = "binary",
    prob: float = 0.9,
    seed: int = 0,
    **inference_kwargs: Any,
) -> NaepAlignment:
    """Fit the aggregated-data model on one subset and rank its LMs by alignment.

    Parameters
    ----------
    naep: loaded NAEP data (:func:`bayes_align.naep.load_naep`); baselines are left out.
    subset: e.g. ``"history-8"``; may be omitted when ``naep`` holds one subset.
    human_n, model_n: effective sample sizes of the student shares and of each LM's
        probabilities (statements, not data; intervals shrink like ``1 / sqrt(n)``).
    temperature: ``"optimized"`` (KL-optimal ``T*`` per LM, the default), ``"raw"``
        (``T = 1``) or a positive number for every LM.
    method, irt, likelihood, seed, inference_kwargs: passed to
        :func:`bayes_align.fit_aggregated`.
    prob: mass of the reported HDI.
    """
    if subset is None:
        if naep.n_subsets != 1:
            raise ValueError(
                f"the data hold subsets {list(naep.subsets)}; pass subset= (one of them)"
            )
        subset = naep.subsets[0]
    if subset not in naep.subsets:
        raise ValueError(f"unknown subset {subset!r}; available: {list(naep.subsets)}")
    if likelihood == "nominal" and irt not in ("1pl", "2pl"):
        raise ValueError(f"likelihood='nominal' supports irt '1pl' or '2pl', not {irt!r}")
    part = naep.select([subset], models=naep.language_models)
    if part.n_models == 0:
        raise ValueError(f"subset {subset!r} has no language models (only baselines)")
    temperatures = _temperatures(part, temperature)
    data = AggregatedData.from_naep(
        part, human_n=human_n, model_n=model_n, temperature=temperatures,
        option_counts=likelihood == "nominal",
    )
    fit = fit_aggregated(
        data, method=method, irt=irt, likelihood=likelihood, seed=seed, **inference_kwargs
    )
    ranking = rank_alignment(fit, prob=prob)
    ctt = wide(classical_table(part, temperatures), "ctt_r").loc[subset]
    ranking["classical_ctt_r"] = ranking["model"].map(ctt)
    return NaepAlignment(subset, ranking, fit, data, temperatures)


def _temperatures(part: NaepData, temperature: str | float) -> np.ndarray:
    """``(n_models, 1)`` temperatures for a one-subset ``part``."""
    if temperature == "optimized":
        return optimize_temperature(part.logits, part.human_probs, part.subset_idx, 1)
    if temperature == "raw":
        return np.ones((part.n_models, 1))
    if isinstance(temperature, str) or not np.isfinite(temperature) or temperature <= 0:
        raise ValueError(
            f"temperature must be 'optimized', 'raw' or a positive number, got {temperature!r}"
        )
    return np.full((part.n_models, 1), float(temperature))


def rank_alignment(fit: Fit, prob: float = 0.9) -> pd.DataFrame:
    """LMs ranked by posterior alignment (Pearson r of reference vs group difficulties).

    Columns ``model, alignment_r, r_low, r_high`` (``prob`` HDI), ``dif_scale`` and
    ``group_mean`` (posterior means), and for a nominal aggregated fit
    ``distractor_dif_scale`` (posterior mean of ``dif_distractor_scale``: how far the LM's
    choice among wrong answers departs from the reference's, in logits), best aligned first.
    """
    table = alignment(fit, prob=prob).table
    r = table.loc[table["metric"] == "pearson"].set_index("group")
    scale = table.loc[table["metric"] == "dif_scale"].set_index("group")["mean"]
    group_mean = fit.idata.posterior["group_mean"].mean(("chain", "draw")).to_series()
    out = pd.DataFrame(
        {
            "model": r.index,
            "alignment_r": r["mean"].to_numpy(),
            "r_low": r["hdi_low"].to_numpy(),
            "r_high": r["hdi_high"].to_numpy(),
            "dif_scale": scale.reindex(r.index).to_numpy(),
            "group_mean": group_mean.reindex(r.index).to_numpy(),
        }
    )
    if "dif_distractor_scale" in fit.idata.posterior:
        distractor = fit.idata.posterior["dif_distractor_scale"].mean(("chain", "draw")).to_series()
        out["distractor_dif_scale"] = distractor.reindex(r.index).to_numpy()
    return out.sort_values("alignment_r", ascending=False, kind="stable").reset_index(drop=True)
