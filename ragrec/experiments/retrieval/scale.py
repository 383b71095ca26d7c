"""GCN retrieval at scale (issue #28, beyond the paper): cosine top-k over 10⁴–10⁶ synthetic user
embeddings, exact search against FAISS's HNSW and IVF indexes, in one process run.

The vectors are synthetic because ML-100K has 943 users: a seeded Gaussian mixture
(:func:`synthetic_embeddings`: users around ``n / 1000`` taste centres, unit rows), a stand-in for
LightGCN embeddings, which cluster by taste; uniformly random directions, the hardest case for
any ANN index, would give lower recall at the same settings. Per (size, backend):

* ``build_s`` — index build seconds (HNSW graph, IVF k-means + assignment; exact: none);
* ``index_mb`` — the index's memory (FAISS's serialised size; exact: the float32 matrix);
* ``p50_ms``/``p99_ms`` — single-query latency, one query per call, one thread (FAISS's OpenMP and
  numpy's BLAS both pinned to 1), after warm-up;
* ``batch_qps`` — queries/s searching every query in one call with the default threads;
* ``recall_at_k`` — mean share of exact search's top-k that the backend returns (exact: 1).

Output: ``ann_benchmark.csv``.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from ragrec import result_files
from ragrec.config.sweeps import AnnBenchmarkConfig
from ragrec.experiments.timing import summarize
from ragrec.results import Provenance, result_dir, write_csv
from ragrec.retrieval.vector import AnnBackend, AnnSettings, FaissIndex, build_index, l2_normalize

COLUMNS = (
    "n_users",
    "dim",
    "backend",
    "k",
    "build_s",
    "index_mb",
    "p50_ms",
    "p99_ms",
    "batch_qps",
    "recall_at_k",
    "n_queries",
    "settings",
)


def synthetic_embeddings(n: int, dim: int, seed: int) -> np.ndarray:
    """``[n, dim]`` float32 unit rows: ``max(8, n // 1000)`` N(0, I) centres, each row its centre
    plus N(0, 0.5² I) noise (the mixture of the module docstring)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(8, n // 1000), dim), dtype=np.float32)
    rows = centres[rng.integers(0, len(centres), n)]
    rows += 0.5 * rng.standard_normal((n, dim), dtype=np.float32)
    return l2_normalize(rows)


def exact_top(queries: np.ndarray, vectors: np.ndarray, k: int, block: int = 32) -> np.ndarray:
    """Exact top-``k`` ids ``[n, k]`` by inner product, best first: ``scores = queries @ vectorsᵀ``,
    ``block`` queries at a time (a [block, U] score matrix, not [n, U]: 10⁶ users × 200 queries
    would be 800 MB)."""
    out = []
    for lo in range(0, len(queries), block):
        scores = queries[lo : lo + block] @ vectors.T  # [b, U]
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
        out.append(np.take_along_axis(top, order, axis=1))
    return np.concatenate(out) if out else np.empty((0, k), dtype=np.int64)


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean over rows of |found ∩ truth| / k (``[n, k]`` ids each)."""
    return float(np.mean([np.isin(t, f).mean() for f, t in zip(found, truth)]))


def _searcher(vectors: np.ndarray, backend: AnnBackend, settings: AnnSettings, k: int):
    """(build seconds, index MB, a function ``queries [n, d] -> ids [n, k]``)."""
    started = time.perf_counter()
    index = build_index(vectors, backend, settings)
    build_s = time.perf_counter() - started
    if index is None:
        return build_s, vectors.nbytes / 2**20, lambda q: exact_top(q, vectors, k)
    return build_s, _index_mb(index), lambda q: index.search_top(q, k)


def _index_mb(index: FaissIndex) -> float:
    import faiss

    return float(faiss.serialize_index(index._index).nbytes) / 2**20


def _single_thread(search, queries: np.ndarray, warmup: int = 5) -> list[float]:
    """Seconds of one-query calls, FAISS and BLAS on one thread."""
    import faiss
    from threadpoolctl import threadpool_limits

    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            for j in range(min(warmup, len(queries))):
                search(queries[j : j + 1])
            times = []
            for j in range(len(queries)):
                started = time.perf_counter()
                search(queries[j : j + 1])
                times.append(time.perf_counter() - started)
    finally:
        faiss.omp_set_num_threads(threads)
    return times


def ann_rows(n: int, config: AnnBenchmarkConfig, settings: AnnSettings) -> list[tuple]:
    """Every backend's row at ``n`` users (the module docstring's columns)."""
    vectors = synthetic_embeddings(n, config.dim, config.seed)
    # queries: other users of the same mixture (a new user's embedding), not rows of the index
    queries = synthetic_embeddings(n + config.n_queries, config.dim, config.seed)[n:]
    truth = exact_top(queries, vectors, config.k)
    rows = []
    for backend in config.backends:
        if backend == AnnBackend.HNSW and config.hnsw_max_n is not None and n > config.hnsw_max_n:
            continue  # the build would not fit the profile's budget (AnnBenchmarkConfig.hnsw_max_n)
        build_s, mb, search = _searcher(vectors, backend, settings, config.k)
        times = _single_thread(search, queries)
        started = time.perf_counter()
        found = search(queries)
        qps = len(queries) / (time.perf_counter() - started)
        stats = summarize(times)
        rows.append(
            (n, config.dim, backend.value, config.k, build_s, mb, stats.p50_ms, stats.p99_ms, qps)
            + (recall_at_k(found, truth), len(queries), _settings_text(backend, settings))
        )
    return rows


def _settings_text(backend: AnnBackend, s: AnnSettings) -> str:
    if backend == AnnBackend.HNSW:
        return f"M={s.hnsw_m} efConstruction={s.ef_construction} efSearch={s.ef_search}"
    if backend == AnnBackend.IVF:
        return f"nlist={s.ivf_nlist or 'min(4√n, 1024)'} nprobe={s.ivf_nprobe} train={s.ivf_train}"
    return ""


def run_ann_benchmark(
    config: AnnBenchmarkConfig,
    *,
    settings: AnnSettings | None = None,
    profile: str,
    dataset: str,
    seed: int = 0,
    results_root=None,
) -> pd.DataFrame:
    """Every size × backend of ``config``; writes ``ann_benchmark.csv`` and provenance into
    ``results/<profile>/<dataset>/``."""
    started = time.perf_counter()
    settings = settings or AnnSettings()
    rows = [row for n in config.sizes for row in ann_rows(n, config, settings)]
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    out_dir = result_dir(profile, dataset, results_root)
    write_csv(table, out_dir / result_files.ANN_BENCHMARK)
    provenance = Provenance("ann_benchmark", profile, dataset, seed, {"config": config, "settings": settings})
    provenance.parameters = {"config": config, "settings": settings, "seconds": time.perf_counter() - started}
    provenance.write(out_dir, [result_files.ANN_BENCHMARK])
    return table
