"""Item cold start: AUC by how many training ratings the target item had before the sample.

The prompt's item share rests on the target's earlier raters; with none it is the training like
rate, and only the user's share and (with a retriever) the vote can tell. :func:`cold_start_table`
scores every method per bucket of that count with its bootstrap interval and n, so a reader sees
where the retrieved users would matter.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ragrec.errors import ConfigError
from ragrec.metrics import auc, auc_ci

BUCKET_EDGES = (0, 1, 6, 21)
"""Lower edges of the buckets of earlier ratings: 0, 1–5, 6–20, > 20."""

COLUMNS = ("method", "bucket", "lower", "n", "n_pos", "auc", "auc_ci_low", "auc_ci_high")


def bucket_labels(edges: tuple[int, ...] = BUCKET_EDGES) -> list[str]:
    """Readable names of the buckets that ``edges`` (sorted lower edges, first 0) define."""
    if not edges or edges[0] != 0 or list(edges) != sorted(set(edges)):
        raise ConfigError(f"bucket edges must be increasing and start at 0; got {edges}")
    out = []
    for lo, hi in zip(edges, (*edges[1:], None)):
        out.append(f"> {lo - 1}" if hi is None else (str(lo) if hi == lo + 1 else f"{lo}–{hi - 1}"))
    return out


def item_buckets(counts: np.ndarray, edges: tuple[int, ...] = BUCKET_EDGES) -> np.ndarray:
    """Bucket index per sample of its target's earlier training ratings ``counts`` (``[n]`` ints)."""
    bucket_labels(edges)  # validates
    return np.searchsorted(np.asarray(edges), np.asarray(counts), side="right") - 1


def cold_start_table(
    labels: np.ndarray,
    scores: dict[str, np.ndarray],
    counts: np.ndarray,
    *,
    edges: tuple[int, ...] = BUCKET_EDGES,
    n_boot: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per (method, bucket): n, positives, AUC and its bootstrap interval (NaN where the
    bucket holds one label only)."""
    labels = np.asarray(labels)
    which = item_buckets(counts, edges)
    names = bucket_labels(edges)
    rows = []
    for method, s in scores.items():
        s = np.asarray(s, float)
        for b, name in enumerate(names):
            rows_b = which == b
            y = labels[rows_b]
            ok = len(np.unique(y)) == 2
            lo, hi = auc_ci(y, s[rows_b], n_boot=n_boot, seed=seed) if ok else (np.nan, np.nan)
            rows.append(
                {
                    "method": method,
                    "bucket": name,
                    "lower": edges[b],
                    "n": int(rows_b.sum()),
                    "n_pos": int(y.sum()),
                    "auc": auc(y, s[rows_b]) if ok else np.nan,
                    "auc_ci_low": lo,
                    "auc_ci_high": hi,
                }
            )
    return pd.DataFrame(rows, columns=list(COLUMNS))
