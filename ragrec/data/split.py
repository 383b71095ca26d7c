"""Train/validation/test splits of a dataset's interactions.

* ``per_user`` (default): each user's interactions sorted by time (ties broken by item id), the
  earliest 80% training, the next 10% validation, the last 10% test. Every evaluated user then
  has training interactions, which a user-graph retriever needs. Caveat: the split is per user,
  not global in time, so *another* user's training interaction can be later than a test sample;
  consumers that show other users' interactions must also filter by the sample's time
  (retrieval does).
* ``global_time`` (ReLLa's convention): cut at the 80% and 90% quantiles of all timestamps. On
  MovieLens-100K most test samples then come from users with no training interaction at all
  (cold start for any user-graph retriever; :func:`ragrec.data.dataset_statistics` reports the
  share). Needs real timestamps.

The training interactions (``Split.train``) are the only interactions retrieval (the GCN graph,
the LLM retriever's user texts) may ever see.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ragrec.data.base import Dataset
from ragrec.errors import ConfigError

SPLIT_METHODS = ("per_user", "global_time")
SPLIT_NAMES = ("train", "valid", "test")


@dataclass(frozen=True)
class Split:
    """A dataset's interactions, sorted by (user, timestamp, item), with a ``split`` column."""

    method: str
    interactions: pd.DataFrame

    def part(self, name: str) -> pd.DataFrame:
        if name not in SPLIT_NAMES:
            raise ConfigError(f"unknown split part {name!r}; choose one of {SPLIT_NAMES}")
        return self.interactions[self.interactions["split"] == name]

    @property
    def train(self) -> pd.DataFrame:
        """The training interactions: all that retrieval and training may see."""
        return self.part("train")

    @property
    def valid(self) -> pd.DataFrame:
        return self.part("valid")

    @property
    def test(self) -> pd.DataFrame:
        return self.part("test")


def split_interactions(
    dataset: Dataset, method: str = "per_user", ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
) -> Split:
    """Split ``dataset``'s interactions 8:1:1 (by default) with ``method`` (see module docstring)."""
    if method not in SPLIT_METHODS:
        raise ConfigError(f"unknown split method {method!r}; choose one of {SPLIT_METHODS}")
    if len(ratios) != 3 or min(ratios) < 0 or not np.isclose(sum(ratios), 1.0) or ratios[0] <= 0:
        raise ConfigError(f"split ratios must be three non-negative numbers summing to 1, got {ratios}")
    inter = dataset.interactions.sort_values(["user", "timestamp", "item"], kind="stable").reset_index(
        drop=True
    )
    edges = np.cumsum(ratios)[:2]
    if method == "per_user":
        pos = inter.groupby("user").cumcount().to_numpy()
        n = inter.groupby("user")["item"].transform("size").to_numpy()
        # Round half up so a user with 10 interactions gets exactly 8/1/1.
        n_train = np.floor(edges[0] * n + 0.5)
        n_train_valid = np.floor(edges[1] * n + 0.5)
        part = np.where(pos < n_train, 0, np.where(pos < n_train_valid, 1, 2))
    else:
        if not dataset.has_timestamps:
            raise ConfigError(
                f"dataset {dataset.name!r} has no timestamps, so a global time cut is meaningless; use "
                "method='per_user'"
            )
        ts = np.sort(inter["timestamp"].to_numpy())
        cut1, cut2 = (ts[min(int(e * len(ts)), len(ts) - 1)] for e in edges)
        t = inter["timestamp"].to_numpy()
        # Thresholds on time, not positions: ties never straddle a cut.
        part = np.where(t < cut1, 0, np.where(t < cut2, 1, 2))
    inter["split"] = pd.Categorical.from_codes(part, categories=list(SPLIT_NAMES))
    return Split(method=method, interactions=inter)
