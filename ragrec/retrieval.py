"""Retrievers of similar users, behind one interface, and the neighbours' leakage-free events.

Every retriever is fitted on the *training* interactions only (``Split.train``, DESIGN §5) and
answers ``retrieve(users, k, before=None) -> int64 [len(users), k]`` neighbour user ids, best
first, never the query user itself:

* ``gcn`` — the paper's GCN-Retriever: cosine similarity of LightGCN user embeddings
  (:mod:`ragrec.lightgcn`, mean over the K+1 layer outputs, or the last layer as ablation),
  exact top-k by one matrix product over the L2-normalised embeddings. A query is a row lookup
  plus a ``[U, d]`` matrix–vector product.
* ``llm`` — the baseline the paper replaces: the backbone LLM embeds each user's training
  history text (:func:`ragrec.text.history_text` of the ``history_items`` most recent training
  interactions) as the mean over real tokens of its final-norm hidden states (as ReLLa embeds
  items). Every other user's vector is precomputed at fit; the *query* user's text is embedded
  at query time — one LLM forward per query, the cost the GCN-Retriever removes.
  ``retrieve(..., precomputed=True)`` reuses the fit-time vector of a query user instead (same
  text, same neighbours): for building many prompts, not for measuring the query cost.
* ``random`` — uniformly drawn users, seeded per (seed, query user), so a user's neighbours do
  not depend on the order of queries.
* ``none`` — no neighbours (zero context): ``[len(users), 0]``.

Time. With ``before`` (one time per query, e.g. the CTR sample's timestamp) only users with at
least one training interaction strictly before that time are candidates (an empty neighbour
brings no context), and :func:`neighbour_events` returns only a neighbour's training
interactions strictly before it. Under the per-user split another user's *training* events can
lie after a query's time, so the prompt builder must pass it. When the dataset has no real
timestamps (``Dataset.has_timestamps`` is False, Book-Crossing: times are seeded per-user
orders, not comparable across users) the time filter is skipped, both here and in
:func:`neighbour_events`. When fewer than ``k`` users qualify the row is padded with ``-1``.

Query representation. A query user is represented by all of their training interactions (the
trained LightGCN embedding; the LLM text of their most recent training items), whatever
``before`` is: the GCN is transductive over the training graph, and the LLM retriever is given
the same information so the two compare fairly.

Cold start (a query user without training interactions — common under the global time split):
the caller passes the user's own earlier interactions in ``histories`` (e.g. the CTR sample's
history with ``history_scope="prior"``). ``gcn`` folds the user into the frozen trained graph by
propagation (:meth:`GCNRetriever.fold_in`), ``llm`` embeds the text of that history, ``random``
needs nothing. Without a usable history a :class:`~ragrec.errors.DataError` names the user.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ragrec.batching import length_sorted_batches, pad_prompts
from ragrec.data import Dataset, UserSequences
from ragrec.errors import ConfigError, DataError
from ragrec.graph import BipartiteGraph, build_graph
from ragrec.lightgcn import LightGCNConfig, LightGCNResult, train_lightgcn
from ragrec.text import history_text

RETRIEVERS = ("gcn", "llm", "random", "none")
BACKENDS = ("exact", "faiss")

History = tuple[np.ndarray, np.ndarray]
"""A query user's own earlier interactions: (item ids, ratings), oldest first."""

_NEVER = np.iinfo(np.int64).max  # "first training time" of a user without training events


# --------------------------------------------------------------------------------------------
# the interface


class Retriever(ABC):
    """Fit on training interactions; retrieve top-k neighbour users.

    After :meth:`fit`: ``sequences`` (the training interactions as :class:`UserSequences`, for
    :func:`neighbour_events`) and ``fit_s`` (one-off wall seconds of fitting/indexing).
    """

    name: str = ""
    block_size: int = 1024  # queries scored at once

    def __init__(self, n_users: int, *, has_timestamps: bool = True) -> None:
        if n_users < 2:
            raise ConfigError(f"retrieval needs at least 2 users, got n_users={n_users}")
        self.n_users = n_users
        self.has_timestamps = has_timestamps
        self.sequences: UserSequences | None = None
        self.fit_s: float | None = None
        self._first_time = np.full(n_users, _NEVER, dtype=np.int64)
        self._candidate = np.zeros(n_users, dtype=bool)

    def fit(self, train: pd.DataFrame, valid: pd.DataFrame | None = None) -> Retriever:
        """Index the training interactions (``valid`` is only used by ``gcn``, for early stopping)."""
        started = time.perf_counter()
        if len(train) == 0:
            raise DataError("cannot fit a retriever on zero training interactions")
        users = train["user"].to_numpy(np.int64)
        if users.min() < 0 or users.max() >= self.n_users:
            raise DataError(f"training user ids must lie in [0, {self.n_users}), got [{users.min()}, {users.max()}]")
        self.sequences = UserSequences(train, self.n_users)
        counts = np.diff(self.sequences.offsets)
        self._first_time[:] = _NEVER
        has = counts > 0
        self._first_time[has] = self.sequences.timestamps[self.sequences.offsets[:-1][has]]
        self._candidate = has.copy()  # subclasses narrow it to users they can represent
        self._fit(train, valid)
        self.fit_s = time.perf_counter() - started + self._extra_fit_s()
        return self

    def retrieve(
        self,
        users: Sequence[int] | np.ndarray,
        k: int,
        before: Sequence[int] | np.ndarray | None = None,
        histories: Sequence[History | None] | None = None,
        *,
        precomputed: bool = False,
    ) -> np.ndarray:
        """Top-``k`` neighbours of each query user.

        Args:
            users: query user ids ``[n]``.
            k: neighbours per query, ``1 ≤ k < n_users``.
            before: optional times ``[n]``; neighbours need a training interaction strictly
                before their query's time (ignored without real timestamps).
            histories: optional per-query (items, ratings) of the user's own earlier
                interactions, used only for users without training interactions (cold start).
            precomputed: represent query users that are in the index by their vector from
                :meth:`fit` instead of computing it now. For ``llm`` this skips the per-query
                LLM forward (the text is the same, so the neighbours are too): use it to build
                many prompts; leave it off to measure the query-time cost the paper compares.

        Returns:
            int64 ``[n, k]`` neighbour ids, most similar first; ``-1`` pads rows with fewer
            than ``k`` candidates.
        """
        if self.sequences is None:
            raise ConfigError(f"the {self.name!r} retriever is not fitted; call fit(train) first")
        users = self._check_users(users)
        check_k(k, self.n_users)
        if histories is not None and len(histories) != len(users):
            raise ConfigError(f"histories has {len(histories)} entries for {len(users)} query users")
        if before is not None:
            before = np.asarray(before, dtype=np.int64)
            if before.shape != users.shape:
                raise ConfigError(f"before must give one time per query user: {before.shape} vs {users.shape}")
        out = np.empty((len(users), k), dtype=np.int64)
        # Blocks of queries bound the [block, U] score and mask matrices (e.g. one call for
        # every CTR sample of a dataset).
        for start in range(0, len(users), self.block_size):
            rows = slice(start, start + self.block_size)
            out[rows] = self._retrieve(
                users[rows], k,
                self._allowed(users[rows], None if before is None else before[rows]),
                None if histories is None else histories[rows],
                precomputed,
            )
        return out

    def neighbour_events(self, neighbour: int, before_time: int | None, limit: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:func:`neighbour_events` on this retriever's training interactions and time rule."""
        if self.sequences is None:
            raise ConfigError(f"the {self.name!r} retriever is not fitted; call fit(train) first")
        return neighbour_events(self.sequences, neighbour, before_time, limit, has_timestamps=self.has_timestamps)

    # -- for subclasses

    @abstractmethod
    def _fit(self, train: pd.DataFrame, valid: pd.DataFrame | None) -> None: ...

    @abstractmethod
    def _retrieve(self, users: np.ndarray, k: int, allowed: np.ndarray, histories, precomputed: bool) -> np.ndarray: ...

    def _extra_fit_s(self) -> float:
        return 0.0

    # -- shared checks

    def _check_users(self, users) -> np.ndarray:
        arr = np.asarray(users)
        if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
            raise ConfigError(f"users must be a 1-D sequence of integer ids, got shape {arr.shape} dtype {arr.dtype}")
        arr = arr.astype(np.int64)
        if arr.size and (arr.min() < 0 or arr.max() >= self.n_users):
            raise DataError(f"query user ids must lie in [0, {self.n_users}), got [{arr.min()}, {arr.max()}]")
        return arr

    def _allowed(self, users: np.ndarray, before) -> np.ndarray:
        """bool ``[n, U]``: who may be returned for each query (a candidate, not the user, and —
        with ``before`` and real timestamps — with a training event strictly before the time)."""
        allowed = np.repeat(self._candidate[None, :], len(users), axis=0)
        if before is not None and self.has_timestamps:
            allowed &= self._first_time[None, :] < before[:, None]
        allowed[np.arange(len(users)), users] = False
        return allowed

    def _cold_history(self, user: int, histories, position: int) -> History:
        """The given history of a cold query user, or a DataError saying what to pass."""
        history = None if histories is None else histories[position]
        if history is None or len(history[0]) == 0:
            raise DataError(
                f"user {user} has no training interactions (cold start) and no earlier interactions were "
                f"given; pass histories=[(items, ratings), ...] with the user's own earlier interactions so the "
                f"{self.name!r} retriever can fold the user in"
            )
        return np.asarray(history[0], dtype=np.int64), np.asarray(history[1], dtype=np.float32)


def check_k(k: int, n_users: int) -> int:
    """``1 ≤ k < n_users`` (a user cannot be their own neighbour), else ConfigError."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise ConfigError(f"k must be an integer, got {k!r}")
    if not 1 <= k < n_users:
        raise ConfigError(f"k must satisfy 1 ≤ k < n_users = {n_users} (the user itself is never retrieved), got k={k}")
    return int(k)


# --------------------------------------------------------------------------------------------
# cosine top-k over vectors (shared by gcn and llm)


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), float32."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norm = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norm > 0, norm, 1.0)


def top_k_exact(queries: np.ndarray, index: np.ndarray, k: int, allowed: np.ndarray) -> np.ndarray:
    """Exact top-k by inner product (cosine on unit vectors): ``scores = queries @ indexᵀ``
    ``[n, U]``, disallowed entries −∞, best first (equal scores: lower user id first).

    Returns int64 ``[n, k]``, ``-1`` where fewer than ``k`` entries are allowed.
    """
    scores = queries @ index.T
    scores[~allowed] = -np.inf
    if k < scores.shape[1]:
        # O(U) selection of the k best, then sort only those (ties inside: lower id first;
        # an exact tie at the k-th place is cut deterministically by argpartition).
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.take_along_axis(top, np.lexsort((top, -np.take_along_axis(scores, top, axis=1)), axis=-1), axis=1)
    else:
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.where(np.take_along_axis(allowed, order, axis=1), order, -1).astype(np.int64)


class FaissIndex:
    """Inner-product FAISS index (``IndexFlatIP``, exact) for large user counts; searches more
    than ``k`` hits (doubling) until every row has ``k`` allowed ones, so results match
    :func:`top_k_exact` except for the order of exact ties."""

    def __init__(self, index: np.ndarray) -> None:
        try:
            import faiss
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ConfigError("backend='faiss' needs the faiss package (pip install faiss-cpu); use backend='exact'") from exc
        self._index = faiss.IndexFlatIP(index.shape[1])
        self._index.add(np.ascontiguousarray(index, dtype=np.float32))
        self.n = index.shape[0]

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray) -> np.ndarray:
        out = np.full((len(queries), k), -1, dtype=np.int64)
        want = min(self.n, 2 * k + 1)  # the query itself and a few disallowed users usually fit
        while True:
            _, ids = self._index.search(np.ascontiguousarray(queries, dtype=np.float32), want)
            ok = (ids >= 0) & np.take_along_axis(allowed, np.maximum(ids, 0), axis=1)
            if (ok.sum(1) >= np.minimum(k, allowed.sum(1))).all() or want >= self.n:
                break
            want = min(self.n, 2 * want)
        for row in range(len(queries)):
            hits = ids[row][ok[row]][:k]
            out[row, : len(hits)] = hits
        return out


class VectorRetriever(Retriever):
    """A retriever that represents users as unit vectors and returns the cosine top-k."""

    def __init__(self, n_users: int, *, has_timestamps: bool = True, backend: str = "exact") -> None:
        super().__init__(n_users, has_timestamps=has_timestamps)
        if backend not in BACKENDS:
            raise ConfigError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
        self.backend = backend
        self.vectors: np.ndarray | None = None  # float32 [U, d], unit rows (zero for non-candidates)
        self._faiss: FaissIndex | None = None

    def _set_vectors(self, vectors: np.ndarray, represented: np.ndarray) -> None:
        self.vectors = l2_normalize(vectors)
        self.vectors[~represented] = 0.0
        self._candidate &= represented
        self._faiss = FaissIndex(self.vectors) if self.backend == "faiss" else None

    @abstractmethod
    def query_vectors(self, users: np.ndarray, histories=None, *, precomputed: bool = False) -> np.ndarray:
        """Unit vectors ``[n, d]`` of the query users (this is the per-query cost)."""

    def _retrieve(self, users, k, allowed, histories, precomputed) -> np.ndarray:
        queries = self.query_vectors(users, histories, precomputed=precomputed)
        if self._faiss is not None:
            return self._faiss.search(queries, k, allowed)
        return top_k_exact(queries, self.vectors, k, allowed)


# --------------------------------------------------------------------------------------------
# gcn


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
            raise ConfigError(f"pretrained LightGCN layers have shape {result.layers.shape}, expected {expected} + (d,)")
        if self._config_given and replace(result.config, progress=self.config.progress) != self.config:
            raise ConfigError(
                f"pretrained LightGCN was trained with {result.config}, not {self.config}; retrain (or delete the cached file)"
            )
        self._pretrained = result
        self.config = result.config
        return self

    def cache_result(self, path: str | os.PathLike) -> GCNRetriever:
        """Keep the trained LightGCN in ``path`` (safetensors): a later fit on the *same* training
        interactions with the same configuration loads it instead of retraining. The caller keys
        the path by those inputs (:func:`use_cache`)."""
        self._cache = Path(path)
        return self

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
                if k else "cannot fold in a cold user with a 0-layer LightGCN (no propagation)"
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


# --------------------------------------------------------------------------------------------
# llm


def embed_texts(
    backbone: Any, texts: Sequence[str], *, batch_size: int = 8, max_tokens: int = 512, progress: bool = False
) -> np.ndarray:
    """Mean-pooled final-norm hidden states ``[len(texts), hidden]`` (float32).

    ``backbone.model`` is a Llama causal LM; its base model (``get_decoder()``) applies the final
    RMSNorm, so ``last_hidden_state`` is what the LM head reads. Texts are tokenised with the
    tokenizer's special tokens, cut at ``max_tokens`` (keeping the start), sorted by length and
    right-padded by hand: with a causal mask, right padding leaves the real tokens' states
    untouched, so a text's vector does not depend on its batch.
    """
    if batch_size < 1 or max_tokens < 1:
        raise ConfigError(f"need batch_size ≥ 1 and max_tokens ≥ 1, got {batch_size}, {max_tokens}")
    tokenizer = backbone.tokenizer
    ids = [list(x)[:max_tokens] for x in tokenizer(list(texts), add_special_tokens=True)["input_ids"]]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    decoder = backbone.model.get_decoder()
    device = backbone.device
    out = np.zeros((len(ids), backbone.hidden_size), dtype=np.float32)
    with torch.inference_mode():
        batches = length_sorted_batches(ids, batch_size)
        for rows in tqdm(batches, desc="LLM embeddings", unit="batch", disable=not progress, leave=False):
            input_ids, mask = pad_prompts([ids[r] for r in rows], pad, "right")
            input_ids, mask = input_ids.to(device), mask.to(device)
            hidden = decoder(input_ids=input_ids, attention_mask=mask, use_cache=False).last_hidden_state
            m = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * m).sum(1) / m.sum(1)
            out[rows] = pooled.float().cpu().numpy()
    return out


class LLMRetriever(VectorRetriever):
    """The LLM-based retriever: cosine top-k over LLM embeddings of users' history texts.

    Args:
        dataset: gives the item texts (:func:`ragrec.text.history_text`) and sizes.
        backbone: a loaded :class:`ragrec.backbone.Backbone` (the CTR model's backbone).
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
        re-embedding every user (minutes on a CPU). The caller keys the path by those inputs."""
        self._cache = Path(path)
        return self

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
                raise ConfigError(f"cached LLM user vectors {self._cache} have shape {vectors.shape}, expected {shape}; delete the file")
            seconds = self._cache.with_suffix(".json")
            self._cached_embed_s = float(json.loads(seconds.read_text())["embed_s"]) if seconds.is_file() else 0.0
        else:
            started = time.perf_counter()
            known = np.flatnonzero(counts > 0)
            vectors = np.zeros(shape, dtype=np.float32)
            vectors[known] = embed_texts(
                self.backbone, [self.user_text(u) for u in known],
                batch_size=self.batch_size, max_tokens=self.max_tokens, progress=self.progress,
            )
            if self._cache is not None:
                from ragrec.results import atomic_path, write_json

                # The seconds first: a vectors file always has its measured embedding time.
                write_json({"embed_s": time.perf_counter() - started, "users": len(known)}, self._cache.with_suffix(".json"))
                with atomic_path(self._cache) as tmp:
                    with open(tmp, "wb") as handle:
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
            out[rows] = l2_normalize(embed_texts(self.backbone, texts, batch_size=self.batch_size, max_tokens=self.max_tokens))
        return out

    def _has_training(self, user: int) -> bool:
        return bool(self.sequences.offsets[user + 1] > self.sequences.offsets[user])


# --------------------------------------------------------------------------------------------
# random and none


class RandomRetriever(Retriever):
    """``k`` distinct users drawn uniformly from the allowed ones; the draw for a query depends
    only on (seed, user), so it is reproducible and independent of query order."""

    name = "random"

    def __init__(self, n_users: int, *, seed: int = 0, has_timestamps: bool = True) -> None:
        super().__init__(n_users, has_timestamps=has_timestamps)
        self.seed = seed

    def _fit(self, train, valid) -> None:
        pass

    def _retrieve(self, users, k, allowed, histories, precomputed) -> np.ndarray:
        out = np.full((len(users), k), -1, dtype=np.int64)
        for row, u in enumerate(users):
            rng = np.random.default_rng([self.seed, int(u)])
            pool = np.flatnonzero(allowed[row])
            picked = rng.permutation(pool)[:k]
            out[row, : len(picked)] = picked
        return out


class NoRetriever(Retriever):
    """No neighbours: every query gets an empty row (``k`` is ignored; the zero-context baseline)."""

    name = "none"

    def _fit(self, train, valid) -> None:
        pass

    def retrieve(self, users, k: int = 0, before=None, histories=None, *, precomputed: bool = False) -> np.ndarray:
        return np.zeros((len(self._check_users(users)), 0), dtype=np.int64)

    def _retrieve(self, users, k, allowed, histories, precomputed) -> np.ndarray:  # pragma: no cover - unused
        return np.zeros((len(users), 0), dtype=np.int64)


# --------------------------------------------------------------------------------------------
# factory and neighbour events


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
    """A retriever by name (one of :data:`RETRIEVERS`), unfitted.

    ``backbone`` (``llm`` only): a loaded :class:`ragrec.backbone.Backbone`, or a source string
    for :func:`ragrec.backbone.load_backbone` (``"bundled"``, ``"tiny"``, a folder); default
    ``"bundled"``. ``seed`` is the random retriever's (LightGCN's is in ``lightgcn``).
    ``progress``: tqdm bar over the LLM embedding of every user at fit.
    """
    if name == "gcn":
        return GCNRetriever(
            dataset.n_users, dataset.n_items, lightgcn,
            positives_only=positives_only, has_timestamps=dataset.has_timestamps, backend=backend,
        )
    if name == "llm":
        if backbone is None or isinstance(backbone, str):
            from ragrec.backbone import load_backbone

            backbone = load_backbone(backbone or "bundled")
        return LLMRetriever(
            dataset, backbone, history_items=history_items, batch_size=llm_batch_size, max_tokens=max_tokens,
            backend=backend, progress=progress,
        )
    if name == "random":
        return RandomRetriever(dataset.n_users, seed=seed, has_timestamps=dataset.has_timestamps)
    if name == "none":
        return NoRetriever(dataset.n_users, has_timestamps=dataset.has_timestamps)
    raise ConfigError(f"unknown retriever {name!r}; choose one of {RETRIEVERS}")


def neighbour_events(
    train_sequences: UserSequences,
    neighbour: int,
    before_time: int | None,
    limit: int,
    *,
    has_timestamps: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A neighbour's up-to-``limit`` most recent *training* interactions strictly before
    ``before_time``, oldest first, as (items, ratings, timestamps).

    ``train_sequences`` must be built from the training interactions only (e.g.
    ``retriever.sequences``). ``before_time=None`` or ``has_timestamps=False`` (pseudo-times, not
    comparable across users) skips the time filter. ``neighbour == -1`` (padding) gives empty
    arrays.
    """
    if limit < 0:
        raise ConfigError(f"limit must be ≥ 0, got {limit}")
    n_users = len(train_sequences.offsets) - 1
    if neighbour == -1 or limit == 0:
        s = slice(0, 0)
    elif not 0 <= neighbour < n_users:
        raise DataError(f"neighbour id {neighbour} outside [0, {n_users})")
    else:
        s = train_sequences.window(int(neighbour), before_time if has_timestamps else None, limit)
    return train_sequences.items[s], train_sequences.ratings[s], train_sequences.timestamps[s]


def use_cache(retriever: Retriever, train: pd.DataFrame, directory: str | os.PathLike) -> Retriever:
    """Point a ``gcn`` or ``llm`` retriever at its fit cache in ``directory`` (other retrievers
    fit in milliseconds and are returned as they are). The file name is keyed by everything the
    fit depends on — the training interactions and the LightGCN configuration, or the backbone
    and the text settings — so another profile, split or model never picks up a stale file."""
    users, items, times = (train[c].to_numpy(np.int64) for c in ("user", "item", "timestamp"))
    data = (len(train), int(users.sum()), int(items.sum()), int(times.sum()), int((users * 1_000_003 + items).sum() % (1 << 61)))
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
