"""Build a retriever by name, and point fitted ones at their cache."""

from __future__ import annotations

import hashlib
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ragrec.data import Dataset
from ragrec.errors import ConfigError
from ragrec.retrieval.base import RETRIEVERS, Retriever
from ragrec.retrieval.gcn import GCNRetriever
from ragrec.retrieval.lightgcn import LightGCNConfig
from ragrec.retrieval.llm import LLMRetriever
from ragrec.retrieval.simple import NoRetriever, RandomRetriever


def make_retriever(
    name: str,
    dataset: Dataset,
    *,
    lightgcn: LightGCNConfig | None = None,
    positives_only: bool = False,
    backbone: Any = None,
    history_items: int = 10,
    llm_batch_size: int = 8,
    max_tokens: int = 512,
    backend: str = "exact",
    seed: int = 0,
    progress: bool = False,
) -> Retriever:
    """A retriever by name (one of :data:`~ragrec.retrieval.base.RETRIEVERS`), unfitted.

    Args:
        name: ``"gcn"``, ``"llm"``, ``"random"`` or ``"none"``.
        dataset: gives the user and item counts, whether times are real, and (``llm``) item texts.
        lightgcn: ``gcn`` only: LightGCN hyper-parameters. (default: ``LightGCNConfig()``)
        positives_only: ``gcn`` only: graph edges from ``label == 1`` only. (default: :obj:`False`)
        backbone: ``llm`` only: a loaded :class:`ragrec.llm.backbone.Backbone`, or a source for
            :func:`ragrec.llm.backbone.load_backbone` (``"bundled"``, ``"tiny"``, a folder).
            (default: ``"bundled"``)
        history_items, llm_batch_size, max_tokens: ``llm`` only: the user text and its embedding.
        backend: ``gcn``/``llm``: ``"exact"`` or ``"faiss"``. (default: ``"exact"``)
        seed: ``random`` only (LightGCN's seed is in ``lightgcn``). (default: ``0``)
        progress: ``llm`` only: a tqdm bar over embedding every user at fit. (default: :obj:`False`)
    """
    if name == "gcn":
        return GCNRetriever(
            dataset.n_users,
            dataset.n_items,
            lightgcn,
            positives_only=positives_only,
            has_timestamps=dataset.has_timestamps,
            backend=backend,
        )
    if name == "llm":
        if backbone is None or isinstance(backbone, str):
            from ragrec.llm.backbone import load_backbone

            backbone = load_backbone(backbone or "bundled")
        return LLMRetriever(
            dataset,
            backbone,
            history_items=history_items,
            batch_size=llm_batch_size,
            max_tokens=max_tokens,
            backend=backend,
            progress=progress,
        )
    if name == "random":
        return RandomRetriever(dataset.n_users, seed=seed, has_timestamps=dataset.has_timestamps)
    if name == "none":
        return NoRetriever(dataset.n_users, has_timestamps=dataset.has_timestamps)
    raise ConfigError(f"unknown retriever {name!r}; choose one of {RETRIEVERS}")


def use_cache(retriever: Retriever, train: pd.DataFrame, directory: str | os.PathLike) -> Retriever:
    """Point a ``gcn`` or ``llm`` retriever at its fit cache in ``directory`` (other retrievers
    fit in milliseconds and are returned as they are). The file name is keyed by everything the
    fit depends on — the training interactions and the LightGCN configuration, or the backbone
    and the text settings — so another profile, split or model never picks up a stale file.

    Args:
        retriever: an unfitted retriever (:func:`make_retriever`).
        train: the training interactions it will be fitted on.
        directory: where fitted embeddings are kept (e.g. ``results/<profile>/<dataset>/checkpoints``).
    """
    users, items, times = (train[c].to_numpy(np.int64) for c in ("user", "item", "timestamp"))
    pairs = int((users * 1_000_003 + items).sum() % (1 << 61))
    data = (len(train), int(users.sum()), int(items.sum()), int(times.sum()), pairs)
    directory = Path(directory)
    if isinstance(retriever, GCNRetriever):
        config = replace(retriever.config, progress=False)
        key = _digest(config, retriever.positives_only, data)
        return retriever.cache_result(directory / f"lightgcn_{config.layer_combination}_{key}.safetensors")
    if isinstance(retriever, LLMRetriever):
        key = _digest(retriever.backbone.name, retriever.history_items, retriever.max_tokens, data)
        return retriever.cache_vectors(directory / f"llm_user_vectors_{key}.npy")
    return retriever


def _digest(*parts) -> str:
    return hashlib.sha1(repr(parts).encode()).hexdigest()[:10]
