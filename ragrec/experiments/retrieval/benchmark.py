"""The retrieval benchmark: GCN-Retriever vs LLM retriever (and baselines) side by side.

The same query users go through every retriever in one process run (DESIGN §5): for each
retriever and ``k`` it measures the per-query latency (one ``retrieve([user], k, before=[t])``
call per query, after warm-up; p50/p95/p99 ms and queries/s via :mod:`ragrec.experiments.timing`), the
one-off fit/index seconds (LightGCN training incl. its validation evaluations; for ``llm``, the
LLM embedding of every user's history text), and a neighbour-quality figure that needs no CTR
model:

    neighbour_hit_rate = mean over queries q of |P_q ∩ ⋃_{v ∈ N_q} T_v(< t_q)| / |P_q|

where ``P_q`` are the query user's held-out (validation + test) positives, ``N_q`` the retrieved
neighbours and ``T_v(< t_q)`` a neighbour's training items strictly before the query time
``t_q`` = the query user's first held-out interaction (what a prompt could show; the time
filter is skipped without real timestamps). Query users: a seeded sample of users with ≥ 1
training interaction and ≥ 1 held-out positive.

Outputs in ``results/<profile>/<dataset>/``: ``retrieval.csv`` (one row per retriever × layer
combination × k), ``lightgcn.csv`` (validation Recall@20/NDCG@20 of LightGCN per layer
combination next to popularity; columns ``recall_at_k``, ``ndcg_at_k`` at
``cutoff`` = ``LightGCNConfig.top_k``, 20 by default), ``lightgcn_history.csv`` (per-epoch
loss/metrics) and the ``retrieval`` step in ``provenance.json``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ragrec.data import Dataset, Split, load_dataset, split_interactions
from ragrec.errors import ConfigError, DataError
from ragrec.experiments.timing import summarize, time_calls, torch_threads
from ragrec.result_files import LIGHTGCN, LIGHTGCN_HISTORY, RETRIEVAL
from ragrec.results import CHECKPOINTS, Provenance, result_dir, write_csv
from ragrec.retrieval.base import Retriever, RetrieverConfig, neighbour_events
from ragrec.retrieval.factory import retriever_config, retriever_names
from ragrec.retrieval.gcn import GCNRetriever, GCNRetrieverConfig
from ragrec.retrieval.lightgcn import LAYER_COMBINATIONS
from ragrec.retrieval.llm import LLMRetrieverConfig
from ragrec.retrieval.simple import RandomRetrieverConfig

if TYPE_CHECKING:
    from ragrec.config import Profile

RETRIEVAL_COLUMNS = (
    "retriever",
    "layer_combination",
    "k",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "queries_per_s",
    "fit_s",
    "neighbour_hit_rate",
    "n_queries",
    "backend",
)
NOT_APPLICABLE = "n/a"  # layer_combination of retrievers that are not GCNs
LIGHTGCN_COLUMNS = [
    "model",
    "layer_combination",
    "recall_at_k",
    "ndcg_at_k",
    "cutoff",
    "n_users",
    "best_epoch",
    "epochs_run",
    "fit_s",
]


def _default_retrievers() -> tuple[RetrieverConfig, ...]:
    gcn = GCNRetrieverConfig()
    return (*gcn_read_outs(gcn), LLMRetrieverConfig(), RandomRetrieverConfig())


def gcn_read_outs(gcn: GCNRetrieverConfig) -> tuple[GCNRetrieverConfig, ...]:
    """``gcn`` once per layer combination (mean, last): the paper's read-out and its ablation."""
    return tuple(
        replace(gcn, lightgcn=replace(gcn.lightgcn, layer_combination=lc)) for lc in LAYER_COMBINATIONS
    )


@dataclass(frozen=True)
class RetrievalBenchmarkConfig:
    """What the retrieval benchmark runs.

    Attributes:
        profile, dataset: where results go (``results/<profile>/<dataset>/``) and which dataset
            :func:`ragrec.data.load_dataset` loads when none is passed.
        split_method: ``"per_user"`` or ``"global_time"``.
        ks: neighbour counts to measure.
        n_queries: query users (seeded sample; fewer if fewer qualify).
        retrievers: the retrievers to run, in table order, as typed configs
            (:mod:`ragrec.retrieval.factory`; a name stands for its module's defaults). A GCN
            config's ``lightgcn.layer_combination`` is its ``layer_combination`` column.
        warmup: untimed calls before each timed pass.
        hit_items: count only each neighbour's ``hit_items`` most recent training items before
            the query time in ``neighbour_hit_rate`` (e.g. what a prompt shows; None: all of them,
            which saturates on dense data — random neighbours already cover popular items).
        threads: torch intra-op threads for the whole run (None: leave torch's setting); the
            count in effect is recorded in provenance either way.
        seed: query sampling.
        progress: bars over slow fits (the LLM embedding; LightGCN's follow its own config).
        reuse_fits: load the LightGCN embeddings and LLM user vectors that the recommender step
            cached for the same training interactions and settings (and cache what is computed
            here). Their ``fit_s`` is the time measured when they were computed, so a
            reproduction embeds every user once, not twice.
    """

    profile: str = "cpu"
    dataset: str = "ml-100k"
    split_method: str = "per_user"
    ks: tuple[int, ...] = (5,)
    n_queries: int = 200
    retrievers: tuple[RetrieverConfig | str, ...] = field(default_factory=_default_retrievers)
    warmup: int = 2
    hit_items: int | None = None
    threads: int | None = None
    seed: int = 0
    reuse_fits: bool = True
    progress: bool = False

    def __post_init__(self) -> None:
        if not self.ks or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in self.ks):
            raise ConfigError(f"ks must be a non-empty tuple of integers ≥ 1, got {self.ks!r}")
        if not self.retrievers:
            raise ConfigError(f"name at least one retriever; choose from {retriever_names()}")
        configs = tuple(retriever_config(r) if isinstance(r, str) else r for r in self.retrievers)
        object.__setattr__(self, "retrievers", configs)
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be ≥ 1 or None, got {self.threads}")
        if self.hit_items is not None and self.hit_items < 1:
            raise ConfigError(f"hit_items must be ≥ 1 or None, got {self.hit_items}")
        if self.n_queries < 1 or self.warmup < 0:
            raise ConfigError(f"need n_queries ≥ 1 and warmup ≥ 0, got {self.n_queries}, {self.warmup}")


# Query users per profile: enough for stable percentiles, few enough that the LLM retriever's
# per-query forward (its p50_ms in retrieval.csv) stays inside the profile's time budget.
_N_QUERIES = {"smoke": 40, "cpu": 100, "gpu": 1000}


def default_retrieval_config(profile: Profile) -> RetrievalBenchmarkConfig:
    """The retrieval benchmark of a profile, with the same retriever settings the recommender
    uses (:meth:`ragrec.config.Profile.retriever_config`: the LightGCN config, the LLM
    retriever's history window and backbone), so the retrieval chapter measures the retrievers
    that build the prompts: the GCN with both read-outs, the LLM retriever and random users."""
    prompt = profile.prompt
    ks = (
        (prompt.k, prompt.vote_k) if prompt.vote_k > prompt.k else (prompt.k,)
    )  # neighbours shown, and voting
    return RetrievalBenchmarkConfig(
        profile=profile.name,
        dataset=profile.data.dataset,
        split_method=profile.data.split_method,
        ks=ks,
        n_queries=_N_QUERIES.get(profile.name, 200),
        retrievers=(
            *gcn_read_outs(profile.retriever_config("gcn")),
            profile.retriever_config("llm"),
            profile.retriever_config("random"),
        ),
        seed=profile.seed,
        progress=profile.lightgcn.progress,
    )


@dataclass(frozen=True)
class RetrievalBenchmark:
    """The benchmark's tables (also written to ``directory`` unless ``write=False``)."""

    table: pd.DataFrame
    lightgcn: pd.DataFrame
    history: pd.DataFrame
    query_users: np.ndarray
    directory: Path | None

    def speedup(self, k: int, fast: str = "gcn", slow: str = "llm", layer_combination: str = "mean") -> float:
        """p50 latency ratio slow/fast at ``k`` (e.g. how many times faster ``gcn`` is than ``llm``)."""
        t = self.table[self.table["k"] == k]
        fast_rows = t[
            (t["retriever"] == fast) & (t["layer_combination"].isin([layer_combination, NOT_APPLICABLE]))
        ]
        slow_rows = t[t["retriever"] == slow]
        if fast_rows.empty or slow_rows.empty:
            raise DataError(f"no rows for {fast!r} and {slow!r} at k={k}")
        return float(slow_rows["p50_ms"].iloc[0] / fast_rows["p50_ms"].iloc[0])


@dataclass(frozen=True)
class QueryUsers:
    """Query users ``[n]``, their query times ``[n]`` (first held-out interaction) and held-out
    positive items (``positives[j]`` for ``users[j]``)."""

    users: np.ndarray
    times: np.ndarray
    positives: list[np.ndarray]


def select_query_users(split: Split, n: int, *, seed: int) -> QueryUsers:
    """A seeded sample (sorted) of ``n`` users (fewer if fewer qualify) with training
    interactions and held-out positives; DataError when none qualifies."""
    held = split.interactions[split.interactions["split"] != "train"]
    trained = set(split.train["user"].unique().tolist())
    positives = held[held["label"] == 1]
    eligible = np.array(
        sorted(u for u in positives["user"].unique().tolist() if u in trained), dtype=np.int64
    )
    if eligible.size == 0:
        raise DataError("no user has both training interactions and held-out positives; nothing to query")
    rng = np.random.default_rng(seed)
    users = np.sort(rng.choice(eligible, size=min(n, eligible.size), replace=False))
    first = held.groupby("user")["timestamp"].min()
    groups = positives.groupby("user")["item"]
    pos = {u: np.unique(items.to_numpy(np.int64)) for u, items in groups}
    return QueryUsers(users, first.loc[users].to_numpy(np.int64), [pos[int(u)] for u in users])


def neighbour_hit_rate(
    retriever: Retriever, neighbours: np.ndarray, queries: QueryUsers, hit_items: int | None = None
) -> float:
    """Mean share of each query user's held-out positives among the neighbours' training items
    strictly before the query time (the ``hit_items`` most recent of them per neighbour; None:
    all), see the module docstring."""
    limit = np.iinfo(np.int32).max if hit_items is None else hit_items
    rates = []
    for row in range(len(queries.users)):
        seen: set[int] = set()
        for v in neighbours[row]:
            if v < 0:
                continue
            items, _, _ = neighbour_events(
                retriever.sequences,
                int(v),
                int(queries.times[row]),
                limit,
                has_timestamps=retriever.has_timestamps,
            )
            seen.update(items.tolist())
        pos = queries.positives[row]
        rates.append(
            np.isin(pos, np.fromiter(seen, dtype=np.int64, count=len(seen))).mean() if len(pos) else 0.0
        )
    return float(np.mean(rates))


def measure(retriever: Retriever, queries: QueryUsers, k: int, warmup: int) -> tuple[np.ndarray, list[float]]:
    """Per-query timed retrieval: one ``retrieve`` call per query user; returns the neighbours
    ``[n, k]`` and each call's seconds."""
    out: dict[int, np.ndarray] = {}

    def one(j: int) -> None:
        out[j] = retriever.retrieve(queries.users[j : j + 1], k, before=queries.times[j : j + 1])[0]

    seconds = time_calls(one, list(range(len(queries.users))), warmup=warmup)
    return np.stack([out[j] for j in range(len(queries.users))]), seconds


def run_retrieval_benchmark(
    config: RetrievalBenchmarkConfig = RetrievalBenchmarkConfig(),
    *,
    dataset: Dataset | None = None,
    split: Split | None = None,
    backbone: Any = None,
    results_root: str | os.PathLike | None = None,
    write: bool = True,
) -> RetrievalBenchmark:
    """Run the benchmark and (by default) write its tables with provenance.

    Args:
        config: what to run.
        dataset: an already loaded dataset. (default: ``load_dataset(config.dataset)``)
        split: an already made split of it. (default: ``split_interactions(dataset, config.split_method)``)
        backbone: a loaded backbone for ``llm``. (default: ``load_backbone(config.backbone)``)
        results_root: results root. (default: ``$RAGREC_RESULTS`` or ``results``)
        write: write ``retrieval.csv``, ``lightgcn.csv``, ``lightgcn_history.csv`` and provenance.
            (default: :obj:`True`)

    Progress bars: LightGCN's follow each GCN config's ``lightgcn.progress``, the LLM
    embedding's ``config.progress``.
    """
    with torch_threads(config.threads):
        return _run(config, dataset, split, backbone, results_root, write)


def _run(config, dataset, split, backbone, results_root, write) -> RetrievalBenchmark:
    provenance = Provenance("retrieval", config.profile, config.dataset, config.seed, config)
    dataset = dataset if dataset is not None else load_dataset(config.dataset)
    split = split if split is not None else split_interactions(dataset, config.split_method)
    for k in config.ks:
        if k >= dataset.n_users:
            raise ConfigError(f"k={k} must be smaller than the {dataset.n_users} users")
    queries = select_query_users(split, config.n_queries, seed=config.seed)
    runs, backbone = _retrievers(config, dataset, backbone)

    rows, lightgcn_rows, histories = [], [], []
    for lc, retriever in runs:
        # fit (or load the recommender's fit), then time every k
        if config.reuse_fits:
            retriever.use_cache(
                split.train, result_dir(config.profile, config.dataset, results_root) / CHECKPOINTS
            )
        retriever.fit(split.train, split.valid)
        if isinstance(retriever, GCNRetriever):
            lightgcn_rows += _lightgcn_rows(retriever, lc, first=not lightgcn_rows)
            histories.append(retriever.result.history_frame().assign(layer_combination=lc))
        rows += [_measured_row(config, retriever, lc, queries, k) for k in config.ks]

    table = pd.DataFrame(rows, columns=list(RETRIEVAL_COLUMNS))
    lightgcn_table = pd.DataFrame(lightgcn_rows, columns=LIGHTGCN_COLUMNS)
    history = pd.concat(histories, ignore_index=True) if histories else pd.DataFrame()
    directory = None
    if write:
        directory = result_dir(config.profile, config.dataset, results_root)
        outputs = _write_tables(directory, table, lightgcn_table, history)
        provenance.parameters = {
            "config": config,
            "n_users": dataset.n_users,
            "n_items": dataset.n_items,
            "n_train": len(split.train),
            "n_queries": len(queries.users),
            "backbone": getattr(backbone, "name", None),
        }
        provenance.write(directory, outputs)
    return RetrievalBenchmark(table, lightgcn_table, history, queries.users, directory)


def _retrievers(
    config: RetrievalBenchmarkConfig, dataset: Dataset, backbone: Any
) -> tuple[list[tuple[str, Retriever]], Any]:
    """``(layer combination, unfitted retriever)`` per configured retriever, and the backbone
    (the first LLM retriever loads one when none was given; the others share it)."""
    runs: list[tuple[str, Retriever]] = []
    for settings in config.retrievers:
        retriever = settings.build(dataset, backbone=backbone, progress=config.progress)
        backbone = getattr(retriever, "backbone", backbone)
        runs.append((_layer_combination(settings), retriever))
    return runs, backbone


def _layer_combination(settings: RetrieverConfig) -> str:
    if isinstance(settings, GCNRetrieverConfig):
        return settings.lightgcn.layer_combination
    return NOT_APPLICABLE


def _measured_row(
    config: RetrievalBenchmarkConfig, retriever: Retriever, lc: str, queries: QueryUsers, k: int
) -> dict:
    """One row of ``retrieval.csv``: per-query latency and neighbour quality of a fitted retriever at
    ``k``."""
    neighbours, seconds = measure(retriever, queries, k, config.warmup)
    latency = summarize(seconds)
    return {
        "retriever": retriever.name,
        "layer_combination": lc,
        "k": k,
        "p50_ms": latency.p50_ms,
        "p95_ms": latency.p95_ms,
        "p99_ms": latency.p99_ms,
        "queries_per_s": latency.per_s,
        "fit_s": retriever.fit_s,
        "neighbour_hit_rate": neighbour_hit_rate(retriever, neighbours, queries, config.hit_items),
        "n_queries": latency.n,
        "backend": getattr(retriever, "backend", NOT_APPLICABLE),
    }


def _lightgcn_rows(retriever: GCNRetriever, lc: str, *, first: bool) -> list[dict[str, Any]]:
    """The fitted LightGCN's ``lightgcn.csv`` row, after the popularity baseline's on the first one."""
    result = retriever.result
    rows = [
        _lightgcn_row(
            f"lightgcn-{lc}", lc, result.valid, result.best_epoch, len(result.history), result.fit_s
        )
    ]
    if first and result.popularity is not None:
        rows.insert(0, _lightgcn_row("popularity", NOT_APPLICABLE, result.popularity, None, None, None))
    return rows


def _write_tables(
    directory: Path, table: pd.DataFrame, lightgcn: pd.DataFrame, history: pd.DataFrame
) -> list[str]:
    outputs = [write_csv(table, directory / RETRIEVAL).name]
    if not lightgcn.empty:
        outputs.append(write_csv(lightgcn, directory / LIGHTGCN).name)
        outputs.append(write_csv(history, directory / LIGHTGCN_HISTORY).name)
    return outputs


def _lightgcn_row(model, lc, metrics, best_epoch, epochs_run, fit_s) -> dict[str, Any]:
    return {
        "model": model,
        "layer_combination": lc,
        "recall_at_k": None if metrics is None else metrics.recall,
        "ndcg_at_k": None if metrics is None else metrics.ndcg,
        "cutoff": None if metrics is None else metrics.k,
        "n_users": None if metrics is None else metrics.n_users,
        "best_epoch": best_epoch,
        "epochs_run": epochs_run,
        "fit_s": fit_s,
    }
