"""The threshold sweep: replayed exits against the criterion, the table and bad input. Saved-style
predictions of a tiny random Llama; no timing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ragrec.errors import ConfigError, DataError
from ragrec.experiments.early_exit.sweep import SWEEP_COLUMNS, saved_per_head, threshold_sweep
from ragrec.metrics import auc
from ragrec.model.criteria import FORMS, StabilityExit, StabilitySpec, simulate_exits

from .. import HEADS

CRITERIA = (
    StabilitySpec("difference", (0.0, 0.02, 0.05, 0.2)),
    StabilitySpec("ratio", (0.0, 0.05, 0.2, 1.0)),
)


def test_every_row_is_the_criterion_replayed_on_the_saved_heads(exit_data):
    sweep = threshold_sweep(exit_data.labels, exit_data.per_head, HEADS, CRITERIA, n_boot=20)
    assert [(r.form, r.tau) for r in sweep.itertuples()] == [(f.label, t) for f in CRITERIA for t in f.taus]
    assert len(set(sweep["mean_exit_layer"].round(6))) >= 3  # the grid really moves the exits
    for row in sweep.itertuples():
        p, head = simulate_exits(exit_data.per_head, StabilityExit(row.tau, form=row.form), HEADS)
        assert row.auc == pytest.approx(auc(exit_data.labels, p), abs=1e-12)
        assert row.mean_exit_layer == pytest.approx(np.asarray(HEADS)[head].mean())
    # τ = 0 is full depth: the last head's AUC.
    assert sweep["auc"].iloc[0] == pytest.approx(auc(exit_data.labels, exit_data.per_head[:, -1]))
    assert (sweep["auc_full"] == sweep["auc"].iloc[0]).all()


def test_sweep_table_contents(exit_data):
    criteria = [StabilitySpec(form, (0.0, 0.05, 1e9)) for form in FORMS]
    sweep = threshold_sweep(exit_data.labels, exit_data.per_head, HEADS, criteria, num_layers=8, n_boot=20)
    assert list(sweep.columns[: len(SWEEP_COLUMNS)]) == list(SWEEP_COLUMNS)
    assert set(sweep["form"]) == {"difference", "ratio"} and len(sweep) == 6
    shares = sweep[[f"exit_share_{L}" for L in HEADS]].to_numpy()
    np.testing.assert_allclose(shares.sum(1), 1.0)
    np.testing.assert_allclose(sweep["layer_share"], sweep["mean_exit_layer"] / 8)
    np.testing.assert_allclose(sweep["compute_bound_speedup"], 8 / sweep["mean_exit_layer"])
    huge = sweep[sweep["tau"] == 1e9]
    assert (huge["mean_exit_layer"] == HEADS[1]).all()  # second head: the first waits
    assert (sweep["auc_ci_low"] <= sweep["auc"]).all() and (sweep["auc"] <= sweep["auc_ci_high"]).all()


# -- bad input --------------------------------------------------------------------------------


DIFFERENCE = StabilitySpec("difference", (0.1,))


@pytest.mark.parametrize(
    ("n_labels", "layers", "criteria", "kwargs", "error", "match"),
    [
        pytest.param(
            24, HEADS, [0.1], {}, ConfigError, "0.1 is not a criterion family", id="a-grid-not-a-family"
        ),
        pytest.param(24, HEADS, [], {}, ConfigError, "non-empty", id="no-families"),
        pytest.param(
            24, HEADS, [DIFFERENCE, DIFFERENCE], {}, ConfigError, "distinct labels", id="one-label-twice"
        ),
        pytest.param(
            24,
            (2, 4, 9),
            [DIFFERENCE],
            {"num_layers": 6},
            ConfigError,
            "within the model",
            id="head-past-the-model",
        ),
        pytest.param(24, (4, 2, 6), [DIFFERENCE], {}, ConfigError, "increasing", id="heads-out-of-order"),
        pytest.param(24, (2, 4), [DIFFERENCE], {}, ConfigError, "expected", id="fewer-heads-than-columns"),
        pytest.param(23, HEADS, [DIFFERENCE], {}, DataError, "labels", id="labels-and-rows-differ"),
    ],
)
def test_bad_sweep_input_is_a_clear_error(exit_data, n_labels, layers, criteria, kwargs, error, match):
    with pytest.raises(error, match=match):
        threshold_sweep(exit_data.labels[:n_labels], exit_data.per_head, layers, criteria, **kwargs)


@pytest.mark.parametrize(
    ("layers", "sample_ids", "match"),
    [
        pytest.param(HEADS, None, "p_head_6", id="missing-head"),
        pytest.param((2, 4), [0, 7], "not in the saved", id="missing-sample"),
    ],
)
def test_bad_saved_predictions_are_a_clear_error(layers, sample_ids, match):
    frame = pd.DataFrame(
        {"sample_id": [0, 1], "label": [0, 1], "p_head_2": [0.1, 0.2], "p_head_4": [0.3, 0.4]}
    )
    with pytest.raises(DataError, match=match):
        saved_per_head(frame, layers, sample_ids)
