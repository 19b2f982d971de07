"""Checks of fit arguments against the data, run before anything is compiled.

:func:`check_fit_arguments` refuses, with a message that names the argument (or the
offending items) and says what to do, every combination that would otherwise fail deep
inside JAX, after minutes of sampling, or not at all:

- ``chains``, ``draws`` not whole numbers >= 1, ``warmup`` not a whole number >= 0
  (SVI and MAP ignore ``chains`` and ``warmup``; ``draws`` is then the number of
  posterior draws taken from the fitted guide);
- an unknown ``model``, ``dif`` or ``method``;
- a DIF model on data with one group only (no focal group to compare);
- DIF with a single item under sum-to-zero identification (the shifts are zero by
  construction), anchors that are not items, or anchors that leave no item free;
- ordinal person responses (items with more than 2 categories) with a binary model,
  fractional ("soft") responses with the graded model, aggregated rows a likelihood
  cannot read (graded or nominal rows without option counts, nominal rows without a
  key, binary rows without a key).

Every check reads only the data's labels and per-item summaries, so it costs
``O(n_items + n_groups)``. :func:`bayes_align.fit` runs them on every call.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

from bayes_align.combined import CombinedData, as_combined
from bayes_align.model.spec import DIF_PRIORS, IRT_MODELS, LIKELIHOODS, ModelSpec

__all__ = ["METHODS", "check_design", "check_fit_arguments", "check_settings"]

METHODS = ("nuts", "svi", "map")

_MAX_LISTED = 10


def _some(labels: Sequence[str]) -> str:
    shown = ", ".join(repr(label) for label in labels[:_MAX_LISTED])
    return shown + (f", ... ({len(labels) - _MAX_LISTED} more)" if len(labels) > _MAX_LISTED else "")


def _check_count(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be a whole number >= {minimum}, got {value!r}.")


def _check_choice(name: str, value: Any, allowed: Sequence[str]) -> str:
    if not isinstance(value, str) or value.lower() not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {value!r}.")
    return value.lower()


def check_settings(method: Any, chains: Any, draws: Any, warmup: Any) -> str:
    """Check the sampler settings; return the method in lower case."""
    method = _check_choice("method", method, METHODS)
    _check_count("chains", chains, 1)
    _check_count("draws", draws, 1)
    _check_count("warmup", warmup, 0)
    return method


def check_fit_arguments(
    data: Any,
    *,
    model: Any = "2pl",
    dif: str = "normal",
    method: str = "nuts",
    chains: int = 4,
    draws: int = 1000,
    warmup: int = 1000,
    anchors: Sequence[str] = (),
    identification: str | None = None,
    likelihood: str | None = None,
) -> None:
    """Refuse fit arguments that do not suit each other or the data; return None.

    Parameters
    ----------
    data : a ``ResponseData``, an ``AggregatedData`` or their combination.
    model : "1pl", "2pl", "3pl" or "grm", or a ``ModelSpec`` (whose ``irt``, ``dif``,
        ``anchors``, ``identification`` and ``likelihood`` then replace the arguments).
    dif, method, chains, draws, warmup, anchors, identification, likelihood : as in ``fit``.

    Raises
    ------
    ValueError naming the argument, or the offending items or groups, and the way out.
    """
    if not hasattr(model, "irt"):
        _check_choice("model", model, IRT_MODELS)
        _check_choice("dif", dif, DIF_PRIORS)
        _check_choice("likelihood", likelihood or "binary", LIKELIHOODS)
        if isinstance(anchors, str):
            raise ValueError(f"anchors must be a list of item labels, got the string {anchors!r}.")
        if identification == "anchors" and not anchors:
            raise ValueError("identification='anchors' needs anchors= with at least one item label.")
    check_settings(method, chains, draws, warmup)
    if not hasattr(data, "items") or not hasattr(data, "groups"):
        raise ValueError(
            "fit expects a ResponseData (ResponseData.from_long), an AggregatedData or their "
            f"combination (bayes_align.combine), got {type(data).__name__}."
        )
    combined = as_combined(data)
    if hasattr(model, "irt"):
        spec = model
    else:
        spec = ModelSpec(
            irt=model.lower(), dif=dif.lower(), anchors=tuple(str(a) for a in anchors),
            identification=identification or ("anchors" if anchors else "sum_to_zero"),
            likelihood=(likelihood or "binary").lower(),
        )
    check_design(combined, spec)


def check_design(data: CombinedData, spec: ModelSpec) -> None:
    """Refuse a model the data cannot carry or identify (see the module docstring)."""
    if spec.dif != "none":
        if not data.focal_groups:
            raise ValueError(
                f"The data have one group only (the reference {data.reference_group!r}), so "
                "there is no focal group whose DIF could be estimated. Add the responses of "
                "another group (e.g. an LM), or fit without DIF (dif='none', --dif none)."
            )
        _check_anchors(data.items, spec.anchors)
    if data.has_persons:
        _check_person_kind(data, spec.irt)
    if data.has_rows:
        _check_rows(data, spec)


def _check_anchors(items: Sequence[str], anchors: Sequence[str]) -> None:
    anchors = [str(a) for a in anchors]
    if not anchors:
        if len(items) < 2:
            raise ValueError(
                f"The data have one item only ({items[0]!r}); its DIF shift is zero by "
                "construction (shifts sum to zero over items). Add items or fit dif='none'."
            )
        return
    unknown = sorted(set(anchors) - set(items))
    if unknown:
        raise ValueError(
            f"Anchor(s) {_some(unknown)} are not items of the data (items: "
            f"{_some(list(items))}); anchors must be item labels."
        )
    if set(anchors) >= set(items):
        raise ValueError(
            f"Every item ({len(items)}) is an anchor, so no item is left whose DIF could be "
            "estimated. Anchor only the items known to be invariant, or fit dif='none'."
        )


def _check_person_kind(data: CombinedData, irt: str) -> None:
    if irt == "grm" and data.response_kind == "soft":
        raise ValueError(
            "Fractional (soft) responses cannot be fitted with the graded response model "
            "(model='grm'); use 1pl, 2pl or 3pl, or round the responses to categories."
        )
    if irt != "grm":
        ordinal = np.flatnonzero(np.asarray(data.person_categories) > 2)
        if ordinal.size:
            raise ValueError(
                f"Item(s) {_some([data.items[i] for i in ordinal])} have more than 2 response "
                f"categories, which the binary {irt} model cannot fit; use model='grm' "
                "(--model grm), or dichotomise the responses."
            )


def _check_rows(data: CombinedData, spec: ModelSpec) -> None:
    if spec.irt == "grm":
        if data.option_counts is None:
            raise ValueError(
                "model='grm' reads aggregated rows as counts of ordered answer categories, but "
                "these rows hold only key counts (n_correct of n_total); use model='1pl', '2pl' "
                "or '3pl', or give the counts of every option (option_columns=...)."
            )
        return
    if spec.likelihood == "nominal":
        if data.option_counts is None or data.key is None:
            raise ValueError(
                "likelihood='nominal' needs the counts of every option and the items' keys "
                "(AggregatedData option counts and key); use likelihood='binary', or for "
                "opinion items without a key model='grm' over ordered options."
            )
    elif not data.has_key:
        raise ValueError(
            "these aggregated rows have no key (opinion items): fit them with model='grm' "
            "(ordered options)"
        )
