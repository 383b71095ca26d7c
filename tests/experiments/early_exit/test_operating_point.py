"""The operating point chosen on synthetic per-head predictions whose answer is known, the points
the real engine runs, and validation choosing while test reports."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from ragrec.config import ExitBenchmarkConfig
from ragrec.errors import ConfigError
from ragrec.experiments.early_exit.operating_point import (
    Choices,
    ExitPoint,
    choose_on_validation,
    engine_points,
    rule_on_validation,
)
from ragrec.experiments.early_exit.sweep import threshold_sweep
from ragrec.model.criteria import (
    ConfidenceSpec,
    StabilityExit,
    StabilitySpec,
    StaticSpec,
    bind_heads,
)

LAYERS = (2, 4, 6)
DIFFERENCE = StabilitySpec("difference", (0.0, 0.01, 0.05))
RATIO = StabilitySpec("ratio", (0.0, 0.2))
CONFIDENCE = ConfidenceSpec((0.5, 0.3))
FAMILIES = (DIFFERENCE, RATIO, StaticSpec(), CONFIDENCE)
CONFIG = ExitBenchmarkConfig(criteria=FAMILIES, rule_n_boot=300, n_boot=50)


def _split(seed: int, n: int = 2000) -> pd.DataFrame:
    """Saved-style predictions: head 6 is full depth, head 4 equals it up to tiny noise, head 2
    has a third of its signal."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    full = 1 / (1 + np.exp(-(1.5 * (labels - 0.5) + rng.normal(0, 1, n))))
    close = np.clip(full + rng.normal(0, 1e-4, n), 0, 1)
    weak = 1 / (1 + np.exp(-(0.5 * (labels - 0.5) + rng.normal(0, 1, n))))
    return pd.DataFrame(
        {"sample_id": np.arange(n), "label": labels, "p_head_2": weak, "p_head_4": close, "p_head_6": full}
    )


@pytest.fixture(scope="module")
def chosen():
    heads = SimpleNamespace(head_layers=LAYERS, num_layers=6)
    return choose_on_validation(_split(1), _split(0), heads, CONFIG)


def test_the_static_exit_at_the_head_equal_to_full_depth_is_the_operating_point(chosen):
    sweep, best, points = chosen
    assert (best["form"], best["tau"], best["split"]) == ("static", 4.0, "test")
    assert points[0] == ExitPoint(StaticSpec((2, 4, 6)), 4.0, "operating_point")
    valid = sweep[sweep["split"] == "valid"]
    static = valid[valid["form"] == "static"].set_index("tau")
    assert static["non_inferior"].tolist() == [False, True, True]  # head 2 loses, heads 4 and 6 keep
    assert static.loc[6.0, "drop_upper"] == 0.0 and static.loc[4.0, "drop_upper"] < CONFIG.margin


def test_the_test_rows_of_the_choice_carry_the_paired_interval_of_their_drop(chosen):
    sweep, best, _ = chosen
    assert best["drop_ci_low"] <= best["auc_drop"] <= best["drop_ci_high"]
    flagged = sweep[sweep["operating_point"]]
    assert sorted(flagged["split"]) == ["test", "valid"] and flagged["form"].nunique() == 1


def test_each_family_and_the_papers_rule_get_their_own_choice(chosen):
    sweep, _, points = chosen
    valid = sweep[sweep["split"] == "valid"]
    assert sorted(valid.loc[valid["family_choice"], "form"]) == sorted(f.label for f in FAMILIES)
    paper = valid[valid["paper_rule_choice"]]
    assert len(paper) == 1 and paper["form"].iloc[0] in ("difference", "ratio")
    assert [p.role for p in points][0] == "operating_point"
    assert {p.role for p in points[1:]} <= {f"best_{f.label}" for f in FAMILIES}
    assert len({(p.form, p.tau) for p in points}) == len(points)  # the static family's is the operating point


def test_the_rule_on_validation_reproduces_from_the_validation_predictions_alone():
    valid = _split(0)
    families = bind_heads(FAMILIES, LAYERS)
    per_head = valid[[f"p_head_{layer}" for layer in LAYERS]].to_numpy()
    sweep = threshold_sweep(valid["label"], per_head, LAYERS, families, n_boot=20)
    sweep, choices = rule_on_validation(sweep, valid["label"].to_numpy(), per_head, LAYERS, families, CONFIG)
    assert (sweep["form"].iloc[choices.operating_point], sweep["tau"].iloc[choices.operating_point]) == (
        "static",
        4.0,
    )
    assert sweep["drop_upper"].iloc[0] == 0.0  # difference τ = 0 is full depth


def test_engine_points_drop_repeats_and_keep_the_order():
    sweep = pd.DataFrame({"form": ["difference", "difference", "ratio"], "tau": [0.0, 0.05, 0.2]})
    choices = Choices(1, {"difference": 1, "ratio": 2}, 1)
    points = engine_points(sweep, choices, (DIFFERENCE, RATIO), extra=[(RATIO, 0.2), (RATIO, 0.0)])
    assert [(p.form, p.tau, p.role) for p in points] == [
        ("difference", 0.05, "operating_point"),
        ("ratio", 0.2, "best_ratio"),
        ("ratio", 0.0, "extra"),
    ]


def test_an_exit_point_is_its_familys_criterion_at_its_tau():
    point = ExitPoint(RATIO, 0.2, "operating_point")
    assert point.form == "ratio" and point.criterion() == StabilityExit(0.2, form="ratio")
    assert point.describe() == {"form": "ratio", "tau": 0.2, "first_head": "wait", "role": "operating_point"}


def test_an_exit_point_at_a_tau_its_family_does_not_take_is_a_clear_error():
    with pytest.raises(ConfigError, match="tau must be a number ≥ 0"):
        ExitPoint(DIFFERENCE, -0.1).criterion()
    with pytest.raises(ConfigError, match="head layer"):
        ExitPoint(StaticSpec(), 4.5).criterion()
