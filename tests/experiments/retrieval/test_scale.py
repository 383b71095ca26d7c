"""Retrieval at scale: exact top-k, recall against it, and every ANN backend on a small mixture."""

from __future__ import annotations

import numpy as np
import pytest

from ragrec.config.sweeps import AnnBenchmarkConfig
from ragrec.errors import ConfigError
from ragrec.experiments.retrieval.scale import (
    COLUMNS,
    ann_rows,
    exact_top,
    recall_at_k,
    synthetic_embeddings,
)
from ragrec.retrieval.vector import AnnBackend, AnnSettings


def test_exact_top_is_the_full_sort_of_the_inner_products():
    rng = np.random.default_rng(0)
    vectors, queries = rng.standard_normal((300, 8)), rng.standard_normal((5, 8))
    expected = np.argsort(-(queries @ vectors.T), axis=1)[:, :7]
    np.testing.assert_array_equal(exact_top(queries, vectors, 7), expected)


def test_recall_counts_the_exact_neighbours_found_in_any_order():
    truth = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    found = np.array([[4, 3, 9, 9], [8, 7, 6, 5]])
    assert recall_at_k(found, truth) == pytest.approx((0.5 + 1.0) / 2)


def test_synthetic_embeddings_are_seeded_unit_rows():
    a, b = synthetic_embeddings(500, 16, seed=3), synthetic_embeddings(500, 16, seed=3)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, rtol=1e-5)


def test_every_backend_is_measured_and_the_approximate_ones_find_the_exact_neighbours():
    pytest.importorskip("faiss")
    config = AnnBenchmarkConfig(sizes=(3000,), dim=16, n_queries=30)
    rows = {r[COLUMNS.index("backend")]: dict(zip(COLUMNS, r)) for r in ann_rows(3000, config, AnnSettings())}
    assert set(rows) == {"exact", "hnsw", "ivf"}
    assert rows["exact"]["recall_at_k"] == 1.0
    assert rows["hnsw"]["recall_at_k"] > 0.9 and rows["ivf"]["recall_at_k"] > 0.9
    assert all(r["p50_ms"] > 0 and r["batch_qps"] > 0 and r["n_queries"] == 30 for r in rows.values())


def test_hnsw_is_skipped_above_its_size_cap():
    pytest.importorskip("faiss")
    config = AnnBenchmarkConfig(sizes=(500,), dim=8, n_queries=5, hnsw_max_n=100)
    assert [r[COLUMNS.index("backend")] for r in ann_rows(500, config, AnnSettings())] == ["exact", "ivf"]


def test_the_benchmark_needs_its_exact_reference():
    with pytest.raises(ConfigError, match="exact"):
        AnnBenchmarkConfig(backends=(AnnBackend.HNSW,))
