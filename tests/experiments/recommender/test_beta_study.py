"""The β study's bookkeeping: prompts seen at a step and the learning-curve rows."""

from __future__ import annotations

import pytest

from ragrec.experiments.recommender.beta_study import CURVE_COLUMNS, curve_rows, prompts_seen
from ragrec.experiments.recommender.scoring import TrainedModel
from ragrec.model.checkpoints import TrainResult


@pytest.mark.parametrize(
    ("step", "seen"),
    [(1, 4), (2, 8), (3, 10), (4, 14), (6, 20)],
    ids=repr,
)
def test_prompts_seen_counts_the_partial_last_batch_of_every_epoch(step, seen):
    # 10 prompts in batches of 4: three steps an epoch (4 + 4 + 2)
    assert prompts_seen(step, 10, 4, 3) == seen


def test_curve_rows_give_one_row_per_record_and_head_and_skip_a_readout_refit():
    result = TrainResult(3, 1.0, [0.7, 0.6, 0.5], [], None)
    model = TrainedModel(None, None, result, 0.1, seed=2)
    records = [
        {"step": 2, "5": 0.55, "10": 0.6},
        {"step": 3, "5": 0.57, "10": 0.62},
        {"step": 3, "readouts": "fitted", "5": 0.9, "10": 0.9},
    ]
    rows = curve_rows(records, model, "study_beta0.1_seed2", 10, 4, 50)
    assert list(rows.columns) == list(CURVE_COLUMNS) and len(rows) == 4
    assert set(rows["seed"]) == {2} and set(rows["n"]) == {50} and set(rows["beta"]) == {0.1}
    assert rows.set_index(["step", "head_layer"]).loc[(3, 10), "prompts_seen"] == 10
    assert rows["auc"].max() == pytest.approx(0.62), "the refit's record is no step of the schedule"
