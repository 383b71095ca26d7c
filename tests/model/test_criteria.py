"""Exit criteria decide as the paper's rule says, and replay on saved predictions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ragrec.errors import ConfigError
from ragrec.model.criteria import (
    ConfidenceExit,
    ConfidenceSpec,
    ExitCriterion,
    FixedHead,
    HeadState,
    NeverExit,
    StabilityExit,
    StabilitySpec,
    StaticSpec,
    bind_heads,
    check_families,
    exit_mask,
    simulate_exits,
)


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


PREV = np.array([0.50, 0.50, 0.90, 0.999999])
CUR = np.array([0.52, 0.70, 0.91, 1.0])


@pytest.mark.parametrize(
    ("criterion", "head", "expected"),
    [
        pytest.param(StabilityExit(0.05), HeadState(CUR, PREV, 1, 4), [1, 0, 1, 1], id="difference"),
        pytest.param(StabilityExit(0.05), HeadState(CUR, None, 0, 2), [0, 0, 0, 0], id="first-head-waits"),
        # exit at the first head if max(P, 1 − P) > 0.9
        pytest.param(
            StabilityExit(0.1, first_head="confident"),
            HeadState(CUR, None, 0, 2),
            [0, 0, 1, 1],
            id="confident-first-head",
        ),
        # log-odds change: 0.5 → 0.52 is 0.080 nats, 0.5 → 0.7 0.847, 0.9 → 0.91 0.117
        pytest.param(
            StabilityExit(0.1, form="ratio"), HeadState(CUR[:3], PREV[:3], 1, 4), [1, 0, 0], id="ratio"
        ),
        pytest.param(NeverExit(), HeadState(CUR, PREV, 2, 6), [0, 0, 0, 0], id="never"),
        pytest.param(FixedHead(10), HeadState(CUR, PREV, 1, 10), [1, 1, 1, 1], id="fixed-head-at-its-layer"),
        pytest.param(FixedHead(10), HeadState(CUR, PREV, 2, 15), [0, 0, 0, 0], id="fixed-head-elsewhere"),
        # |P − 0.5| > τ at any head, the first too: CUR is 0.52, 0.7, 0.91, 0.05
        pytest.param(
            ConfidenceExit(0.3), HeadState(CUR, None, 0, 2), [0, 0, 1, 1], id="confidence-first-head"
        ),
        pytest.param(ConfidenceExit(0.1), HeadState(CUR, PREV, 1, 4), [0, 1, 1, 1], id="confidence"),
        pytest.param(ConfidenceExit(0.5), HeadState(CUR, PREV, 1, 4), [0, 0, 0, 0], id="confidence-never"),
    ],
)
def test_each_criterion_decides_by_hand(criterion, head, expected):
    mask = criterion.decide(head)
    assert mask.dtype == np.bool_ and mask.tolist() == [bool(x) for x in expected]


@pytest.mark.parametrize("criterion", [StabilityExit(0.0), NeverExit(), FixedHead(2)], ids=repr)
def test_the_last_head_exits_every_row_whatever_the_criterion_says(criterion):
    assert exit_mask(criterion, HeadState(CUR, PREV, 3, 8), is_last=True).all()


def test_every_criterion_implements_the_protocol():
    for criterion in (StabilityExit(0.1), StabilityExit(0.1, form="ratio"), NeverExit(), FixedHead(2)):
        assert isinstance(criterion, ExitCriterion)


def test_nan_after_a_rows_exit_is_allowed():
    p = np.array([[0.5, 0.5, np.nan], [0.5, 0.9, 0.8]])
    p_final, exit_head = simulate_exits(p, StabilityExit(0.05))
    np.testing.assert_array_equal(exit_head, [1, 2])
    np.testing.assert_array_equal(p_final, [0.5, 0.8])


SPEC = StabilitySpec("difference", (0.0, 0.05))


def test_a_stability_spec_gives_the_rule_at_each_tau_under_its_form():
    spec = StabilitySpec("ratio", [0.0, 0.3])
    assert spec.taus == (0.0, 0.3) and spec.label == "ratio" and spec.first_head == "wait"
    assert [spec.criterion(t) for t in spec.taus] == [
        StabilityExit(0.0, "ratio"),
        StabilityExit(0.3, "ratio"),
    ]


def test_a_static_spec_is_a_fixed_head_at_each_head_of_the_model():
    bound = bind_heads([SPEC, StaticSpec()], (5, 10, 30))
    assert bound[0] is SPEC  # a family that fits any heads is kept as it is
    assert bound[1].taus == (5.0, 10.0, 30.0) and bound[1].label == "static"
    assert [bound[1].criterion(t) for t in bound[1].taus] == [FixedHead(5), FixedHead(10), FixedHead(30)]
    assert StaticSpec((2, 4)).for_heads((5, 10)).taus == (2.0, 4.0)  # its own layers win


def test_a_confidence_spec_gives_the_rule_at_each_tau():
    spec = ConfidenceSpec((0.5, 0.2))
    assert spec.label == "confidence" and spec.first_head == "confident"
    assert [spec.criterion(t) for t in spec.taus] == [ConfidenceExit(0.5), ConfidenceExit(0.2)]


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
        (lambda: StabilitySpec("difference", (0.0, -0.1)), "τ grid of 'difference'"),
        (lambda: StabilitySpec("ratio", ()), "τ grid of 'ratio' is empty"),
        (lambda: StabilitySpec("odds", (0.0,)), "form must be one of"),
        (lambda: StabilitySpec("ratio", (0.0,), first_head="confident"), "form='difference'"),
        (lambda: check_families([]), "non-empty sequence of criterion families"),
        (lambda: check_families([StabilityExit(0.1)]), "is not a criterion family: it needs label"),
        (lambda: check_families([SPEC, SPEC]), "distinct labels"),
        (lambda: ConfidenceExit(-0.1), "tau must be a number ≥ 0"),
        (lambda: ConfidenceSpec(()), "τ grid of 'confidence' is empty"),
        (lambda: StaticSpec().criterion(4.5), "head layer"),
    ],
    ids=[
        "negative-tau",
        "nan-tau",
        "string-tau",
        "unknown-form",
        "unknown-first-head",
        "confident-ratio",
        "layer-0",
        "spec-with-a-negative-tau",
        "spec-with-an-empty-grid",
        "spec-of-an-unknown-form",
        "spec-confident-ratio",
        "no-families",
        "a-criterion-is-not-a-family",
        "two-families-with-one-label",
        "confidence-negative-tau",
        "confidence-empty-grid",
        "static-between-layers",
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


class ByProbability:
    """Returns P itself instead of a mask: a mistake the replay must name."""

    def decide(self, head: HeadState) -> np.ndarray:
        return head.p


@pytest.mark.parametrize(
    "criterion, head_layers, message",
    [
        (FixedHead(3), (2, 4), r"FixedHead\(layer=3\) has no exit head"),
        (NeverExit(), (2, 4, 6), "head_layers has 3 entries but per_head_p has 2 heads"),
        ("stop early", None, r"'stop early' is not an exit criterion: it has no decide\(head\) method"),
        (ByProbability(), None, r"ByProbability.decide returned float64 of shape \(2,\); .* bool mask"),
    ],
    ids=["fixed-head-without-a-head", "layers-do-not-match", "not-a-criterion", "mask-not-bool"],
)
def test_simulate_exits_refuses_a_criterion_that_does_not_fit(criterion, head_layers, message):
    with pytest.raises(ConfigError, match=message):
        simulate_exits(np.full((2, 2), 0.5), criterion, head_layers)
