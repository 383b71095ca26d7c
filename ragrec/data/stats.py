"""Summary statistics of a dataset, its split and its CTR samples (the data notebook's table)."""

from __future__ import annotations

import pandas as pd

from ragrec.data.base import Dataset
from ragrec.data.samples import Samples
from ragrec.data.split import SPLIT_NAMES, Split


def dataset_statistics(dataset: Dataset, split: Split, samples: Samples) -> pd.DataFrame:
    """One row: sizes, positive rate, samples per split part, the history scope and mean history
    length, and the share
    of test samples whose user has no training interaction (cold start for a user-graph
    retriever)."""
    inter = dataset.interactions
    frame = samples.frame
    hist_len = frame["hist_end"] - frame["hist_start"]
    train_users = set(split.train["user"].unique())
    test = frame[frame["split"] == "test"]
    row = {
        "dataset": dataset.name,
        "split_method": split.method,
        "users": dataset.n_users,
        "items": dataset.n_items,
        "interactions": len(inter),
        "density": len(inter) / (dataset.n_users * dataset.n_items),
        "positive_rate": float(inter["label"].mean()),
        "label_rule": dataset.label_rule,
        "train_interactions": len(split.train),
        **{f"{name}_samples": int((frame["split"] == name).sum()) for name in SPLIT_NAMES},
        "history_scope": samples.history_scope,
        "mean_history_len": float(hist_len.mean()),
        "test_cold_start_share": float((~test["user"].isin(train_users)).mean()) if len(test) else float("nan"),
    }
    return pd.DataFrame([row])
