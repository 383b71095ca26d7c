"""LightGCN: propagation = PyG's, the two read-outs, BPR training on planted communities, early
stopping, determinism, save/load."""

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ragrec.errors import ConfigError, DataError
from ragrec.retrieval.graph import build_graph
from ragrec.retrieval.lightgcn import LightGCNConfig, LightGCNResult, build_model, combine_layers, propagate
from ragrec.retrieval.lightgcn_train import bpr_loss, train_lightgcn
from ragrec.retrieval.ranking import RankingTargets, embedding_metrics

FAST = LightGCNConfig(
    dim=32, batch_size=256, lr=5e-3, max_epochs=12, eval_every=3, patience=10, progress=False
)


@pytest.fixture(scope="module")
def data(synthetic):
    ds, split = synthetic
    return ds, split, build_graph(split.train, ds.n_users, ds.n_items)


@pytest.fixture(scope="module")
def trained(data):
    _, split, graph = data
    return {
        lc: train_lightgcn(graph, replace(FAST, layer_combination=lc), valid=split.valid)
        for lc in ("mean", "last")
    }


# -- against references ------------------------------------------------------------------------


@pytest.mark.parametrize("lc", ["mean", "last"])
def test_propagate_matches_pyg_and_the_formula(data, lc):
    _, _, graph = data
    adj = graph.normalized_adjacency()
    model = build_model(graph.n_nodes, replace(FAST, layer_combination=lc))
    with torch.no_grad():
        layers = propagate(model, adj)
        # PyG's get_embedding with alpha set for the combination is the same read-out.
        torch.testing.assert_close(combine_layers(layers, lc), model.get_embedding(adj))
        dense = adj.to_dense()
        torch.testing.assert_close(layers[1], dense @ layers[0], rtol=1e-5, atol=1e-6)
        assert layers.shape == (FAST.num_layers + 1, graph.n_nodes, FAST.dim)


def test_bpr_loss_matches_the_formula_term_by_term():
    g = torch.Generator().manual_seed(0)
    out, ego = torch.randn(10, 4, generator=g), torch.randn(10, 4, generator=g)
    users, pos, neg = torch.tensor([0, 1, 2]), torch.tensor([5, 6, 7]), torch.tensor([8, 9, 5])
    expected = 0.0
    for u, i, j in zip(users.tolist(), pos.tolist(), neg.tolist(), strict=True):
        margin = out[u] @ out[i] - out[u] @ out[j]
        expected += (
            -F.logsigmoid(margin) / 3 + 0.1 * 0.5 * (ego[u] @ ego[u] + ego[i] @ ego[i] + ego[j] @ ego[j]) / 3
        )
    torch.testing.assert_close(bpr_loss(out, ego, users, pos, neg, weight_decay=0.1), expected)


# -- training ----------------------------------------------------------------------------------


@pytest.mark.parametrize("lc", ["mean", "last"])
def test_loss_decreases_and_beats_popularity(trained, lc):
    result = trained[lc]
    losses = [r.loss for r in result.history]
    assert losses[-1] < losses[0] * 0.8, losses
    assert result.valid is not None and result.popularity is not None
    assert result.valid.recall > result.popularity.recall, (result.valid, result.popularity)
    assert result.user_embeddings.shape == (120, FAST.dim)
    assert result.item_embeddings.shape == (150, FAST.dim)
    evaluated = [r for r in result.history if r.recall is not None]
    assert result.best_epoch in [r.epoch for r in evaluated]
    assert result.valid.recall == max(r.recall for r in evaluated)


def test_early_stopping_keeps_the_best_evaluation(data):
    """A fast learning rate overshoots: training stops ``patience`` evaluations after the best
    one, and the kept layers are that evaluation's (they reproduce its validation metrics)."""
    _, split, graph = data
    config = replace(FAST, lr=5e-2, max_epochs=60, eval_every=1, patience=1)
    result = train_lightgcn(graph, config, valid=split.valid)
    assert len(result.history) < config.max_epochs  # it did stop early
    assert result.history[-1].epoch == result.best_epoch + config.patience * config.eval_every
    targets = RankingTargets.from_frame(split.valid, graph)
    embeddings = combine_layers(
        torch.from_numpy(result.layers), config.layer_combination
    )  # as training reads out
    again = embedding_metrics(embeddings, graph, targets, config.top_k)
    assert again == result.valid


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


def test_save_load_roundtrip(trained, tmp_path):
    result = trained["last"]
    path = result.save(tmp_path / "lgcn.safetensors")
    back = LightGCNResult.load(path)
    np.testing.assert_array_equal(back.layers, result.layers)
    assert back.config == result.config and back.history == result.history
    assert back.valid == result.valid and back.best_epoch == result.best_epoch
    with pytest.raises(DataError):
        LightGCNResult.load(tmp_path / "missing.safetensors")


def test_saved_results_keep_the_format_key_of_earlier_caches(trained, tmp_path):
    """Fit caches outlive code changes (results/<profile>/<dataset>/checkpoints): a file keeps the
    metadata key it had before the module moved, so earlier caches load and are reused."""
    from safetensors import safe_open

    path = trained["mean"].save(tmp_path / "lgcn.safetensors")
    with safe_open(str(path), framework="numpy") as f:
        assert set(f.metadata()) == {"ragrec.lightgcn"}


# -- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        pytest.param({"layer_combination": "sum"}, "layer_combination", id="unknown-combination"),
        pytest.param({"dim": 0}, "dim", id="dim-0"),
        pytest.param({"patience": 0}, "patience", id="patience-0"),
        pytest.param({"num_layers": -1}, "num_layers", id="negative-layers"),
        pytest.param({"lr": 0}, "lr", id="lr-0"),
        pytest.param({"weight_decay": -1e-4}, "weight_decay", id="negative-weight-decay"),
    ],
)
def test_bad_config_is_a_clear_error(changes, match):
    with pytest.raises(ConfigError, match=match):
        LightGCNConfig(**changes)


def test_empty_validation_targets_is_a_clear_error(data):
    _, split, graph = data
    with pytest.raises(DataError, match="targets"):
        train_lightgcn(graph, FAST, valid=split.valid.iloc[:0])
