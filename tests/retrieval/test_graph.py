"""The bipartite training graph: layout, edge rule, normalisation, bad input."""

import numpy as np
import pandas as pd
import pytest
import torch

from ragrec.errors import ConfigError, DataError
from ragrec.retrieval.graph import build_graph


def frame(users, items, labels=None):
    labels = labels if labels is not None else [1] * len(users)
    return pd.DataFrame({"user": users, "item": items, "rating": 3.0, "timestamp": 0, "label": labels})


def test_normalized_adjacency_matches_dense_formula():
    rng = np.random.default_rng(0)
    u, i = rng.integers(5, size=30), rng.integers(7, size=30)
    g = build_graph(frame(u, i), 5, 7)
    a = np.zeros((12, 12))
    a[g.users, 5 + g.items] = 1
    a[5 + g.items, g.users] = 1
    d = a.sum(1)
    inv = np.where(d > 0, 1 / np.sqrt(np.maximum(d, 1)), 0)
    expected = inv[:, None] * a * inv[None, :]
    got = g.normalized_adjacency().to_dense().numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    np.testing.assert_allclose(got, got.T)


def test_layout_both_directions_and_item_offset():
    g = build_graph(frame([0, 0, 2, 1], [1, 0, 1, 2]), n_users=3, n_items=4)
    assert g.n_nodes == 7 and g.n_edges == 4
    ei = g.edge_index
    assert ei.shape == (2, 8) and ei.dtype == torch.int64
    pairs = {tuple(p) for p in ei.T.tolist()}
    for u, i in [(0, 1), (0, 0), (2, 1), (1, 2)]:
        assert (u, 3 + i) in pairs and (3 + i, u) in pairs
    assert g.user_degree.tolist() == [2, 1, 1]
    assert g.item_degree.tolist() == [1, 2, 1, 0]  # item 3 has no edge but keeps its id
    assert g.items_of(0).tolist() == [0, 1]


def test_duplicates_merge_and_has_edges():
    g = build_graph(frame([0, 0, 1], [1, 1, 0]), n_users=2, n_items=2)
    assert g.n_edges == 2
    assert g.has_edges(np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1])).tolist() == [False, True, True, False]


def test_negatives_are_edges_by_default_and_dropped_with_positives_only():
    f = frame([0, 0, 1, 1], [0, 1, 0, 1], labels=[1, 0, 0, 1])
    assert build_graph(f, 2, 2).n_edges == 4
    g = build_graph(f, 2, 2, positives_only=True)
    assert g.n_edges == 2 and g.positives_only
    assert {(int(u), int(i)) for u, i in zip(g.users, g.items, strict=True)} == {(0, 0), (1, 1)}


@pytest.mark.parametrize(
    ("train", "n_users", "positives_only", "error", "match"),
    [
        pytest.param(frame([], []), 3, False, DataError, "empty", id="no-interactions"),
        pytest.param(frame([0], [0], labels=[0]), 3, True, DataError, "positive", id="no-positives"),
        pytest.param(frame([0, 5], [0, 1]), 3, False, DataError, "out of range", id="user-out-of-range"),
        pytest.param(frame([0], [7]), 3, False, DataError, "out of range", id="item-out-of-range"),
        pytest.param(pd.DataFrame({"user": [0]}), 3, False, DataError, "column", id="no-item-column"),
        pytest.param(frame([0], [0]), 0, False, ConfigError, "n_users", id="no-users"),
    ],
)
def test_bad_input_is_a_clear_error(train, n_users, positives_only, error, match):
    with pytest.raises(error, match=match):
        build_graph(train, n_users, 3, positives_only=positives_only)
