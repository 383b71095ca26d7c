"""Context, decided: what the retrieved users add to the LLM, paired on the same test samples
(issue #28).

The paper's premise is that retrieved similar users make the LLM more accurate. For each pair of
prompt contexts (a, b) — GCN-retrieved vs none, vs random users, LLM-retrieved vs none, GCN vs
LLM — :func:`context_table` reads the recommender's final-head test predictions of both and
reports AUC(a) − AUC(b) with a paired-bootstrap interval on the samples both scored (``n`` says
how many), so "context helps" is decided by an interval, not by two unpaired AUCs.
:func:`vote_rows` adds the same question asked of the prompt-number models: the model with the
retrieved users' vote minus the same model on the item's and user's shares alone.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from ragrec.errors import DataError
from ragrec.metrics import auc, paired_auc_difference
from ragrec.result_files import predictions
from ragrec.results import read_csv

CONTEXT_PAIRS: tuple[tuple[str, str], ...] = (
    ("gcn", "none"),
    ("gcn", "random"),
    ("llm", "none"),
    ("gcn", "llm"),
    ("random", "none"),
)
"""(a, b) pairs of :func:`context_table`: each retrieved context against no and random users."""

NO_DIFFERENCE = "no measurable difference"
"""The verdict of a pair whose 95% paired interval contains 0."""

COLUMNS = (
    "a",
    "b",
    "head_layer",
    "n",
    "auc_a",
    "auc_b",
    "diff",
    "diff_ci_low",
    "diff_ci_high",
    "p_a_not_better",
    "verdict",
)


def _final_head(frame: pd.DataFrame, path: Path) -> str:
    heads = sorted(
        (c for c in frame.columns if c.startswith("p_head_")), key=lambda c: int(c.rsplit("_", 1)[1])
    )
    if not heads:
        raise DataError(f"{path} has no p_head_<layer> column")
    return heads[-1]


def context_table(
    out_dir: os.PathLike,
    pairs: tuple[tuple[str, str], ...] = CONTEXT_PAIRS,
    *,
    n_boot: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per (a, b) in ``pairs`` whose two test predictions files exist in ``out_dir``:
    final-head AUC of each and AUC(a) − AUC(b) with its 95% paired-bootstrap interval, on the
    ``n`` samples both scored (columns :data:`COLUMNS`).

    Raises:
        DataError: the two files disagree on a shared sample's label, or their final heads differ.
    """
    out_dir = Path(out_dir)
    rows = []
    for a, b in pairs:
        paths = [out_dir / predictions(a), out_dir / predictions(b)]
        if not all(p.exists() for p in paths):
            continue
        fa, fb = (read_csv(p) for p in paths)
        col_a, col_b = _final_head(fa, paths[0]), _final_head(fb, paths[1])
        if col_a != col_b:
            raise DataError(f"{paths[0].name} ends at {col_a} but {paths[1].name} at {col_b}")
        # paired on the samples both contexts scored (a context may be scored on a subset)
        m = fa.merge(fb, on="sample_id", suffixes=("_a", "_b"))
        if not np.array_equal(m["label_a"].to_numpy(), m["label_b"].to_numpy()):
            raise DataError(f"{paths[0].name} and {paths[1].name} disagree on the labels of shared samples")
        y, s_a, s_b = (
            m["label_a"].to_numpy(int),
            m[f"{col_a}_a"].to_numpy(float),
            m[f"{col_b}_b"].to_numpy(float),
        )
        rows.append(_paired_row(a, b, int(col_a.rsplit("_", 1)[1]), y, s_a, s_b, n_boot, seed))
    return pd.DataFrame(rows, columns=list(COLUMNS))


def _paired_row(a, b, head_layer, y, s_a, s_b, n_boot: int, seed: int) -> tuple:
    d = paired_auc_difference(y, s_a, s_b, n_boot=n_boot, seed=seed)
    # the interval decides: a difference is measurable only when it excludes 0
    verdict = f"{a} higher" if d.ci_low > 0 else f"{b} higher" if d.ci_high < 0 else NO_DIFFERENCE
    return (
        a,
        b,
        head_layer,
        len(y),
        auc(y, s_a),
        auc(y, s_b),
        d.diff,
        d.ci_low,
        d.ci_high,
        d.p_a_not_better,
        verdict,
    )


def vote_rows(
    labels: np.ndarray, scores: dict[str, np.ndarray], *, n_boot: int = 1000, seed: int = 0
) -> pd.DataFrame:
    """Rows (as :func:`context_table`'s, ``head_layer`` NaN) of ``<model>_vote<tag>`` minus
    ``<model>_shares<tag>`` for every such pair among ``scores`` (``[n]`` each, on ``labels``)."""
    rows = [
        _paired_row(
            name,
            name.replace("_vote", "_shares", 1),
            np.nan,
            labels,
            s,
            scores[name.replace("_vote", "_shares", 1)],
            n_boot,
            seed,
        )
        for name, s in scores.items()
        if "_vote" in name and name.replace("_vote", "_shares", 1) in scores
    ]
    return pd.DataFrame(rows, columns=list(COLUMNS))
