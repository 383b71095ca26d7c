"""Exact (and optional faiss) cosine top-k over L2-normalised vectors, and the retriever base that uses it."""

from __future__ import annotations

from abc import abstractmethod

import numpy as np

from ragrec.errors import ConfigError
from ragrec.retrieval.base import Retriever, check_k

BACKENDS = ("exact", "faiss")


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
        order = np.take_along_axis(
            top, np.lexsort((top, -np.take_along_axis(scores, top, axis=1)), axis=-1), axis=1
        )
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
            raise ConfigError(
                "backend='faiss' needs the faiss package (pip install faiss-cpu); use backend='exact'"
            ) from exc
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


def check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
    return backend


class VectorRetriever(Retriever):
    """A retriever that represents users as unit vectors and returns the cosine top-k."""

    def __init__(self, n_users: int, *, has_timestamps: bool = True, backend: str = "exact") -> None:
        super().__init__(n_users, has_timestamps=has_timestamps)
        self.backend = check_backend(backend)
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

    def retrieve_with(self, queries: np.ndarray, users, k: int, before=None) -> np.ndarray:
        """Top-``k`` neighbours ``[n, k]`` for query vectors ``[n, d]`` given by the caller (a
        query text other than the fitted one, e.g. without a held-out interaction), under the
        same rules as :meth:`retrieve`: never the query user, and with ``before`` only users
        active before each time."""
        users = self._check_users(users)
        check_k(k, self.n_users)
        before = None if before is None else np.asarray(before, dtype=np.int64)
        allowed = self._allowed(users, before)
        queries = l2_normalize(np.asarray(queries, dtype=np.float32))
        if self._faiss is not None:
            return self._faiss.search(queries, k, allowed)
        return top_k_exact(queries, self.vectors, k, allowed)

    def _retrieve(self, users, k, allowed, histories, precomputed) -> np.ndarray:
        queries = self.query_vectors(users, histories, precomputed=precomputed)
        if self._faiss is not None:
            return self._faiss.search(queries, k, allowed)
        return top_k_exact(queries, self.vectors, k, allowed)
