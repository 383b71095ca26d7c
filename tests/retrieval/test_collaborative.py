"""The like-MF: it learns who likes what, flags unknown ids, and its score is its own logit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ragrec.errors import ConfigError, DataError
from ragrec.metrics import auc
from ragrec.retrieval.collaborative import LikeMFConfig, fit_like_mf, like_mf_scores


def _planted(n_users=60, n_items=40, seed=0) -> pd.DataFrame:
    # Two taste groups: even users like even items, odd users odd items.
    rng = np.random.default_rng(seed)
    users = rng.integers(0, n_users, 3000)
    items = rng.integers(0, n_items - 2, 3000)  # the last two items are never rated
    return pd.DataFrame({"user": users, "item": items, "label": (users % 2 == items % 2).astype(np.int8)})


def test_like_mf_learns_a_planted_taste_structure():
    train = _planted()
    emb = fit_like_mf(train, 60, 40, LikeMFConfig(dim=4, epochs=20, l2=1e-3))
    held_out = _planted(seed=1)
    scores = like_mf_scores(emb, held_out["user"].to_numpy(), held_out["item"].to_numpy())
    assert auc(held_out["label"], scores) > 0.9


def test_unrated_items_are_flagged_unknown_and_vectors_carry_their_bias_last():
    emb = fit_like_mf(_planted(), 60, 40, LikeMFConfig(dim=4, epochs=2))
    assert emb.users.shape == (60, 5) and emb.items.shape == (40, 5) and emb.dim == 5
    assert not emb.known_items[-2:].any() and emb.known_items[:-2].all()
    u, i = np.array([0, 1]), np.array([2, 3])
    expected = (emb.users[u, :4] * emb.items[i, :4]).sum(1) + emb.users[u, 4] + emb.items[i, 4]
    np.testing.assert_allclose(like_mf_scores(emb, u, i), expected, rtol=1e-6)


def test_like_mf_is_seeded():
    a = fit_like_mf(_planted(), 60, 40, LikeMFConfig(dim=4, epochs=2, seed=3))
    b = fit_like_mf(_planted(), 60, 40, LikeMFConfig(dim=4, epochs=2, seed=3))
    np.testing.assert_array_equal(a.users, b.users)


@pytest.mark.parametrize("kwargs", [{"dim": 0}, {"epochs": 0}, {"lr": 0.0}, {"l2": -1.0}], ids=repr)
def test_bad_like_mf_settings_are_config_errors(kwargs):
    with pytest.raises(ConfigError):
        LikeMFConfig(**kwargs)


def test_empty_training_data_and_out_of_range_ids_are_data_errors():
    with pytest.raises(DataError, match="empty"):
        fit_like_mf(_planted().iloc[:0], 60, 40)
    with pytest.raises(DataError, match="exceed"):
        fit_like_mf(_planted(), 10, 40)
