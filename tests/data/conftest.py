"""The synthetic dataset the split, sample and statistics tests share (read-only)."""

import pytest

from ragrec.data import load_dataset


@pytest.fixture(scope="module")
def synthetic():
    return load_dataset("synthetic", n_users=60, n_items=80, min_per_user=12, max_per_user=25, seed=1)
