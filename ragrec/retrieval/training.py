"""Training views that refit: neighbours for training samples from retrievers that never saw them.

A training sample's (user, target) pair is an interaction the retriever was fitted on, so a
retriever that learns from interactions (the GCN's graph edges) picks its neighbours partly
because of the target; a test sample has no such edge. :class:`FoldedRetriever` cuts the
training samples into folds, and fold f's samples query a retriever fitted on the training
interactions minus fold f's (user, target) pairs, so training prompts are built like test
prompts (DESIGN §5).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ragrec.data import Samples
from ragrec.retrieval.base import Retriever, TrainingFolds


@dataclass
class FoldedRetriever:
    """Per-fold retrievers and the fold of every training sample.

    Attributes:
        name: the retriever's name.
        folds: fold f's retriever, fitted without fold f's samples' (user, item) pairs.
        fold_of: sample id → fold.
    """

    name: str
    folds: list[Retriever]
    fold_of: pd.Series

    @classmethod
    def fit(
        cls, name: str, unfitted: Callable[[], Retriever], samples: Samples, folds: TrainingFolds
    ) -> FoldedRetriever:
        """Draw the folds over ``samples`` (seeded) and fit one ``unfitted()`` retriever per fold
        on ``folds.train`` without that fold's (user, item) pairs, through ``folds.fit``."""
        rng = np.random.default_rng(folds.seed)
        fold_of = pd.Series(rng.permutation(len(samples)) % folds.n_folds, index=samples.frame.index)
        train, frame = folds.train, samples.frame
        n_items = int(max(train["item"].max(), frame["item"].max())) + 1
        pairs, sample_pairs = _pair_keys(train, n_items), _pair_keys(frame, n_items)
        fitted = []
        for f in range(folds.n_folds):
            held_out = np.isin(pairs, sample_pairs[fold_of.to_numpy() == f])
            fitted.append(folds.fit(unfitted(), train[~held_out]))
        return cls(name, fitted, fold_of)

    def neighbours(self, samples: Samples, k: int) -> np.ndarray:
        """int64 ``[len(samples), k]``: each sample's neighbours from its fold's retriever."""
        out = np.full((len(samples), k), -1, dtype=np.int64)
        fold = self.fold_of.loc[samples.frame.index].to_numpy()
        for f, retriever in enumerate(self.folds):
            rows = np.flatnonzero(fold == f)
            if len(rows):
                out[rows] = retriever.neighbours(samples.subset(samples.frame.index[rows]), k)
        return out


def _pair_keys(frame: pd.DataFrame, n_items: int) -> np.ndarray:
    return frame["user"].to_numpy(np.int64) * n_items + frame["item"].to_numpy(np.int64)
