"""Full-ranking metrics: Recall@k and NDCG@k against a plain-Python reference, by hand, the
popularity baseline, the held-out targets and bad input."""

import numpy as np
import pandas as pd
import pytest
import torch

from ragrec.errors import DataError
from ragrec.retrieval.graph import build_graph
from ragrec.retrieval.ranking import RankingTargets, popularity_metrics, ranking_metrics


def interactions(users, items, labels=None):
    labels = labels if labels is not None else [1] * len(users)
    return pd.DataFrame({"user": users, "item": items, "label": labels})


def reference_metrics(scores: np.ndarray, train: set, targets: dict, k: int) -> tuple[float, float]:
    """Recall@k and NDCG@k by a full sort per user, training items skipped."""
    recalls, ndcgs = [], []
    for user, wanted in targets.items():
        ranked = [i for i in np.argsort(-scores[user], kind="stable") if (user, i) not in train][:k]
        hits = [1.0 if i in wanted else 0.0 for i in ranked]
        recalls.append(sum(hits) / len(wanted))
        ideal = sum(1 / np.log2(r + 2) for r in range(min(len(wanted), k)))
        ndcgs.append(sum(h / np.log2(r + 2) for r, h in enumerate(hits)) / ideal)
    return float(np.mean(recalls)), float(np.mean(ndcgs))


def test_ranking_metrics_equal_a_full_sort_per_user():
    rng = np.random.default_rng(0)
    n_users, n_items, k = 9, 12, 4
    train = interactions(rng.integers(n_users, size=30), rng.integers(n_items, size=30))
    graph = build_graph(train, n_users, n_items)
    held = interactions(rng.integers(n_users, size=25), rng.integers(n_items, size=25))
    targets = RankingTargets.from_frame(held, graph)
    scores = rng.normal(size=(n_users, n_items)).astype(np.float32)  # no ties
    train_pairs = set(zip(graph.users.tolist(), graph.items.tolist(), strict=True))
    wanted = {}
    for u, i in zip(held["user"], held["item"], strict=True):
        if (u, i) not in train_pairs:
            wanted.setdefault(int(u), set()).add(int(i))
    # blocks of 2 users: the per-block arithmetic must add up like one pass
    got = ranking_metrics(lambda users: torch.from_numpy(scores)[users], targets, graph, k, block=2)
    recall, ndcg = reference_metrics(scores, train_pairs, wanted, k)
    assert got.n_users == len(wanted) and got.k == k
    assert got.recall == pytest.approx(recall, abs=1e-12)
    assert got.ndcg == pytest.approx(ndcg, abs=1e-12)


def test_ranking_metrics_by_hand():
    # 1 user, 4 items; item 0 is a training item (masked), targets {1, 3}.
    graph = build_graph(interactions([0, 1], [0, 2]), 2, 4)
    targets = RankingTargets.from_frame(interactions([0, 0], [1, 3]), graph)
    scores = torch.tensor([[9.0, 1.0, 3.0, 2.0]])  # ranking after masking: 2, 3, 1
    m = ranking_metrics(lambda users: scores[users], targets, graph, k=2)
    assert m.recall == pytest.approx(0.5)
    assert m.ndcg == pytest.approx((1 / np.log2(3)) / (1 + 1 / np.log2(3)))
    pop = popularity_metrics(graph, targets, k=4)
    assert pop.recall == pytest.approx(1.0)


def test_targets_drop_training_edges_duplicates_and_follow_the_edge_rule():
    graph = build_graph(interactions([0, 1], [0, 2]), 2, 4)
    targets = RankingTargets.from_frame(interactions([0, 0, 0, 1], [0, 3, 3, 1], labels=[1, 1, 1, 0]), graph)
    assert targets.users.tolist() == [0, 1] and targets.offsets.tolist() == [0, 1, 2]
    assert targets.items.tolist() == [3, 1]  # (0, 0) is a training edge; (0, 3) counted once
    positives = build_graph(interactions([0, 1], [0, 2]), 2, 4, positives_only=True)
    only = RankingTargets.from_frame(interactions([0, 1], [3, 1], labels=[1, 0]), positives)
    assert only.users.tolist() == [0] and len(only) == 1


@pytest.mark.parametrize(
    ("held", "match"),
    [
        pytest.param(interactions([5], [1]), "outside", id="user-outside-the-graph"),
        pytest.param(interactions([0], [9]), "outside", id="item-outside-the-graph"),
    ],
)
def test_held_out_ids_outside_the_graph_are_a_clear_error(held, match):
    graph = build_graph(interactions([0, 1], [0, 2]), 2, 4)
    with pytest.raises(DataError, match=match):
        RankingTargets.from_frame(held, graph)


def test_no_targets_is_a_clear_error():
    graph = build_graph(interactions([0, 1], [0, 2]), 2, 4)
    empty = RankingTargets.from_frame(interactions([0], [0]), graph)  # only a training edge
    with pytest.raises(DataError, match="no held-out targets"):
        ranking_metrics(lambda users: torch.zeros(len(users), 4), empty, graph, k=2)
