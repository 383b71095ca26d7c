"""Splits: no held-out interaction is a training one, chronological per user, clear errors."""

import numpy as np
import pytest

from ragrec.data import load_dataset, split_interactions
from ragrec.errors import ConfigError
from tests.data.writers import write_bx


@pytest.mark.parametrize("method", ["per_user", "global_time"])
def test_no_validation_or_test_interaction_is_a_training_interaction(synthetic, method):
    split = split_interactions(synthetic, method)
    train = set(map(tuple, split.train[["user", "item"]].to_numpy()))
    held_out = set(
        map(tuple, split.interactions[split.interactions["split"] != "train"][["user", "item"]].to_numpy())
    )
    assert train and held_out and not (train & held_out)
    if method == "global_time":
        assert split.train["timestamp"].max() < split.valid["timestamp"].min()
        assert split.valid["timestamp"].max() < split.test["timestamp"].min()


def test_per_user_split_is_chronological_eight_one_one(synthetic):
    split = split_interactions(synthetic, "per_user")
    for _, events in split.interactions.groupby("user"):
        codes = events["split"].cat.codes.to_numpy()
        assert (np.diff(codes) >= 0).all()  # train, then valid, then test in time order
        n = len(events)
        assert abs((codes == 0).sum() - 0.8 * n) <= 1
    assert set(split.test["user"]) <= set(split.train["user"])


def test_global_time_cut_needs_timestamps(tmp_path):
    write_bx(tmp_path / "bookcrossing")
    ds = load_dataset("bookcrossing", data_root=tmp_path)
    with pytest.raises(ConfigError, match="no timestamps"):
        split_interactions(ds, "global_time")


def test_bad_split_parameters_are_config_errors(synthetic):
    with pytest.raises(ConfigError, match="unknown split method"):
        split_interactions(synthetic, "random")
    with pytest.raises(ConfigError, match="ratios"):
        split_interactions(synthetic, ratios=(0.5, 0.5, 0.5))
