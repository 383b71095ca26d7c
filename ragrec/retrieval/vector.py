"""Cosine top-k over L2-normalised vectors — exact, or through FAISS (exact flat, HNSW or IVF) —
and the retriever base that uses it.

On unit vectors cosine similarity is the inner product, so every backend ranks by ``q · x``:
``exact`` by a matrix product here, the others by a FAISS inner-product index. HNSW and IVF are
approximate: their recall@k against ``exact`` is measured by
:func:`ragrec.experiments.retrieval.scale.run_ann_benchmark`.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from ragrec.errors import ConfigError
from ragrec.retrieval.base import Retriever, check_k


class AnnBackend(StrEnum):
    """How cosine top-k is searched (a ``StrEnum``: ``"exact"`` compares equal to ``EXACT``)."""

    EXACT = "exact"  # numpy matrix product, exact
    FAISS = "faiss"  # FAISS IndexFlatIP: exact, FAISS's kernels
    HNSW = "hnsw"  # FAISS IndexHNSWFlat: graph search, approximate
    IVF = "ivf"  # FAISS IndexIVFFlat: k-means cells, approximate
    AUTO = "auto"  # exact below AUTO_ANN_USERS users, IVF from there on


AUTO_ANN_USERS = 100_000
"""Where ``AnnBackend.AUTO`` switches from exact search to IVF: from about here exact search's
single-query latency passes a few milliseconds while IVF's recall@10 stays near 1 (the retrieval
chapter's "retrieval at scale" table, ``ann_benchmark.csv``)."""


BACKENDS = tuple(b.value for b in AnnBackend)


@dataclass(frozen=True)
class AnnSettings:
    """The approximate indexes' knobs (FAISS's names).

    Attributes:
        hnsw_m: graph neighbours per node (``M``; FAISS's SIFT1M benchmark uses 32).
        ef_construction: candidate list while building the graph.
        ef_search: candidate list per query (higher: better recall, slower).
        ivf_nlist: k-means cells (None: ``min(4·√n, 1024)``; FAISS's rule of thumb, capped so
            that building for 10⁶ users takes seconds).
        ivf_nprobe: cells visited per query.
        ivf_train: vectors the k-means is trained on (a seeded subset; FAISS samples 256 per cell
            anyway).
    """

    hnsw_m: int = 16
    ef_construction: int = 40
    ef_search: int = 64
    ivf_nlist: int | None = None
    ivf_nprobe: int = 16
    ivf_train: int = 50_000

    def __post_init__(self) -> None:
        values = (
            self.hnsw_m,
            self.ef_construction,
            self.ef_search,
            self.ivf_nprobe,
            self.ivf_nlist or 1,
            self.ivf_train,
        )
        if min(values) < 1:
            raise ConfigError(f"every ANN setting must be ≥ 1; got {self}")


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
    """A FAISS inner-product index over unit vectors ``[n, d]`` (:class:`AnnBackend` picks flat,
    HNSW or IVF). :meth:`search` asks for more than ``k`` hits (doubling) until every row has ``k``
    allowed ones, so the flat index matches :func:`top_k_exact` except for the order of exact ties."""

    def __init__(
        self, index: np.ndarray, backend: AnnBackend = AnnBackend.FAISS, settings: AnnSettings | None = None
    ) -> None:
        try:
            import faiss
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ConfigError(
                f"backend={backend.value!r} needs the faiss package (pip install faiss-cpu); "
                "use backend='exact'"
            ) from exc
        settings = settings or AnnSettings()
        vectors = np.ascontiguousarray(index, dtype=np.float32)  # [n, d]
        n, d = vectors.shape
        if backend == AnnBackend.HNSW:
            self._index = faiss.IndexHNSWFlat(d, settings.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            self._index.hnsw.efConstruction = settings.ef_construction
            self._index.hnsw.efSearch = settings.ef_search
        elif backend == AnnBackend.IVF:
            nlist = max(1, min(n, settings.ivf_nlist or min(int(4 * math.sqrt(n)), 1024)))
            self._index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
            # the cells: k-means on a seeded subset of the vectors themselves
            rows = np.random.default_rng(0).permutation(n)[: max(settings.ivf_train, nlist)]
            self._index.train(vectors[np.sort(rows)])
            self._index.nprobe = min(nlist, settings.ivf_nprobe)
        else:
            self._index = faiss.IndexFlatIP(d)
        self._index.add(vectors)
        self.n = n

    def search_top(self, queries: np.ndarray, k: int) -> np.ndarray:
        """The index's top ``k`` ids ``[n, k]`` (``-1`` where it finds fewer), no filtering."""
        _, ids = self._index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        return ids.astype(np.int64)

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


def check_backend(backend: str | AnnBackend) -> AnnBackend:
    """``backend`` as an :class:`AnnBackend`; ConfigError naming the choices when unknown."""
    try:
        return AnnBackend(backend)
    except ValueError:
        raise ConfigError(f"unknown backend {backend!r}; choose one of {BACKENDS}") from None


def build_index(
    vectors: np.ndarray, backend: AnnBackend, settings: AnnSettings | None = None
) -> FaissIndex | None:
    """The FAISS index of ``backend`` over ``vectors`` (None for ``exact``: no index to build)."""
    if backend == AnnBackend.AUTO:
        backend = AnnBackend.EXACT if len(vectors) < AUTO_ANN_USERS else AnnBackend.IVF
    return None if backend == AnnBackend.EXACT else FaissIndex(vectors, backend, settings)


class VectorRetriever(Retriever):
    """A retriever that represents users as unit vectors and returns the cosine top-k."""

    def __init__(
        self, n_users: int, *, has_timestamps: bool = True, backend: str | AnnBackend = "exact"
    ) -> None:
        super().__init__(n_users, has_timestamps=has_timestamps)
        self.backend = check_backend(backend)
        self.vectors: np.ndarray | None = None  # float32 [U, d], unit rows (zero for non-candidates)
        self._faiss: FaissIndex | None = None

    def _set_vectors(self, vectors: np.ndarray, represented: np.ndarray) -> None:
        self.vectors = l2_normalize(vectors)
        self.vectors[~represented] = 0.0
        self._candidate &= represented
        self._faiss = build_index(self.vectors, self.backend)

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
