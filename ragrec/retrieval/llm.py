"""The LLM-based retriever the paper replaces: the backbone embeds each user's history text.

Its training prompts query without the sample's target in the query text (:class:`LeaveTargetOut`).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ragrec.data import Dataset, Samples
from ragrec.data.text import history_text
from ragrec.errors import ConfigError
from ragrec.llm.batching import length_sorted_batches, pad_prompts
from ragrec.retrieval.base import RetrieverConfig, TrainingFolds, fit_key, register_retriever
from ragrec.retrieval.vector import VectorRetriever, check_backend, l2_normalize


@register_retriever
@dataclass(frozen=True)
class LLMRetrieverConfig(RetrieverConfig):
    """The LLM retriever's settings.

    Attributes:
        history_items: m, the most recent training interactions in a user's text.
        batch_size: texts per forward at fit (queries are embedded as they come).
        max_tokens: cut-off of a user's text in tokens.
        backend: ``"exact"`` or ``"faiss"``.
        backbone: the source :func:`ragrec.llm.backbone.load_backbone` loads when :meth:`build`
            is given no loaded backbone (``"bundled"``, ``"tiny"``, a folder).
    """

    name: str = field(default="llm", init=False)
    history_items: int = 10
    batch_size: int = 8
    max_tokens: int = 512
    backend: str = "exact"
    backbone: str = "bundled"

    def __post_init__(self) -> None:
        check_backend(self.backend)

    def build(self, dataset: Dataset, *, backbone: Any = None, progress: bool = False) -> LLMRetriever:
        """The retriever on ``backbone`` (loaded from ``self.backbone`` when None); ``progress``:
        a bar over embedding every user at fit."""
        if backbone is None:
            from ragrec.llm.backbone import load_backbone

            backbone = load_backbone(self.backbone)
        return LLMRetriever(
            dataset,
            backbone,
            history_items=self.history_items,
            batch_size=self.batch_size,
            max_tokens=self.max_tokens,
            backend=self.backend,
            progress=progress,
        )


def embed_texts(
    backbone: Any, texts: Sequence[str], *, batch_size: int = 8, max_tokens: int = 512, progress: bool = False
) -> np.ndarray:
    """Mean-pooled final-norm hidden states ``[len(texts), hidden]`` (float32).

    ``backbone.model`` is a Llama causal LM; its base model (``get_decoder()``) applies the final
    RMSNorm, so ``last_hidden_state`` is what the LM head reads. Texts are tokenised with the
    tokenizer's special tokens, cut at ``max_tokens`` (keeping the start), sorted by length and
    right-padded by hand: with a causal mask, right padding leaves the real tokens' states
    untouched, so a text's vector does not depend on its batch.

    Args:
        backbone: a loaded :class:`ragrec.llm.backbone.Backbone`.
        texts: the texts to embed.
        batch_size: texts per forward. (default: ``8``)
        max_tokens: cut-off of a text in tokens. (default: ``512``)
        progress: a tqdm bar over the batches. (default: :obj:`False`)
    """
    if batch_size < 1 or max_tokens < 1:
        raise ConfigError(f"need batch_size ≥ 1 and max_tokens ≥ 1, got {batch_size}, {max_tokens}")
    tokenizer = backbone.tokenizer
    ids = [list(x)[:max_tokens] for x in tokenizer(list(texts), add_special_tokens=True)["input_ids"]]
    pad = backbone.pad_id
    decoder = backbone.model.get_decoder()
    device = backbone.device
    out = np.zeros((len(ids), backbone.hidden_size), dtype=np.float32)
    with torch.inference_mode():
        batches = length_sorted_batches(ids, batch_size)
        for rows in tqdm(batches, desc="LLM embeddings", unit="batch", disable=not progress, leave=False):
            input_ids, mask = pad_prompts([ids[r] for r in rows], pad, "right")
            input_ids, mask = input_ids.to(device), mask.to(device)
            hidden = decoder(
                input_ids=input_ids, attention_mask=mask, use_cache=False
            ).last_hidden_state  # [B, T, H]
            m = mask.unsqueeze(-1).to(hidden.dtype)  # [B, T, 1]
            pooled = (hidden * m).sum(1) / m.sum(1)  # [B, H]: the mean over real tokens
            out[rows] = pooled.float().cpu().numpy()
    return out


class LLMRetriever(VectorRetriever):
    """The LLM-based retriever: cosine top-k over LLM embeddings of users' history texts.

    Args:
        dataset: gives the item texts (:func:`ragrec.data.text.history_text`) and sizes.
        backbone: a loaded :class:`ragrec.llm.backbone.Backbone` (the CTR model's backbone).
        history_items: m, the most recent training interactions in a user's text.
        batch_size: texts per forward at fit (queries are embedded as they come).
        max_tokens: cut-off of a user's text in tokens.
        backend: ``"exact"`` or ``"faiss"``.
        progress: tqdm bar while embedding every user at fit.
    """

    name = "llm"

    def __init__(
        self,
        dataset: Dataset,
        backbone: Any,
        *,
        history_items: int = 10,
        batch_size: int = 8,
        max_tokens: int = 512,
        backend: str = "exact",
        progress: bool = False,
    ) -> None:
        super().__init__(dataset.n_users, has_timestamps=dataset.has_timestamps, backend=backend)
        self.progress = progress
        if history_items < 1:
            raise ConfigError(f"history_items must be ≥ 1, got {history_items}")
        self.dataset = dataset
        self.backbone = backbone
        self.history_items = history_items
        self.batch_size = batch_size
        self.max_tokens = max_tokens
        self._cache: Path | None = None
        self._cached_embed_s = 0.0

    def cache_vectors(self, path: str | os.PathLike) -> LLMRetriever:
        """Keep the fit-time user vectors in ``path`` (``.npy``): a later fit on the *same*
        training interactions with the same backbone and text settings loads them instead of
        re-embedding every user (the slowest fit; its seconds are ``fit_s`` in ``retrieval.csv``).
        The caller keys the path by those inputs."""
        self._cache = Path(path)
        return self

    def use_cache(self, train: pd.DataFrame, directory: str | os.PathLike) -> LLMRetriever:
        key = fit_key(train, self.backbone.name, self.history_items, self.max_tokens)
        return self.cache_vectors(Path(directory) / f"llm_user_vectors_{key}.npy")

    def for_training(self, samples: Samples, folds: TrainingFolds) -> LeaveTargetOut:
        """Each training sample queries with a text that lacks its own target (no refit)."""
        return LeaveTargetOut(self)

    def user_text(self, user: int) -> str:
        """The text of a user's ``history_items`` most recent training interactions."""
        s = self.sequences.window(int(user), None, self.history_items)
        return history_text(self.dataset, self.sequences.items[s], self.sequences.ratings[s])

    def _fit(self, train, valid) -> None:
        counts = np.diff(self.sequences.offsets)
        shape = (self.n_users, self.backbone.hidden_size)
        self._cached_embed_s = 0.0
        if self._cache is not None and self._cache.is_file():
            vectors = np.load(self._cache)
            if vectors.shape != shape:
                raise ConfigError(
                    f"cached LLM user vectors {self._cache} have shape {vectors.shape}, expected {shape}; "
                    "delete the file"
                )
            seconds = self._cache.with_suffix(".json")
            self._cached_embed_s = (
                float(json.loads(seconds.read_text())["embed_s"]) if seconds.is_file() else 0.0
            )
        else:
            started = time.perf_counter()
            known = np.flatnonzero(counts > 0)
            vectors = np.zeros(shape, dtype=np.float32)
            vectors[known] = embed_texts(
                self.backbone,
                [self.user_text(u) for u in known],
                batch_size=self.batch_size,
                max_tokens=self.max_tokens,
                progress=self.progress,
            )
            if self._cache is not None:
                from ragrec.results import atomic_path, write_json

                # The seconds first: a vectors file always has its measured embedding time.
                cost = {"embed_s": time.perf_counter() - started, "users": len(known)}
                write_json(cost, self._cache.with_suffix(".json"))
                with atomic_path(self._cache) as tmp, open(tmp, "wb") as handle:
                    np.save(handle, vectors)
        self._set_vectors(vectors, counts > 0)

    def _extra_fit_s(self) -> float:
        # Cached vectors still cost their embedding once (measured when written): report it.
        return self._cached_embed_s

    def query_vectors(self, users, histories=None, *, precomputed: bool = False) -> np.ndarray:
        out = np.zeros((len(users), self.backbone.hidden_size), dtype=np.float32)
        texts, rows = [], []
        for pos, u in enumerate(users):
            if self._has_training(u) and precomputed:
                out[pos] = self.vectors[u]
                continue
            rows.append(pos)
            if self._has_training(u):
                texts.append(self.user_text(u))
            else:
                items, ratings = self._cold_history(int(u), histories, pos)
                items, ratings = items[-self.history_items :], ratings[-self.history_items :]
                texts.append(history_text(self.dataset, items, ratings))
        if texts:
            vectors = embed_texts(
                self.backbone, texts, batch_size=self.batch_size, max_tokens=self.max_tokens
            )
            out[rows] = l2_normalize(vectors)
        return out

    def _has_training(self, user: int) -> bool:
        return bool(self.sequences.offsets[user + 1] > self.sequences.offsets[user])


@dataclass
class LeaveTargetOut:
    """LLM-retriever neighbours for *training* samples without the sample's own interaction.

    The LLM retriever represents a user by the text of their most recent training interactions;
    a training sample's target is often among them (a test sample's never is). For those samples
    the query text is rebuilt without the target and embedded, then searched like any query.
    """

    retriever: LLMRetriever
    # (sample id, k) → neighbours: the information table asks again for samples the training
    # prompts already queried, and each re-embedding is an LLM forward
    _seen: dict = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        return self.retriever.name

    def neighbours(self, samples: Samples, k: int) -> np.ndarray:
        """int64 ``[len(samples), k]`` neighbours, each sample's target left out of its query."""
        ids = samples.frame.index
        new = [i for i in ids if (i, k) not in self._seen]
        if new:
            rows = self._query(samples.subset(new), k)
            self._seen.update({(i, k): row for i, row in zip(new, rows, strict=True)})
        return np.stack([self._seen[(i, k)] for i in ids]) if len(ids) else np.zeros((0, k), np.int64)

    def _query(self, samples: Samples, k: int) -> np.ndarray:
        out = self.retriever.neighbours(samples, k)
        r, frame = self.retriever, samples.frame
        users, items = frame["user"].to_numpy(np.int64), frame["item"].to_numpy(np.int64)
        texts, rows = [], []
        for row, (user, item) in enumerate(zip(users, items, strict=True)):
            window = r.sequences.window(int(user), None, r.history_items)
            shown, ratings = r.sequences.items[window], r.sequences.ratings[window]
            if item in shown:
                keep = shown != item
                texts.append(history_text(r.dataset, shown[keep], ratings[keep]))
                rows.append(row)
        if rows:
            queries = embed_texts(r.backbone, texts, batch_size=r.batch_size, max_tokens=r.max_tokens)
            times = frame["timestamp"].to_numpy()[rows]
            out[rows] = r.retrieve_with(queries, users[rows], k, before=times)
        return out
