"""The prompt-number baselines and the item cold-start table (issue #28)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ragrec.data import Samples, UserSequences
from ragrec.errors import ConfigError
from ragrec.experiments.reporting.cold_start import bucket_labels, cold_start_table, item_buckets
from ragrec.experiments.reporting.prompt_numbers import (
    PromptNumberConfig,
    prompt_number_features,
    prompt_number_scores,
    vote_counts,
)
from ragrec.metrics import auc


def _events(users, items, ratings, times) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user": users,
            "item": items,
            "rating": np.asarray(ratings, np.float32),
            "timestamp": times,
            "label": (np.asarray(ratings) > 3).astype(np.int8),
        }
    )


def _samples(users, items, times, n_users, labels=None) -> Samples:
    n = len(users)
    frame = pd.DataFrame(
        {
            "user": users,
            "item": items,
            "label": np.zeros(n, int) if labels is None else labels,
            "timestamp": times,
            "hist_start": 0,
            "hist_end": 0,
        }
    )
    frame.index.name = "sample_id"
    return Samples(frame, UserSequences(_events([0], [0], [5], [0]), n_users), 10, "train")


# neighbour 1 liked item 7 at t=10, neighbour 2 disliked it at t=30, neighbour 3 liked it at t=50
TRAIN = _events([1, 2, 3, 4], [7, 7, 7, 8], [5, 2, 4, 5], [10, 30, 50, 5])


def test_vote_counts_are_the_raters_and_likes_among_the_polled_neighbours_before_the_sample():
    samples = _samples([0, 0, 0], [7, 7, 8], [40, 100, 100], 5)
    neighbours = np.array([[1, 2, 3], [1, 2, 3], [1, -1, 4]])
    raters, likes = vote_counts(TRAIN, samples, neighbours, vote_k=3, like_threshold=4)
    assert raters.tolist() == [2, 3, 1] and likes.tolist() == [1, 2, 1]  # user 4 liked item 8 at t=5
    # only the first vote_k neighbours are polled, as in the prompt
    raters, likes = vote_counts(TRAIN, samples, neighbours, vote_k=1, like_threshold=4)
    assert raters.tolist() == [1, 1, 0] and likes.tolist() == [1, 1, 0]


def test_a_later_interaction_never_changes_a_feature():
    samples = _samples([0, 0], [7, 8], [40, 40], 6)
    neighbours = np.array([[1, 2, 3, 5], [4, 5, 1, 2]])
    later = pd.concat([TRAIN, _events([5, 5, 1], [7, 8, 8], [1, 1, 1], [41, 90, 60])], ignore_index=True)
    votes_before = vote_counts(TRAIN, samples, neighbours, 4, 4)
    votes_after = vote_counts(later, samples, neighbours, 4, 4)
    assert [v.tolist() for v in votes_before] == [v.tolist() for v in votes_after]
    a = prompt_number_features(TRAIN, samples, 10, votes_before)
    b = prompt_number_features(later.iloc[: len(TRAIN)], samples, 10, votes_after)
    pd.testing.assert_frame_equal(a, b)


def test_features_state_the_item_share_and_the_vote_as_the_prompt_does():
    samples = _samples([0], [7], [100], 5)
    votes = vote_counts(TRAIN, samples, np.array([[1, 2, 3]]), 3, 4)
    x = prompt_number_features(TRAIN, samples, 10, votes)
    prior = TRAIN["label"].mean()
    share = (2 + prior) / 4  # 2 of 3 earlier raters liked it, one pseudo-rating at the prior
    assert x["item_share"].iloc[0] == pytest.approx(np.log(share / (1 - share)))
    assert x["vote_share"].iloc[0] == pytest.approx((2 + prior) / 4)
    assert x["vote_count"].iloc[0] == pytest.approx(np.log(4))
    assert list(prompt_number_features(TRAIN, samples, 10, None).columns) == ["item_share", "user_share"]


def _synthetic(informative: bool, n: int, rng) -> tuple[pd.DataFrame, np.ndarray]:
    vote = rng.uniform(0, 1, n)
    item = rng.normal(size=n)
    logit = 0.8 * item + (4.0 * (vote - 0.5) if informative else 0.0)
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-logit))).astype(int)
    x = pd.DataFrame(
        {
            "item_share": item,
            "user_share": rng.normal(size=n),
            "vote_share": vote,
            "vote_count": np.log1p(rng.integers(0, 20, n)),
        }
    )
    return x, y


@pytest.mark.parametrize("informative", [True, False])
def test_the_with_vote_model_gains_only_where_the_vote_is_informative(informative):
    rng = np.random.default_rng(0)
    (x_tr, y_tr), (x_te, y_te) = _synthetic(informative, 3000, rng), _synthetic(informative, 3000, rng)
    scores = prompt_number_scores(x_tr, y_tr, x_te, PromptNumberConfig())
    assert set(scores) == {"lr_shares", "lr_vote", "gbdt_shares", "gbdt_vote"}
    for model in ("lr", "gbdt"):
        gain = auc(y_te, scores[f"{model}_vote"]) - auc(y_te, scores[f"{model}_shares"])
        assert gain > 0.05 if informative else abs(gain) < 0.02


def test_cold_start_buckets_count_the_earlier_ratings():
    assert bucket_labels() == ["0", "1–5", "6–20", "> 20"]
    assert item_buckets(np.array([0, 1, 5, 6, 20, 21, 300])).tolist() == [0, 1, 1, 2, 2, 3, 3]
    with pytest.raises(ConfigError):
        bucket_labels((1, 5))


def test_cold_start_table_gives_n_and_an_auc_per_bucket():
    counts = np.array([0, 0, 0, 0, 3, 3, 3, 30])
    labels = np.array([0, 1, 0, 1, 0, 1, 1, 1])
    table = cold_start_table(
        labels, {"m": np.array([0.1, 0.9, 0.2, 0.8, 0.9, 0.1, 0.2, 0.5])}, counts, n_boot=50
    )
    assert table["n"].tolist() == [4, 3, 0, 1]
    assert table["auc"].iloc[0] == 1.0 and table["auc"].iloc[1] == 0.0
    assert table["auc"].iloc[2:].isna().all()  # one label only (or none): no AUC
