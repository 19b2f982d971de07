"""The arrays the model needs, built once per fit from a :class:`CombinedData`.

:class:`ModelInputs` is a JAX pytree: its arrays are leaves and its sizes static
metadata, so a jitted sampler takes the data as traced arguments and a compiled program
is reused for any data of the same shapes (in memory and in JAX's persistent cache).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import jax
import numpy as np

from bayes_align.combined import CombinedData
from bayes_align.model.irt import gauss_hermite
from bayes_align.model.spec import ModelSpec, Priors

__all__ = ["ModelInputs", "build_model_inputs"]

#: what the aggregated rows count: key vs not, every option (nested logit), ordered categories
ROW_KINDS = ("none", "binary", "nominal", "graded")


@dataclass(frozen=True, eq=False)
class ModelInputs:
    """Arrays (leaves) and sizes (static) of one dataset for one :class:`ModelSpec`.

    Person observations ``(n_obs,)``: ``person_idx``, ``item_idx``, ``group_idx``,
    ``response``, ``weight``; ``person_group`` ``(n_persons,)``. Aggregated rows
    ``(n_rows,)``: ``row_item``, ``row_group``, ``row_total`` and ``row_counts``
    ``(n_rows, K)`` per answer category. Item priors ``(n_items,)``: normal location and
    sd of ``difficulty`` and ``log_discrimination``, Beta parameters of ``guessing``.
    Groups: ``focal_index``, ``focal_row[g]`` (row of group ``g`` in the DIF tables; the
    reference points at an appended zero row), ``free_sd_index`` (groups whose ability
    sd is estimated), ``fixed_sd`` ``(n_groups,)``. Graded: ``n_categories``, and the
    item/position of every free step gap. Nominal: ``option_is_key``,
    ``option_is_distractor`` ``(n_items, K)`` and ``distractor_centring``
    ``(n_slots, n_items * K)``. Quadrature: ``nodes``, ``log_weights``.
    """

    person_idx: np.ndarray
    item_idx: np.ndarray
    group_idx: np.ndarray
    response: np.ndarray
    weight: np.ndarray
    person_group: np.ndarray
    row_item: np.ndarray
    row_group: np.ndarray
    row_total: np.ndarray
    row_counts: np.ndarray
    difficulty_loc: np.ndarray
    difficulty_sd: np.ndarray
    log_discrimination_loc: np.ndarray
    log_discrimination_sd: np.ndarray
    guessing_alpha: np.ndarray
    guessing_beta: np.ndarray
    anchor_mask: np.ndarray
    focal_index: np.ndarray
    focal_row: np.ndarray
    free_sd_index: np.ndarray
    fixed_sd: np.ndarray
    n_categories: np.ndarray
    gap_item: np.ndarray
    gap_pos: np.ndarray
    option_is_key: np.ndarray
    option_is_distractor: np.ndarray
    distractor_centring: np.ndarray
    nodes: np.ndarray
    log_weights: np.ndarray
    n_persons: int
    n_items: int
    n_groups: int
    reference_index: int
    max_categories: int
    has_weights: bool
    response_kind: str
    row_kind: str

    @property
    def n_obs(self) -> int:
        return int(self.response.shape[0])

    @property
    def n_rows(self) -> int:
        return int(self.row_item.shape[0])

    @property
    def n_focal(self) -> int:
        return int(self.focal_index.shape[0])

    @property
    def n_slots(self) -> int:
        return int(self.distractor_centring.shape[0])


_STATIC = ("n_persons", "n_items", "n_groups", "reference_index", "max_categories",
           "has_weights", "response_kind", "row_kind")
jax.tree_util.register_dataclass(
    ModelInputs,
    data_fields=[f.name for f in fields(ModelInputs) if f.name not in _STATIC],
    meta_fields=list(_STATIC),
)


def build_model_inputs(
    data: CombinedData, spec: ModelSpec, priors: Priors, float_dtype=np.float32
) -> ModelInputs:
    """Assemble the model's arrays (the data are checked against ``spec`` by
    :func:`bayes_align.checks.check_design` first; unknown anchors are refused here)."""
    fdt, n_items = float_dtype, data.n_items
    graded = spec.irt == "grm"
    row_kind = "none"
    row_counts = np.zeros((0, 2))
    if data.has_rows:
        row_kind = "graded" if graded else spec.likelihood
        row_counts = data.row_categories(spec.likelihood, graded)

    n_cat = np.full(n_items, 2, np.int32)
    if graded:
        n_cat = np.maximum(data.n_categories, 2).astype(np.int32)
    max_categories = int(n_cat.max())
    if row_kind == "graded" and row_counts.shape[1] < max_categories:
        row_counts = np.pad(row_counts, ((0, 0), (0, max_categories - row_counts.shape[1])))
    n_gaps = np.maximum(n_cat - 2, 0)
    gap_item = np.repeat(np.arange(n_items, dtype=np.int32), n_gaps)
    gap_pos = (np.concatenate([np.arange(1, k + 1) for k in n_gaps]).astype(np.int32)
               if n_gaps.sum() else np.zeros(0, np.int32))

    anchor_mask = np.zeros(n_items, fdt)
    if spec.identification == "anchors":
        unknown = [a for a in spec.anchors if a not in data.items]
        if unknown:
            raise ValueError(
                f"Anchor item(s) {unknown} are not items of the data; anchors must be item labels."
            )
        anchor_mask[[data.items.index(a) for a in spec.anchors]] = 1.0

    focal_index = data.focal_index.astype(np.int32)
    focal_row = np.full(data.n_groups, len(focal_index), np.int32)
    focal_row[focal_index] = np.arange(len(focal_index), dtype=np.int32)
    aggregated = np.array([k == "aggregated" for k in data.group_kind])
    fixed_sd = np.ones(data.n_groups, fdt)
    free = np.zeros(data.n_groups, bool)
    free[focal_index] = True
    if spec.aggregated_sd is not None:
        free &= ~aggregated
        fixed_sd[aggregated & (np.arange(data.n_groups) != data.reference_index)] = spec.aggregated_sd

    item_prior = _item_prior_arrays(data, spec, priors)
    key, distractor, centring = _nominal_arrays(data, row_counts.shape[1], row_kind)
    nodes, weights = gauss_hermite(spec.n_nodes)
    return ModelInputs(
        person_idx=data.person_idx.astype(np.int32),
        item_idx=data.item_idx.astype(np.int32),
        group_idx=data.group_idx.astype(np.int32),
        response=data.response.astype(fdt),
        weight=data.weight.astype(fdt),
        person_group=data.person_group.astype(np.int32),
        row_item=data.row_item.astype(np.int32),
        row_group=data.row_group.astype(np.int32),
        row_total=data.n_total.astype(fdt),
        row_counts=row_counts.astype(fdt),
        **{k: v.astype(fdt) for k, v in item_prior.items()},
        anchor_mask=anchor_mask,
        focal_index=focal_index,
        focal_row=focal_row,
        free_sd_index=np.flatnonzero(free).astype(np.int32),
        fixed_sd=fixed_sd,
        n_categories=n_cat,
        gap_item=gap_item,
        gap_pos=gap_pos,
        option_is_key=key,
        option_is_distractor=distractor,
        distractor_centring=centring.astype(fdt),
        nodes=nodes.astype(fdt),
        log_weights=np.log(weights).astype(fdt),
        n_persons=data.n_persons,
        n_items=n_items,
        n_groups=data.n_groups,
        reference_index=data.reference_index,
        max_categories=max_categories,
        has_weights=data.has_weights,
        response_kind="none" if not data.has_persons else ("graded" if graded else "binary"),
        row_kind=row_kind,
    )


def _item_prior_arrays(data: CombinedData, spec: ModelSpec, priors: Priors) -> dict[str, np.ndarray]:
    """Normal location/sd per item for difficulty and log-discrimination and the Beta
    parameters of guessing: the default priors, or published values where given."""
    n = data.n_items
    k = float(spec.n_options or 4)
    out = {
        "difficulty_loc": np.zeros(n),
        "difficulty_sd": np.full(n, priors.difficulty),
        "log_discrimination_loc": np.zeros(n),
        "log_discrimination_sd": np.full(n, priors.log_discrimination),
        "guessing_alpha": np.full(n, priors.guessing_strength / k),
        "guessing_beta": np.full(n, priors.guessing_strength * (1.0 - 1.0 / k)),
    }
    published = data.item_prior or {}
    for name in ("difficulty", "log_discrimination"):
        values = published.get(name)
        if values is not None:
            values = np.asarray(values, np.float64)
            known = np.isfinite(values)
            out[f"{name}_loc"] = np.where(known, values, 0.0)
            out[f"{name}_sd"] = np.where(known, priors.item_prior_sd, out[f"{name}_sd"])
    c = published.get("guessing")
    if c is not None:
        c = np.asarray(c, np.float64)
        known = np.isfinite(c)
        out["guessing_alpha"] = np.where(known, 100.0 * np.nan_to_num(c), out["guessing_alpha"])
        out["guessing_beta"] = np.where(known, 100.0 * (1.0 - np.nan_to_num(c)), out["guessing_beta"])
    return out


def _nominal_arrays(data: CombinedData, k_max: int, row_kind: str):
    """Key and distractor masks ``(n_items, K)`` and the centring matrix of the free
    distractor slots (nominal rows only; empty otherwise)."""
    n = data.n_items
    if row_kind != "nominal":
        return np.zeros((n, k_max), bool), np.zeros((n, k_max), bool), np.zeros((0, n * k_max))
    n_options = data.n_options
    valid = np.arange(k_max)[None, :] < n_options[:, None]
    key = np.arange(k_max)[None, :] == np.asarray(data.key)[:, None]
    distractor = valid & ~key
    # free slots: distractors of items with at least two (one distractor is fixed at 0)
    slot_item, slot_option = np.nonzero(distractor & (distractor.sum(axis=1) > 1)[:, None])
    return key, distractor, centring_matrix(distractor, slot_item, slot_option)


def centring_matrix(distractor: np.ndarray, slot_item: np.ndarray, slot_option: np.ndarray) -> np.ndarray:
    """``(n_slots, n_items * K)`` constant ``C`` such that ``raw @ C`` scatters flat
    per-distractor values into ``(n_items, K)`` and centres them over each item's
    distractors (0 at the key, padded and one-distractor options): one dense matmul
    instead of a scatter, a segment mean and a mask."""
    n_items, k_max = distractor.shape
    n_slots = slot_item.size
    scatter = np.zeros((n_slots, n_items * k_max))
    scatter[np.arange(n_slots), slot_item * k_max + slot_option] = 1.0
    per_item = np.bincount(slot_item, minlength=n_items)
    same_item = (slot_item[:, None] == slot_item[None, :]) / np.maximum(per_item[slot_item][None, :], 1)
    return scatter - same_item @ scatter
