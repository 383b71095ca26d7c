"""Bootstrap AUCs fast enough for a sweep: a resample is a count per sample, and the AUC of a
score vector on every resample is Mann–Whitney on those multiplicities.

The resamples are the rows :func:`ragrec.metrics.auc_ci` draws for the same ``n``, ``n_boot`` and
``seed`` (one ``default_rng(seed).integers(0, n, (n_boot, n))`` draw), so the intervals agree with
it; each score vector costs one sort and a few ``[B, N]`` passes instead of a rank per resample.
"""

from __future__ import annotations

import numpy as np

_CHUNK = 128  # resamples per pass: bounds the [chunk, N] float64 arrays to a few tens of MB


def resample_counts(n: int, n_boot: int, seed: int) -> np.ndarray:
    """``[n_boot, n]`` int: how often each sample is drawn in each bootstrap resample (seeded)."""
    rows = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    offsets = (np.arange(n_boot) * n)[:, None]  # one bincount for all resamples at once
    return np.bincount((rows + offsets).ravel(), minlength=n_boot * n).reshape(n_boot, n)


def resampled_aucs(labels: np.ndarray, scores: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``[B]`` AUC of ``scores`` ``[N]`` on each resample ``counts`` ``[B, N]`` (NaN where a
    resample holds one class): Mann–Whitney on multiplicities, ties counted ½, equal to
    ``roc_auc_score`` on the resampled rows."""
    order = np.argsort(scores, kind="stable")
    s, y = scores[order], labels[order].astype(np.float64)
    new = np.r_[True, s[1:] != s[:-1]]  # [N] first position of each group of tied scores
    group = np.cumsum(new) - 1  # [N] tie group of each sorted position
    starts = np.flatnonzero(new)
    ends = np.r_[starts[1:], len(s)]
    out = np.empty(len(counts))
    for at in range(0, len(counts), _CHUNK):
        w = counts[at : at + _CHUNK, order].astype(np.float64)  # [b, N] multiplicities, sorted
        pos, neg = w * y, w * (1.0 - y)
        neg_cum = np.concatenate([np.zeros((len(w), 1)), np.cumsum(neg, 1)], 1)  # [b, N+1]
        below = neg_cum[:, starts][:, group]  # negatives scored strictly lower than each position
        tied = (neg_cum[:, ends] - neg_cum[:, starts])[:, group]  # negatives tied with it
        n_pos, n_neg = pos.sum(1), neg.sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[at : at + _CHUNK] = (pos * (below + 0.5 * tied)).sum(1) / (n_pos * n_neg)
    return out


def percentile_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Two-sided percentile interval of ``values`` ``[B]`` (resamples holding one class, NaN, are
    left out, as :func:`ragrec.metrics.auc_ci` leaves them out)."""
    lo, hi = np.nanpercentile(values, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)
