"""py-irt (Pyro SVI) 2PL, the tool's own model and guide ("vague" priors, no DIF).

py-irt's ``IrtModelTrainer`` runs a fixed number of full-batch epochs and has no
convergence rule, so this glue runs the *same* Pyro SVI it builds (its ``TwoParamLog``
model and guide, ``Trace_ELBO``, Adam with ``lr=0.1`` and ``ExponentialLR(gamma=0.9999)``,
the trainer's defaults) and stops with the rule bayes_align uses: the mean loss of a
window of ``eval_every`` steps changes by less than ``tol`` (relative) for ``patience``
windows in a row. The trainer's per-improvement ``export()`` (a Python-list copy of all
parameters) and its pydantic ``Dataset`` (Python lists of every observation) are skipped,
which only favours py-irt.

py-irt 0.7.1 pins pandas<3, typer<0.15 and rich<14 although none of them is used on this
path; it is installed with ``--no-deps`` next to pyro-ppl (see requirements-bench.txt),
so it runs in-process with the project's torch 2.13 CPU.
"""

from __future__ import annotations

import time

import numpy as np

from bayes_align.data import ResponseData


def fit_pyirt(
    data: ResponseData,
    max_steps: int = 20_000,
    tol: float = 1e-4,
    patience: int = 3,
    eval_every: int = 200,
    lr: float = 0.1,
    lr_decay: float = 0.9999,
    time_budget_s: float = 600.0,
    seed: int = 0,
) -> dict:
    import pyro
    import torch
    from py_irt.models.two_param_logistic import TwoParamLog
    from pyro.infer import SVI, Trace_ELBO

    torch.manual_seed(seed)
    pyro.set_rng_seed(seed)
    t0 = time.perf_counter()
    model = TwoParamLog(
        priors="vague", num_items=data.n_items, num_subjects=data.n_persons, device="cpu"
    )
    pyro.clear_param_store()
    scheduler = pyro.optim.ExponentialLR(
        {"optimizer": torch.optim.Adam, "optim_args": {"lr": lr}, "gamma": lr_decay}
    )
    svi = SVI(model.get_model(), model.get_guide(), scheduler, loss=Trace_ELBO())
    subjects = torch.tensor(np.asarray(data.person_idx), dtype=torch.long)
    items = torch.tensor(np.asarray(data.item_idx), dtype=torch.long)
    responses = torch.tensor(np.asarray(data.response), dtype=torch.float)
    setup = time.perf_counter() - t0

    losses: list[float] = []
    previous = None
    calm = 0
    converged = False
    steps_at_tol = None
    time_at_tol = None
    t0 = time.perf_counter()
    stopped = "max_steps"
    out_of_time = False
    while len(losses) < max_steps:
        for _ in range(eval_every):
            losses.append(svi.step(subjects, items, responses))
            scheduler.step()
            if time.perf_counter() - t0 > time_budget_s:
                out_of_time = True
                break
        if out_of_time:
            stopped = f"time budget {time_budget_s:.0f}s"
            break
        mean = float(np.mean(losses[-eval_every:]))
        if previous is not None:
            change = abs(mean - previous) / max(abs(mean), 1e-12)
            calm = calm + 1 if change < tol else 0
            if calm >= patience:
                converged = True
                steps_at_tol = len(losses)
                time_at_tol = time.perf_counter() - t0
                stopped = "converged"
                break
        previous = mean
        if time.perf_counter() - t0 > time_budget_s:
            stopped = f"time budget {time_budget_s:.0f}s"
            break
    elapsed = time.perf_counter() - t0
    store = pyro.get_param_store()
    means = {
        "difficulty": store["loc_diff"].detach().numpy().astype(float),
        "discrimination": np.exp(store["loc_slope"].detach().numpy().astype(float)),
        "theta": store["loc_ability"].detach().numpy().astype(float),
    }
    return {
        "tool": "py-irt 2PL (Pyro SVI)",
        "means": means,
        "setup_s": setup,
        "run_s": elapsed,
        "steps": len(losses),
        "converged": converged,
        "steps_at_tol": steps_at_tol,
        "time_at_tol": time_at_tol,
        "stopped": stopped,
        "s_per_step": elapsed / max(1, len(losses)),
        "elbo": np.asarray(losses),
    }
