"""The operating-point rule on cases whose answer is known: a head equal to full depth up to
tiny noise qualifies, a clearly worse one does not, and full depth always does."""

from __future__ import annotations

import numpy as np
import pytest

from ragrec.errors import ConfigError, DataError
from ragrec.experiments.early_exit.noninferiority import Candidate, non_inferior_point, selection_honesty

N = 3000


@pytest.fixture(scope="module")
def heads():
    """Labels, full-depth P(Yes), a cheap head equal to it plus tiny noise, a cheaper head that
    is clearly worse (half its signal replaced by noise)."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, N)
    full = 1 / (1 + np.exp(-(1.2 * (labels - 0.5) + rng.normal(0, 1, N))))
    close = np.clip(full + rng.normal(0, 1e-4, N), 0, 1)
    worse = 1 / (1 + np.exp(-(0.4 * (labels - 0.5) + rng.normal(0, 1, N))))
    return labels, full, close, worse


def _rule(labels, full, candidates, **kwargs):
    return non_inferior_point(labels, full, candidates, n_boot=300, seed=1, **kwargs)


def test_the_cheapest_head_within_the_margin_is_chosen_and_a_worse_cheaper_one_is_not(heads):
    labels, full, close, worse = heads
    candidates = [Candidate(full, 30.0), Candidate(close, 15.0), Candidate(worse, 5.0)]
    answer = _rule(labels, full, candidates, margin=0.005)
    assert answer.chosen == 1
    assert answer.qualifies.tolist() == [True, True, False]
    assert answer.upper[0] == 0.0  # full depth: a drop of 0 on every resample
    assert 0 < answer.upper[1] < 0.005 < answer.upper[2]
    assert answer.drop[2] > 0.05  # the worse head really is worse


def test_full_depth_qualifies_when_nothing_cheaper_does(heads):
    labels, full, _, worse = heads
    answer = _rule(labels, full, [Candidate(worse, 5.0), Candidate(full, 30.0)], margin=0.0)
    assert answer.chosen == 1


def test_the_upper_bound_is_one_sided_and_paired(heads):
    """A bound at the 95th percentile lies above the point estimate and below the two-sided 97.5th;
    paired, the close head's bound is far below what its AUC's own spread would give."""
    labels, full, close, _ = heads
    at_95 = _rule(labels, full, [Candidate(close, 15.0)], level=0.95)
    at_99 = _rule(labels, full, [Candidate(close, 15.0)], level=0.99)
    assert at_95.drop[0] <= at_95.upper[0] <= at_99.upper[0]
    assert at_95.upper[0] < 0.001  # unpaired, the AUC alone spreads by ~0.01 on 3,000 samples


@pytest.mark.parametrize(
    ("layers", "expected"),
    [
        pytest.param((15.0, 15.0), 0, id="equal-compute-goes-to-the-smaller-bound"),
        pytest.param((16.0, 15.0), 1, id="less-compute-wins-over-a-smaller-bound"),
    ],
)
def test_ties_go_to_the_smaller_upper_bound(heads, layers, expected):
    labels, full, close, _ = heads
    noisier = np.clip(full + np.random.default_rng(5).normal(0, 0.02, N), 0, 1)
    answer = _rule(labels, full, [Candidate(close, layers[0]), Candidate(noisier, layers[1])], margin=0.05)
    assert answer.upper[0] < answer.upper[1] and answer.chosen == expected


def test_identical_candidates_keep_the_first_in_grid_order(heads):
    labels, full, close, _ = heads
    answer = _rule(labels, full, [Candidate(close, 15.0), Candidate(close.copy(), 15.0)], margin=0.005)
    assert answer.chosen == 0


def test_every_candidate_shares_the_resamples_so_a_cache_changes_nothing(heads):
    labels, full, close, worse = heads
    candidates = [Candidate(full, 30.0), Candidate(close, 15.0), Candidate(worse, 5.0)]
    cache: dict = {}
    first = _rule(labels, full, candidates, cache=cache)
    again = _rule(labels, full, candidates[1:], cache=cache)
    np.testing.assert_array_equal(first.upper[1:], again.upper)
    np.testing.assert_array_equal(_rule(labels, full, candidates[1:]).upper, again.upper)


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        pytest.param(lambda f: [], ConfigError, "at least one candidate", id="no-candidates"),
        pytest.param(lambda f: [Candidate(f[:-1], 5.0)], ConfigError, "one value per sample", id="short"),
        pytest.param(lambda f: [Candidate(1 - f, 5.0)], DataError, "include full depth", id="none-qualify"),
    ],
)
def test_bad_rule_input_is_a_clear_error(heads, make, error, match):
    labels, full, _, _ = heads
    with pytest.raises(error, match=match):
        _rule(labels, full, make(full), margin=0.005)


def test_a_negative_margin_is_a_clear_error(heads):
    labels, full, _, _ = heads
    with pytest.raises(ConfigError, match="margin"):
        _rule(labels, full, [Candidate(full, 30.0)], margin=-0.1)


def test_honesty_on_held_out_halves_when_the_answer_is_known(heads):
    """The close head is chosen on every split and never loses the margin on the other half; the
    clearly worse head is never chosen."""
    labels, full, close, worse = heads
    candidates = [Candidate(full, 30.0), Candidate(close, 15.0), Candidate(worse, 5.0)]
    honesty = selection_honesty(labels, full, candidates, n_splits=5, n_boot=100, margin=0.005)
    assert honesty.n_splits == 5 and honesty.mean_layer == 15.0
    assert honesty.share_over_margin == 0.0 and abs(honesty.held_out_drop) < 0.001


def test_honesty_counts_the_splits_whose_choice_loses_more_than_the_margin(heads):
    """With a margin wider than the worse head's drop the rule takes it on every split, and on
    held-out data it loses more than a margin below that drop every time."""
    labels, full, _, worse = heads
    candidates = [Candidate(full, 30.0), Candidate(worse, 5.0)]
    honesty = selection_honesty(labels, full, candidates, n_splits=4, n_boot=100, margin=0.5)
    assert honesty.mean_layer == 5.0 and honesty.held_out_drop > 0.05
    strict = selection_honesty(labels, full, candidates, n_splits=4, n_boot=100, margin=0.01)
    assert strict.mean_layer == 30.0 and strict.share_over_margin == 0.0
