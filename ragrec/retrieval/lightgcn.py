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

Training (BPR, early stopping) is :mod:`ragrec.retrieval.lightgcn_train`.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch_geometric.nn.models import LightGCN

from ragrec.errors import ConfigError, DataError
from ragrec.retrieval.ranking import (
    RankingMetrics,
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
