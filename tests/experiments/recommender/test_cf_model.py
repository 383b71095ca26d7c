"""The cf variant's choice of collaborative vectors is made on validation samples."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from ragrec.config import get_profile
from ragrec.experiments.recommender.cf_model import (
    choose_cf_embeddings,
    probe_features,
    validation_probe_auc,
)
from ragrec.experiments.recommender.prepare import fit_retrievers, prepare_data
from ragrec.retrieval.collaborative import CFEmbeddings, LikeMFConfig
from ragrec.retrieval.lightgcn import LightGCNConfig

FAST = LightGCNConfig(
    dim=16, batch_size=256, lr=5e-3, max_epochs=6, eval_every=3, patience=10, progress=False
)


def _prepared():
    p = get_profile("smoke")
    return prepare_data(dataclasses.replace(p, lightgcn=FAST))


def test_probe_features_are_user_item_and_their_product():
    emb = CFEmbeddings(
        np.arange(6, dtype=np.float32).reshape(3, 2),
        np.ones((2, 2), np.float32),
        np.ones(3, bool),
        np.ones(2, bool),
        source="like_mf",
    )
    prepared = _prepared()
    samples = prepared.test.subset(prepared.test.frame.index[:1])
    u, i = int(samples.frame["user"].iloc[0]) % 3, int(samples.frame["item"].iloc[0]) % 2
    samples.frame.loc[:, ["user", "item"]] = [u, i]
    np.testing.assert_array_equal(
        probe_features(emb, samples)[0], np.r_[emb.users[u], emb.items[i], emb.users[u] * emb.items[i]]
    )


def test_an_informative_vector_wins_on_validation(tmp_path):
    prepared = _prepared()
    train, valid = prepared.samples.part("train"), prepared.valid
    # an item vector that carries each item's training like rate beats pure noise
    rate = pd.Series(train.frame["label"].to_numpy(float)).groupby(train.frame["item"].to_numpy()).mean()
    items = np.zeros((prepared.dataset.n_items, 2), np.float32)
    items[rate.index, 0] = rate.to_numpy()
    rng = np.random.default_rng(0)
    informative = CFEmbeddings(
        np.zeros((prepared.dataset.n_users, 2), np.float32),
        items,
        np.ones(prepared.dataset.n_users, bool),
        np.ones(prepared.dataset.n_items, bool),
        "x",
    )
    noise = dataclasses.replace(informative, items=rng.normal(size=items.shape).astype(np.float32))
    assert validation_probe_auc(informative, train, valid) > validation_probe_auc(noise, train, valid)


def test_choose_cf_embeddings_records_both_candidates_and_picks_the_higher_validation_auc(tmp_path):
    prepared = _prepared()
    gcn = fit_retrievers(prepared, None, ("gcn",), results_root=tmp_path)["gcn"]
    chosen, table = choose_cf_embeddings(
        prepared.split.train,
        gcn,
        prepared.dataset.n_items,
        prepared.samples.part("train"),
        prepared.valid,
        config=LikeMFConfig(epochs=2),
    )
    assert set(table["source"]) == {"lightgcn", "like_mf"} and table["chosen"].sum() == 1
    assert chosen.source == table.loc[table["valid_probe_auc"].idxmax(), "source"]
