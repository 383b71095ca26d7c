"""The retrieval benchmark: its tables and provenance, its settings per profile, bad settings."""

import json
from dataclasses import replace

import pandas as pd
import pytest

from ragrec.config import get_profile
from ragrec.errors import ConfigError
from ragrec.experiments.retrieval.benchmark import (
    RetrievalBenchmarkConfig,
    default_retrieval_config,
    gcn_read_outs,
    run_retrieval_benchmark,
)
from ragrec.llm.backbone import load_backbone
from ragrec.retrieval.gcn import GCNRetrieverConfig
from ragrec.retrieval.lightgcn import LightGCNConfig
from ragrec.retrieval.llm import LLMRetrieverConfig

FAST = LightGCNConfig(
    dim=32, batch_size=256, lr=5e-3, max_epochs=6, eval_every=3, patience=10, progress=False
)


def test_benchmark_writes_tables_and_provenance(synthetic, tmp_path):
    ds, split = synthetic
    config = RetrievalBenchmarkConfig(
        profile="test",
        dataset="synthetic",
        ks=(2, 4),
        n_queries=12,
        retrievers=(
            *gcn_read_outs(GCNRetrieverConfig(lightgcn=FAST)),
            LLMRetrieverConfig(history_items=3),
            "random",
            "none",
        ),
        warmup=1,
    )
    bench = run_retrieval_benchmark(
        config, dataset=ds, split=split, backbone=load_backbone("tiny"), results_root=tmp_path
    )
    table = pd.read_csv(bench.directory / "retrieval.csv")
    for col in (
        "retriever",
        "layer_combination",
        "k",
        "p50_ms",
        "p95_ms",
        "queries_per_s",
        "fit_s",
        "neighbour_hit_rate",
    ):
        assert col in table.columns
    assert len(table) == (2 + 1 + 1 + 1) * 2  # gcn mean/last, llm, random, none × 2 ks
    assert set(table["retriever"]) == {"gcn", "llm", "random", "none"}
    assert set(table.loc[table["retriever"] == "gcn", "layer_combination"]) == {"mean", "last"}
    assert table["neighbour_hit_rate"].between(0, 1).all()
    assert (table.loc[table["retriever"] == "none", "neighbour_hit_rate"] == 0).all()
    gcn_rows = table[table["retriever"] == "gcn"]
    random_floor = table.loc[table["retriever"] == "random", "neighbour_hit_rate"].min()
    assert (gcn_rows["neighbour_hit_rate"].to_numpy() > random_floor).any()
    lgcn = pd.read_csv(bench.directory / "lightgcn.csv")
    assert lgcn["model"].tolist() == ["popularity", "lightgcn-mean", "lightgcn-last"]
    assert (bench.directory / "lightgcn_history.csv").exists()
    prov = json.loads((bench.directory / "provenance.json").read_text())
    step = prov["steps"]["retrieval"]
    assert step["parameters"]["config"]["ks"] == [2, 4] and step["seed"] == 0
    recorded = [r["name"] for r in step["parameters"]["config"]["retrievers"]]
    assert recorded == ["gcn", "gcn", "llm", "random", "none"]
    assert set(step["outputs"]) == {"retrieval.csv", "lightgcn.csv", "lightgcn_history.csv"}
    assert bench.speedup(2) > 0
    few = run_retrieval_benchmark(
        replace(config, retrievers=("random",), ks=(4,), hit_items=1), dataset=ds, split=split, write=False
    )
    assert few.directory is None
    every = table[(table["retriever"] == "random") & (table["k"] == 4)]["neighbour_hit_rate"].iloc[0]
    assert few.table["neighbour_hit_rate"].iloc[0] <= every  # fewer items shown, fewer hits


@pytest.mark.parametrize("name", ["smoke", "cpu", "gpu"])
def test_default_config_measures_the_retrievers_the_prompts_use(name):
    p = get_profile(name, resolve=False)
    config = default_retrieval_config(p)
    assert p.prompt.k in config.ks and p.prompt.vote_k in config.ks
    gcn_mean, gcn_last, llm, random = config.retrievers
    assert llm == p.retriever_config("llm") and llm.history_items == p.data.history_len
    assert gcn_mean == p.retriever_config("gcn") == GCNRetrieverConfig(lightgcn=p.lightgcn)
    assert gcn_last.lightgcn.layer_combination == "last" and random.seed == p.seed
    assert config.dataset == p.data.dataset


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        pytest.param({"retrievers": ("gcn", "bm25")}, "unknown retriever", id="unknown-retriever"),
        pytest.param({"retrievers": ()}, "at least one retriever", id="no-retrievers"),
        pytest.param({"ks": (0,)}, "ks", id="k-0"),
        pytest.param({"ks": ()}, "ks", id="no-ks"),
        pytest.param({"hit_items": 0}, "hit_items", id="hit-items-0"),
        pytest.param({"threads": 0}, "threads", id="threads-0"),
        pytest.param({"n_queries": 0}, "n_queries", id="no-queries"),
    ],
)
def test_bad_config_is_a_clear_error(changes, match):
    with pytest.raises(ConfigError, match=match):
        RetrievalBenchmarkConfig(**changes)


def test_k_must_be_below_the_user_count(synthetic):
    ds, split = synthetic
    config = RetrievalBenchmarkConfig(
        profile="test", dataset="synthetic", ks=(ds.n_users,), retrievers=("random",)
    )
    with pytest.raises(ConfigError, match="smaller than"):
        run_retrieval_benchmark(config, dataset=ds, split=split, write=False)
