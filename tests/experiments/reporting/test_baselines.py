"""Baselines: each predictor on hand-made samples, the table, and the run on the smoke profile."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ragrec.config import get_profile
from ragrec.data import Samples, UserSequences
from ragrec.errors import ConfigError, DataError
from ragrec.experiments.reporting.baseline_table import llm_predictions, run_baselines, score_table
from ragrec.experiments.reporting.baselines import (
    BASELINES,
    BaselineConfig,
    item_attribute_tokens,
    item_likes_before,
    lightgcn_scores,
    logistic_regression_before_scores,
    logistic_regression_scores,
    popularity_scores,
    prompt_share_scores,
    recent_mean_rating,
)


def _samples(rows: list[dict], events: pd.DataFrame, n_users: int) -> Samples:
    frame = pd.DataFrame(rows)
    frame.index.name = "sample_id"
    return Samples(frame, UserSequences(events, n_users), history_len=10, history_scope="train")


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


def test_popularity_counts_only_training_interactions_strictly_before_the_sample():
    train = _events([0, 1, 2, 3], [7, 7, 7, 5], [5, 5, 5, 5], [10, 20, 30, 5])
    samples = _samples(
        [
            {"user": 0, "item": 7, "timestamp": 20},
            {"user": 0, "item": 5, "timestamp": 100},
            {"user": 0, "item": 9, "timestamp": 100},
        ],
        train,
        4,
    )
    assert popularity_scores(train, samples, 10).tolist() == [1.0, 1.0, 0.0]
    assert popularity_scores(train, samples, 10, has_timestamps=False).tolist() == [3.0, 1.0, 0.0]


def test_item_likes_before_counts_the_earlier_likes_the_prompt_states():
    train = _events([0, 1, 2, 3], [7, 7, 7, 5], [5, 2, 4, 1], [10, 20, 30, 5])
    samples = _samples(
        [
            {"user": 0, "item": 7, "timestamp": 25},
            {"user": 0, "item": 5, "timestamp": 100},
            {"user": 0, "item": 9, "timestamp": 100},
        ],
        train,
        4,
    )
    n, likes = item_likes_before(train, samples, 10)
    assert n.tolist() == [2, 1, 0] and likes.tolist() == [1, 0, 0]


def test_prompt_shares_rank_items_by_their_earlier_likes():
    # Item 1 was liked by every earlier rater, item 2 by none; the labels follow the items.
    users = np.arange(40)
    train = _events(users, users % 2 + 1, np.where(users % 2 == 0, 5, 1), users)
    empty = {"hist_start": 0, "hist_end": 0}  # no history: the user's share is the fallback
    train_samples = _samples(
        [
            {"user": int(u), "item": int(u % 2 + 1), "timestamp": 50, "label": int(u % 2 == 0), **empty}
            for u in users
        ],
        train,
        40,
    )
    test = _samples(
        [
            {"user": 0, "item": 1, "timestamp": 60, "label": 1, **empty},
            {"user": 1, "item": 2, "timestamp": 60, "label": 0, **empty},
        ],
        train,
        40,
    )
    p = prompt_share_scores(train, train_samples, test, 3)
    assert p[0] > 0.5 > p[1]


def test_recent_mean_rating_is_the_mean_of_the_samples_history_or_the_fallback():
    events = _events([0, 0, 0], [1, 2, 3], [1, 3, 5], [1, 2, 3])
    sequences = UserSequences(events, 1)
    frame = pd.DataFrame(
        {"user": [0, 0], "item": [4, 5], "timestamp": [9, 9], "hist_start": [0, 0], "hist_end": [3, 0]}
    )
    samples = Samples(frame, sequences, history_len=10, history_scope="train")
    assert recent_mean_rating(samples, fallback=2.5).tolist() == [3.0, 2.5]


def test_item_attributes_become_one_token_per_value():
    items = pd.DataFrame({"title": ["A", "B"], "genres": ["Action, Comedy", ""], "year": ["1995", "1996"]})
    assert item_attribute_tokens(items) == [["genres=Action", "genres=Comedy", "year=1995"], ["year=1996"]]
    with pytest.raises(ConfigError, match="not in the dataset"):
        item_attribute_tokens(items, ("author",))


def test_logistic_regression_learns_a_label_carried_by_an_item_attribute():
    rng = np.random.default_rng(0)
    n_items = 40
    items = pd.DataFrame(
        {
            "title": [f"t{i}" for i in range(n_items)],
            "genres": ["Good" if i % 2 else "Bad" for i in range(n_items)],
        }
    )

    def draw(n, start_item):
        it = rng.integers(start_item, start_item + 20, n)  # test items are unseen in training
        frame = pd.DataFrame(
            {
                "user": rng.integers(0, 30, n),
                "item": it,
                "label": (it % 2).astype(int),
                "timestamp": 0,
                "hist_start": 0,
                "hist_end": 0,
            }
        )
        return Samples(frame, UserSequences(_events([0], [0], [5], [0]), 30), 10, "train")

    train, test = draw(400, 0), draw(200, 20)
    p = logistic_regression_scores(train, test, items)
    assert ((p > 0) & (p < 1)).all()
    assert np.corrcoef(p, test.frame["label"])[0, 1] > 0.9


def _timed_samples(times, items, labels, n_users=30) -> Samples:
    frame = pd.DataFrame(
        {
            "user": np.arange(len(times)) % n_users,
            "item": items,
            "label": labels,
            "timestamp": times,
            "hist_start": 0,
            "hist_end": 0,
        }
    )
    return Samples(frame, UserSequences(_events([0], [0], [5], [0]), n_users), 10, "train")


def test_time_respecting_regression_ignores_training_samples_after_each_test_bucket():
    rng = np.random.default_rng(0)
    items = pd.DataFrame({"title": [f"t{i}" for i in range(20)], "genres": ["G"] * 20})
    n = 400
    train_times = rng.integers(0, 1000, n)
    train_items = rng.integers(0, 20, n)
    labels = (train_items % 2).astype(int)
    test = _timed_samples(np.array([100, 150, 900, 950]), np.array([1, 2, 1, 2]), np.array([1, 0, 1, 0]))
    config = BaselineConfig(time_buckets=2)
    before = logistic_regression_before_scores(
        _timed_samples(train_times, train_items, labels), test, items, config
    )
    # Flip every label after t = 100: the first bucket (t = 100, 150) was fitted before it, so it
    # cannot change; the second bucket (t = 900, 950) sees the flipped labels and must.
    flipped = np.where(train_times >= 100, 1 - labels, labels)
    after = logistic_regression_before_scores(
        _timed_samples(train_times, train_items, flipped), test, items, config
    )
    np.testing.assert_array_equal(after[:2], before[:2])
    assert before[2] > before[3] and after[2] < after[3]


def test_time_respecting_regression_falls_back_to_the_earlier_like_rate_without_two_labels():
    items = pd.DataFrame({"title": ["a", "b"], "genres": ["G", "G"]})
    train = _timed_samples(np.array([1, 2, 50]), np.array([0, 1, 0]), np.array([1, 1, 0]))
    test = _timed_samples(np.array([10, 0]), np.array([0, 1]), np.array([1, 0]))
    p = logistic_regression_before_scores(train, test, items, BaselineConfig(time_buckets=2))
    assert p.tolist() == [1.0, 0.5]  # t = 0 has no earlier sample; t = 10 has two likes only


def test_lightgcn_score_is_the_dot_product_of_user_and_item_embeddings():
    users, items = np.arange(6.0).reshape(3, 2), np.array([[1.0, 0.0], [0.0, 1.0]])
    samples = _samples(
        [{"user": 2, "item": 1, "timestamp": 0}, {"user": 1, "item": 0, "timestamp": 0}],
        _events([0], [0], [5], [0]),
        3,
    )
    assert lightgcn_scores(users, items, samples).tolist() == [5.0, 2.0]


def test_score_table_gives_logloss_only_for_probabilities_and_paired_differences_against_the_reference():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 300)
    good = labels * 0.6 + rng.random(300) * 0.4
    counts = rng.integers(0, 50, 300).astype(float)
    table = score_table(
        labels,
        {"llm_gcn_head6": good, "popularity": counts},
        {"llm_gcn_head6": "llm", "popularity": "baseline"},
        reference="llm_gcn_head6",
        n_boot=100,
    )
    rows = table.set_index("method")
    assert np.isfinite(rows.loc["llm_gcn_head6", "logloss"]) and np.isnan(rows.loc["popularity", "logloss"])
    assert rows.loc["popularity", "llm_minus_baseline"] > 0 and rows.loc["popularity", "diff_ci_low"] > 0
    assert np.isnan(rows.loc["llm_gcn_head6", "llm_minus_baseline"])
    assert (table["auc_ci_low"] <= table["auc"]).all() and (table["auc"] <= table["auc_ci_high"]).all()


def test_llm_predictions_refuse_a_file_scoring_other_samples(tmp_path):
    pd.DataFrame(
        {"sample_id": [1, 2], "label": [0, 1], "p_head_2": [0.1, 0.9], "p_head_10": [0.2, 0.8]}
    ).to_csv(tmp_path / "predictions_gcn.csv", index=False)
    got = llm_predictions(tmp_path, ("gcn", "llm"), np.array([2, 1]))
    assert list(got) == ["llm_gcn_head10"] and got["llm_gcn_head10"].tolist() == [0.8, 0.2]
    with pytest.raises(DataError, match="other samples"):
        llm_predictions(tmp_path, ("gcn",), np.array([1, 3]))


def test_unknown_baseline_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown baseline"):
        BaselineConfig(methods=("popularity", "oracle"))


def test_run_baselines_scores_the_recommenders_test_samples_and_writes_its_tables(tmp_path):
    profile = get_profile("smoke")
    table = run_baselines(profile, config=BaselineConfig(n_boot=50), results_root=tmp_path)
    out = tmp_path / "smoke" / "synthetic"
    assert set(BASELINES) <= set(table["method"])
    assert (table["n"] == profile.data.test_cap).all()
    predictions = pd.read_csv(out / "predictions_baselines.csv")
    assert len(predictions) == profile.data.test_cap and set(BASELINES) <= set(predictions.columns)
    assert "baselines" in (out / "provenance.json").read_text()
    pd.testing.assert_frame_equal(pd.read_csv(out / "baselines.csv"), table, check_dtype=False)


def test_llm_predictions_leave_out_a_context_scored_on_a_subset(tmp_path):
    ids = np.arange(10)
    for name, rows in (("gcn", ids), ("none", ids[:5])):
        pd.DataFrame({"sample_id": rows, "label": rows % 2, "p_head_2": 0.5}).to_csv(
            tmp_path / f"predictions_{name}.csv", index=False
        )
    assert set(llm_predictions(tmp_path, ("gcn", "none"), ids)) == {"llm_gcn_head2"}
