"""LoRA fine-tuning of an LM towards human answer distributions.

For every training item ``i``, persona ``p`` and option order ``r`` (the orders scoring
presents, :func:`bayes_align.scoring.option_orders`) the prompt is rendered exactly as
:func:`bayes_align.scoring.score` renders it, and the LM's next-token logits of the
option labels ``l_{ipr}`` (label ``j`` shows option ``perm_r[j]``) are compared with the
human answer shares ``t_i^{(g(p))}`` of the persona's group by the soft-label cross-entropy

.. math::

    \\mathcal L = -\\frac{1}{|B|} \\sum_{(i, p, r) \\in B} \\sum_j
        t^{(g(p))}_{i, \\mathrm{perm}_r[j]} \\, \\log \\mathrm{softmax}(l_{ipr})_j ,

minimised over LoRA adapters (Hu et al. 2021: ``W + (alpha / rank) B A`` on the
``target_modules``) with AdamW on minibatches ``B``. A share of the training items is
held out for validation; training stops when the validation loss has not improved for
``patience`` evaluations, and the adapter with the lowest validation loss is kept.

The adapter is written in peft's ``save_pretrained`` format, so a model YAML with
``adapter: <folder>`` makes ``bayes-align score`` use it; ``<out>/model.yaml`` is such a
YAML. A checkpoint (adapter, optimizer, history) is written at every evaluation; running
again with the same arguments resumes from it.

Targets (``shares.csv``): columns ``item``, ``option`` (0-based index into the item's
``options``), ``share`` (summing to 1 over an item's options) and optionally ``persona``
(one distribution per persona id) or ``group`` (one per group; a persona's group is its
``group`` attribute). Without either, every persona gets the item's distribution.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from tqdm.auto import tqdm

from bayes_align.files import write_text
from bayes_align.scoring import (
    Item,
    Persona,
    PromptTemplate,
    load_items,
    load_lm,
    load_lm_config,
    load_personas,
    load_template,
)
from bayes_align.scoring.backends.transformers import resolve_label_tokens
from bayes_align.scoring.score import build_requests

__all__ = [
    "LINEAR_MODULES",
    "FinetuneResult",
    "FinetuneSettings",
    "finetune",
    "load_targets",
    "shares_from_responses",
    "target_distance",
]

#: Every linear projection of a Llama-style block (attention and MLP), the default targets.
LINEAR_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_CHECKPOINT = "checkpoint"
_STATE = "state.json"
_SUMMARY = "training.json"
_MODEL_YAML = "model.yaml"


@dataclass(frozen=True)
class FinetuneSettings:
    """Hyperparameters of :func:`finetune` (all recorded in ``training.json``).

    ``steps``: at most this many optimizer steps; ``batch_size``: prompts per step;
    ``rank``, ``alpha``, ``dropout``, ``target_modules``: the LoRA adapters;
    ``validation_share``: share of the training items held out for early stopping (0:
    none, the last adapter is kept); ``eval_every``: steps between validation
    evaluations (and checkpoints); ``patience``: evaluations without improvement before
    stopping; ``debias``: option orders as in scoring (``"cyclic"``, ``"full"``, None);
    ``autocast``: ``"bfloat16"`` or ``"float16"`` runs the training steps' forward pass in
    that precision under ``torch.autocast`` (the LoRA weights, the optimizer and the loss
    stay in float32; validation runs in the model's own dtype, as scoring does), None:
    the model's dtype throughout; ``attention``: the attention implementation while
    training and validating (``"eager"`` or ``"sdpa"``, transformers' names; None: the
    one the model loaded with). Both compute the same attention (validation losses
    agree to float32 rounding); which is faster depends on the hardware and the prompt
    length (docs/protocol.md, benchmarks/README.md).
    """

    steps: int = 200
    learning_rate: float = 1e-3
    batch_size: int = 8
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: tuple[str, ...] = LINEAR_MODULES
    validation_share: float = 0.2
    eval_every: int = 10
    patience: int = 5
    weight_decay: float = 0.0
    autocast: str | None = None
    attention: str | None = None
    debias: str | None = "cyclic"
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "target_modules", tuple(str(m) for m in self.target_modules))
        for name in ("steps", "batch_size", "rank", "eval_every", "patience"):
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive whole number, got {value!r}")
        for name in ("learning_rate", "alpha"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout!r}")
        if not 0 <= self.validation_share < 1:
            raise ValueError(f"validation_share must lie in [0, 1), got {self.validation_share!r}")
        if self.autocast not in (None, "bfloat16", "float16"):
            raise ValueError(f"autocast must be None, 'bfloat16' or 'float16', got {self.autocast!r}")
        if self.attention not in (None, "eager", "sdpa"):
            raise ValueError(f"attention must be None, 'eager' or 'sdpa', got {self.attention!r}")
        if not self.target_modules:
            raise ValueError("target_modules must name at least one module (e.g. q_proj, v_proj)")


@dataclass(frozen=True)
class FinetuneResult:
    """What :func:`finetune` did: ``out`` holds the adapter (best validation loss).

    ``history``: one row per evaluation, ``step, train_loss`` (mean over the steps since
    the previous evaluation), ``val_loss, val_tv`` (mean total variation between the
    order-averaged option distribution and the targets on the validation items).
    """

    out: Path
    best_step: int
    steps_run: int
    stopped_early: bool
    history: pd.DataFrame
    train_items: tuple[str, ...]
    validation_items: tuple[str, ...]
    settings: FinetuneSettings
    seconds: float = 0.0

    @property
    def model_yaml(self) -> Path:
        """A model YAML naming this adapter (for ``bayes-align score --model``)."""
        return self.out / _MODEL_YAML


# ----------------------------------------------------------------------------- targets
def load_targets(
    source: str | Path | pd.DataFrame,
    items: Sequence[Item],
    personas: Sequence[Persona] | None = None,
) -> dict[tuple[str, str | None], np.ndarray]:
    """Human answer distributions keyed by ``(item_id, persona_id or None)``.

    ``source`` is a CSV path or a DataFrame with columns ``item, option, share`` and
    optionally ``persona`` or ``group`` (see the module docstring). The shares of every
    (item[, persona/group]) must cover the item's options exactly once and sum to 1
    (within 1e-3; they are then renormalised). Rows of items not in ``items`` are ignored.
    Keys carry ``None`` when the targets are the same for every persona.
    """
    frame = pd.read_csv(source) if not isinstance(source, pd.DataFrame) else source.copy()
    missing = {"item", "option", "share"} - set(frame.columns)
    if missing:
        raise ValueError(
            f"targets lack column(s) {sorted(missing)}; expected item, option, share and "
            f"optionally persona or group (columns: {list(frame.columns)})"
        )
    by = [c for c in ("persona", "group") if c in frame.columns]
    if len(by) > 1:
        raise ValueError("targets have both a persona and a group column; keep one")
    if by and not personas:
        raise ValueError(f"targets are given per {by[0]} but no personas were given")
    frame["item"] = frame["item"].astype(str)
    if by:
        frame[by[0]] = frame[by[0]].astype(str)
    n_options = {item.item_id: item.n_options for item in items}
    frame = frame[frame["item"].isin(n_options)]
    if frame.empty:
        raise ValueError("targets name none of the items; check the item ids in both files")
    share = pd.to_numeric(frame["share"], errors="coerce")
    option = pd.to_numeric(frame["option"], errors="coerce")
    limit = frame["item"].map(n_options)
    bad = share.isna() | (share < 0) | option.isna() | (option % 1 != 0) | (option < 0)
    bad |= option >= limit
    if bad.any():
        raise ValueError(
            f"targets rows {frame.index[bad].tolist()[:10]} have a share that is not a number "
            "in [0, 1] or an option that is not a 0-based index into the item's options"
        )
    keys = ["item", *by]
    duplicated = frame.duplicated([*keys, "option"], keep=False)
    if duplicated.any():
        raise ValueError(f"targets rows {frame.index[duplicated].tolist()[:10]} repeat an option")
    table: dict[tuple[str, str | None], np.ndarray] = {}
    for key, part in frame.groupby(keys, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        item_id = key[0]
        if len(part) != n_options[item_id]:
            raise ValueError(
                f"targets for {dict(zip(keys, key, strict=True))} cover options "
                f"{sorted(option[part.index].astype(int))} of the item's {n_options[item_id]}; "
                "give a share for every option (0 for options nobody chose)"
            )
        shares = np.zeros(n_options[item_id])
        shares[option[part.index].astype(int).to_numpy()] = share[part.index].to_numpy()
        if abs(shares.sum() - 1) > 1e-3:
            raise ValueError(
                f"targets for {dict(zip(keys, key, strict=True))} sum to {shares.sum():.4f}, not 1"
            )
        table[(item_id, key[1] if by else None)] = shares / shares.sum()
    if not by:
        return table
    # resolve per-group targets to personas
    if by[0] == "persona":
        known = {p.persona_id for p in personas}
        strange = sorted({k[1] for k in table} - known)
        if strange:
            raise ValueError(f"targets name personas {strange[:10]} that are not in the personas")
        return table
    lacking = [p.persona_id for p in personas if "group" not in p.attributes]
    if lacking:
        raise ValueError(
            f"targets are given per group, so every persona needs a 'group' attribute; "
            f"{lacking[:10]} have none"
        )
    return {
        (item_id, persona.persona_id): shares
        for (item_id, group), shares in table.items()
        for persona in personas
        if str(persona.attributes["group"]) == group
    }


def shares_from_responses(
    data: Any, option_scores: Sequence[int] | Mapping[str, Sequence[int]] | None = None
) -> pd.DataFrame:
    """Answer shares per (item, group) of a :class:`~bayes_align.ResponseData`, as targets.

    ``option_scores[k]`` is the response category of option ``k`` (one list for every
    item, or one per item label; default: option ``k`` is category ``k``), e.g.
    ``[2, 1, 0]`` for VerbAgg's options (yes, perhaps, no). Shares are weighted by
    ``data.weight``. Returns ``item, group, option, share`` (the ``shares.csv`` format).
    """
    categories = np.asarray(data.response, dtype=np.int64)
    if not np.array_equal(categories, data.response):
        raise ValueError("shares need discrete responses (binary or ordinal), not soft ones")
    n_max = int(data.n_categories.max())
    counts = np.zeros((data.n_groups, data.n_items, n_max))
    np.add.at(counts, (data.group_idx, data.item_idx, categories), data.weight)
    totals = counts.sum(-1)
    rows = []
    for i, item in enumerate(data.items):
        n_cat = int(data.n_categories[i])
        if option_scores is None:
            scores = np.arange(n_cat)
        elif isinstance(option_scores, Mapping):
            if item not in option_scores:
                raise ValueError(f"option_scores has no entry for item {item!r}")
            scores = np.asarray(option_scores[item])
        else:
            scores = np.asarray(option_scores)
        if sorted(scores.tolist()) != list(range(n_cat)):
            raise ValueError(
                f"option_scores for item {item!r} must map the options one to one onto the "
                f"categories 0..{n_cat - 1}, got {scores.tolist()}"
            )
        for g in np.flatnonzero(totals[:, i] > 0):
            share = counts[g, i, scores] / totals[g, i]
            rows += [
                {"item": item, "group": data.groups[g], "option": k, "share": float(v)}
                for k, v in enumerate(share)
            ]
    return pd.DataFrame(rows, columns=["item", "group", "option", "share"])


def _target_for(
    targets: Mapping[tuple[str, str | None], np.ndarray], item_id: str, persona_id: str | None
) -> np.ndarray | None:
    found = targets.get((item_id, persona_id))
    return found if found is not None else targets.get((item_id, None))


def target_distance(
    scores: pd.DataFrame, targets: Mapping[tuple[str, str | None], np.ndarray]
) -> pd.DataFrame:
    """Total variation between the LM's option distributions and the targets.

    ``scores`` is the output of :func:`bayes_align.scoring.score`; the LM's distribution
    per (item, persona) is the order-averaged softmax of
    :func:`bayes_align.scoring.option_probabilities`, and
    ``tv = 1/2 sum_k |p_k - t_k|``. Returns ``item, persona, tv`` for every scored pair
    with a target.
    """
    from bayes_align.scoring import option_probabilities

    probs = option_probabilities(scores)
    rows = []
    for item_id, persona, p in zip(probs["item"], probs["persona"], probs["probs"], strict=True):
        persona_id = None if persona == "default" else str(persona)
        target = _target_for(targets, str(item_id), persona_id)
        if target is not None:
            tv = 0.5 * float(np.abs(np.asarray(p) - target).sum())
            rows.append({"item": str(item_id), "persona": str(persona), "tv": tv})
    return pd.DataFrame(rows, columns=["item", "persona", "tv"])


# ----------------------------------------------------------------------------- examples
@dataclass
class _Examples:
    """Tokenised prompts with their label token ids and position-order targets."""

    ids: list[list[int]]
    labels: np.ndarray  # (n, K_max) label token ids, -1 past an item's options
    targets: np.ndarray  # (n, K_max) target share of the option shown at each position
    pair: np.ndarray  # (n,) index of the (item, persona) pair
    permutation: np.ndarray  # (n, K_max) original option shown at each position, -1 past K
    pairs: list[tuple[str, str | None]]


def _examples(lm, items, template, personas, targets, debias) -> _Examples:
    """The prompts :func:`bayes_align.scoring.score` renders for ``items`` x ``personas``
    x option orders, tokenised as it tokenises them, with their label token ids."""
    requests = build_requests(lm, items, template, personas, debias)
    prompts = [r.prompt for r in requests]
    chat = template.chat_for(lm.tokenizer)
    ids = [
        list(x)
        for x in lm.tokenizer([p.text for p in prompts], add_special_tokens=not chat)["input_ids"]
    ]
    label_prefix = template.label_prefix_for(chat)
    k_max = max(item.n_options for item in items)
    labels = np.full((len(requests), k_max), -1, dtype=np.int64)
    for n_options in sorted({r.item.n_options for r in requests}):
        rows = [k for k, r in enumerate(requests) if r.item.n_options == n_options]
        texts = tuple(label_prefix + label for label in template.labels_for(requests[rows[0]].item))
        token_ids = resolve_label_tokens(
            lm.tokenizer, [prompts[k] for k in rows], [ids[k] for k in rows], texts
        )
        labels[np.ix_(rows, range(n_options))] = token_ids
    shown = np.full((len(requests), k_max), -1, dtype=np.int64)
    shares = np.zeros((len(requests), k_max))
    pair_index: dict[tuple[str, str | None], int] = {}
    pair = np.empty(len(requests), dtype=np.int64)
    for k, request in enumerate(requests):
        persona_id = request.persona.persona_id if request.persona is not None else None
        target = _target_for(targets, request.item.item_id, persona_id)
        if target is None:
            raise ValueError(
                f"no target for item {request.item.item_id!r}"
                + (f" and persona {persona_id!r}" if persona_id else "")
            )
        perm = list(request.permutation)
        shown[k, : len(perm)] = perm
        shares[k, : len(perm)] = target[perm]
        pair[k] = pair_index.setdefault((request.item.item_id, persona_id), len(pair_index))
    return _Examples(ids, labels, shares, pair, shown, list(pair_index))


def _label_logits(model, ids: Sequence[Sequence[int]], labels: np.ndarray, pad_id: int, device):
    """Label logits ``(batch, K_max)`` at each prompt's end; -inf past an item's options.

    Prompts are left-padded; position ids count only real tokens, so every row gives the
    logits it gives alone.
    """
    import torch

    length = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), length), dtype=torch.long)
    for row, tokens in enumerate(ids):
        input_ids[row, length - len(tokens) :] = torch.as_tensor(tokens)
        mask[row, length - len(tokens) :] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    out = model(
        input_ids=input_ids.to(device),
        attention_mask=mask.to(device),
        position_ids=positions.to(device),
        logits_to_keep=1,
        use_cache=False,
    )
    last = out.logits[:, -1, :].float()
    label_ids = torch.as_tensor(labels, device=last.device)
    gathered = last.gather(1, label_ids.clamp(min=0))
    return gathered.masked_fill(label_ids < 0, float("-inf"))


def _soft_cross_entropy(logits, targets):
    """Per-row ``-sum_j t_j log softmax(l)_j`` (positions past an item's options skipped)."""
    import torch

    log_probs = torch.log_softmax(logits, dim=-1)
    return -torch.where(targets > 0, targets * log_probs, torch.zeros_like(log_probs)).sum(-1)


def _evaluate(
    model, examples: _Examples, pad_id: int, device, batch_size: int
) -> tuple[float, float]:
    """Mean soft cross-entropy and mean total variation of the order-averaged distribution."""
    import torch

    losses, probs = [], []
    model.eval()
    with torch.no_grad():
        for start in range(0, len(examples.ids), batch_size):
            rows = slice(start, start + batch_size)
            logits = _label_logits(model, examples.ids[rows], examples.labels[rows], pad_id, device)
            target = torch.as_tensor(
                examples.targets[rows], device=logits.device, dtype=logits.dtype
            )
            losses.append(_soft_cross_entropy(logits, target).cpu().numpy())
            probs.append(torch.softmax(logits, -1).cpu().numpy())
    position_probs = np.concatenate(probs)
    original = np.zeros_like(position_probs)  # back to the original option order
    rows, cols = np.nonzero(examples.permutation >= 0)
    original[rows, examples.permutation[rows, cols]] = position_probs[rows, cols]
    target = np.zeros_like(original)
    target[rows, examples.permutation[rows, cols]] = examples.targets[rows, cols]
    n_pairs = len(examples.pairs)
    counts = np.bincount(examples.pair, minlength=n_pairs)[:, None]
    mean_p = np.zeros((n_pairs, original.shape[1]))
    np.add.at(mean_p, examples.pair, original)
    pair_target = np.zeros_like(mean_p)
    pair_target[examples.pair] = target
    tv = 0.5 * np.abs(mean_p / counts - pair_target).sum(-1)
    return float(np.concatenate(losses).mean()), float(tv.mean())


def _batch_rows(step: int, batch_size: int, n: int, seed: int) -> np.ndarray:
    """Example rows of optimizer step ``step``: consecutive slices of per-epoch shuffles,
    a function of the step alone so that a resumed run draws the same batches."""
    positions = np.arange(step * batch_size, (step + 1) * batch_size)
    epochs = positions // n
    out = np.empty(batch_size, dtype=np.int64)
    for epoch in np.unique(epochs):
        order = np.random.default_rng([seed, int(epoch)]).permutation(n)
        take = epochs == epoch
        out[take] = order[positions[take] % n]
    return out


# ----------------------------------------------------------------------------- files
def _fingerprint(payload: Any) -> str:
    text = json.dumps(payload, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


def _save_adapter(model, folder: Path) -> None:
    """Write the adapter into ``folder`` file by file atomically (peft save_pretrained format)."""
    staging = folder.parent / f".{folder.name}.staging"
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(str(staging))
    folder.mkdir(parents=True, exist_ok=True)
    for path in sorted(staging.iterdir()):
        os.replace(path, folder / path.name)
    shutil.rmtree(staging, ignore_errors=True)


def _save_checkpoint(out: Path, model, optimizer, state: dict[str, Any]) -> None:
    """``out/checkpoint`` replaced as a whole: written beside it, then swapped in."""
    import torch

    fresh = out / f".{_CHECKPOINT}.new"
    old = out / f".{_CHECKPOINT}.old"
    shutil.rmtree(fresh, ignore_errors=True)
    model.save_pretrained(str(fresh))
    torch.save(optimizer.state_dict(), fresh / "optimizer.pt")
    (fresh / _STATE).write_text(json.dumps(state, indent=1), encoding="utf-8")
    current = out / _CHECKPOINT
    shutil.rmtree(old, ignore_errors=True)
    if current.exists():
        os.replace(current, old)
    os.replace(fresh, current)
    shutil.rmtree(old, ignore_errors=True)


def _load_state(out: Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest complete checkpoint folder and its state (``.old`` if a swap was cut)."""
    for folder in (out / _CHECKPOINT, out / f".{_CHECKPOINT}.old"):
        state = folder / _STATE
        if state.is_file():
            return folder, json.loads(state.read_text(encoding="utf-8"))
    return None


def _write_model_yaml(model: Any, out: Path) -> None:
    """``out/model.yaml``: the base model's YAML plus ``adapter: .`` (this folder)."""
    if isinstance(model, Mapping):
        raw = dict(model)
    elif isinstance(model, str | Path):
        raw = dict(yaml.safe_load(Path(model).read_text(encoding="utf-8")) or {})
        raw.setdefault("name", Path(model).stem)
    else:
        return
    raw["name"] = f"{raw.get('name', 'lm')}+{out.resolve().name}"
    raw["adapter"] = "."
    raw["adapter_merge"] = True
    write_text(yaml.safe_dump(raw, sort_keys=False), out / _MODEL_YAML)


# ----------------------------------------------------------------------------- training
def _split_validation(train: list[str], share: float, seed: int) -> tuple[list[str], list[str]]:
    if share == 0 or len(train) < 2:
        return train, []
    n_val = min(max(1, round(share * len(train))), len(train) - 1)
    held = set(np.random.default_rng(seed).choice(train, size=n_val, replace=False).tolist())
    return [i for i in train if i not in held], [i for i in train if i in held]


def finetune(
    model: str | Path | Mapping[str, Any],
    items: str | Path | pd.DataFrame | Sequence[Item],
    targets: str | Path | pd.DataFrame,
    template: str | Path | Mapping[str, Any] | PromptTemplate | None = None,
    personas: str | Path | Sequence[Persona] | None = None,
    train_items: Sequence[str] | None = None,
    out: str | Path = "adapter",
    settings: FinetuneSettings | None = None,
    *,
    resume: bool = True,
    progress: bool = True,
    threads: int | None = None,
    **setting_overrides: Any,
) -> FinetuneResult:
    """Train LoRA adapters so that the LM answers like the human targets (module docstring).

    Parameters
    ----------
    model
        A model YAML (or its mapping) without an ``adapter``; loaded with
        :func:`bayes_align.scoring.load_lm` (``device: auto`` trains on a GPU when there
        is one).
    items, template, personas
        As for :func:`bayes_align.scoring.score`; prompts are rendered identically.
    targets
        ``shares.csv`` path or DataFrame (see :func:`load_targets`).
    train_items
        Item ids to train on (default: every item with targets); keep the test items out.
    out
        Folder for the adapter (peft format), ``training.json``, ``model.yaml`` and the
        checkpoint. A folder holding a checkpoint of the same run is resumed (``resume``);
        one holding anything else is refused.
    settings, setting_overrides
        :class:`FinetuneSettings`, or its fields as keyword arguments.
    progress
        Show a progress bar over the steps.
    threads
        CPU threads for torch during the run (default: torch's setting). On a CPU shared
        with other jobs one thread can be several times faster than two
        (benchmarks/README.md, "Sample-size study and fine-tuning").
    """
    arguments = (
        model, items, targets, template, personas, train_items, out, settings, resume,
        progress, setting_overrides,
    )  # fmt: skip
    if threads is None:
        return _finetune(*arguments)
    import torch

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        return _finetune(*arguments)
    finally:
        torch.set_num_threads(previous_threads)


def _finetune(
    model,
    items,
    targets,
    template,
    personas,
    train_items,
    out,
    settings,
    resume,
    progress,
    setting_overrides,
) -> FinetuneResult:
    settings = settings or FinetuneSettings()
    if setting_overrides:
        settings = FinetuneSettings(**{**asdict(settings), **setting_overrides})
    out = Path(out).expanduser()
    config = load_lm_config(model)
    if config.adapter is not None:
        raise ValueError(
            f"model {config.name!r} already names an adapter ({config.adapter}); fine-tuning "
            "starts from a base model: remove 'adapter' from its YAML"
        )
    item_list = load_items(items)
    template = load_template(template) if template is not None else PromptTemplate()
    persona_list = (
        load_personas(personas) if isinstance(personas, str | Path | Mapping) else personas
    )
    target_table = load_targets(targets, item_list, persona_list)
    with_targets = [i.item_id for i in item_list if any(k[0] == i.item_id for k in target_table)]
    train = list(with_targets) if train_items is None else [str(i) for i in train_items]
    unknown = sorted(set(train) - set(with_targets))
    if unknown:
        raise ValueError(f"training items {unknown[:10]} are not items with targets")
    if not train:
        raise ValueError("there are no training items")
    fit_ids, val_ids = _split_validation(train, settings.validation_share, settings.seed)

    run_id = _fingerprint(
        {
            "settings": asdict(settings),
            "config": {k: v for k, v in asdict(config).items() if k not in ("device",)},
            "items": [i.content_hash() for i in item_list if i.item_id in set(train)],
            "template": template.content_hash(),
            "personas": [p.content_hash() for p in persona_list or []],
            "targets": {f"{k[0]}|{k[1]}": v.round(8).tolist() for k, v in target_table.items()},
            "train": train,
        }
    )
    previous = _load_state(out) if out.is_dir() else None
    if previous is not None and previous[1].get("run_id") != run_id:
        raise ValueError(
            f"{out} holds a checkpoint of a different run (other model, data or settings); "
            "choose another --out folder"
        )
    if previous is not None and not resume:
        raise FileExistsError(
            f"{out} holds a checkpoint of this run; resume it (resume=True) or choose another folder"
        )
    if previous is None and out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not empty; choose a new folder for the adapter")
    if previous is not None and previous[1].get("finished"):
        result = _result(out, previous[1], settings, fit_ids, val_ids)
        if not (out / _SUMMARY).is_file() or not (out / _MODEL_YAML).is_file():
            _write_outputs(result, previous[1], config.name, model)  # a cut-off last run
        return result

    import torch
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict

    lm = load_lm(config)
    if settings.attention is not None:
        if not hasattr(lm.model, "set_attn_implementation"):
            raise ValueError("attention needs a transformers version whose models have "
                             "set_attn_implementation (5.x); leave attention None")
        lm.model.set_attn_implementation(settings.attention)
    by_id = {i.item_id: i for i in item_list}
    train_examples = _examples(
        lm, [by_id[i] for i in fit_ids], template, persona_list, target_table, settings.debias
    )
    val_examples = (
        _examples(
            lm, [by_id[i] for i in val_ids], template, persona_list, target_table, settings.debias
        )
        if val_ids
        else None
    )
    torch.manual_seed(settings.seed)
    lora = LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    try:
        peft_model = get_peft_model(lm.model, lora)
    except ValueError as err:
        raise ValueError(
            f"LoRA target_modules {list(settings.target_modules)} do not match {config.name!r}: "
            f"{err}"
        ) from err
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        trainable, lr=settings.learning_rate, weight_decay=settings.weight_decay
    )
    pad_id = lm.tokenizer.pad_token_id
    autocast_dtype = getattr(torch, settings.autocast) if settings.autocast else None
    state: dict[str, Any] = {
        "run_id": run_id, "step": 0, "history": [], "best_step": 0,
        "best_val": None, "calm": 0, "finished": False, "stopped_early": False, "seconds": 0.0,
    }  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    if previous is not None:
        folder, state = previous
        from safetensors.torch import load_file

        set_peft_model_state_dict(peft_model, load_file(str(folder / "adapter_model.safetensors")))
        optimizer.load_state_dict(torch.load(folder / "optimizer.pt", map_location=lm.device))

    def evaluate(step: int, train_loss: float) -> bool:
        """Record an evaluation; save the adapter when it is the best. True: stop."""
        val_loss, val_tv = (
            _evaluate(peft_model, val_examples, pad_id, lm.device, 2 * settings.batch_size)
            if val_examples is not None
            else (math.nan, math.nan)
        )
        state["history"].append(
            {"step": step, "train_loss": train_loss, "val_loss": val_loss, "val_tv": val_tv}
        )
        improved = val_examples is None or state["best_val"] is None or val_loss < state["best_val"]
        if improved:
            state.update(
                best_val=None if val_examples is None else val_loss, best_step=step, calm=0
            )
            _save_adapter(peft_model, out)
        else:
            state["calm"] += 1
        return state["calm"] >= settings.patience

    state["device"] = str(lm.device)
    start = time.perf_counter()
    seconds_before = state["seconds"]
    if state["step"] == 0 and not state["history"]:
        evaluate(0, math.nan)
        state["seconds"] = seconds_before + time.perf_counter() - start
        _save_checkpoint(out, peft_model, optimizer, state)
    window: list[float] = []
    n_examples = len(train_examples.ids)
    with tqdm(
        total=settings.steps, initial=state["step"], desc=f"fine-tuning {config.name}",
        unit="step", disable=not progress,
    ) as bar:  # fmt: skip
        while state["step"] < settings.steps and not state["finished"]:
            step = state["step"]
            rows = _batch_rows(step, settings.batch_size, n_examples, settings.seed)
            torch.manual_seed(settings.seed * 1_000_003 + step)  # LoRA dropout, reproducible
            peft_model.train()
            with torch.autocast(torch.device(lm.device).type, dtype=autocast_dtype,
                                enabled=autocast_dtype is not None):
                logits = _label_logits(
                    peft_model, [train_examples.ids[r] for r in rows],
                    train_examples.labels[rows], pad_id, lm.device,
                )  # fmt: skip
            target = torch.as_tensor(train_examples.targets[rows], device=logits.device)
            loss = _soft_cross_entropy(logits, target.to(logits.dtype)).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            optimizer.step()
            window.append(loss.item())
            state["step"] = step + 1
            bar.update()
            bar.set_postfix(loss=f"{np.mean(window):.4f}")
            if state["step"] % settings.eval_every == 0 or state["step"] == settings.steps:
                stop = evaluate(state["step"], float(np.mean(window)))
                window = []
                last = state["history"][-1]
                bar.set_postfix(val_loss=f"{last['val_loss']:.4f}", val_tv=f"{last['val_tv']:.3f}")
                state["stopped_early"] = stop
                state["finished"] = stop or state["step"] >= settings.steps
                state["seconds"] = seconds_before + time.perf_counter() - start
                _save_checkpoint(out, peft_model, optimizer, state)
    result = _result(out, state, settings, fit_ids, val_ids)
    _write_outputs(result, state, config.name, model)
    return result


def _write_outputs(result: FinetuneResult, state: dict[str, Any], name: str, model: Any) -> None:
    """``training.json`` (settings, items, history) and ``model.yaml`` beside the adapter."""
    summary = {
        "model": name,
        "best_step": result.best_step,
        "steps_run": result.steps_run,
        "stopped_early": result.stopped_early,
        "seconds": result.seconds,
        "device": state.get("device"),
        "train_items": list(result.train_items),
        "validation_items": list(result.validation_items),
        "settings": asdict(result.settings),
        "history": state["history"],
    }
    write_text(json.dumps(summary, indent=1, default=str), result.out / _SUMMARY)
    _write_model_yaml(model, result.out)


def _result(out, state, settings, fit_ids, val_ids) -> FinetuneResult:
    return FinetuneResult(
        out=out,
        best_step=int(state["best_step"]),
        steps_run=int(state["step"]),
        stopped_early=bool(state["stopped_early"]),
        history=pd.DataFrame(
            state["history"], columns=["step", "train_loss", "val_loss", "val_tv"]
        ),
        train_items=tuple(fit_ids),
        validation_items=tuple(val_ids),
        settings=settings,
        seconds=float(state["seconds"]),
    )
