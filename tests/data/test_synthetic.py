"""The synthetic dataset: deterministic, sized by its arguments, with a learnable label."""

import pytest

from ragrec.data import load_dataset
from ragrec.errors import ConfigError


def test_synthetic_is_deterministic_and_sized_by_arguments():
    a = load_dataset("synthetic", n_users=30, n_items=50, min_per_user=8, max_per_user=12, seed=3)
    b = load_dataset("synthetic", n_users=30, n_items=50, min_per_user=8, max_per_user=12, seed=3)
    assert a.n_users == 30 and a.n_items <= 50
    assert a.interactions.equals(b.interactions)
    sizes = a.interactions.groupby("user").size()
    assert sizes.between(8, 12).all()
    assert 0.3 < a.interactions["label"].mean() < 0.8
    assert a.rows_read == len(a.interactions) and not any(a.dropped.values())


def test_synthetic_bad_sizes_are_config_errors():
    with pytest.raises(ConfigError, match="min_per_user"):
        load_dataset("synthetic", n_items=5, min_per_user=10)
