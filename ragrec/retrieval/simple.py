"""Control retrievers: random users, and no neighbours at all."""

from __future__ import annotations

import numpy as np

from ragrec.retrieval.base import Retriever


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

    def retrieve(
        self, users, k: int = 0, before=None, histories=None, *, precomputed: bool = False
    ) -> np.ndarray:
        return np.zeros((len(self._check_users(users)), 0), dtype=np.int64)

    def _retrieve(self, users, k, allowed, histories, precomputed) -> np.ndarray:  # pragma: no cover - unused
        return np.zeros((len(users), 0), dtype=np.int64)
