"""Retrievers: exact cosine top-k, self exclusion, time cut-off, communities, determinism,
cold start, the LLM retriever on a tiny backbone, fit caches and bad input."""

import json
from dataclasses import replace

import numpy as np
import pytest

from ragrec.data import UserSequences
from ragrec.errors import ConfigError, DataError
from ragrec.llm.backbone import load_backbone
from ragrec.retrieval.base import neighbour_events, register_retriever
from ragrec.retrieval.factory import make_retriever, retriever_names
from ragrec.retrieval.gcn import GCNRetriever
from ragrec.retrieval.lightgcn import LightGCNConfig, LightGCNResult
from ragrec.retrieval.llm import LLMRetriever, embed_texts
from ragrec.retrieval.simple import NoRetrieverConfig, RandomRetriever, RandomRetrieverConfig
from ragrec.retrieval.vector import (
    AnnBackend,
    AnnSettings,
    FaissIndex,
    check_backend,
    l2_normalize,
    top_k_exact,
)

FAST = LightGCNConfig(
    dim=32, batch_size=256, lr=5e-3, max_epochs=12, eval_every=3, patience=10, progress=False
)
N_USERS = 120


@pytest.fixture(scope="module")
def data(synthetic):
    return synthetic


@pytest.fixture(scope="module")
def gcn(data):
    ds, split = data
    return make_retriever("gcn", ds, lightgcn=FAST).fit(split.train, split.valid)


@pytest.fixture(scope="module")
def tiny():
    return load_backbone("tiny")


@pytest.fixture(scope="module")
def llm(data, tiny):
    ds, split = data
    return make_retriever("llm", ds, backbone=tiny, history_items=3, batch_size=16).fit(split.train)


def brute_force(vectors, query, k, allowed):
    """Cosine by explicit loops, then a full sort: the reference for top_k_exact."""
    sims = []
    for v in range(len(vectors)):
        if not allowed[v]:
            continue
        a, b = vectors[query], vectors[v]
        sims.append((-(a @ b) / (np.linalg.norm(a) * np.linalg.norm(b)), v))
    return [v for _, v in sorted(sims)[:k]]


def test_top_k_exact_equals_brute_force():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(40, 8))
    unit = l2_normalize(vectors)
    users = np.arange(40)
    allowed = rng.random((40, 40)) > 0.2
    allowed[users, users] = False
    got = top_k_exact(unit[users], unit, 5, allowed)
    for u in users:
        assert got[u].tolist() == brute_force(vectors, u, 5, allowed[u])


def test_gcn_equals_brute_force_over_its_embeddings(gcn):
    emb = gcn.result.user_embeddings
    users = np.arange(N_USERS)
    got = gcn.retrieve(users, 7)
    everyone = np.ones(N_USERS, dtype=bool)
    for u in users:
        allowed = everyone.copy()
        allowed[u] = False
        assert got[u].tolist() == brute_force(emb, u, 7, allowed)


def test_self_never_retrieved(gcn, llm, data):
    ds, split = data
    users = np.arange(N_USERS)
    for retriever in (gcn, llm, make_retriever("random", ds, seed=3).fit(split.train)):
        out = retriever.retrieve(users, N_USERS - 1)  # every other user: self must still be absent
        assert out.shape == (N_USERS, N_USERS - 1)
        assert not (out == users[:, None]).any(), retriever.name
        assert (out >= 0).all() and all(len(set(row)) == N_USERS - 1 for row in out.tolist())


def test_gcn_neighbours_share_the_planted_community(gcn, data):
    ds, _ = data
    community = ds.users["community"].to_numpy()
    out = gcn.retrieve(np.arange(N_USERS), 5)
    same = (community[out] == community[:, None]).mean()
    assert same > 0.8, same  # chance is about 0.25 with 4 communities


def test_mean_and_last_both_work_and_differ(data, gcn):
    ds, split = data
    last = make_retriever("gcn", ds, lightgcn=replace(FAST, layer_combination="last")).fit(
        split.train, split.valid
    )
    assert last.result.config.layer_combination == "last"
    a, b = gcn.retrieve(np.arange(N_USERS), 5), last.retrieve(np.arange(N_USERS), 5)
    assert (a != b).any()
    community = ds.users["community"].to_numpy()
    assert (community[b] == community[:, None]).mean() > 0.6


def test_no_neighbour_event_after_the_cutoff(gcn, data):
    _, split = data
    train = split.train
    rng = np.random.default_rng(0)
    users = rng.integers(N_USERS, size=30)
    times = np.quantile(train["timestamp"], rng.uniform(0.05, 0.6, size=30)).astype(np.int64)
    out = gcn.retrieve(users, 10, before=times)
    first = train.groupby("user")["timestamp"].min()
    train_keys = set(zip(train["user"], train["item"], strict=True))
    n_events = 0
    for row, t in zip(out, times, strict=True):
        for v in row[row >= 0]:
            assert first[v] < t  # every neighbour has something to show before the cut-off
            items, _, stamps = neighbour_events(gcn.sequences, int(v), int(t), 50)
            assert (stamps < t).all() and len(items) >= 1
            assert all((v, i) in train_keys for i in items)  # training interactions only
            assert np.all(np.diff(stamps) >= 0)  # oldest first
            n_events += len(items)
    assert n_events > 0
    # limit keeps the most recent ones; padding id gives nothing
    v = int(out[0][0])
    all_before = neighbour_events(gcn.sequences, v, int(times[0]), 1000)[2]
    assert neighbour_events(gcn.sequences, v, int(times[0]), 2)[2].tolist() == all_before[-2:].tolist()
    assert len(neighbour_events(gcn.sequences, -1, 0, 5)[0]) == 0


def test_early_cutoff_pads_with_minus_one(gcn, data):
    _, split = data
    t = int(np.sort(split.train.groupby("user")["timestamp"].min())[3])  # only 3 users start before t
    out = gcn.retrieve([0], 10, before=[t])
    assert (out[0][3:] == -1).all() and (out[0][:3] >= 0).sum() <= 3


def test_time_filter_skipped_without_timestamps(data):
    ds, split = data
    seq = UserSequences(split.train, ds.n_users)
    t = int(split.train["timestamp"].min())  # nothing is before this
    assert len(neighbour_events(seq, 0, t, 10)[0]) == 0
    assert len(neighbour_events(seq, 0, t, 10, has_timestamps=False)[0]) == 10
    r = RandomRetriever(ds.n_users, seed=0, has_timestamps=False).fit(split.train)
    assert (r.retrieve([0], 5, before=[t]) >= 0).all()
    r = RandomRetriever(ds.n_users, seed=0).fit(split.train)
    assert (r.retrieve([0], 5, before=[t]) == -1).all()


def test_random_is_deterministic_per_seed_and_order_free(data):
    ds, split = data
    a = make_retriever("random", ds, seed=7).fit(split.train)
    b = make_retriever("random", ds, seed=7).fit(split.train)
    users = np.arange(20)
    np.testing.assert_array_equal(a.retrieve(users, 5), b.retrieve(users[::-1], 5)[::-1])
    assert (
        a.retrieve(users, 5) != make_retriever("random", ds, seed=8).fit(split.train).retrieve(users, 5)
    ).any()


def test_gcn_deterministic_under_seed(data, gcn):
    ds, split = data
    again = make_retriever("gcn", ds, lightgcn=FAST).fit(split.train, split.valid)
    np.testing.assert_array_equal(again.vectors, gcn.vectors)


def test_none_gives_zero_context(data):
    ds, split = data
    r = make_retriever("none", ds).fit(split.train)
    assert r.retrieve([0, 1, 2], 5).shape == (3, 0)


def test_retrievers_are_built_from_their_registered_configs(data):
    ds, _ = data
    assert retriever_names() == ("gcn", "llm", "random", "none")
    typed = make_retriever(RandomRetrieverConfig(seed=4), ds)
    assert type(typed) is RandomRetriever and typed.seed == 4 and typed.name == "random"
    assert make_retriever("random", ds, seed=4).seed == 4


def _fit_on(ds, train, **kwargs):
    return make_retriever("gcn", ds, lightgcn=FAST, **kwargs).fit(train)


BAD_INPUT = [
    pytest.param(
        lambda ds, split, gcn: make_retriever("bm25", ds),
        ConfigError,
        "unknown retriever",
        id="unknown-retriever",
    ),
    pytest.param(
        lambda ds, split, gcn: make_retriever("random", ds, lightgcn=FAST),
        ConfigError,
        r"no setting\(s\) \['lightgcn'\]",
        id="setting-of-another-retriever",
    ),
    pytest.param(
        lambda ds, split, gcn: make_retriever(RandomRetrieverConfig(), ds, seed=3),
        ConfigError,
        "go into the config",
        id="settings-beside-a-config",
    ),
    pytest.param(
        lambda ds, split, gcn: register_retriever(type("Other", (NoRetrieverConfig,), {})),
        ConfigError,
        "cannot register",
        id="name-taken",
    ),
    pytest.param(
        lambda ds, split, gcn: make_retriever("gcn", ds, lightgcn=LightGCNConfig(layer_combination="first")),
        ConfigError,
        "layer_combination",
        id="unknown-layer-combination",
    ),
    pytest.param(
        lambda ds, split, gcn: make_retriever("gcn", ds, backend="annoy"),
        ConfigError,
        "backend",
        id="unknown-backend",
    ),
    *[
        pytest.param(lambda ds, split, gcn, k=k: gcn.retrieve([0], k), ConfigError, "k", id=f"k={k!r}")
        for k in (0, -1, N_USERS, N_USERS + 5, 2.5, True)
    ],
    pytest.param(
        lambda ds, split, gcn: gcn.retrieve([N_USERS], 3),
        DataError,
        "query user ids",
        id="unknown-query-user",
    ),
    pytest.param(
        lambda ds, split, gcn: make_retriever("random", ds).retrieve([0], 3),
        ConfigError,
        "not fitted",
        id="not-fitted",
    ),
    pytest.param(
        lambda ds, split, gcn: gcn.retrieve([0, 1], 3, before=[5]),
        ConfigError,
        "one time per query",
        id="one-time-for-two-users",
    ),
    pytest.param(
        lambda ds, split, gcn: gcn.retrieve([0, 1], 3, histories=[None]),
        ConfigError,
        "histories",
        id="one-history-for-two-users",
    ),
    pytest.param(
        lambda ds, split, gcn: _fit_on(ds, split.train[split.train["label"] == 0], positives_only=True),
        DataError,
        "empty",
        id="no-positive-edges",
    ),
    pytest.param(
        lambda ds, split, gcn: _fit_on(ds, split.train.iloc[:0]),
        DataError,
        "zero training",
        id="no-training-interactions",
    ),
]


@pytest.mark.parametrize(("call", "error", "match"), BAD_INPUT)
def test_bad_input_is_a_clear_error(data, gcn, call, error, match):
    ds, split = data
    with pytest.raises(error, match=match):
        call(ds, split, gcn)


@pytest.fixture(scope="module")
def cold(data):
    """A GCN trained without user 0's training interactions, so user 0 is cold."""
    ds, split = data
    train = split.train[split.train["user"] != 0]
    own = split.train[split.train["user"] == 0]
    r = make_retriever("gcn", ds, lightgcn=replace(FAST, max_epochs=6)).fit(train)
    return r, own


def test_cold_start_needs_history_and_folds_in(cold, data):
    ds, _ = data
    r, own = cold
    with pytest.raises(DataError, match="cold start"):
        r.retrieve([0], 5)
    history = (own["item"].to_numpy(), own["rating"].to_numpy())
    out = r.retrieve([0, 1], 5, histories=[history, None])
    assert out.shape == (2, 5) and 0 not in out[0]
    assert 0 not in r.retrieve([1], N_USERS - 1)  # a cold user is never anyone's neighbour
    community = ds.users["community"].to_numpy()
    assert (community[out[0]] == community[0]).mean() >= 0.6
    with pytest.raises(DataError, match="training graph"):
        r.fold_in([])


@pytest.mark.parametrize("lc", ["last", "mean"])
def test_fold_in_reproduces_a_trained_user(data, lc):
    """For a user in the graph, propagation of its own items is its trained embedding: exactly
    for "last", and the mean minus the ego layer's share for "mean"."""
    ds, split = data
    r = make_retriever("gcn", ds, lightgcn=replace(FAST, max_epochs=3, layer_combination=lc)).fit(split.train)
    u = 5
    got = r.fold_in(r.graph.items_of(u))
    layers = r.result.layers[:, u]
    expected = layers[-1] if lc == "last" else layers[1:].sum(0) / len(layers)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)


def test_pretrained_embeddings_are_reused(data, gcn, tmp_path):
    ds, split = data
    path = gcn.result.save(tmp_path / "g.safetensors")
    again = (
        GCNRetriever(ds.n_users, ds.n_items, FAST).use_pretrained(LightGCNResult.load(path)).fit(split.train)
    )
    np.testing.assert_array_equal(again.retrieve(np.arange(20), 5), gcn.retrieve(np.arange(20), 5))
    assert again.fit_s >= gcn.result.fit_s
    with pytest.raises(ConfigError, match="trained with"):  # a stale cache is refused
        GCNRetriever(ds.n_users, ds.n_items, replace(FAST, dim=16)).use_pretrained(gcn.result)
    untold = GCNRetriever(ds.n_users, ds.n_items).use_pretrained(gcn.result)  # no config: take the result's
    assert untold.config == gcn.result.config


def test_llm_embeddings_batch_independent_and_pooled(tiny):
    texts = ["1. Toy Story, rated 4/5", "a much longer text about movies and books " * 5, "Yes"]
    batched = embed_texts(tiny, texts, batch_size=3)
    single = np.stack([embed_texts(tiny, [t], batch_size=1)[0] for t in texts])
    np.testing.assert_allclose(batched, single, rtol=1e-4, atol=1e-5)
    assert batched.shape == (3, tiny.hidden_size)
    with pytest.raises(ConfigError):
        embed_texts(tiny, texts, batch_size=0)


def test_llm_query_embeds_at_query_time_and_matches_index(llm):
    users = np.arange(10)
    q = llm.query_vectors(users)
    np.testing.assert_allclose(q, llm.vectors[users], rtol=1e-4, atol=1e-5)
    out = llm.retrieve(users, 4)
    allowed = np.ones((10, N_USERS), dtype=bool)
    allowed[users, users] = False
    np.testing.assert_array_equal(out, top_k_exact(llm.vectors[users], llm.vectors, 4, allowed))


def test_llm_cold_user_uses_given_history(data, tiny):
    ds, split = data
    train = split.train[split.train["user"] != 0]
    r = LLMRetriever(ds, tiny, history_items=3).fit(train)
    with pytest.raises(DataError, match="cold start"):
        r.retrieve([0], 3)
    own = split.train[split.train["user"] == 0]
    out = r.retrieve([0], 3, histories=[(own["item"].to_numpy(), own["rating"].to_numpy())])
    assert out.shape == (1, 3) and 0 not in out


def test_faiss_backend_matches_exact(data, gcn):
    pytest.importorskip("faiss")
    ds, split = data
    f = (
        GCNRetriever(ds.n_users, ds.n_items, FAST, backend="faiss")
        .use_pretrained(gcn.result)
        .fit(split.train)
    )
    users = np.arange(N_USERS)
    np.testing.assert_array_equal(f.retrieve(users, 6), gcn.retrieve(users, 6))
    times = np.full(N_USERS, int(np.median(split.train["timestamp"])))
    np.testing.assert_array_equal(f.retrieve(users, 6, before=times), gcn.retrieve(users, 6, before=times))


def test_blocks_of_queries_give_the_same_answer(gcn, cold, data):
    _, split = data
    users = np.arange(N_USERS)
    times = np.full(N_USERS, int(np.median(split.train["timestamp"])))
    whole = gcn.retrieve(users, 5, before=times)
    gcn.block_size = 7
    try:
        np.testing.assert_array_equal(gcn.retrieve(users, 5, before=times), whole)
    finally:
        del gcn.block_size
    r, own = cold  # histories are split along with the queries
    history = (own["item"].to_numpy(), own["rating"].to_numpy())
    expected = r.retrieve([1, 0], 5, histories=[None, history])
    r.block_size = 1
    try:
        np.testing.assert_array_equal(r.retrieve([1, 0], 5, histories=[None, history]), expected)
    finally:
        del r.block_size


def test_retriever_neighbour_events_follow_its_time_rule(gcn, data):
    _, split = data
    t = int(np.median(split.train["timestamp"]))
    items, _, stamps = gcn.neighbour_events(3, t, 100)
    expected = split.train[(split.train["user"] == 3) & (split.train["timestamp"] < t)]
    assert sorted(items.tolist()) == sorted(expected["item"].tolist()) and (stamps < t).all()
    with pytest.raises(ConfigError, match="limit"):
        gcn.neighbour_events(3, t, -1)
    with pytest.raises(DataError, match="neighbour id"):
        gcn.neighbour_events(N_USERS, t, 3)


def test_llm_precomputed_skips_the_llm_and_gives_the_same_neighbours(llm, monkeypatch):
    users = np.arange(15)
    live = llm.retrieve(users, 4)

    def no_llm(*args, **kwargs):
        raise AssertionError("the LLM ran although precomputed=True")

    monkeypatch.setattr("ragrec.retrieval.llm.embed_texts", no_llm)
    np.testing.assert_array_equal(llm.retrieve(users, 4, precomputed=True), live)
    with pytest.raises(AssertionError):
        llm.retrieve(users, 4)


def test_fit_caches_are_reused_with_the_fit_time_they_cost(data, tiny, tmp_path, monkeypatch):
    ds, split = data
    first_gcn = (
        make_retriever("gcn", ds, lightgcn=FAST)
        .use_cache(split.train, tmp_path)
        .fit(split.train, split.valid)
    )
    first_llm = (
        make_retriever("llm", ds, backbone=tiny, history_items=3)
        .use_cache(split.train, tmp_path)
        .fit(split.train)
    )
    # A second fit must load both instead of training LightGCN or running the LLM again.
    monkeypatch.setattr(
        "ragrec.retrieval.gcn.train_lightgcn", lambda *a, **k: pytest.fail("LightGCN retrained")
    )
    monkeypatch.setattr("ragrec.retrieval.llm.embed_texts", lambda *a, **k: pytest.fail("users re-embedded"))
    again_gcn = (
        make_retriever("gcn", ds, lightgcn=FAST)
        .use_cache(split.train, tmp_path)
        .fit(split.train, split.valid)
    )
    again_llm = (
        make_retriever("llm", ds, backbone=tiny, history_items=3)
        .use_cache(split.train, tmp_path)
        .fit(split.train)
    )
    assert np.array_equal(again_gcn.vectors, first_gcn.vectors) and np.array_equal(
        again_llm.vectors, first_llm.vectors
    )
    # The reported fit time still includes the measured one-off cost of what was loaded.
    assert (
        again_gcn.fit_s >= first_gcn.result.fit_s
        and again_llm.fit_s >= json.loads(next(tmp_path.glob("llm_*.json")).read_text())["embed_s"] > 0
    )


def test_fit_cache_is_keyed_by_the_training_interactions_and_settings(data, tiny, tmp_path):
    ds, split = data
    fewer = split.train.iloc[:-5]
    names = {
        make_retriever("gcn", ds, lightgcn=FAST).use_cache(split.train, tmp_path)._cache.name,
        make_retriever("gcn", ds, lightgcn=FAST).use_cache(fewer, tmp_path)._cache.name,
        make_retriever("gcn", ds, lightgcn=replace(FAST, dim=16))
        .use_cache(split.train, tmp_path)
        ._cache.name,
        make_retriever("llm", ds, backbone=tiny, history_items=3)
        .use_cache(split.train, tmp_path)
        ._cache.name,
        make_retriever("llm", ds, backbone=tiny, history_items=4)
        .use_cache(split.train, tmp_path)
        ._cache.name,
    }
    assert len(names) == 5


def test_an_unknown_backend_is_a_clear_error_naming_the_choices():
    with pytest.raises(ConfigError, match="hnsw"):
        check_backend("annoy")
    assert check_backend("hnsw") is AnnBackend.HNSW


@pytest.mark.parametrize("backend", [AnnBackend.FAISS, AnnBackend.HNSW, AnnBackend.IVF], ids=str)
def test_faiss_indexes_find_the_exact_neighbours_of_clustered_vectors(backend):
    pytest.importorskip("faiss")
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((20, 16))
    vectors = l2_normalize(centres[rng.integers(0, 20, 2000)] + 0.3 * rng.standard_normal((2000, 16)))
    queries = vectors[:50]
    allowed = np.ones((50, 2000), dtype=bool)
    exact = top_k_exact(queries, vectors, 10, allowed)
    found = FaissIndex(vectors, backend, AnnSettings(ivf_nprobe=8)).search(queries, 10, allowed)
    overlap = np.mean([np.isin(e, f).mean() for e, f in zip(exact, found)])
    assert overlap == 1.0 if backend is AnnBackend.FAISS else overlap > 0.9


def test_the_auto_backend_searches_exactly_below_its_size_and_through_ivf_from_there(monkeypatch):
    pytest.importorskip("faiss")
    from ragrec.retrieval import vector

    vectors = l2_normalize(np.random.default_rng(0).standard_normal((500, 8)))
    assert vector.build_index(vectors, AnnBackend.AUTO) is None, "exact: no index to build"
    monkeypatch.setattr(vector, "AUTO_ANN_USERS", 400)
    index = vector.build_index(vectors, AnnBackend.AUTO)
    assert index is not None and "IVF" in type(index._index).__name__
