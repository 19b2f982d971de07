"""The classical alignment number: correlate separately estimated item difficulties.

The field's usual approach and the baseline the joint model improves on. It fits each
group on its own (MAP), so it lives apart from the analyses of a posterior, which never
fit: call it once and hand its table to reports and plots.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from scipy import stats
from tqdm.auto import tqdm

from bayes_align.combined import as_response_data
from bayes_align.data import ResponseData
from bayes_align.results import as_idata

__all__ = ["naive_alignment"]


def _default_irt(data: ResponseData) -> str:
    return "grm" if data.kind == "ordinal" else "2pl"


def naive_alignment(
    data: ResponseData,
    model: str | None = None,
    seed: int = 0,
    **fit_kwargs: Any,
) -> pd.DataFrame:
    """The classical alignment number: correlate separately estimated difficulties.

    This is the field's usual approach and the baseline the joint model improves on.
    Each group's responses are fitted *separately* by MAP with a single-group IRT model
    (``model``; default 2PL for binary/soft data, GRM for ordinal data; no DIF term),
    each fit identified by fixing that group's ability distribution to N(0, 1). The
    reference fit gives difficulties :math:`\\hat b_i^{R}`, each focal fit its own
    :math:`\\hat b_i^{g}`, and the reported numbers are the Pearson and Spearman
    correlations over the items both groups answered.

    Because each fit fixes its own ability scale, the two sets of difficulties differ by
    an unknown linear map even without DIF; correlations are invariant to it, which is
    why the field correlates rather than subtracts.

    **Attenuation.** The point estimates carry estimation noise,
    :math:`\\hat b_i^{R} = b_i^{R} + e_i^{R}` and :math:`\\hat b_i^{g} = b_i^{g} + e_i^{g}`, with
    errors independent across the separate fits. The errors inflate the variances but not
    the covariance, so (Spearman, 1904)

    .. math::

        r(\\hat b^R, \\hat b^g) \\approx r(b^R, b^g)\\,\\sqrt{\\lambda_R \\lambda_g},
        \\qquad \\lambda = \\frac{\\mathrm{var}(b)}{\\mathrm{var}(b) + \\overline{\\mathrm{se}^2}},

    i.e. the naive r is biased towards 0, the more so the fewer persons a group has
    (an LM "population" of a few sampled personas is the extreme case). A perfectly
    aligned group can look misaligned just because it is small. :func:`alignment`
    computes the correlation inside each posterior draw of the joint model instead, so
    noise widens its interval rather than shrinking its value.

    Parameters
    ----------
    data
        The multi-group :class:`~bayes_align.data.ResponseData`.
    model
        ``"1pl" | "2pl" | "3pl" | "grm"``; default by ``data.kind``.
    seed
        Random seed passed to the MAP optimiser.
    fit_kwargs
        Further keyword arguments for :func:`bayes_align.fit` (the pointwise
        log-likelihood is left out unless ``log_likelihood=True``).

    Returns
    -------
    DataFrame with columns ``group, pearson, spearman, n_items`` (one row per focal group).
    """
    from bayes_align.inference import fit as fit_model

    irt = model or _default_irt(data)
    fit_kwargs.setdefault("progress_bar", False)
    fit_kwargs.setdefault("log_likelihood", False)  # point estimates only: no LOO here
    data = as_response_data(data)
    frame = data.to_frame()
    difficulties: dict[str, pd.Series] = {}
    bar = tqdm(data.groups, desc="naive alignment: separate MAP fits", unit="group",
               disable=not fit_kwargs["progress_bar"])
    for group in bar:
        sub = frame[frame["group"] == group]
        if sub.empty:
            raise ValueError(f"group {group!r} has no responses; drop it before naive_alignment")
        group_data = ResponseData.from_long(
            sub, weight="weight", reference_group=group, kind=data.kind
        )
        result = fit_model(group_data, model=irt, dif="none", method="map", seed=seed, **fit_kwargs)
        post = as_idata(result).posterior["difficulty"]
        mean = post.mean(("chain", "draw"))
        difficulties[group] = pd.Series(mean.to_numpy(), index=mean["item"].to_numpy().astype(str))

    reference = difficulties[data.reference_group]
    rows = []
    for group in data.focal_groups:
        common = reference.index.intersection(difficulties[group].index)
        x = reference.loc[common].to_numpy()
        y = difficulties[group].loc[common].to_numpy()
        if len(common) < 3:
            raise ValueError(
                f"group {group!r} shares only {len(common)} items with the reference; "
                "correlations need at least 3"
            )
        rows.append(
            {
                "group": group,
                "pearson": float(stats.pearsonr(x, y).statistic),
                "spearman": float(stats.spearmanr(x, y).statistic),
                "n_items": len(common),
            }
        )
    return pd.DataFrame(rows, columns=["group", "pearson", "spearman", "n_items"])
