"""The density sweep's parts: seeded graph subsamples and the sweep's settings."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ragrec.config.sweeps import DensitySweepConfig
from ragrec.errors import ConfigError
from ragrec.experiments.retrieval.density import subsample_interactions


def _interactions(n: int) -> pd.DataFrame:
    return pd.DataFrame({"user": np.arange(n) % 7, "item": np.arange(n) % 11, "timestamp": np.arange(n)})


def test_a_subsample_is_seeded_and_keeps_about_its_share_of_interactions():
    train = _interactions(5000)
    a, b = subsample_interactions(train, 0.3, seed=1), subsample_interactions(train, 0.3, seed=1)
    pd.testing.assert_frame_equal(a, b)
    assert abs(len(a) / len(train) - 0.3) < 0.03
    assert a.index.is_monotonic_increasing, "rows keep their order"
    assert not a.equals(subsample_interactions(train, 0.3, seed=2))


def test_the_full_fraction_is_the_training_graph_itself():
    train = _interactions(100)
    assert subsample_interactions(train, 1.0, seed=0) is train


@pytest.mark.parametrize(
    "kwargs",
    [{"fractions": (0.5,)}, {"fractions": (0.0, 1.0)}, {"ks": (-1,)}, {"n_samples": 1}, {"chunk": 0}],
    ids=repr,
)
def test_bad_density_settings_are_a_clear_error(kwargs):
    with pytest.raises(ConfigError):
        DensitySweepConfig(**kwargs)
