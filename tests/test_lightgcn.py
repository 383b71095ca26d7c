"""LightGCN: propagation = PyG's, the two read-outs, BPR training on planted communities,
metrics, determinism, save/load."""

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from ragrec.data import load_dataset, split_interactions
from ragrec.errors import ConfigError, DataError
from ragrec.retrieval.graph import build_graph
from ragrec.retrieval.lightgcn import (
    LightGCNConfig,
    LightGCNResult,
    RankingTargets,
    build_model,
    combine_layers,
    popularity_metrics,
    propagate,
    ranking_metrics,
    train_lightgcn,
)

FAST = LightGCNConfig(dim=32, batch_size=256, lr=5e-3, max_epochs=12, eval_every=3, patience=10, progress=False)


@pytest.fixture(scope="module")
def data():
    ds = load_dataset("synthetic", n_users=120, n_items=150, min_per_user=15, max_per_user=25, seed=1)
    split = split_interactions(ds)
    return ds, split, build_graph(split.train, ds.n_users, ds.n_items)


@pytest.fixture(scope="module")
def trained(data):
    _, split, graph = data
    return {lc: train_lightgcn(graph, replace(FAST, layer_combination=lc), valid=split.valid) for lc in ("mean", "last")}


def test_config_validation():
    with pytest.raises(ConfigError, match="layer_combination"):
        LightGCNConfig(layer_combination="sum")
    with pytest.raises(ConfigError):
        LightGCNConfig(dim=0)
    with pytest.raises(ConfigError):
        LightGCNConfig(lr=0)


def test_propagate_matches_pyg_and_the_formula(data):
    _, _, graph = data
    adj = graph.normalized_adjacency()
    for lc in ("mean", "last"):
        model = build_model(graph.n_nodes, replace(FAST, layer_combination=lc))
        with torch.no_grad():
            layers = propagate(model, adj)
            # PyG's get_embedding with alpha set for the combination is the same read-out.
            torch.testing.assert_close(combine_layers(layers, lc), model.get_embedding(adj))
            dense = adj.to_dense()
            torch.testing.assert_close(layers[1], dense @ layers[0], rtol=1e-5, atol=1e-6)
            assert layers.shape == (FAST.num_layers + 1, graph.n_nodes, FAST.dim)


def test_loss_decreases_and_beats_popularity(trained):
    for lc, result in trained.items():
        losses = [r.loss for r in result.history]
        assert losses[-1] < losses[0] * 0.8, (lc, losses)
        assert result.valid is not None and result.popularity is not None
        assert result.valid.recall > result.popularity.recall, (lc, result.valid, result.popularity)
        assert result.user_embeddings.shape == (120, FAST.dim)
        assert result.item_embeddings.shape == (150, FAST.dim)
        evaluated = [r for r in result.history if r.recall is not None]
        assert result.best_epoch in [r.epoch for r in evaluated]
        assert result.valid.recall == max(r.recall for r in evaluated)


def test_mean_and_last_differ(trained):
    mean, last = trained["mean"], trained["last"]
    assert not np.allclose(mean.user_embeddings, last.user_embeddings)
    # the read-outs are what they say on the stored layers
    np.testing.assert_allclose(mean.embeddings(), mean.layers.mean(0), rtol=1e-6)
    np.testing.assert_array_equal(last.embeddings(), last.layers[-1])
    assert not np.allclose(mean.embeddings("mean"), mean.embeddings("last"))


def test_deterministic_under_seed(data):
    _, _, graph = data
    cfg = replace(FAST, max_epochs=2)
    a, b = train_lightgcn(graph, cfg), train_lightgcn(graph, cfg)
    np.testing.assert_array_equal(a.layers, b.layers)
    assert [r.loss for r in a.history] == [r.loss for r in b.history]
    c = train_lightgcn(graph, replace(cfg, seed=1))
    assert not np.allclose(a.layers, c.layers)
    assert a.valid is None and a.best_epoch == 2


def test_ranking_metrics_by_hand():
    # 1 user, 4 items; item 0 is a training item (masked), targets {1, 3}.
    graph = build_graph(pd.DataFrame({"user": [0, 1], "item": [0, 2], "label": [1, 1]}), 2, 4)
    targets = RankingTargets.from_frame(pd.DataFrame({"user": [0, 0], "item": [1, 3], "label": [1, 1]}), graph)
    scores = torch.tensor([[9.0, 1.0, 3.0, 2.0]])  # ranking after masking: 2, 3, 1
    m = ranking_metrics(lambda users: scores[users], targets, graph, k=2)
    assert m.recall == pytest.approx(0.5)
    assert m.ndcg == pytest.approx((1 / np.log2(3)) / (1 + 1 / np.log2(3)))
    pop = popularity_metrics(graph, targets, k=4)
    assert pop.recall == pytest.approx(1.0)


def test_save_load_roundtrip(trained, tmp_path):
    result = trained["last"]
    path = result.save(tmp_path / "lgcn.safetensors")
    back = LightGCNResult.load(path)
    np.testing.assert_array_equal(back.layers, result.layers)
    assert back.config == result.config and back.history == result.history
    assert back.valid == result.valid and back.best_epoch == result.best_epoch
    with pytest.raises(DataError):
        LightGCNResult.load(tmp_path / "missing.safetensors")


def test_empty_validation_targets_is_a_clear_error(data):
    _, split, graph = data
    with pytest.raises(DataError, match="targets"):
        train_lightgcn(graph, FAST, valid=split.valid.iloc[:0])
