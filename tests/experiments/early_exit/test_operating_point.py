"""The operating-point rule on a hand-made sweep, and the points the real engine runs."""

from __future__ import annotations

import pandas as pd
import pytest

from ragrec.errors import ConfigError, DataError
from ragrec.experiments.early_exit.operating_point import ExitPoint, choose_operating_point, engine_points
from ragrec.model.criteria import StabilityExit, StabilitySpec

DIFFERENCE = StabilitySpec("difference", (0.0, 0.01, 0.05, 0.10))
RATIO = StabilitySpec("ratio", (0.0, 0.20, 0.50))


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
    points = engine_points(hand_made, (DIFFERENCE, RATIO), 0.005, extra=[(RATIO, 0.2), (RATIO, 0.5)])
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


def test_an_exit_point_is_its_familys_criterion_at_its_tau():
    point = ExitPoint(RATIO, 0.2, "operating_point")
    assert point.form == "ratio" and point.criterion() == StabilityExit(0.2, form="ratio")
    assert point.describe() == {"form": "ratio", "tau": 0.2, "first_head": "wait", "role": "operating_point"}


def test_an_exit_point_at_a_tau_its_family_does_not_take_is_a_clear_error():
    with pytest.raises(ConfigError, match="tau must be a number ≥ 0"):
        ExitPoint(DIFFERENCE, -0.1).criterion()
