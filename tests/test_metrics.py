"""Metrics match scikit-learn, intervals cover the estimate, paired differences are signed."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from ragrec.errors import DataError
from ragrec.metrics import auc, auc_ci, head_table, logloss, paired_auc_difference


@pytest.fixture
def scored():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    good = np.clip(0.5 + 0.3 * (y - 0.5) + 0.2 * rng.normal(size=400), 0.01, 0.99)
    noise = rng.uniform(size=400)
    return y, good, noise


def test_auc_and_logloss_match_sklearn(scored):
    y, good, _ = scored
    assert auc(y, good) == pytest.approx(roc_auc_score(y, good))
    assert logloss(y, np.full(len(y), 0.5)) == pytest.approx(np.log(2))


def test_bootstrap_interval_contains_the_estimate_and_is_reproducible(scored):
    y, good, _ = scored
    lo, hi = auc_ci(y, good, n_boot=200, seed=1)
    assert lo < auc(y, good) < hi and hi - lo < 0.15
    assert auc_ci(y, good, n_boot=200, seed=1) == (lo, hi)


def test_paired_difference_detects_the_better_scorer(scored):
    y, good, noise = scored
    d = paired_auc_difference(y, good, noise, n_boot=200)
    assert d.diff > 0 and d.ci_low > 0 and d.p_a_not_better < 0.05
    assert paired_auc_difference(y, noise, good, n_boot=200).diff == pytest.approx(-d.diff)


def test_head_table_has_one_row_per_head(scored):
    y, good, noise = scored
    table = head_table(y, np.stack([noise, good], axis=1), [5, 30], context="gcn", n_boot=50)
    assert list(table["head_layer"]) == [5, 30]
    assert table.loc[1, "auc"] > table.loc[0, "auc"]
    assert set(table.columns) >= {"context", "head_layer", "auc", "auc_ci_low", "auc_ci_high", "logloss"}


def test_one_class_or_mismatched_inputs_are_clear_errors():
    with pytest.raises(DataError, match="one class"):
        auc([1, 1, 1], [0.2, 0.3, 0.4])
    with pytest.raises(DataError, match="3 labels but 2 scores"):
        auc([0, 1, 1], [0.2, 0.3])
    with pytest.raises(DataError, match="shape"):
        head_table([0, 1], np.zeros((2, 3)), [5, 30], context="none")


def test_vectorised_bootstrap_aucs_equal_sklearn_on_each_resample():
    from ragrec.metrics import _resampled_aucs

    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 60)
    s = np.round(rng.uniform(size=60), 1)  # many ties
    rows = rng.integers(0, 60, size=(25, 60))
    fast = _resampled_aucs(y, [s], rows)[:, 0]
    slow = [roc_auc_score(y[r], s[r]) for r in rows if 0 < y[r].sum() < 60]
    np.testing.assert_allclose(fast, slow, atol=1e-12)
