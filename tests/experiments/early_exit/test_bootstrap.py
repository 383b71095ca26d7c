"""The sweep's fast bootstrap AUCs against scikit-learn on the very same resampled rows."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from ragrec.experiments.early_exit.bootstrap import percentile_interval, resample_counts, resampled_aucs
from ragrec.metrics import auc_ci


@pytest.fixture
def tied_scores():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 300)
    scores = np.round(rng.random(300) + 0.4 * labels, 1)  # coarse: many ties, which count ½
    return labels, scores


def test_resampled_aucs_equal_roc_auc_score_on_the_same_rows(tied_scores):
    labels, scores = tied_scores
    counts = resample_counts(len(labels), 5, seed=7)
    rows = np.random.default_rng(7).integers(0, len(labels), size=(5, len(labels)))  # the same draw
    np.testing.assert_array_equal(counts, np.stack([np.bincount(r, minlength=len(labels)) for r in rows]))
    expected = [roc_auc_score(labels[r], scores[r]) for r in rows]
    np.testing.assert_allclose(resampled_aucs(labels, scores, counts), expected, rtol=0, atol=1e-12)


def test_the_interval_is_metrics_auc_ci_on_the_same_resamples(tied_scores):
    labels, scores = tied_scores
    counts = resample_counts(len(labels), 200, seed=0)
    ours = percentile_interval(resampled_aucs(labels, scores, counts))
    np.testing.assert_allclose(ours, auc_ci(labels, scores, n_boot=200, seed=0), rtol=0, atol=1e-12)


def test_a_resample_with_one_class_has_no_auc():
    labels = np.array([0, 1])
    counts = np.array([[2, 0], [1, 1]])  # the first resample drew the negative twice
    aucs = resampled_aucs(labels, np.array([0.2, 0.9]), counts)
    assert np.isnan(aucs[0]) and aucs[1] == 1.0
