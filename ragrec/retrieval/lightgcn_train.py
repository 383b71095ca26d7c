"""LightGCN training on the training graph: sampled negatives, the BPR loss, epochs with
validation and early stopping (the model and its read-out: :mod:`ragrec.retrieval.lightgcn`).

Training. Score ``ŷ_ui = e_u · e_i``; BPR loss over (user, positive item, sampled negative item)
triples with L2 on the *ego* embeddings of the batch, as in LightGCN's reference code:

    L = −1/B Σ ln σ(ŷ_ui − ŷ_uj) + λ · ½ (‖e_u^{(0)}‖² + ‖e_i^{(0)}‖² + ‖e_j^{(0)}‖²) / B

One epoch = one pass over the training edges in shuffled mini-batches; negatives are drawn
uniformly from the items the user has no training edge with. Adam, no weight decay in the
optimiser (the L2 above replaces it). Early stopping on validation Recall@20 under full ranking
(every item scored, the user's training items masked), evaluated every ``eval_every`` epochs; the
best evaluation's embeddings are kept (metrics: :mod:`ragrec.retrieval.ranking`). Popularity
(training degree) is scored the same way as a sanity baseline. Seeded: the same seed and thread
count give the same embeddings.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch_geometric.nn.models import LightGCN
from tqdm.auto import tqdm

from ragrec.errors import DataError
from ragrec.retrieval.graph import BipartiteGraph
from ragrec.retrieval.lightgcn import (
    EpochRecord,
    LightGCNConfig,
    LightGCNResult,
    build_model,
    combine_layers,
    propagate,
)
from ragrec.retrieval.ranking import (
    RankingMetrics,
    RankingTargets,
    embedding_metrics,
    popularity_metrics,
)


def sample_negatives(
    graph: BipartiteGraph, users: np.ndarray, rng: np.random.Generator, tries: int = 20
) -> np.ndarray:
    """One uniformly drawn item per user that is not among the user's training items
    (rejection sampling; after ``tries`` rounds a rare leftover positive is kept)."""
    negatives = rng.integers(graph.n_items, size=len(users))
    for _ in range(tries):
        bad = graph.has_edges(users, negatives)
        if not bad.any():
            break
        negatives[bad] = rng.integers(graph.n_items, size=int(bad.sum()))
    return negatives


def bpr_loss(
    out: torch.Tensor,
    ego: torch.Tensor,
    users: torch.Tensor,
    pos: torch.Tensor,
    neg: torch.Tensor,
    weight_decay: float,
) -> torch.Tensor:
    """BPR + LightGCN's L2 on the batch's ego embeddings (see the module docstring).

    Args:
        out: read-out node embeddings ``[U+I, d]``.
        ego: layer-0 node embeddings ``[U+I, d]`` (the learned parameters).
        users, pos, neg: node ids ``[B]`` of the triples (items already offset by U).
        weight_decay: λ of the L2 term.
    """
    pos_score = (out[users] * out[pos]).sum(-1)  # [B]
    neg_score = (out[users] * out[neg]).sum(-1)  # [B]
    bpr = -F.logsigmoid(pos_score - neg_score).mean()  # []
    l2 = 0.5 * (ego[users].pow(2).sum() + ego[pos].pow(2).sum() + ego[neg].pow(2).sum()) / len(users)  # []
    return bpr + weight_decay * l2


def _epoch(
    model: LightGCN,
    adjacency: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    graph: BipartiteGraph,
    config: LightGCNConfig,
    rng: np.random.Generator,
) -> float:
    """One pass over the training edges in shuffled mini-batches; the mean loss per edge."""
    model.train()
    order = rng.permutation(graph.n_edges)
    total = 0.0
    for b in range(math.ceil(graph.n_edges / config.batch_size)):
        idx = order[b * config.batch_size : (b + 1) * config.batch_size]
        users = graph.users[idx]
        neg = sample_negatives(graph, users, rng)
        # forward: propagate every layer, read out, score the batch's triples
        out = combine_layers(propagate(model, adjacency), config.layer_combination)  # [U+I, d]
        loss = bpr_loss(
            out,
            model.embedding.weight,
            torch.from_numpy(users),
            torch.from_numpy(graph.items[idx] + graph.n_users),
            torch.from_numpy(neg + graph.n_users),
            config.weight_decay,
        )
        # backward and step
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += float(loss.detach()) * len(idx)
    return total / graph.n_edges


def _evaluate(
    model: LightGCN,
    adjacency: torch.Tensor,
    graph: BipartiteGraph,
    targets: RankingTargets,
    config: LightGCNConfig,
) -> tuple[torch.Tensor, RankingMetrics]:
    """Every layer's output ``[K+1, U+I, d]`` and the validation metrics of its read-out."""
    model.eval()
    with torch.no_grad():
        layers = propagate(model, adjacency)
        metrics = embedding_metrics(
            combine_layers(layers, config.layer_combination), graph, targets, config.top_k
        )
    return layers, metrics


@dataclass
class _Best:
    """Early stopping: the best evaluation so far and the evaluations since it."""

    recall: float = -1.0
    layers: np.ndarray | None = None
    epoch: int = 0
    metrics: RankingMetrics | None = None
    stale: int = 0

    def update(self, epoch: int, layers: torch.Tensor, metrics: RankingMetrics) -> None:
        if metrics.recall > self.recall:
            self.recall = metrics.recall
            self.layers = layers.numpy().copy()
            self.epoch = epoch
            self.metrics = metrics
            self.stale = 0
        else:
            self.stale += 1


def _validation_targets(valid: pd.DataFrame | None, graph: BipartiteGraph) -> RankingTargets | None:
    if valid is None:
        return None
    targets = RankingTargets.from_frame(valid, graph)
    if len(targets) == 0:
        raise DataError(
            "validation interactions give no ranking targets (all cold, or all already training edges)"
        )
    return targets


def train_lightgcn(
    graph: BipartiteGraph, config: LightGCNConfig | None = None, *, valid: pd.DataFrame | None = None
) -> LightGCNResult:
    """Train LightGCN on ``graph`` (see the module docstring).

    Args:
        graph: the training graph (:func:`ragrec.retrieval.graph.build_graph`).
        config: hyper-parameters. (default: ``LightGCNConfig()``)
        valid: validation interactions for early stopping and the reported metrics; ``None``
            trains ``max_epochs`` epochs and keeps the last ones (no metrics). (default: :obj:`None`)

    Returns:
        The best epoch's layers, the per-epoch history, validation metrics of LightGCN and of
        the popularity baseline, and the fit time.
    """
    if graph.n_edges == 0:
        raise DataError("cannot train LightGCN on an empty graph")
    config = config or LightGCNConfig()
    started = time.perf_counter()
    rng = np.random.default_rng(config.seed)
    model = build_model(graph.n_nodes, config)
    adjacency = graph.normalized_adjacency()
    targets = _validation_targets(valid, graph)
    popularity = popularity_metrics(graph, targets, config.top_k) if targets is not None else None
    history, best = _train_epochs(model, adjacency, graph, config, targets, rng)
    if targets is None:  # without validation the last epoch's layers are kept
        with torch.no_grad():
            best = _Best(layers=propagate(model, adjacency).numpy().copy(), epoch=history[-1].epoch)
    return LightGCNResult(
        config=config,
        layers=best.layers.astype(np.float32, copy=False),
        n_users=graph.n_users,
        history=tuple(history),
        best_epoch=best.epoch,
        valid=best.metrics,
        popularity=popularity,
        fit_s=time.perf_counter() - started,
    )


def _train_epochs(
    model: LightGCN,
    adjacency: torch.Tensor,
    graph: BipartiteGraph,
    config: LightGCNConfig,
    targets: RankingTargets | None,
    rng: np.random.Generator,
) -> tuple[list[EpochRecord], _Best]:
    """Adam over up to ``max_epochs`` epochs, evaluating every ``eval_every`` (and after the
    last) when there are ``targets``, until ``patience`` evaluations bring no better recall.

    Returns:
        one record per epoch run, and the best evaluation (empty without ``targets``).
    """
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    history: list[EpochRecord] = []
    best = _Best()
    epochs = range(1, config.max_epochs + 1)
    bar = tqdm(epochs, desc="LightGCN", unit="epoch", disable=not config.progress, leave=False)
    for epoch in bar:
        t0 = time.perf_counter()
        loss = _epoch(model, adjacency, optimizer, graph, config, rng)
        record = EpochRecord(epoch, loss, time.perf_counter() - t0)
        if targets is not None and (epoch % config.eval_every == 0 or epoch == config.max_epochs):
            layers, metrics = _evaluate(model, adjacency, graph, targets, config)
            record = replace(record, recall=metrics.recall, ndcg=metrics.ndcg)
            best.update(epoch, layers, metrics)
            bar.set_postfix(
                loss=f"{record.loss:.4f}", recall=f"{metrics.recall:.4f}", best=f"{best.recall:.4f}"
            )
        else:
            bar.set_postfix(loss=f"{record.loss:.4f}")
        history.append(record)
        if best.stale >= config.patience:  # early stopping
            break
    bar.close()
    return history, best
