"""Stan through pystan 3 (httpstan compiles the model with the machine's g++)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from bayes_align.data import ResponseData

from .common import PeerResult, group_codes

STAN_FILE = Path(__file__).with_name("irt_dif.stan")


def stan_data(data: ResponseData, dif: bool) -> dict:
    person_code, obs_code, n_focal = group_codes(data)
    return {
        "N": int(data.n_obs),
        "P": int(data.n_persons),
        "I": int(data.n_items),
        "F": int(n_focal),
        "pp": (np.asarray(data.person_idx) + 1).tolist(),
        "ii": (np.asarray(data.item_idx) + 1).tolist(),
        "gg": obs_code.tolist(),
        "y": np.asarray(data.response).astype(int).tolist(),
        "pg": person_code.tolist(),
        "use_dif": int(dif),
    }


def fit_stan(
    data: ResponseData,
    dif: bool = True,
    chains: int = 4,
    draws: int = 1000,
    warmup: int = 1000,
    seed: int = 1,
) -> PeerResult:
    """Build (compile on first use; httpstan caches the binary) and sample with NUTS.

    pystan runs the chains in parallel processes, one per CPU core (its default).
    """
    import stan

    code = STAN_FILE.read_text()
    t0 = time.perf_counter()
    model = stan.build(code, data=stan_data(data, dif), random_seed=seed)
    setup = time.perf_counter() - t0
    t0 = time.perf_counter()
    fit = model.sample(num_chains=chains, num_samples=draws, num_warmup=warmup)
    sample = time.perf_counter() - t0

    def grab(name: str) -> np.ndarray:
        # pystan: (*param_shape, draws * chains) with the chain index running fastest
        arr = np.asarray(fit[name])
        arr = arr.reshape(*arr.shape[:-1], draws, chains)
        return np.moveaxis(np.moveaxis(arr, -1, 0), -1, 1)  # (chain, draw, *param_shape)

    out = {"difficulty": grab("difficulty"), "discrimination": grab("discrimination")}
    if dif:
        out["dif_shift"] = grab("dif_shift")
    div = int(np.asarray(fit["divergent__"]).sum())
    grads = int(np.asarray(fit["n_leapfrog__"]).sum())
    return PeerResult(
        tool="Stan (pystan)",
        draws=out,
        setup_s=setup,
        sample_s=sample,
        divergences=div,
        chain_method="processes (httpstan, one per core)",
        extra={"grads": grads},
    )
