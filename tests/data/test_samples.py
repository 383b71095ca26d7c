"""CTR samples: histories strictly before each sample, reproducible stratified caps, clear errors."""

import numpy as np
import pytest

from ragrec.data import build_samples, cap_samples, split_interactions
from ragrec.errors import ConfigError, DataError


@pytest.mark.parametrize("scope", ["train", "prior"])
def test_every_history_event_precedes_its_sample(synthetic, scope):
    split = split_interactions(synthetic, "per_user")
    samples = build_samples(split, synthetic.n_users, min_history=5, history_len=6, history_scope=scope)
    train_pairs = set(map(tuple, split.train[["user", "item"]].to_numpy()))
    seq = samples.sequences
    for sid, row in samples.frame.iterrows():
        items, ratings, times = samples.history(sid)
        assert len(items) <= 6
        assert (times < row["timestamp"]).all()
        assert (seq.users[row["hist_start"] : row["hist_end"]] == row["user"]).all()
        if scope == "train":
            assert all((row["user"], it) in train_pairs for it in items)


def test_prior_scope_gives_training_samples_training_histories_only(synthetic):
    """Under the per-user split a training sample's earlier events all lie in the training
    period, so the "prior" scope the profiles use lets no validation or test rating reach
    training; it differs from "train" only on validation and test samples."""
    split = split_interactions(synthetic, "per_user")
    prior = build_samples(split, synthetic.n_users, history_scope="prior")
    train = build_samples(split, synthetic.n_users, history_scope="train")
    for part in ("train", "valid", "test"):
        a, b = prior.part(part), train.part(part)
        assert list(a.frame.index) == list(b.frame.index)
        same = [all(map(np.array_equal, a.history(s), b.history(s))) for s in a.frame.index]
        if part == "train":
            assert all(same)
        else:
            assert not all(same)  # later parts see the user's more recent ratings


def test_history_is_the_most_recent_earlier_events(synthetic):
    split = split_interactions(synthetic, "per_user")
    samples = build_samples(split, synthetic.n_users, history_len=4, history_scope="prior")
    sid = samples.frame.index[-1]
    row = samples.frame.loc[sid]
    user_events = split.interactions[
        (split.interactions["user"] == row["user"]) & (split.interactions["timestamp"] < row["timestamp"])
    ]
    expected = user_events.sort_values("timestamp")["item"].to_numpy()[-4:]
    assert list(samples.history(sid)[0]) == list(expected)


def test_min_history_counts_strictly_earlier_events(synthetic):
    split = split_interactions(synthetic, "per_user")
    samples = build_samples(split, synthetic.n_users, min_history=5, history_scope="prior")
    first = samples.frame.groupby("user")["timestamp"].min()
    inter = split.interactions
    for user, t in first.items():
        assert (inter[(inter["user"] == user)]["timestamp"] < t).sum() >= 5


def test_same_seed_gives_identical_samples_and_caps(synthetic):
    def draw():
        split = split_interactions(synthetic, "per_user")
        samples = build_samples(split, synthetic.n_users)
        return cap_samples(samples.part("test"), 40, seed=7).frame

    assert draw().equals(draw())


def test_cap_is_stratified_by_label(synthetic):
    samples = build_samples(split_interactions(synthetic), synthetic.n_users).part("train")
    capped = cap_samples(samples, 100, seed=0)
    assert len(capped) == 100
    assert abs(capped.frame["label"].mean() - samples.frame["label"].mean()) < 0.02
    assert cap_samples(samples, 100, seed=1).frame.index.tolist() != capped.frame.index.tolist()


def test_cap_larger_than_split_is_a_clear_error(synthetic):
    samples = build_samples(split_interactions(synthetic), synthetic.n_users).part("test")
    with pytest.raises(DataError, match=f"larger than the {len(samples)} samples"):
        cap_samples(samples, len(samples) + 1, seed=0)


def test_empty_split_part_is_a_clear_error(synthetic):
    with pytest.raises(DataError, match="no CTR samples"):
        build_samples(split_interactions(synthetic), synthetic.n_users, min_history=100)


def test_an_unknown_history_scope_is_a_config_error(synthetic):
    with pytest.raises(ConfigError, match="history_scope"):
        build_samples(split_interactions(synthetic), synthetic.n_users, history_scope="future")
