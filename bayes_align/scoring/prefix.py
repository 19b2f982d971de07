"""Prefix sharing: run every distinct token prefix of a group of prompts once.

The prompts of a scoring run overlap heavily: all of them start with the same chat
header (and system prompt), and the option orders of one (item, persona) share the
header, persona preamble and stem. A causal LM's hidden state at position ``t`` depends
on tokens ``<= t`` only, so a shared prefix needs computing once however many prompts
continue it.

:func:`build_prefix_tree` turns a group's token sequences into a radix tree (each node a
maximal run of tokens shared by the same set of sequences). :func:`packed_last_logits`
packs each group's tree into one row of a batch, node after node (parents first, no
padding inside a row), with a *tree attention* mask: token ``i`` of node ``a`` attends
token ``j`` of node ``b`` iff ``b`` is ``a`` or an ancestor of ``a`` and ``j <= i``,
and the position id of a token is its position in its own prompt. Each token thereby
sees exactly the tokens and positions of its unpadded prompt, and a prompt's next-token
logits are those at the last token of the node where it ends. A prefix common to the
whole run (the :class:`RootCache`) is computed once and enters every row as past
key/values.

Tokens computed for ``n`` prompts of length ``L`` that share a prefix of length ``p``:
the one-prompt loop does ``n L``, the tree ``p + n (L - p)``; rows are right-padded to
the longest packed row of the batch.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "PrefixTree",
    "build_prefix_tree",
    "common_prefix_length",
    "RootCache",
    "packed_last_logits",
]


@dataclass
class PrefixTree:
    """Radix tree of token sequences.

    ``segments[n]`` are node ``n``'s own tokens, ``parent[n]`` its parent (-1: a child of
    the root cache, or of nothing), ``depth[n]`` its level, ``end_node[s]`` the node at whose
    last token sequence ``s`` ends. Nodes are numbered in creation order; parents come first.
    """

    segments: list[list[int]] = field(default_factory=list)
    parent: list[int] = field(default_factory=list)
    depth: list[int] = field(default_factory=list)
    end_node: list[int] = field(default_factory=list)

    @property
    def n_tokens(self) -> int:
        """Tokens the tree computes (without padding)."""
        return sum(len(s) for s in self.segments)

    def _add(self, segment: list[int], parent: int, depth: int) -> int:
        self.segments.append(segment)
        self.parent.append(parent)
        self.depth.append(depth)
        return len(self.segments) - 1


def common_prefix_length(sequences: Sequence[Sequence[int]]) -> int:
    """Longest common token prefix, leaving every sequence at least one own token."""
    shortest = min(len(s) for s in sequences)
    first = sequences[0]
    length = 0
    while length < shortest - 1 and all(s[length] == first[length] for s in sequences):
        length += 1
    return length


def build_prefix_tree(sequences: Sequence[Sequence[int]]) -> PrefixTree:
    """Radix tree over non-empty token sequences (duplicates share their end node)."""
    if any(len(s) == 0 for s in sequences):
        raise ValueError("build_prefix_tree needs non-empty token sequences.")
    tree = PrefixTree(end_node=[-1] * len(sequences))
    # explicit stack of (sequence indices sharing seq[:start], start, parent node, depth)
    stack: list[tuple[list[int], int, int, int]] = [(list(range(len(sequences))), 0, -1, 0)]
    while stack:
        members, start, parent, depth = stack.pop()
        by_token: dict[int, list[int]] = {}
        for s in members:
            if len(sequences[s]) == start:
                tree.end_node[s] = parent
            else:
                by_token.setdefault(sequences[s][start], []).append(s)
        for group in by_token.values():
            first = sequences[group[0]]
            end = start + 1
            while all(len(sequences[s]) > end and sequences[s][end] == first[end] for s in group):
                end += 1
            node = tree._add(list(first[start:end]), parent, depth)
            stack.append((group, end, node, depth + 1))
    return tree


def cache_argument(model: Any) -> str:
    """Name of the key/value cache in the model's forward arguments and outputs:
    ``cache`` in transformers 5.x (which deprecates ``past_key_values`` for removal in
    5.40), ``past_key_values`` before. A peft wrapper passes it on to its base model."""
    base = getattr(model, "get_base_model", None)
    return _cache_argument_of(type(base() if callable(base) else model))


@functools.cache
def _cache_argument_of(model_class: type) -> str:
    forward = inspect.signature(model_class.forward).parameters
    return "cache" if "cache" in forward else "past_key_values"


def attention_mask(model: Any, allowed: Any) -> Any:
    """A 4-D tree-attention mask (``True``: attend) in the form the model's attention
    takes it: boolean for SDPA, additive (0 where allowed, the dtype's most negative
    number elsewhere) for eager attention, which adds the mask to the scores (a boolean
    mask added there would mask nothing). Other attention implementations (FlashAttention
    takes padding masks only) are refused."""
    import torch

    implementation = getattr(model.config, "_attn_implementation", None) or "sdpa"
    if implementation == "sdpa":
        return allowed
    if implementation == "eager":
        dtype = model.dtype if model.dtype.is_floating_point else torch.float32
        return torch.zeros_like(allowed, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)
    raise ValueError(
        f"{type(model).__name__} uses attention implementation {implementation!r}, which "
        "cannot take the tree-attention mask of prefix-shared scoring; load the model with "
        "attn_implementation 'sdpa' or 'eager'."
    )


@dataclass
class RootCache:
    """Key/value cache of a prefix shared by every prompt of a run (batch size one)."""

    layers: list[tuple[Any, Any]]
    length: int

    @classmethod
    def compute(cls, model: Any, token_ids: Sequence[int], device: str) -> RootCache:
        import torch

        out = model(
            input_ids=torch.tensor([list(token_ids)], dtype=torch.long, device=device),
            use_cache=True,
            logits_to_keep=1,
        )
        cache = out[cache_argument(model)]
        layers = [(layer.keys, layer.values) for layer in cache.layers]
        return cls(layers=layers, length=len(token_ids))

    def expand(self, batch: int) -> Any:
        """A fresh DynamicCache holding this prefix ``batch`` times (the root is not mutated)."""
        from transformers import DynamicCache

        return DynamicCache(
            ddp_cache_data=[
                (k.expand(batch, *k.shape[1:]), v.expand(batch, *v.shape[1:]))
                for k, v in self.layers
            ]
        )


def _packed_row(tree: PrefixTree, offset: int) -> tuple[list[int], list[int], Any, list[int]]:
    """(token ids, position ids, tree-attention mask (n, n), packed index of each node's
    last token) for one tree; ``offset`` is the length of the root prefix before it."""
    import torch

    n_nodes = len(tree.segments)
    ancestor_or_self = torch.eye(n_nodes, dtype=torch.bool)
    start = [0] * n_nodes  # first position id of each node
    for node, parent in enumerate(tree.parent):  # parents are numbered before children
        if parent >= 0:
            ancestor_or_self[node] |= ancestor_or_self[parent]
            start[node] = start[parent] + len(tree.segments[parent])
    token_ids: list[int] = []
    positions: list[int] = []
    node_of_token: list[int] = []
    last_index: list[int] = []
    for node, segment in enumerate(tree.segments):
        token_ids.extend(segment)
        positions.extend(range(offset + start[node], offset + start[node] + len(segment)))
        node_of_token.extend([node] * len(segment))
        last_index.append(len(token_ids) - 1)
    owner = torch.tensor(node_of_token, dtype=torch.long)
    causal = torch.ones((len(owner), len(owner)), dtype=torch.bool).tril()
    mask = ancestor_or_self[owner][:, owner] & causal
    return token_ids, positions, mask, last_index


def packed_last_logits(
    model: Any,
    groups: Sequence[Sequence[Sequence[int]]],
    pad_id: int,
    device: str,
    root: RootCache | None = None,
) -> list[Any]:
    """Float32 next-token logits at the end of every sequence, one tensor
    ``(len(group), vocab)`` per group; one forward pass for all groups.

    Each group's sequences (after the root prefix, when ``root`` is given) become one
    packed row (see the module docstring); a group of one sequence is a plain causal row.
    """
    import torch

    trees = [build_prefix_tree(group) for group in groups]
    offset = root.length if root is not None else 0
    packed = [_packed_row(tree, offset) for tree in trees]
    width = max(len(row[0]) for row in packed)
    n_rows = len(packed)
    input_ids = torch.full((n_rows, width), pad_id, dtype=torch.long)
    position_ids = torch.zeros((n_rows, width), dtype=torch.long)
    # padding queries attend to themselves only, so that no row of the mask is empty
    mask = torch.eye(width, dtype=torch.bool).repeat(n_rows, 1, 1)
    for r, (ids, positions, row_mask, _) in enumerate(packed):
        n = len(ids)
        input_ids[r, :n] = torch.tensor(ids, dtype=torch.long)
        position_ids[r, :n] = torch.tensor(positions, dtype=torch.long)
        mask[r, :n, :n] = row_mask
    if root is not None:
        mask = torch.cat([torch.ones((n_rows, width, root.length), dtype=torch.bool), mask], dim=2)
    # logits only where some sequence ends (the union over rows; one lm_head call)
    wanted = sorted({packed[r][3][node] for r, tree in enumerate(trees) for node in tree.end_node})
    column = {index: c for c, index in enumerate(wanted)}
    out = model(
        input_ids=input_ids.to(device),
        attention_mask=attention_mask(model, mask[:, None].to(device)),
        position_ids=position_ids.to(device),
        **{cache_argument(model): root.expand(n_rows) if root is not None else None},
        use_cache=False,
        logits_to_keep=torch.tensor(wanted, dtype=torch.long, device=device),
    )
    logits = out.logits.float()
    return [
        logits[r, [column[packed[r][3][node]] for node in tree.end_node]]
        for r, tree in enumerate(trees)
    ]
