"""Summary statistics of a dataset, its split and its CTR samples, and what loading dropped
(the data notebook's tables)."""

from __future__ import annotations

import pandas as pd

from ragrec.data.base import DROP_REASONS, METADATA_REASONS, Dataset
from ragrec.data.samples import Samples
from ragrec.data.split import SPLIT_NAMES, Split


def dataset_statistics(dataset: Dataset, split: Split, samples: Samples) -> pd.DataFrame:
    """One row: sizes, positive rate, samples per split part, the history scope and mean history
    length, the share of test samples whose user has no training interaction (cold start for a
    user-graph retriever), and the loading counts: ``rows_read``, ``dropped_rows`` and one
    ``dropped_<reason>`` / ``metadata_<reason>`` column per reason (see :func:`loading_report`)."""
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
        "test_cold_start_share": float((~test["user"].isin(train_users)).mean())
        if len(test)
        else float("nan"),
        "rows_read": dataset.rows_read,
        "dropped_rows": sum(dataset.dropped.values()),
        **{f"dropped_{reason}": dataset.dropped.get(reason, 0) for reason in DROP_REASONS},
        **{f"metadata_{reason}": dataset.metadata_issues.get(reason, 0) for reason in METADATA_REASONS},
    }
    return pd.DataFrame([row])


def loading_report(dataset: Dataset) -> pd.DataFrame:
    """Every reason a row was dropped or repaired while loading, with its count and meaning:
    columns ``file`` (``interactions`` or ``items/users``), ``reason``, ``rows``, ``meaning``."""
    rows = [("interactions", r, dataset.dropped.get(r, 0), meaning) for r, meaning in DROP_REASONS.items()]
    rows += [
        ("items/users", r, dataset.metadata_issues.get(r, 0), meaning)
        for r, meaning in METADATA_REASONS.items()
    ]
    return pd.DataFrame(rows, columns=["file", "reason", "rows", "meaning"])
