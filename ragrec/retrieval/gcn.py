"""The paper's GCN-Retriever: cosine similarity of LightGCN user embeddings."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ragrec.data import Dataset, Samples
from ragrec.errors import ConfigError, DataError
from ragrec.retrieval.base import RetrieverConfig, TrainingFolds, fit_key, register_retriever
from ragrec.retrieval.graph import BipartiteGraph, build_graph
from ragrec.retrieval.lightgcn import LightGCNConfig, LightGCNResult
from ragrec.retrieval.lightgcn_train import train_lightgcn
from ragrec.retrieval.training import FoldedRetriever
from ragrec.retrieval.vector import VectorRetriever, check_backend, l2_normalize


@register_retriever
@dataclass(frozen=True)
class GCNRetrieverConfig(RetrieverConfig):
    """The GCN-Retriever's settings.

    Attributes:
        lightgcn: LightGCN hyper-parameters (its ``layer_combination`` picks mean/last).
        positives_only: graph edges from ``label == 1`` interactions only (default: all).
        backend: ``"exact"`` (matrix product) or ``"faiss"``.
    """

    name: str = field(default="gcn", init=False)
    lightgcn: LightGCNConfig = field(default_factory=LightGCNConfig)
    positives_only: bool = False
    backend: str = "exact"

    def __post_init__(self) -> None:
        check_backend(self.backend)

    def build(self, dataset: Dataset, *, backbone: Any = None, progress: bool = False) -> GCNRetriever:
        """The retriever (``progress`` is ``lightgcn.progress``'s to decide)."""
        return GCNRetriever(
            dataset.n_users,
            dataset.n_items,
            self.lightgcn,
            positives_only=self.positives_only,
            has_timestamps=dataset.has_timestamps,
            backend=self.backend,
        )


class GCNRetriever(VectorRetriever):
    """The GCN-Retriever: cosine top-k over LightGCN user embeddings.

    Args:
        n_users, n_items: the dataset's sizes.
        config: LightGCN hyper-parameters (its ``layer_combination`` picks mean/last).
        positives_only: graph edges from ``label == 1`` interactions only (default: all).
        has_timestamps: whether ``before`` filters (False for pseudo-times, see module doc).
        backend: ``"exact"`` (matrix product) or ``"faiss"``.
    """

    name = "gcn"

    def __init__(
        self,
        n_users: int,
        n_items: int,
        config: LightGCNConfig | None = None,
        *,
        positives_only: bool = False,
        has_timestamps: bool = True,
        backend: str = "exact",
    ) -> None:
        super().__init__(n_users, has_timestamps=has_timestamps, backend=backend)
        self.n_items = n_items
        self._requested = config
        self._config_given = config is not None
        self.config = config if config is not None else LightGCNConfig()
        self.positives_only = positives_only
        self.graph: BipartiteGraph | None = None
        self.result: LightGCNResult | None = None
        self._pretrained: LightGCNResult | None = None
        self._cache: Path | None = None

    def use_pretrained(self, result: LightGCNResult) -> GCNRetriever:
        """Use already trained embeddings (e.g. :meth:`LightGCNResult.load`) instead of training
        at :meth:`fit`; the result must come from the same training interactions. When this
        retriever was given a ``config``, the result must have been trained with it (``progress``
        aside): a stale cache is refused rather than silently used."""
        expected = (result.config.num_layers + 1, self.n_users + self.n_items)
        if result.layers.shape[:2] != expected or result.n_users != self.n_users:
            raise ConfigError(
                f"pretrained LightGCN layers have shape {result.layers.shape}, expected {expected} + (d,)"
            )
        if self._config_given and replace(result.config, progress=self.config.progress) != self.config:
            raise ConfigError(
                f"pretrained LightGCN was trained with {result.config}, not {self.config}; "
                "retrain (or delete the cached file)"
            )
        self._pretrained = result
        self.config = result.config
        return self

    def cache_result(self, path: str | os.PathLike) -> GCNRetriever:
        """Keep the trained LightGCN in ``path`` (safetensors): a later fit on the *same* training
        interactions with the same configuration loads it instead of retraining. The caller keys
        the path by those inputs (:meth:`use_cache`)."""
        self._cache = Path(path)
        return self

    def use_cache(self, train: pd.DataFrame, directory: str | os.PathLike) -> GCNRetriever:
        config = replace(self.config, progress=False)
        key = fit_key(train, config, self.positives_only)
        return self.cache_result(Path(directory) / f"lightgcn_{config.layer_combination}_{key}.safetensors")

    def for_training(self, samples: Samples, folds: TrainingFolds) -> FoldedRetriever:
        """Folded: fold f's samples query a GCN trained without fold f's (user, item) edges."""
        return FoldedRetriever.fit(self.name, self._unfitted, samples, folds)

    def _unfitted(self) -> GCNRetriever:
        return GCNRetriever(
            self.n_users,
            self.n_items,
            self._requested,
            positives_only=self.positives_only,
            has_timestamps=self.has_timestamps,
            backend=self.backend,
        )

    def _fit(self, train, valid) -> None:
        if self._pretrained is None and self._cache is not None and self._cache.is_file():
            self.use_pretrained(LightGCNResult.load(self._cache))
        self.graph = build_graph(train, self.n_users, self.n_items, positives_only=self.positives_only)
        self.result = self._pretrained or train_lightgcn(self.graph, self.config, valid=valid)
        if self._cache is not None and not self._cache.is_file():
            self.result.save(self._cache)
        self._item_layers = self.result.layers[:, self.n_users :]  # [K+1, I, d] for fold-in
        self._set_vectors(self.result.user_embeddings, self.graph.user_degree > 0)

    def _extra_fit_s(self) -> float:
        # A pretrained result still cost its training once: report it as part of the fit.
        return self._pretrained.fit_s if self._pretrained is not None else 0.0

    def fold_in(self, items: Sequence[int] | np.ndarray) -> np.ndarray:
        """The embedding ``[d]`` of a new user with edges to ``items``, by propagation through the
        frozen trained graph (item degrees are not updated; the unknown ego embedding is 0):

            e_u^{(0)} = 0,   e_u^{(k+1)} = Σ_{i ∈ N(u)} e_i^{(k)} / sqrt(|N(u)| · |N(i)|)

        then the same layer combination as the trained users (mean over the K+1 layers, or the
        last). For a user already in the graph this reproduces their trained embedding minus the
        ego term (exactly, for "last"). Items without training edges carry no trained signal and
        are ignored.
        """
        if self.graph is None:
            raise ConfigError("the 'gcn' retriever is not fitted; call fit(train) first")
        items = np.unique(np.asarray(items, dtype=np.int64))
        if items.size and (items.min() < 0 or items.max() >= self.n_items):
            raise DataError(f"item ids must lie in [0, {self.n_items}), got [{items.min()}, {items.max()}]")
        items = items[self.graph.item_degree[items] > 0]
        k = self.config.num_layers
        if items.size == 0 or k == 0:
            raise DataError(
                "cannot fold in a cold user: none of their earlier items is in the training graph"
                if k
                else "cannot fold in a cold user with a 0-layer LightGCN (no propagation)"
            )
        weight = 1.0 / np.sqrt(items.size * self.graph.item_degree[items].astype(np.float64))
        # layer k+1 of the user from layer k of its items: [K, d]
        user_layers = np.einsum("i,kid->kd", weight, self._item_layers[:k, items].astype(np.float64))
        if self.config.layer_combination == "mean":
            return (user_layers.sum(0) / (k + 1)).astype(np.float32)
        return user_layers[-1].astype(np.float32)

    def query_vectors(self, users, histories=None, *, precomputed: bool = False) -> np.ndarray:
        # A warm user's query vector *is* its trained embedding: a row lookup either way.
        out = self.vectors[users]
        cold = np.flatnonzero(~self._represented(users))
        if cold.size:
            out = out.copy()
            for pos in cold:
                items, _ = self._cold_history(int(users[pos]), histories, pos)
                out[pos] = l2_normalize(self.fold_in(items)[None])[0]
        return out

    def _represented(self, users: np.ndarray) -> np.ndarray:
        return self.graph.user_degree[users] > 0
