"""Convergence checks after sampling: R-hat, bulk/tail ESS, divergences, tree depth.

Thresholds follow Vehtari et al. (2021), "Rank-normalization, folding, and localization":
rank-normalised split R-hat below 1.01 and bulk and tail ESS of at least 100 per chain.
Every failed check raises a :class:`ConvergenceWarning` whose text says what to change.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import arviz as az
import numpy as np

DEFAULT_RHAT_MAX = 1.01
DEFAULT_ESS_PER_CHAIN = 100


class ConvergenceWarning(UserWarning):
    """The sampler output should not be trusted as is."""


@dataclass
class DiagnosticReport:
    """Summary of the convergence checks of one fit.

    ``worst`` maps each check to the variable (and element) that did worst.
    ``messages`` holds the advice that was (or would be) given as warnings.
    """

    max_rhat: float
    min_ess_bulk: float
    min_ess_tail: float
    n_divergent: int
    n_draws: int
    n_chains: int
    frac_max_tree_depth: float
    worst: dict[str, str] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.messages

    def to_dict(self) -> dict[str, object]:
        return {
            "max_rhat": self.max_rhat,
            "min_ess_bulk": self.min_ess_bulk,
            "min_ess_tail": self.min_ess_tail,
            "n_divergent": self.n_divergent,
            "n_draws": self.n_draws,
            "n_chains": self.n_chains,
            "frac_max_tree_depth": self.frac_max_tree_depth,
            "ok": self.ok,
        }


def _extreme(dataset, reduce: str) -> tuple[float, str]:
    """Max or min over all variables/elements of an ArviZ diagnostic Dataset, ignoring NaN."""
    best_value, best_name = (np.nan, "")
    for name, values in dataset.data_vars.items():
        arr = np.asarray(values)
        if arr.size == 0 or np.all(np.isnan(arr)):
            continue
        flat_pos = int(np.nanargmax(arr) if reduce == "max" else np.nanargmin(arr))
        value = float(arr.reshape(-1)[flat_pos])
        better = np.isnan(best_value) or (
            value > best_value if reduce == "max" else value < best_value
        )
        if better:
            where = ""
            if arr.ndim:
                index = np.unravel_index(flat_pos, arr.shape)
                labels = [
                    f"{dim}={values.coords[dim].values[i]}"
                    if dim in values.coords
                    else f"{dim}={i}"
                    for dim, i in zip(values.dims, index, strict=True)
                ]
                where = "[" + ", ".join(labels) + "]"
            best_value, best_name = value, f"{name}{where}"
    return best_value, best_name


def check_convergence(
    idata: az.InferenceData,
    var_names: list[str] | None = None,
    rhat_max: float = DEFAULT_RHAT_MAX,
    ess_per_chain: float = DEFAULT_ESS_PER_CHAIN,
    max_tree_depth: int | None = None,
    warn: bool = True,
) -> DiagnosticReport:
    """Compute R-hat, bulk/tail ESS and sampler statistics and warn when they are bad.

    Parameters
    ----------
    idata : InferenceData with a ``posterior`` group (and ``sample_stats`` for NUTS).
    var_names : variables to check (default: all posterior variables).
    rhat_max : largest acceptable rank-normalised split R-hat.
    ess_per_chain : smallest acceptable bulk and tail ESS, per chain.
    max_tree_depth : the NUTS tree-depth limit used; draws that hit it are counted.
    warn : emit :class:`ConvergenceWarning` for each failed check.
    """
    posterior = idata.posterior
    if var_names is not None:
        posterior = posterior[var_names]
    n_chains = int(posterior.sizes["chain"])
    n_draws = int(posterior.sizes["draw"])
    messages: list[str] = []
    worst: dict[str, str] = {}

    if n_chains * n_draws >= 8 and n_draws >= 4:
        # Constant entries (the reference group's fixed mean and sd) give NaN R-hat; they
        # are skipped by _extreme, so silence NumPy's division warnings for them.
        with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)
            max_rhat, worst["rhat"] = _extreme(az.rhat(posterior), "max")
            min_bulk, worst["ess_bulk"] = _extreme(az.ess(posterior, method="bulk"), "min")
            min_tail, worst["ess_tail"] = _extreme(az.ess(posterior, method="tail"), "min")
    else:
        max_rhat = min_bulk = min_tail = float("nan")

    n_divergent = 0
    frac_depth = 0.0
    stats = getattr(idata, "sample_stats", None)
    if stats is not None and "diverging" in stats:
        n_divergent = int(np.asarray(stats["diverging"]).sum())
        if max_tree_depth is not None and "tree_depth" in stats:
            frac_depth = float(np.mean(np.asarray(stats["tree_depth"]) >= max_tree_depth))

    if n_chains < 2:
        messages.append(
            "Only one chain: R-hat cannot detect non-convergence. Run chains=4 for a final analysis."
        )
    if np.isfinite(max_rhat) and max_rhat > rhat_max:
        messages.append(
            f"R-hat up to {max_rhat:.3f} (at {worst['rhat']}) exceeds {rhat_max}: the chains "
            "disagree. Run more warmup and draws, check for multimodality (e.g. sign flips of "
            "discriminations), or fix the scale with anchors."
        )
    needed = ess_per_chain * n_chains
    if np.isfinite(min_bulk) and min(min_bulk, min_tail) < needed:
        which = "bulk" if min_bulk <= min_tail else "tail"
        value = min(min_bulk, min_tail)
        messages.append(
            f"{which} ESS down to {value:.0f} (at {worst['ess_' + which]}) is below {needed:.0f} "
            f"({ess_per_chain:.0f} per chain): run more draws (or thin less), or use a "
            "stronger prior for weakly identified parameters."
        )
    if n_divergent:
        messages.append(
            f"{n_divergent} divergent transitions after warmup: raise target_accept (e.g. 0.95), "
            "run longer warmup, or reparametrise (dif='normal' instead of 'horseshoe' funnels)."
        )
    if frac_depth > 0.01:
        messages.append(
            f"{100 * frac_depth:.1f}% of draws hit the maximum tree depth {max_tree_depth}: "
            "raise max_tree_depth or use more warmup so the step size adapts."
        )
    if warn:
        for message in messages:
            warnings.warn(message, ConvergenceWarning, stacklevel=3)
    return DiagnosticReport(
        max_rhat=max_rhat,
        min_ess_bulk=min_bulk,
        min_ess_tail=min_tail,
        n_divergent=n_divergent,
        n_draws=n_draws,
        n_chains=n_chains,
        frac_max_tree_depth=frac_depth,
        worst=worst,
        messages=messages,
    )


def min_ess_per_second(
    idata: az.InferenceData, seconds: float, var_names: list[str] | None = None
) -> float:
    """Smallest bulk ESS over all checked parameters divided by the sampling wall time."""
    posterior = idata.posterior if var_names is None else idata.posterior[var_names]
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        value, _ = _extreme(az.ess(posterior, method="bulk"), "min")
    return value / seconds
