"""LightGCN (He et al., SIGIR 2020) on the training graph: BPR training, early stopping, read-out.

Model. Only the layer-0 ("ego") embeddings ``E^{(0)} ∈ R^{(U+I)×d}`` are learned. ``K`` light graph
convolutions (PyG ``LGConv``: no feature transform, no non-linearity, no self-loop) propagate them:

    E^{(k+1)} = D^{-1/2} A D^{-1/2} E^{(k)},          k = 0 .. K-1

and the layer combination reads out the final embedding of every node:

    "mean" (LightGCN, and the paper's GCN-Retriever):  e = 1/(K+1) · Σ_{k=0..K} e^{(k)}
    "last" (the paper's ablation):                     e = e^{(K)}

PyG's ``LightGCN.get_embedding`` computes ``Σ_k α_k e^{(k)}`` with ``α_k = 1/(K+1)`` by default,
i.e. the mean; here the layers are run one by one through ``model.convs`` (:func:`propagate`) so
that every layer's output is kept — the "last" read-out and the cold-start fold-in need them.
The same combination is used to train and to read out, so "last" is a model trained as it is used.

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

import json
import math
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch_geometric.nn.models import LightGCN
from tqdm.auto import tqdm

from ragrec.errors import ConfigError, DataError
from ragrec.retrieval.graph import BipartiteGraph
from ragrec.retrieval.ranking import (
    RankingMetrics,
    RankingTargets,
    embedding_metrics,
    popularity_metrics,
)

LAYER_COMBINATIONS = ("mean", "last")
# The key of a saved result's metadata names the file format, not the module: it stays as it was
# when lightgcn.py moved into ragrec/retrieval/, so caches written before the move still load.
METADATA_KEY = "ragrec.lightgcn"


@dataclass(frozen=True)
class LightGCNConfig:
    """LightGCN hyper-parameters (defaults: the LightGCN paper's, except the CPU-sized epochs).

    Attributes:
        dim: embedding size d.
        num_layers: K, the number of propagation layers (K+1 layer outputs incl. the ego layer).
        lr: Adam learning rate.
        weight_decay: λ of the L2 term on the batch's ego embeddings.
        batch_size: (user, positive, negative) triples per step.
        max_epochs: upper bound on epochs.
        patience: evaluations without a better validation Recall@k before stopping.
        eval_every: evaluate every this many epochs (and after the last).
        top_k: the cut-off of the validation metrics (Recall@20 / NDCG@20).
        layer_combination: ``"mean"`` over the K+1 layer outputs or ``"last"`` layer only.
        seed: initialisation, shuffling and negative sampling.
        progress: show a tqdm bar over epochs.
    """

    dim: int = 64
    num_layers: int = 3
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 2048
    max_epochs: int = 300
    patience: int = 5
    eval_every: int = 5
    top_k: int = 20
    layer_combination: str = "mean"
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        check_layer_combination(self.layer_combination)
        for name in ("dim", "batch_size", "max_epochs", "patience", "eval_every", "top_k"):
            if getattr(self, name) < 1:
                raise ConfigError(f"LightGCNConfig.{name} must be ≥ 1, got {getattr(self, name)}")
        if self.num_layers < 0:
            raise ConfigError(f"LightGCNConfig.num_layers must be ≥ 0, got {self.num_layers}")
        if not self.lr > 0 or self.weight_decay < 0:
            raise ConfigError(f"need lr > 0 and weight_decay ≥ 0, got {self.lr}, {self.weight_decay}")


def check_layer_combination(name: str) -> str:
    if name not in LAYER_COMBINATIONS:
        raise ConfigError(f"unknown layer_combination {name!r}; choose one of {LAYER_COMBINATIONS}")
    return name


@dataclass(frozen=True)
class EpochRecord:
    """One epoch: mean training loss (BPR + L2), and the validation metrics when evaluated."""

    epoch: int
    loss: float
    seconds: float
    recall: float | None = None
    ndcg: float | None = None


@dataclass(frozen=True, eq=False)
class LightGCNResult:
    """A trained LightGCN: every layer's output at the best epoch, and how training went.

    Attributes:
        layers: float32 ``[K+1, U+I, d]``, ``layers[k]`` = E^{(k)} (``layers[0]``: ego embeddings).
        n_users: U (rows ``0..U-1`` of each layer are users, the rest items).
        history: one record per epoch run.
        best_epoch: the epoch whose embeddings are kept (the last one without validation).
        valid: LightGCN's validation metrics at ``best_epoch`` (None without validation data).
        popularity: the popularity baseline's validation metrics (None without validation data).
        fit_s: wall seconds of training, evaluations included.
    """

    config: LightGCNConfig
    layers: np.ndarray
    n_users: int
    history: tuple[EpochRecord, ...]
    best_epoch: int
    valid: RankingMetrics | None
    popularity: RankingMetrics | None
    fit_s: float

    def embeddings(self, layer_combination: str | None = None) -> np.ndarray:
        """float32 ``[U+I, d]`` node embeddings read out with ``layer_combination`` (default: the
        one trained with)."""
        return combine_layers(self.layers, layer_combination or self.config.layer_combination)

    @property
    def user_embeddings(self) -> np.ndarray:
        """float32 ``[U, d]``."""
        return self.embeddings()[: self.n_users]

    @property
    def item_embeddings(self) -> np.ndarray:
        """float32 ``[I, d]``."""
        return self.embeddings()[self.n_users :]

    def history_frame(self) -> pd.DataFrame:
        """The per-epoch history as a table (columns epoch, loss, seconds, recall, ndcg)."""
        return pd.DataFrame([asdict(r) for r in self.history])

    def save(self, path: str | os.PathLike) -> Path:
        """Write the layers (safetensors) with config, history and metrics in its metadata,
        atomically, so a notebook can reload instead of retraining."""
        from safetensors.numpy import save_file

        from ragrec.results import atomic_path

        meta = {
            "config": asdict(self.config),
            "n_users": self.n_users,
            "history": [asdict(r) for r in self.history],
            "best_epoch": self.best_epoch,
            "valid": None if self.valid is None else asdict(self.valid),
            "popularity": None if self.popularity is None else asdict(self.popularity),
            "fit_s": self.fit_s,
        }
        with atomic_path(path) as tmp:
            metadata = {METADATA_KEY: json.dumps(meta)}
            save_file({"layers": np.ascontiguousarray(self.layers)}, str(tmp), metadata=metadata)
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> LightGCNResult:
        """Read back what :meth:`save` wrote."""
        from safetensors import SafetensorError, safe_open

        path = Path(path)
        if not path.is_file():
            raise DataError(f"no saved LightGCN embeddings at {path}")
        try:
            with safe_open(str(path), framework="numpy") as f:
                meta = (f.metadata() or {}).get(METADATA_KEY)
                layers = f.get_tensor("layers") if meta is not None else None
        except (SafetensorError, OSError) as exc:
            raise DataError(
                f"saved LightGCN embeddings {path} are unreadable ({str(exc).splitlines()[0]}): delete the "
                "file and rerun; the retriever is fitted again"
            ) from None
        if meta is None:
            raise DataError(f"{path} is not a LightGCN result written by ragrec")
        meta = json.loads(meta)

        def metrics(m):
            return None if m is None else RankingMetrics(**m)

        return cls(
            config=LightGCNConfig(**meta["config"]),
            layers=layers,
            n_users=int(meta["n_users"]),
            history=tuple(EpochRecord(**r) for r in meta["history"]),
            best_epoch=int(meta["best_epoch"]),
            valid=metrics(meta["valid"]),
            popularity=metrics(meta["popularity"]),
            fit_s=float(meta["fit_s"]),
        )


# --------------------------------------------------------------------------------------------
# propagation and read-out


def propagate(model: LightGCN, adjacency: torch.Tensor) -> torch.Tensor:
    """All layer outputs ``[K+1, U+I, d]``: E^{(0)} (the ego embeddings) then each ``LGConv``
    applied to the previous one with the pre-normalised ``adjacency`` (D^{-1/2} A D^{-1/2})."""
    x = model.embedding.weight
    layers = [x]
    for conv in model.convs:
        x = conv(x, adjacency)
        layers.append(x)
    return torch.stack(layers)


def combine_layers(layers, layer_combination: str):
    """``[K+1, N, d] → [N, d]``: mean over the K+1 layers, or the last layer (numpy or torch)."""
    check_layer_combination(layer_combination)
    return layers.mean(0) if layer_combination == "mean" else layers[-1]


def build_model(n_nodes: int, config: LightGCNConfig) -> LightGCN:
    """PyG's LightGCN with ``LGConv(normalize=False)`` (the adjacency comes pre-normalised), its
    ``alpha`` set to match the layer combination, and a seeded Xavier initialisation."""
    k = config.num_layers
    alpha = (
        torch.full((k + 1,), 1.0 / (k + 1)) if config.layer_combination == "mean" else torch.eye(k + 1)[-1]
    )
    model = LightGCN(n_nodes, config.dim, k, alpha=alpha, normalize=False)
    generator = torch.Generator().manual_seed(config.seed)
    torch.nn.init.xavier_uniform_(model.embedding.weight, generator=generator)
    return model


# --------------------------------------------------------------------------------------------
# training


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
    graph: BipartiteGraph, config: LightGCNConfig = LightGCNConfig(), *, valid: pd.DataFrame | None = None
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
