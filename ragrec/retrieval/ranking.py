"""Full-ranking evaluation on held-out interactions: Recall@k and NDCG@k, and the popularity baseline.

Every item is scored for every user with held-out targets; the user's training items are masked
(they are known, not recommendations). LightGCN's early stopping and the retrieval chapter's
``lightgcn.csv`` use these metrics, next to popularity (training degree) as a sanity baseline.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ragrec.errors import DataError
from ragrec.retrieval.graph import BipartiteGraph


@dataclass(frozen=True)
class RankingMetrics:
    """Recall@k and NDCG@k averaged over ``n_users`` users with ≥ 1 held-out target."""

    recall: float
    ndcg: float
    k: int
    n_users: int


@dataclass(frozen=True)
class RankingTargets:
    """Held-out items per user, CSR-style: user ``users[n]``'s targets are
    ``items[offsets[n]:offsets[n+1]]``; only users with ≥ 1 target are listed."""

    users: np.ndarray
    offsets: np.ndarray
    items: np.ndarray

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, graph: BipartiteGraph) -> RankingTargets:
        """Targets from held-out interactions under the graph's edge rule (every interaction, or
        only ``label == 1`` when the graph holds positives only); pairs that are already
        training edges are dropped (they are masked from the ranking)."""
        if graph.positives_only:
            frame = frame[frame["label"] == 1]
        users = frame["user"].to_numpy(np.int64)
        items = frame["item"].to_numpy(np.int64)
        if len(users) and (
            users.max() >= graph.n_users or items.max() >= graph.n_items or min(users.min(), items.min()) < 0
        ):
            raise DataError("held-out interactions have user/item ids outside the graph's ranges")
        keep = ~graph.has_edges(users, items)
        keys = np.unique(users[keep] * graph.n_items + items[keep])  # sorted by (user, item), no duplicates
        users = keys // graph.n_items
        items = keys % graph.n_items
        listed, counts = np.unique(users, return_counts=True)
        offsets = np.zeros(len(listed) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        return cls(listed, offsets, items)

    def __len__(self) -> int:
        return len(self.users)


def _mask_training_items(scores: torch.Tensor, users: np.ndarray, graph: BipartiteGraph) -> torch.Tensor:
    """``scores`` ``[n, I]`` with each user's training items set to −∞."""
    lo, hi = graph.user_offsets[users], graph.user_offsets[users + 1]  # [n] each
    rows = np.repeat(np.arange(len(users)), hi - lo)  # [E_n]: the users' training edges
    if len(rows):
        cols = graph.items[np.concatenate([np.arange(a, b) for a, b in zip(lo, hi, strict=True)])]  # [E_n]
    else:
        cols = np.array([], np.int64)
    scores[torch.from_numpy(rows), torch.from_numpy(cols)] = -torch.inf
    return scores


def ranking_metrics(
    score_block: Callable[[torch.Tensor], torch.Tensor],
    targets: RankingTargets,
    graph: BipartiteGraph,
    k: int,
    *,
    block: int = 1024,
) -> RankingMetrics:
    """Recall@k and NDCG@k under full ranking with each user's training items masked.

    Recall@k = |top-k ∩ T_u| / |T_u|; NDCG@k = Σ_{r ≤ k} hit_r / log2(r+1) over the ideal DCG of
    min(|T_u|, k) hits; both averaged over users with targets.

    Args:
        score_block: ``score_block(users) -> Tensor [len(users), I]`` scores every item for a
            block of users.
        targets: the held-out items per user (:meth:`RankingTargets.from_frame`).
        graph: the training graph, whose edges are masked.
        k: the cut-off (at most the number of items).
        block: users scored at once; bounds the ``[block, I]`` matrices. (default: ``1024``)
    """
    if len(targets) == 0:
        raise DataError("no held-out targets to evaluate on (every validation user is cold or empty)")
    k = min(k, graph.n_items)
    discount = 1.0 / np.log2(np.arange(2, k + 2))  # [k]
    ideal = np.concatenate([[0.0], np.cumsum(discount)])  # [k+1]: the ideal DCG of 0..k hits
    recall_sum = 0.0
    ndcg_sum = 0.0
    for start in range(0, len(targets), block):
        users = targets.users[start : start + block]  # [n]
        scores = _mask_training_items(score_block(torch.from_numpy(users)).clone(), users, graph)  # [n, I]
        top = torch.topk(scores, k, dim=1).indices.numpy()  # [n, k]
        # the users' targets as a boolean [n, I] matrix
        truth = np.zeros((len(users), graph.n_items), dtype=bool)
        t_lo = targets.offsets[start : start + len(users)]  # [n]
        t_hi = targets.offsets[start + 1 : start + len(users) + 1]  # [n]
        truth[np.repeat(np.arange(len(users)), t_hi - t_lo), targets.items[t_lo[0] : t_hi[-1]]] = True
        hits = np.take_along_axis(truth, top, axis=1)  # [n, k]
        n_targets = t_hi - t_lo  # [n]
        recall_sum += float((hits.sum(1) / n_targets).sum())
        ndcg_sum += float(((hits * discount).sum(1) / ideal[np.minimum(n_targets, k)]).sum())
    return RankingMetrics(recall_sum / len(targets), ndcg_sum / len(targets), k, len(targets))


def popularity_metrics(graph: BipartiteGraph, targets: RankingTargets, k: int) -> RankingMetrics:
    """The popularity baseline: every user gets the items with the most training users."""
    popularity = torch.from_numpy(graph.item_degree.astype(np.float32))  # [I]
    return ranking_metrics(lambda users: popularity.expand(len(users), -1), targets, graph, k)


def embedding_metrics(
    embeddings: torch.Tensor, graph: BipartiteGraph, targets: RankingTargets, k: int
) -> RankingMetrics:
    """Ranking metrics of dot-product scores from node embeddings ``[U+I, d]``."""
    user_emb, item_emb = embeddings[: graph.n_users], embeddings[graph.n_users :]  # [U, d], [I, d]
    return ranking_metrics(lambda users: user_emb[users] @ item_emb.T, targets, graph, k)
