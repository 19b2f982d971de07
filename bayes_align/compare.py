"""Model comparison by PSIS-LOO: does the data need DIF (and which kind)?

For models :math:`M` fitted to the same responses, the expected log pointwise predictive
density :math:`\\widehat{\\mathrm{elpd}}_{loo} = \\sum_u \\log p(y_u \\mid y_{-u}, M)` is
estimated by Pareto-smoothed importance sampling (Vehtari, Gelman & Gabry, 2017) from the
``log_likelihood`` group of each fit. The unit ``u`` left out is

- ``pointwise="obs"``: one response (``log_likelihood.y``, dim ``obs``): how well the model
  predicts a held-out answer of a person it has seen (the person's ability stays informed
  by their other answers);
- ``pointwise="person"``: one person with all their answers (the sum of
  ``log_likelihood.y`` over the person's responses, computed here; an aggregated row is
  its own unit): how well the model predicts a new person of the same group. Leaving out
  a whole person changes that person's ability posterior a lot, so Pareto k are often high
  here; the warning then suggests the observation-level comparison or K-fold CV.

SVI and MAP draws come from an approximation of the posterior; comparing such fits is
only indicative, and a warning says so.

Differences are judged against their standard error (``dse``): a difference under
4 elpd is negligible, one beyond 2 SE is clear (Sivula, Magnusson & Vehtari, 2022).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import arviz as az
import numpy as np
import pandas as pd
import xarray as xr

from bayes_align.results import as_idata

__all__ = ["ModelComparison", "compare_models"]

_POINTWISE = ("obs", "person")
#: Differences in elpd smaller than this are treated as negligible.
NEGLIGIBLE_ELPD = 4.0
#: A difference beyond this many standard errors is reported as a clear preference.
CLEAR_SE_RATIO = 2.0


@dataclass(frozen=True)
class ModelComparison:
    """Result of :func:`compare_models`.

    Attributes
    ----------
    table
        ArviZ's compare table (index = model name; columns ``rank, elpd_loo, p_loo,
        elpd_diff, weight, se, dse, warning, scale``) plus ``n_high_k`` (number of
        left-out units with Pareto k above the reliability threshold) and ``max_k``.
    verdict
        One sentence saying which model the data prefer and by how much.
    loo
        The per-model ``ELPDData`` (pointwise).
    pointwise
        ``"obs"`` or ``"person"``.
    diagnostics
        Warning sentences about Pareto k (empty when all are fine).
    """

    table: pd.DataFrame
    verdict: str
    loo: dict[str, Any]
    pointwise: str
    diagnostics: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        wanted = ("rank", "elpd_loo", "p_loo", "elpd_diff", "se", "dse", "weight", "n_high_k")
        columns = [c for c in (*wanted, "max_k") if c in self.table.columns]
        unit = "observation" if self.pointwise == "obs" else "person"
        lines = [
            f"PSIS-LOO model comparison (leave one {unit} out)",
            self.table[columns].to_string(float_format=lambda v: f"{v:.2f}"),
            "",
            self.verdict,
        ]
        lines.extend(f"Warning: {message}" for message in self.diagnostics)
        return "\n".join(lines)


def _log_likelihood(name: str, fit: Any, pointwise: str) -> az.InferenceData:
    """An InferenceData whose ``log_likelihood["y"]`` holds one term per left-out unit."""
    idata = as_idata(fit)
    if "log_likelihood" not in idata.groups() or "y" not in idata.log_likelihood:
        raise ValueError(
            f"model {name!r} has no log_likelihood.y; compare_models needs fits that stored "
            "the pointwise log-likelihood (bayes_align.fit does unless told not to)"
        )
    n_draws = idata.log_likelihood.sizes["chain"] * idata.log_likelihood.sizes["draw"]
    if n_draws < 2:
        raise ValueError(
            f"model {name!r} has {n_draws} posterior draw(s) (a MAP fit?); PSIS-LOO needs "
            "posterior draws: fit with method='nuts' (or 'svi')"
        )
    if pointwise == "obs":
        return idata
    if "constant_data" not in idata.groups() or "person_idx" not in idata.constant_data:
        raise ValueError(f"model {name!r} does not record which person gave each response")
    person = idata.constant_data["person_idx"].to_numpy()
    n_persons = int(person.max()) + 1 if (person >= 0).any() else 0
    rows = np.flatnonzero(person < 0)  # aggregated rows: each is its own unit
    unit = np.where(person >= 0, person, n_persons + np.searchsorted(rows, np.arange(person.size)))
    per_unit = xr.apply_ufunc(
        lambda y: _segment_sum(y, unit, n_persons + rows.size), idata.log_likelihood["y"],
        input_core_dims=[["obs"]], output_core_dims=[["unit"]],
    )
    return az.InferenceData(posterior=idata.posterior, log_likelihood=xr.Dataset({"y": per_unit}))


def _segment_sum(values: np.ndarray, segment: np.ndarray, n: int) -> np.ndarray:
    """Sum the last axis of ``values`` into ``n`` segments."""
    flat = values.reshape(-1, values.shape[-1])
    out = np.zeros((flat.shape[0], n))
    np.add.at(out, (slice(None), segment), flat)
    return out.reshape(*values.shape[:-1], n)


def _n_units(idata: az.InferenceData) -> int:
    """Number of left-out units (log-likelihood terms per draw)."""
    values = idata.log_likelihood["y"]
    return int(values.size // (values.sizes["chain"] * values.sizes["draw"]))


def _verdict(table: pd.DataFrame) -> str:
    """Plain-words statement comparing the best model with the runner-up."""
    best, second = table.index[0], table.index[1]
    diff = float(table.loc[second, "elpd_diff"])
    dse = float(table.loc[second, "dse"])
    ratio = diff / dse if dse > 0 else float("inf")
    numbers = f"{diff:.1f} elpd (SE {dse:.1f}, {ratio:.1f} SE)"
    if diff < NEGLIGIBLE_ELPD:
        sentence = (
            f"the data do not distinguish {best!r} from {second!r}: the difference of {numbers} "
            f"is below {NEGLIGIBLE_ELPD:g} elpd, so they predict about equally well"
        )
    elif ratio >= CLEAR_SE_RATIO:
        sentence = f"the data prefer {best!r} over {second!r} by {numbers}"
    else:
        sentence = (
            f"the data lean towards {best!r} over {second!r} by {numbers}, "
            f"but that is within {CLEAR_SE_RATIO:g} standard errors"
        )
    if len(table) > 2:
        sentence += f"; ranking: {', '.join(repr(m) for m in table.index)}"
    return sentence[0].upper() + sentence[1:] + "."


def compare_models(
    fits: Mapping[str, Any],
    pointwise: Literal["obs", "person"] = "obs",
) -> ModelComparison:
    """Compare fitted models by PSIS-LOO and say in words which the data prefer.

    Parameters
    ----------
    fits
        ``{"name": fit, ...}`` with at least two :class:`~bayes_align.inference.Fit` or
        ``InferenceData`` objects fitted to the *same* responses (e.g. ``dif="none"`` vs
        ``dif="normal"``, or 1PL vs 2PL).
    pointwise
        ``"obs"`` (leave one response out, ``log_likelihood.y``) or ``"person"`` (leave one
        person out: the person's terms of ``log_likelihood.y`` summed).

    Returns
    -------
    :class:`ModelComparison` whose ``verdict`` (also its ``str``) reads e.g. "The data
    prefer 'dif' over 'invariant' by 25.3 elpd (SE 6.1, 4.1 SE)." A ``UserWarning`` is
    issued, and ``diagnostics`` filled, when Pareto k exceed the threshold
    :math:`\\min(1 - 1/\\log_{10} S, 0.7)` for S draws.

    Raises
    ------
    ValueError
        Fewer than two models, an unknown ``pointwise``, a fit without the log-likelihood
        or posterior draws, or fits with different numbers of left-out units.
    """
    if pointwise not in _POINTWISE:
        raise ValueError(f"pointwise must be 'obs' or 'person', got {pointwise!r}")
    if len(fits) < 2:
        raise ValueError(f"compare_models needs at least two models, got {list(fits)}")
    dim = "obs" if pointwise == "obs" else "person"
    unit = "observation" if pointwise == "obs" else "person"
    approximate = [str(name) for name, fit in fits.items()
                   if str(as_idata(fit).attrs.get("method", "")) in ("svi", "map")]
    if approximate:
        warnings.warn(
            f"model(s) {approximate} were fitted by SVI/MAP: their draws come from an "
            "approximation of the posterior, so PSIS-LOO and its verdict are only "
            "indicative; refit with method='nuts' for a comparison to report",
            UserWarning, stacklevel=2,
        )
    idatas = {str(name): _log_likelihood(str(name), fit, pointwise) for name, fit in fits.items()}
    sizes = {name: _n_units(idata) for name, idata in idatas.items()}
    if len(set(sizes.values())) > 1:
        raise ValueError(
            f"the models were not fitted to the same data: numbers of {dim} log-likelihood "
            f"terms differ ({sizes}); refit them on the same ResponseData"
        )

    loo: dict[str, Any] = {}
    diagnostics: list[str] = []
    high_k: dict[str, int] = {}
    max_k: dict[str, float] = {}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Pareto.*", category=UserWarning)
        for name, idata in idatas.items():
            result = az.loo(idata, pointwise=True)
            loo[name] = result
            k = result.pareto_k.to_numpy()
            threshold = float(getattr(result, "good_k", 0.7))
            high_k[name] = int((k > threshold).sum())
            max_k[name] = float(k.max())
            if high_k[name]:
                advice = (
                    "compare with pointwise='obs' or use K-fold cross-validation"
                    if pointwise == "person"
                    else "treat the comparison with caution or use K-fold cross-validation"
                )
                diagnostics.append(
                    f"Pareto k above {threshold:.2f} for {high_k[name]} of {k.size} "
                    f"left-out {unit}s in {name!r} (max {max_k[name]:.2f}); the PSIS-LOO "
                    f"estimate is unreliable there: {advice}."
                )
        table = az.compare(loo)
    table = table.copy()
    table["n_high_k"] = pd.Series(high_k)
    table["max_k"] = pd.Series(max_k)
    for message in diagnostics:
        warnings.warn(message, UserWarning, stacklevel=2)
    return ModelComparison(
        table=table,
        verdict=_verdict(table),
        loo=loo,
        pointwise=pointwise,
        diagnostics=diagnostics,
    )
