"""The radix tree behind prefix sharing (pure Python, no model)."""

from __future__ import annotations

import numpy as np
import pytest

from bayes_align.scoring.prefix import build_prefix_tree, common_prefix_length


def _spelled(tree, s: int) -> list[int]:
    """The tokens of sequence ``s`` read back from the root to its end node."""
    node, parts = tree.end_node[s], []
    while node >= 0:
        parts.append(tree.segments[node])
        node = tree.parent[node]
    return [t for part in reversed(parts) for t in part]


def test_tree_spells_every_sequence_and_shares_prefixes():
    sequences = [
        [1, 2, 3, 4, 5],
        [1, 2, 3, 4, 6],
        [1, 2, 3, 7],
        [1, 2, 3, 7],  # duplicate: same end node
        [1, 2],  # a prefix of the others: ends inside, at an internal node
        [9],
    ]
    tree = build_prefix_tree(sequences)
    for s, seq in enumerate(sequences):
        assert _spelled(tree, s) == seq
    assert tree.end_node[2] == tree.end_node[3]
    # nodes: [1 2], [3], [4], [5], [6], [7], [9]
    assert tree.n_tokens == 8
    assert sorted(map(tuple, tree.segments)) == sorted([(1, 2), (3,), (4,), (5,), (6,), (7,), (9,)])
    for node, parent in enumerate(tree.parent):
        if parent >= 0:
            assert parent < node and tree.depth[node] == tree.depth[parent] + 1
        else:
            assert tree.depth[node] == 0


def test_random_sequences_round_trip_and_never_compute_more_than_flat():
    rng = np.random.default_rng(0)
    stems = [list(rng.integers(0, 5, size=rng.integers(1, 8))) for _ in range(6)]
    sequences = [
        stem + list(rng.integers(0, 3, size=rng.integers(1, 5))) for stem in stems for _ in range(4)
    ]
    tree = build_prefix_tree(sequences)
    for s, seq in enumerate(sequences):
        assert _spelled(tree, s) == seq
    assert tree.n_tokens < sum(map(len, sequences))


def test_common_prefix_leaves_one_token_and_empty_sequences_are_refused():
    assert common_prefix_length([[1, 2, 3], [1, 2, 3]]) == 2
    assert common_prefix_length([[1, 2, 3], [1, 4]]) == 1
    assert common_prefix_length([[5], [5, 6]]) == 0
    with pytest.raises(ValueError, match="non-empty"):
        build_prefix_tree([[1], []])
