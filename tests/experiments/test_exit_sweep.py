"""The threshold sweep: replayed exits against the criterion, the table, the operating-point rule
and bad input. Saved-style predictions of a tiny random Llama; no timing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ragrec.errors import ConfigError, DataError
from ragrec.experiments.exit_sweep import (
    SWEEP_COLUMNS,
    ExitPoint,
    choose_operating_point,
    engine_points,
    saved_per_head,
    threshold_sweep,
)
from ragrec.metrics import auc
from ragrec.model.criteria import StabilityExit, simulate_exits

from . import HEADS

GRID = {"difference": (0.0, 0.02, 0.05, 0.2), "ratio": (0.0, 0.05, 0.2, 1.0)}


def test_every_row_is_the_criterion_replayed_on_the_saved_heads(exit_data):
    sweep = threshold_sweep(exit_data.labels, exit_data.per_head, HEADS, GRID, n_boot=20)
    assert [(r.form, r.tau) for r in sweep.itertuples()] == [(f, t) for f, grid in GRID.items() for t in grid]
    assert len(set(sweep["mean_exit_layer"].round(6))) >= 3  # the grid really moves the exits
    for row in sweep.itertuples():
        p, head = simulate_exits(exit_data.per_head, StabilityExit(row.tau, form=row.form), HEADS)
        assert row.auc == pytest.approx(auc(exit_data.labels, p), abs=1e-12)
        assert row.mean_exit_layer == pytest.approx(np.asarray(HEADS)[head].mean())
    # τ = 0 is full depth: the last head's AUC.
    assert sweep["auc"].iloc[0] == pytest.approx(auc(exit_data.labels, exit_data.per_head[:, -1]))
    assert (sweep["auc_full"] == sweep["auc"].iloc[0]).all()


def test_sweep_table_contents(exit_data):
    sweep = threshold_sweep(
        exit_data.labels, exit_data.per_head, HEADS, [0.0, 0.05, 1e9], num_layers=8, n_boot=20
    )
    assert list(sweep.columns[: len(SWEEP_COLUMNS)]) == list(SWEEP_COLUMNS)
    assert set(sweep["form"]) == {"difference", "ratio"} and len(sweep) == 6
    shares = sweep[[f"exit_share_{L}" for L in HEADS]].to_numpy()
    np.testing.assert_allclose(shares.sum(1), 1.0)
    np.testing.assert_allclose(sweep["layer_share"], sweep["mean_exit_layer"] / 8)
    np.testing.assert_allclose(sweep["compute_bound_speedup"], 8 / sweep["mean_exit_layer"])
    huge = sweep[sweep["tau"] == 1e9]
    assert (huge["mean_exit_layer"] == HEADS[1]).all()  # second head: the first waits
    assert (sweep["auc_ci_low"] <= sweep["auc"]).all() and (sweep["auc"] <= sweep["auc_ci_high"]).all()


# -- the operating-point rule -----------------------------------------------------------------


@pytest.fixture
def hand_made() -> pd.DataFrame:
    table = pd.DataFrame(
        [
            # form, tau, auc, logloss, mean_exit_layer
            ("difference", 0.00, 0.700, 0.60, 30.0),  # full depth
            ("difference", 0.01, 0.6990, 0.61, 22.0),
            ("difference", 0.05, 0.6951, 0.62, 15.0),  # within 0.005 (drop 0.0049), least compute → chosen
            ("difference", 0.10, 0.6940, 0.63, 10.0),  # drop 0.006: outside
            ("ratio", 0.00, 0.700, 0.60, 30.0),
            ("ratio", 0.20, 0.6980, 0.60, 15.0),  # as little compute, higher AUC → chosen overall
            ("ratio", 0.50, 0.6900, 0.65, 8.0),  # outside
        ],
        columns=["form", "tau", "auc", "logloss", "mean_exit_layer"],
    )
    table["auc_full"] = 0.700
    return table


@pytest.mark.parametrize(
    ("tolerance", "form", "chosen"),
    [
        # Two rows share the least compute (15 layers); the tie goes to the higher AUC.
        pytest.param(0.005, None, ("ratio", 0.20), id="tie-goes-to-higher-auc"),
        pytest.param(0.005, "difference", ("difference", 0.05), id="within-one-form"),
        # A tighter tolerance moves the point back toward full depth; zero keeps full depth.
        pytest.param(0.0015, "difference", ("difference", 0.01), id="tighter-tolerance"),
        pytest.param(0.0, None, ("difference", 0.0), id="zero-tolerance-is-full-depth"),
        # A looser one allows the most aggressive point.
        pytest.param(0.011, None, ("ratio", 0.50), id="looser-tolerance"),
    ],
)
def test_operating_point_rule_on_a_hand_made_table(hand_made, tolerance, form, chosen):
    best = choose_operating_point(hand_made, tolerance, form=form)
    assert (best["form"], best["tau"]) == chosen


def test_engine_points_are_the_operating_point_then_each_forms_best(hand_made):
    points = engine_points(hand_made, 0.005, extra=[("ratio", 0.2), ("ratio", 0.5)])
    assert [(p.form, p.tau, p.role) for p in points] == [
        ("ratio", 0.2, "operating_point"),
        ("difference", 0.05, "best_difference"),
        ("ratio", 0.5, "extra"),
    ]  # ratio's own best is the operating point, and a repeated extra point is dropped


def test_operating_point_needs_a_qualifying_row_and_the_columns(hand_made):
    with pytest.raises(DataError, match="τ = 0"):
        choose_operating_point(hand_made[hand_made["tau"] > 0.2], 0.005)
    with pytest.raises(ConfigError, match="auc_full"):
        choose_operating_point(hand_made.drop(columns="auc_full"))
    with pytest.raises(ConfigError, match="tolerance"):
        choose_operating_point(hand_made, -0.1)


# -- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n_labels", "layers", "taus", "kwargs", "error", "match"),
    [
        pytest.param(24, HEADS, [0.1, -0.01], {}, ConfigError, "τ", id="negative-tau"),
        pytest.param(24, HEADS, [0.1, True], {}, ConfigError, "τ", id="bool-tau"),
        pytest.param(
            24, HEADS, [0.1], {"forms": ("difference", "bogus")}, ConfigError, "form", id="unknown-form"
        ),
        pytest.param(24, HEADS, {"bogus": [0.1]}, {}, ConfigError, "form", id="unknown-form-in-mapping"),
        pytest.param(24, HEADS, {"difference": []}, {}, ConfigError, "empty", id="empty-grid"),
        pytest.param(
            24, (2, 4, 9), [0.1], {"num_layers": 6}, ConfigError, "within the model", id="head-past-the-model"
        ),
        pytest.param(24, (4, 2, 6), [0.1], {}, ConfigError, "increasing", id="heads-out-of-order"),
        pytest.param(24, (2, 4), [0.1], {}, ConfigError, "expected", id="fewer-heads-than-columns"),
        pytest.param(23, HEADS, [0.1], {}, DataError, "labels", id="labels-and-rows-differ"),
    ],
)
def test_bad_sweep_input_is_a_clear_error(exit_data, n_labels, layers, taus, kwargs, error, match):
    with pytest.raises(error, match=match):
        threshold_sweep(exit_data.labels[:n_labels], exit_data.per_head, layers, taus, **kwargs)


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


def test_an_exit_point_with_an_unknown_form_is_a_clear_error():
    with pytest.raises(ConfigError, match="form"):
        ExitPoint("bogus", 0.1).criterion()
