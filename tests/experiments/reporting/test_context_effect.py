"""Context, decided: paired final-head AUC differences between prompt contexts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ragrec.errors import DataError
from ragrec.experiments.reporting.context_effect import context_table, vote_rows
from ragrec.metrics import auc


def _write(path, ids, labels, final, head=6):
    frame = pd.DataFrame({"sample_id": ids, "label": labels, "p_head_2": 0.5, f"p_head_{head}": final})
    frame.to_csv(path, index=False)


def test_pairs_are_scored_on_the_samples_both_contexts_scored(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    good = y + rng.normal(0, 0.5, 400)
    noise = rng.normal(0, 1, 400)
    _write(tmp_path / "predictions_gcn.csv", np.arange(400), y, good)
    # "none" scored on the first 300 samples only: the pair is judged on those
    _write(tmp_path / "predictions_none.csv", np.arange(300), y[:300], noise[:300])
    table = context_table(tmp_path, (("gcn", "none"), ("gcn", "llm")), n_boot=200)
    assert table["b"].tolist() == ["none"], "a pair without its files is left out"
    row = table.iloc[0]
    assert row["n"] == 300 and row["head_layer"] == 6
    assert row["auc_a"] == pytest.approx(auc(y[:300], good[:300]))
    assert row["diff"] == pytest.approx(row["auc_a"] - row["auc_b"])
    assert row["diff_ci_low"] > 0, "an informative score beats noise with a decisive interval"
    assert row["verdict"] == "gcn higher"


def test_contexts_disagreeing_on_labels_is_a_clear_error(tmp_path):
    _write(tmp_path / "predictions_gcn.csv", np.arange(4), [0, 1, 0, 1], [0.1, 0.9, 0.2, 0.8])
    _write(tmp_path / "predictions_none.csv", np.arange(4), [1, 1, 0, 1], [0.1, 0.9, 0.2, 0.8])
    with pytest.raises(DataError, match="disagree"):
        context_table(tmp_path, (("gcn", "none"),), n_boot=10)


def test_vote_rows_pair_each_model_with_its_shares_only_twin():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    scores = {
        "lr_shares_all": rng.normal(0, 1, 300),
        "lr_vote_all": y + rng.normal(0, 0.5, 300),
        "gbdt_vote_llm": rng.normal(0, 1, 300),  # no shares twin: left out
    }
    table = vote_rows(y, scores, n_boot=200)
    assert table[["a", "b"]].values.tolist() == [["lr_vote_all", "lr_shares_all"]]
    assert table["diff"].iloc[0] == pytest.approx(
        auc(y, scores["lr_vote_all"]) - auc(y, scores["lr_shares_all"])
    )
