"""The same model in PyMC, sampled with PyMC's default NUTS and with nutpie."""

from __future__ import annotations

import time

import numpy as np

from bayes_align.data import ResponseData

from .common import PeerResult, group_codes


def build_pymc_model(data: ResponseData, dif: bool = True):
    """DESIGN.md priors, non-centred theta, sum-to-zero DIF shift per focal group."""
    import pymc as pm
    import pytensor.tensor as pt

    person_code, obs_code, n_focal = group_codes(data)
    pp = np.asarray(data.person_idx, dtype=np.int64)
    ii = np.asarray(data.item_idx, dtype=np.int64)
    y = np.asarray(data.response).astype(np.int64)
    coords = {
        "item": list(data.items),
        "focal_group": list(data.focal_groups),
        "person": list(data.persons),
    }
    with pm.Model(coords=coords) as model:
        difficulty = pm.Normal("difficulty", 0.0, 2.0, dims="item")
        log_disc = pm.Normal("log_discrimination", 0.0, 0.5, dims="item")
        discrimination = pm.Deterministic("discrimination", pt.exp(log_disc), dims="item")
        mu_focal = pm.Normal("mu_focal", 0.0, 2.0, dims="focal_group")
        sigma_focal = pm.HalfNormal("sigma_focal", 1.0, dims="focal_group")
        z = pm.Normal("z", 0.0, 1.0, dims="person")
        mu = pt.concatenate([pt.zeros(1), mu_focal])
        sigma = pt.concatenate([pt.ones(1), sigma_focal])
        theta = mu[person_code] + sigma[person_code] * z
        b = difficulty[ii]
        if dif:
            dif_scale = pm.HalfNormal("dif_scale", 1.0, dims="focal_group")
            dif_raw = pm.Normal("dif_raw", 0.0, 1.0, dims=("focal_group", "item"))
            dif_shift = pm.Deterministic(
                "dif_shift",
                dif_scale[:, None] * (dif_raw - dif_raw.mean(axis=1, keepdims=True)),
                dims=("focal_group", "item"),
            )
            shift_full = pt.concatenate([pt.zeros((1, data.n_items)), dif_shift], axis=0)
            b = b + shift_full[obs_code, ii]
        eta = discrimination[ii] * (theta[pp] - b)
        pm.Bernoulli("y", logit_p=eta, observed=y)
    return model


def _item_draws(idata, dif: bool) -> dict[str, np.ndarray]:
    post = idata.posterior
    out = {
        "difficulty": post["difficulty"].transpose("chain", "draw", "item").values,
        "discrimination": post["discrimination"].transpose("chain", "draw", "item").values,
    }
    if dif:
        out["dif_shift"] = (
            post["dif_shift"].transpose("chain", "draw", "focal_group", "item").values
        )
    return out


def fit_pymc(
    data: ResponseData,
    dif: bool = True,
    chains: int = 4,
    draws: int = 1000,
    warmup: int = 1000,
    seed: int = 1,
) -> PeerResult:
    """PyMC's own NUTS with its defaults (cores = min(4, CPU count) processes)."""
    import pymc as pm

    t0 = time.perf_counter()
    model = build_pymc_model(data, dif)
    # compile the log-density and its gradient once (PyTensor caches the C module on disk,
    # so pm.sample below reuses it); this is PyMC's compile time
    model.logp_dlogp_function()
    setup = time.perf_counter() - t0
    t0 = time.perf_counter()
    with model:
        idata = pm.sample(
            draws=draws,
            tune=warmup,
            chains=chains,
            random_seed=seed,
            progressbar=False,
            compute_convergence_checks=False,
        )
    sample = time.perf_counter() - t0
    div = int(idata.sample_stats["diverging"].sum())
    grads = int(idata.sample_stats["n_steps"].sum()) if "n_steps" in idata.sample_stats else None
    from pymc.sampling.parallel import _cpu_count

    return PeerResult(
        tool="PyMC (NUTS)",
        draws=_item_draws(idata, dif),
        setup_s=setup,
        sample_s=sample,
        divergences=div,
        chain_method=f"default cores=min(4, cpu_count // 2) = {min(4, _cpu_count())}"
        + (" (chains in sequence)" if min(4, _cpu_count()) == 1 else " processes"),
        extra={"grads": grads},
    )


def fit_nutpie(
    data: ResponseData,
    dif: bool = True,
    chains: int = 4,
    draws: int = 1000,
    warmup: int = 1000,
    seed: int = 1,
    backend: str = "numba",
) -> PeerResult:
    """nutpie on the PyMC model (numba backend by default; chains on threads)."""
    import nutpie

    t0 = time.perf_counter()
    model = build_pymc_model(data, dif)
    compiled = nutpie.compile_pymc_model(model, backend=backend)
    setup = time.perf_counter() - t0
    t0 = time.perf_counter()
    idata = nutpie.sample(
        compiled,
        draws=draws,
        tune=warmup,
        chains=chains,
        seed=seed,
        progress_bar=False,
    )
    sample = time.perf_counter() - t0
    div = int(idata.sample_stats["diverging"].sum())
    stats = idata.sample_stats
    grads = int(stats["n_steps"].sum()) if "n_steps" in stats else None
    return PeerResult(
        tool=f"nutpie ({backend})",
        draws=_item_draws(idata, dif),
        setup_s=setup,
        sample_s=sample,
        divergences=div,
        chain_method="threads (one per core)",
        extra={"grads": grads},
    )
