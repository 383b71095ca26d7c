"""Control retrievers: random users, and no neighbours at all.

Neither learns from interactions: a sample's neighbours never depend on its target's item or
label, so both serve training prompts as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ragrec.data import Dataset, Samples
from ragrec.retrieval.base import Retriever, RetrieverConfig, TrainingFolds, register_retriever


@register_retriever
@dataclass(frozen=True)
class RandomRetrieverConfig(RetrieverConfig):
    """The random retriever's settings.

    Attributes:
        seed: the draws' seed (each query user's draw depends only on (seed, user)).
    """

    name: str = field(default="random", init=False)
    seed: int = 0

    def build(self, dataset: Dataset, *, backbone: Any = None, progress: bool = False) -> RandomRetriever:
        return RandomRetriever(dataset.n_users, seed=self.seed, has_timestamps=dataset.has_timestamps)


@register_retriever
@dataclass(frozen=True)
class NoRetrieverConfig(RetrieverConfig):
    """No settings: the zero-context baseline."""

    name: str = field(default="none", init=False)

    def build(self, dataset: Dataset, *, backbone: Any = None, progress: bool = False) -> NoRetriever:
        return NoRetriever(dataset.n_users, has_timestamps=dataset.has_timestamps)


class RandomRetriever(Retriever):
    """``k`` distinct users drawn uniformly from the allowed ones; the draw for a query depends
    only on (seed, user), so it is reproducible and independent of query order."""

    name = "random"

    def __init__(self, n_users: int, *, seed: int = 0, has_timestamps: bool = True) -> None:
        super().__init__(n_users, has_timestamps=has_timestamps)
        self.seed = seed

    def _fit(self, train, valid) -> None:
        pass

    def for_training(self, samples: Samples, folds: TrainingFolds) -> RandomRetriever:
        """Itself: the draw depends on (seed, user) and on who has training events, not on any
        sample's target."""
        return self

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

    def neighbours(self, samples: Samples, k: int) -> None:
        """None: prompts show no similar users."""
        return None

    def for_training(self, samples: Samples, folds: TrainingFolds) -> NoRetriever:
        """Itself: no neighbours to choose."""
        return self

    def _retrieve(self, users, k, allowed, histories, precomputed) -> np.ndarray:  # pragma: no cover - unused
        return np.zeros((len(users), 0), dtype=np.int64)
