"""A fitted model: :class:`Fit`, its ArviZ ``InferenceData`` and how it is saved/loaded.

The InferenceData follows ArviZ's conventions (DESIGN.md): ``posterior`` with named dims
and the user's labels, ``sample_stats`` (NUTS), ``log_likelihood`` with ONE variable
``y`` on dim ``obs`` (so ``az.loo`` and ``az.compare`` work with their defaults),
``observed_data["y"]`` and ``constant_data``. ``obs`` runs over the person responses,
then the aggregated rows; ``y`` of a row is its mean answer (the share choosing the key,
or the mean category). Files are written compressed and without the pointwise
log-likelihood, which :func:`load_fit` recomputes from the posterior and the data.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import arviz as az
import jax.numpy as jnp
import numpy as np
import xarray as xr

from bayes_align import __version__
from bayes_align.combined import CombinedData
from bayes_align.diagnostics import DiagnosticReport
from bayes_align.files import atomic_path
from bayes_align.infer.util import map_draws
from bayes_align.model.inputs import ModelInputs, build_model_inputs
from bayes_align.model.joint import pointwise_log_likelihood, row_scores
from bayes_align.model.spec import ModelSpec, Priors

__all__ = ["Fit", "as_idata", "load_fit", "fit_data", "log_likelihood_draws"]

#: methods whose posterior is an approximation (marked in ``idata.attrs["approximate"]``)
APPROXIMATE_METHODS = ("svi", "map")
#: Largest pointwise log-likelihood (draws x observations) computed for a fit or on load.
MAX_LOG_LIKELIHOOD_ELEMENTS = 200_000_000


@dataclass
class Fit:
    """A fitted model: the ArviZ InferenceData and how it was made.

    Attributes
    ----------
    idata : az.InferenceData (posterior, sample_stats (NUTS), log_likelihood,
        observed_data, constant_data; dims and coords carry the user's labels).
    spec, priors : the ModelSpec and Priors (None for models fitted through
        ``run_inference`` without them).
    method : "nuts", "svi" or "map".
    reference_group : label of the reference group.
    elbo : SVI/MAP loss history (negative ELBO per step), None for NUTS.
    diagnostics : the convergence report (NUTS), None otherwise.
    seconds : wall time of the inference itself (compilation included).
    data : the CombinedData the fit used (rebuilt by :func:`load_fit`).
    """

    idata: az.InferenceData
    spec: ModelSpec | None
    method: str
    reference_group: str
    elbo: np.ndarray | None = None
    diagnostics: DiagnosticReport | None = None
    seconds: float = float("nan")
    data: CombinedData | None = field(default=None, repr=False)
    priors: Priors | None = None

    @property
    def posterior(self):
        return self.idata.posterior

    @property
    def approximate(self) -> bool:
        """True for SVI and MAP fits (an approximation of the posterior, not draws from it)."""
        return self.method in APPROXIMATE_METHODS

    def summary(self, var_names: Sequence[str] | None = None, **kwargs) -> Any:
        """``arviz.summary`` of the posterior (default: every variable but ``theta``)."""
        if var_names is None:
            var_names = [v for v in self.idata.posterior.data_vars if v != "theta"]
        return az.summary(self.idata, var_names=list(var_names), **kwargs)

    def to_netcdf(self, path: str | Path, overwrite: bool = True) -> Path:
        """Save the fit (compressed; without the pointwise log-likelihood, which
        :func:`load_fit` recomputes). Written to a temporary file and renamed into place."""
        path = Path(path)
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} exists; pass overwrite=True to replace it.")
        self.idata.attrs.update(_fit_attrs(self))
        groups = [g for g in self.idata.groups() if not (g == "log_likelihood" and self.spec is not None)]
        with atomic_path(path) as tmp:
            self.idata.to_netcdf(str(tmp), groups=groups, engine="h5netcdf", compress=True)
        return path


def _fit_attrs(fit: Fit) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "method": fit.method,
        "reference_group": fit.reference_group,
        "approximate": int(fit.approximate),
        "seconds": float(fit.seconds),
        "bayes_align_version": __version__,
    }
    if fit.spec is not None:
        attrs["model_spec"] = fit.spec.to_json()
    if fit.priors is not None:
        attrs["priors"] = fit.priors.to_json()
    if fit.elbo is not None:
        attrs["elbo"] = json.dumps([float(f"{v:.7g}") for v in fit.elbo])
    return attrs


def load_fit(path: str | Path) -> Fit:
    """Reload a fit saved with :meth:`Fit.to_netcdf` (no refitting; the data come from the
    file). The pointwise log-likelihood is recomputed from the posterior and the data
    (unless the fit was made without it or it would exceed MAX_LOG_LIKELIHOOD_ELEMENTS).
    Raises ValueError when the file is not a bayes_align fit or is damaged."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist (or is not a file).")
    try:
        idata = az.from_netcdf(str(path), engine="h5netcdf")
    except Exception as err:  # h5py/xarray raise many types for a file that is not netCDF
        raise ValueError(
            f"{path} is not a bayes_align fit: it cannot be read as a netCDF/HDF5 file "
            f"({type(err).__name__}); it may be damaged or of another kind."
        ) from None
    attrs = dict(idata.attrs)
    if "posterior" not in idata.groups() or "method" not in attrs:
        raise ValueError(
            f"{path} is a netCDF file but not a bayes_align fit (no posterior or fit attributes)."
        )
    try:
        spec = ModelSpec.from_json(attrs["model_spec"]) if "model_spec" in attrs else None
        priors = Priors.from_json(attrs["priors"]) if "priors" in attrs else (Priors() if spec else None)
    except (TypeError, ValueError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: its model description is damaged or from another version ({err}).") from None
    fit = Fit(
        idata=idata,
        spec=spec,
        method=str(attrs["method"]),
        reference_group=str(attrs.get("reference_group", "")),
        elbo=np.asarray(json.loads(attrs["elbo"])) if "elbo" in attrs else None,
        seconds=float(attrs.get("seconds", float("nan"))),
        priors=priors,
    )
    if spec is not None and "constant_data" in idata.groups():
        fit.data = data_from_idata(idata)
        n_values = idata.posterior.sizes["chain"] * idata.posterior.sizes["draw"] * fit.data.n_units
        wanted = bool(attrs.get("pointwise_log_likelihood", 1))
        if "log_likelihood" not in idata.groups() and wanted and n_values <= MAX_LOG_LIKELIHOOD_ELEMENTS:
            inputs = build_model_inputs(fit.data, spec, priors)
            idata.add_groups(
                log_likelihood={"y": log_likelihood_draws(inputs, spec, idata.posterior)},
                dims={"y": ["obs"]},
            )
    return fit


def as_idata(fit_or_idata: Fit | az.InferenceData) -> az.InferenceData:
    """The InferenceData of a Fit, or the InferenceData itself (for downstream functions)."""
    if isinstance(fit_or_idata, az.InferenceData):
        return fit_or_idata
    idata = getattr(fit_or_idata, "idata", None)
    if isinstance(idata, az.InferenceData):
        return idata
    raise TypeError(
        f"expected a bayes_align Fit or an arviz InferenceData, got {type(fit_or_idata).__name__}"
    )


# --------------------------------------------------------------- building the idata
def log_likelihood_draws(
    inputs: ModelInputs, spec: ModelSpec, posterior, progress: bool = False
) -> np.ndarray:
    """Pointwise log-likelihood ``(chain, draw, obs)`` of every posterior draw."""
    names = [v for v in posterior.data_vars] if hasattr(posterior, "data_vars") else list(posterior)
    draws = {k: np.nan_to_num(np.asarray(posterior[k]), nan=0.0) for k in names
             if k in _LIKELIHOOD_VARIABLES}
    return map_draws(
        pointwise_log_likelihood, draws, size_per_draw=inputs.n_obs + inputs.n_rows,
        progress=progress, desc="log-likelihood", args=(inputs,), static=(spec,),
    )


_LIKELIHOOD_VARIABLES = (
    "theta", "difficulty", "discrimination", "guessing", "step", "dif_shift",
    "dif_log_discrimination", "group_mean", "group_sd", "distractor_intercept",
    "distractor_slope", "dif_distractor",
)


def observed_y(data: CombinedData, inputs: ModelInputs) -> np.ndarray:
    """``observed_data["y"]``: person responses, then the rows' mean answers."""
    scores = np.asarray(row_scores(jnp.asarray(inputs.row_counts), inputs)) if inputs.n_rows else []
    return np.concatenate([data.response, np.asarray(scores, np.float64)])


def data_groups(data: CombinedData, inputs: ModelInputs, spec: ModelSpec) -> dict[str, Any]:
    """``observed_data``, ``constant_data`` and the data attrs of an InferenceData."""
    n_obs = data.n_obs
    constant: dict[str, np.ndarray] = {
        "item_idx": np.concatenate([data.item_idx, data.row_item]).astype(np.int32),
        "group_idx": np.concatenate([data.group_idx, data.row_group]).astype(np.int32),
        "person_idx": np.concatenate([data.person_idx, np.full(data.n_rows, -1)]).astype(np.int32),
        "n_responses": np.concatenate([data.weight, data.n_total]).astype(np.float64),
    }
    dims: dict[str, list[str]] = {k: ["obs"] for k in constant}
    if data.has_persons:
        constant["person_group"] = data.person_group
        dims["person_group"] = ["person"]
    if data.has_rows:
        constant["counts"] = np.asarray(inputs.row_counts, np.float64)
        dims["counts"] = ["row", "category"]
    if inputs.row_kind == "nominal":
        constant["key"] = np.asarray(data.key, np.int64)
        dims["key"] = ["item"]
    for name, values in (data.item_prior or {}).items():
        constant[f"prior_{name}"] = np.asarray(values, np.float64)
        dims[f"prior_{name}"] = ["item"]
    attrs = {
        "kind": data.kind,
        "response_kind": data.response_kind or "",
        "group_kind": json.dumps(list(data.group_kind)),
        "n_categories": json.dumps([int(k) for k in data.n_categories]),
        "person_categories": json.dumps([int(k) for k in data.person_categories]),
        "n_options": json.dumps([int(k) for k in data.n_options]),
        "n_person_obs": int(n_obs),
        "dif_unidentified": json.dumps(sorted([list(p) for p in data.dif_unidentified])),
        "likelihood": inputs.row_kind if data.has_rows else "",
    }
    return {"observed": {"y": observed_y(data, inputs)}, "constant": constant, "dims": dims,
            "attrs": attrs}


def data_from_idata(idata: az.InferenceData) -> CombinedData:
    """Rebuild the :class:`CombinedData` a fit was made from (its constant and observed data)."""
    const, attrs = idata.constant_data, idata.attrs
    n_obs = int(attrs.get("n_person_obs", const["item_idx"].size))
    items = [str(v) for v in idata.posterior["item"].values]
    groups = [str(v) for v in idata.posterior["group"].values]
    persons = [str(v) for v in idata.posterior["person"].values] if "person" in idata.posterior.dims else []
    item_idx, group_idx = const["item_idx"].values, const["group_idx"].values
    y, n_resp = idata.observed_data["y"].values, const["n_responses"].values
    counts = const["counts"].values if "counts" in const else np.zeros((0, 2))
    n_options = np.asarray(json.loads(attrs["n_options"]), np.int64)
    rows = slice(n_obs, None)
    row_item = item_idx[rows].astype(np.int32)
    n_correct = np.full(row_item.size, np.nan)
    option_counts = key = None
    likelihood = attrs.get("likelihood", "")
    if likelihood == "binary":
        n_correct = counts[:, 1]
    elif likelihood in ("nominal", "graded"):
        k = counts.shape[1]
        absent = np.arange(k)[None, :] >= n_options[row_item][:, None]
        option_counts = np.where(absent, np.nan, counts)
        if likelihood == "nominal":
            key = const["key"].values.astype(np.int64)
            n_correct = counts[np.arange(row_item.size), key[row_item]]
    item_prior = {name[len("prior_"):]: const[name].values for name in const.data_vars
                  if name.startswith("prior_")} or None
    unidentified = frozenset(tuple(p) for p in json.loads(attrs.get("dif_unidentified", "[]")))
    return CombinedData(
        items=tuple(items), groups=tuple(groups), reference_group=str(attrs["reference_group"]),
        group_kind=tuple(json.loads(attrs["group_kind"])),
        person_idx=const["person_idx"].values[:n_obs].astype(np.int32),
        item_idx=item_idx[:n_obs].astype(np.int32),
        group_idx=group_idx[:n_obs].astype(np.int32),
        response=y[:n_obs].astype(np.float64),
        weight=n_resp[:n_obs].astype(np.float64),
        person_group=(const["person_group"].values.astype(np.int32) if "person_group" in const
                      else np.zeros(0, np.int32)),
        persons=tuple(persons),
        response_kind=attrs.get("response_kind") or None,
        person_categories=np.asarray(json.loads(attrs["person_categories"]), np.int32),
        row_item=row_item,
        row_group=group_idx[rows].astype(np.int32),
        n_correct=n_correct,
        n_total=n_resp[rows].astype(np.float64),
        option_counts=option_counts,
        key=key,
        item_prior=item_prior,
        dif_unidentified=unidentified,
    )


def fit_data(fit: Fit | az.InferenceData) -> CombinedData:
    """The data of a fit (in memory, or rebuilt from its InferenceData)."""
    data = getattr(fit, "data", None)
    if isinstance(data, CombinedData):
        return data
    idata = as_idata(fit)
    if "model_spec" not in idata.attrs or "constant_data" not in idata.groups():
        raise ValueError("this InferenceData was not made by bayes_align.fit: its data are unknown")
    return data_from_idata(idata)


def fit_inputs(fit: Fit | az.InferenceData) -> tuple[ModelInputs, ModelSpec, Priors]:
    """The model arrays, spec and priors of a fit, for its predictive checks and sensitivity."""
    idata = as_idata(fit)
    spec = getattr(fit, "spec", None) or ModelSpec.from_json(idata.attrs["model_spec"])
    priors = getattr(fit, "priors", None) or (
        Priors.from_json(idata.attrs["priors"]) if "priors" in idata.attrs else Priors()
    )
    return build_model_inputs(fit_data(fit), spec, priors), spec, priors


def assemble(
    posterior: Mapping[str, np.ndarray],
    sample_stats: Mapping[str, np.ndarray] | None,
    log_likelihood: np.ndarray | None,
    data: CombinedData,
    inputs: ModelInputs,
    spec: ModelSpec,
    dims: Mapping[str, Sequence[str]],
    coords: Mapping[str, Any],
) -> az.InferenceData:
    """The InferenceData of an IRT fit from its draws and data."""
    groups = data_groups(data, inputs, spec)
    all_dims = {k: list(v) for k, v in dims.items()} | groups["dims"] | {"y": ["obs"]}
    used = {d for dl in all_dims.values() for d in dl}
    idata = az.from_dict(
        posterior=dict(posterior),
        sample_stats=dict(sample_stats) if sample_stats else None,
        log_likelihood=None if log_likelihood is None else {"y": log_likelihood},
        observed_data=groups["observed"],
        constant_data=groups["constant"],
        coords={k: v for k, v in coords.items() if k in used},
        dims=all_dims,
    )
    idata.attrs.update(groups["attrs"])
    idata.attrs["reference_group"] = data.reference_group
    return idata


def mask_padded(dataset: xr.Dataset, inputs: ModelInputs) -> None:
    """Set padded graded steps and non-distractor options to NaN, in place (a posterior
    or a prior group)."""
    if "step" in dataset:
        valid = np.arange(dataset.sizes["cutpoint"])[None, :] < (np.asarray(inputs.n_categories)[:, None] - 1)
        dataset["step"] = dataset["step"].where(xr.DataArray(valid, dims=("item", "cutpoint")))
    distractor = xr.DataArray(np.asarray(inputs.option_is_distractor), dims=("item", "option"))
    for name in ("distractor_intercept", "distractor_slope", "dif_distractor"):
        if name in dataset:
            dataset[name] = dataset[name].where(distractor)
