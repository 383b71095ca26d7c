"""Exit criteria decide as the paper's rule says, and replay on saved predictions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ragrec.errors import ConfigError
from ragrec.model.criteria import FixedHead, NeverExit, StabilityExit, simulate_exits


def reference_exit_heads(p: np.ndarray, tau: float, form: str) -> list[int]:
    """The paper's rule, row by row: stop at the first head h ≥ 1 whose change from head h − 1
    is below τ (in P(Yes), or in log odds for the ratio form); the last head always stops."""

    def change(a: float, b: float) -> float:
        if form == "difference":
            return abs(a - b)
        return abs(math.log(a / (1 - a)) - math.log(b / (1 - b)))

    heads = []
    for row in p:
        stop = next((h for h in range(1, len(row)) if change(row[h], row[h - 1]) < tau), len(row) - 1)
        heads.append(stop)
    return heads


@pytest.mark.parametrize("form", ["difference", "ratio"])
@pytest.mark.parametrize("tau", [0.0, 0.03, 0.1, 0.3, 1.0])
def test_simulate_exits_follows_the_papers_rule(form, tau):
    p = np.random.default_rng(7).uniform(0.01, 0.99, (200, 6))
    p_final, exit_head = simulate_exits(p, StabilityExit(tau, form=form))
    expected = reference_exit_heads(p, tau, form)
    np.testing.assert_array_equal(exit_head, expected)
    np.testing.assert_array_equal(p_final, p[np.arange(len(p)), expected])


def test_criteria_by_hand():
    prev = np.array([0.50, 0.50, 0.90, 0.999999])
    cur = np.array([0.52, 0.70, 0.91, 1.0])
    diff = StabilityExit(0.05)
    np.testing.assert_array_equal(diff.decide(prev, cur, 1, False), [True, False, True, True])
    np.testing.assert_array_equal(diff.decide(None, cur, 0, False), [False] * 4)  # first head waits
    np.testing.assert_array_equal(diff.decide(prev, cur, 3, True), [True] * 4)  # last head always exits
    confident = StabilityExit(0.1, first_head="confident")  # exit if max(P, 1-P) > 0.9
    np.testing.assert_array_equal(confident.decide(None, cur, 0, False), [False, False, True, True])
    # Ratio form: log-odds change; 0.5 -> 0.52 is 0.080 nats, 0.9 -> 0.91 is 0.117 nats.
    ratio = StabilityExit(0.1, form="ratio")
    np.testing.assert_array_equal(ratio.decide(prev, cur, 1, False)[:3], [True, False, False])
    # Torch in, torch out.
    out = diff.decide(torch.tensor(prev), torch.tensor(cur), 1, False)
    assert out.dtype == torch.bool and out.tolist() == [True, False, True, True]
    assert NeverExit().decide(prev, cur, 2, False).tolist() == [False] * 4
    assert FixedHead(10).decide(prev, cur, 1, False, layer=10).all()


def test_nan_after_a_rows_exit_is_allowed():
    p = np.array([[0.5, 0.5, np.nan], [0.5, 0.9, 0.8]])
    p_final, exit_head = simulate_exits(p, StabilityExit(0.05))
    np.testing.assert_array_equal(exit_head, [1, 2])
    np.testing.assert_array_equal(p_final, [0.5, 0.8])


# -- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: StabilityExit(-0.1), "tau must be a number ≥ 0"),
        (lambda: StabilityExit(float("nan")), "tau"),
        (lambda: StabilityExit("0.1"), "tau"),
        (lambda: StabilityExit(0.1, form="odds"), "form"),
        (lambda: StabilityExit(0.1, first_head="never"), "first_head"),
        (lambda: StabilityExit(0.1, form="ratio", first_head="confident"), "form='difference'"),
        (lambda: FixedHead(0), "layer number ≥ 1"),
    ],
    ids=[
        "negative-tau",
        "nan-tau",
        "string-tau",
        "unknown-form",
        "unknown-first-head",
        "confident-ratio",
        "layer-0",
    ],
)
def test_bad_criteria(make, message):
    with pytest.raises(ConfigError, match=message):
        make()


@pytest.mark.parametrize(
    "per_head_p, message",
    [
        ([[0.5, 1.5]], r"per_head_p\[0, 1\] = 1\.5 is not a probability.*\[0, 1\]"),
        ([[0.2, 0.3], [-0.1, 0.4]], r"per_head_p\[1, 0\] = -0\.1 is not a probability"),
        ([[0.2, np.inf]], r"per_head_p\[0, 1\] = inf is not a probability"),
        ([[0.5, np.nan]], r"per_head_p is NaN at head 1 in 1 rows that have not exited yet \(first: row 0\)"),
        ([[0.5, 0.5], [np.nan, 0.5]], r"NaN at head 0 .*first: row 1"),
        ([0.5, 0.5], r"\[N, n_heads\]"),
        (np.zeros((3, 0)), r"n_heads ≥ 1"),
    ],
    ids=[
        "above-one",
        "negative",
        "infinite",
        "nan-before-exit",
        "nan-at-first-head",
        "one-dimensional",
        "no-heads",
    ],
)
def test_simulate_exits_refuses_what_is_not_a_probability(per_head_p, message):
    with pytest.raises(ConfigError, match=message):
        simulate_exits(np.asarray(per_head_p, dtype=float), NeverExit())


@pytest.mark.parametrize(
    "criterion, head_layers, message",
    [
        (FixedHead(3), (2, 4), r"FixedHead\(layer=3\) has no exit head"),
        (NeverExit(), (2, 4, 6), "head_layers has 3 entries but per_head_p has 2 heads"),
        ("stop early", None, "unknown exit criterion"),
    ],
    ids=["fixed-head-without-a-head", "layers-do-not-match", "not-a-criterion"],
)
def test_simulate_exits_refuses_a_criterion_that_does_not_fit(criterion, head_layers, message):
    with pytest.raises(ConfigError, match=message):
        simulate_exits(np.full((2, 2), 0.5), criterion, head_layers)
