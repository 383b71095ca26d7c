"""End-to-end requests: retrieval → prompt building → score, per request, for the paper's pipeline
(LLM retriever, full depth) and ours (GCN retriever, early exit).

A request is (user, item, time) → retrieval (``retrieve(..., precomputed=False)``: the LLM
retriever embeds the user's text with the LLM at query time, the paper's cost) → prompt building
(tokenisation included) → score. Methods (:data:`~ragrec.config.E2E_METHODS`): ``e2e_llm_full``
(LLM retriever, plain full forward), ``e2e_gcn_full`` (GCN retriever, plain full forward),
``e2e_gcn_exit`` (GCN retriever, engine at the operating point), over the same requests in the
same batches. Latency is defined as in :mod:`ragrec.experiments.early_exit.timed_runs`; each row adds the
share of time (and mean ms per request) in retrieval, prompt building and the model.
``speedup_vs_full`` of these rows is relative to ``e2e_llm_full`` (the paper's baseline
pipeline), named in the ``reference`` column.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ragrec.config import E2E_METHODS, ExitBenchmarkConfig
from ragrec.data import Samples
from ragrec.errors import ConfigError
from ragrec.experiments.early_exit.operating_point import ExitPoint
from ragrec.experiments.early_exit.plain_forward import plain_predict
from ragrec.experiments.early_exit.sweep import saved_per_head
from ragrec.experiments.early_exit.timed_runs import (
    TimedRun,
    interleaved,
    method_predictions,
    results_table,
    run_columns,
    saved_agreement,
)
from ragrec.llm.backbone import Backbone
from ragrec.model.engine import EarlyExitEngine
from ragrec.model.heads import ExitHeads
from ragrec.model.prompts import PromptBuilder
from ragrec.retrieval.base import Retriever

E2E_RETRIEVER = {"e2e_llm_full": "llm", "e2e_gcn_full": "gcn", "e2e_gcn_exit": "gcn"}
assert set(E2E_RETRIEVER) == set(E2E_METHODS), "every end-to-end method needs its retriever"
STAGES = ("retrieval", "prompt", "model")  # the parts of a request timed separately


@dataclass(frozen=True)
class Pipeline:
    """What answers a request: fitted retrievers → prompt builder → scoring model and exit heads.

    Attributes:
        retrievers: fitted ``"gcn"`` and/or ``"llm"`` retrievers (the LLM one should embed with
            the untuned backbone, as at fit).
        builder: the prompt builder the recommender used.
        backbone: the scoring model (LoRA merged).
        heads: its exit heads.
    """

    retrievers: Mapping[str, Retriever]
    builder: PromptBuilder
    backbone: Backbone
    heads: ExitHeads


@dataclass(frozen=True)
class EndToEndBenchmark:
    """:func:`run_end_to_end`'s table and per-request predictions (``method, form, tau, row,
    p_yes, exit_layer, sample_id, user, item, label``)."""

    table: pd.DataFrame
    predictions: pd.DataFrame


@dataclass(frozen=True)
class _Requests:
    """The requests' columns as arrays, and the batches (consecutive rows) they are answered in."""

    samples: Samples
    sample_ids: np.ndarray
    users: np.ndarray
    times: np.ndarray
    labels: np.ndarray
    batches: list[list[int]]

    @classmethod
    def of(cls, requests: Samples, batch_size: int) -> _Requests:
        frame = requests.frame
        n = len(frame)
        return cls(
            samples=requests,
            sample_ids=frame.index.to_numpy(),
            users=frame["user"].to_numpy(np.int64),
            times=frame["timestamp"].to_numpy(np.int64),
            labels=frame["label"].to_numpy().astype(int),
            batches=[list(range(s, min(s + batch_size, n))) for s in range(0, n, batch_size)],
        )


def _timed_call(method, requests, pipeline, engine, run, stages, k, padding_side) -> Callable[[int], None]:
    """Answer batch ``b`` of ``method`` end to end, storing its scores in ``run`` and the seconds
    of each stage in ``stages[b]``."""
    retriever = pipeline.retrievers[E2E_RETRIEVER[method]]

    def call(b: int) -> None:
        idx = requests.batches[b]
        t0 = time.perf_counter()
        # retrieval
        histories = [requests.samples.history(requests.sample_ids[i])[:2] for i in idx]
        hoods = retriever.retrieve(
            requests.users[idx], k, before=requests.times[idx], histories=histories, precomputed=False
        )
        t1 = time.perf_counter()
        # prompt building
        prompts = [
            pipeline.builder.encode(requests.samples, requests.sample_ids[i], hoods[j])
            for j, i in enumerate(idx)
        ]
        t2 = time.perf_counter()
        # the model
        if method == "e2e_gcn_exit":
            result = engine.predict(prompts, batch_size=len(prompts), padding_side=padding_side)
            run.p_yes[idx] = result.p_yes
            run.exit_layer[idx] = result.exit_layer
        else:
            run.p_yes[idx] = plain_predict(pipeline.backbone, prompts, len(prompts), padding_side)
        t3 = time.perf_counter()
        stages[b] = (t1 - t0, t2 - t1, t3 - t2)

    return call


def _time_methods(
    batch: _Requests, pipeline: Pipeline, point: ExitPoint, k: int, config: ExitBenchmarkConfig
) -> tuple[dict[str, TimedRun], dict[str, list[list[float]]]]:
    """Answer every request with every method, the methods interleaved (see
    :func:`~ragrec.experiments.early_exit.timed_runs.interleaved`): each method's run (scores and per-pass
    stage splits) and its per-batch seconds ``[repeat][batch]``."""
    n, num_layers = len(batch.labels), pipeline.heads.num_layers
    engine = EarlyExitEngine(pipeline.backbone, pipeline.heads, point.criterion())
    runs = {m: TimedRun(np.full(n, np.nan), np.full(n, num_layers)) for m in config.e2e_methods}
    stage_now = {m: np.zeros((len(batch.batches), len(STAGES))) for m in config.e2e_methods}
    calls = {
        m: _timed_call(m, batch, pipeline, engine, runs[m], stage_now[m], k, config.padding_side)
        for m in config.e2e_methods
    }
    # Stage splits are recorded inside each timed call; copied out after every timed pass.
    timings = interleaved(
        calls,
        len(batch.batches),
        config.e2e_repeats,
        config.warmup,
        lambda m: runs[m].stages.append(stage_now[m].copy()),
    )
    return runs, timings


def _stage_columns(run: TimedRun, n: int) -> dict[str, float]:
    """Median over repeats of each stage's share of the time and its mean ms per request."""
    stage_sums = np.stack([s.sum(0) for s in run.stages])  # [repeat, 3]
    shares = np.median(stage_sums / stage_sums.sum(1, keepdims=True), axis=0)  # [3]
    per_request_ms = np.median(stage_sums, axis=0) * 1e3 / n  # [3]
    return {
        **{f"{stage}_share": shares[j] for j, stage in enumerate(STAGES)},
        **{f"{stage}_ms": per_request_ms[j] for j, stage in enumerate(STAGES)},
    }


def _method_row(
    method: str,
    point: ExitPoint | None,
    reference: str,
    columns: dict,
    stages: dict,
    config: ExitBenchmarkConfig,
) -> dict[str, object]:
    """A row of the end-to-end table: the method, its exit setting (``point`` None: full depth),
    the measured columns, the stage splits and how it was run."""
    # The compute-bound figure covers the model stage only; the pipeline's is diluted by the
    # retrieval and prompt stages, so no efficiency ratio is given for e2e rows.
    return {
        "method": method,
        "form": "none" if point is None else point.form,
        "tau": math.nan if point is None else point.tau,
        "role": "full_depth" if point is None else point.role,
        "reference": reference,
        **columns,
        **stages,
        "batch_size": config.e2e_batch_size,
        "repeats": config.e2e_repeats,
        "threads": torch.get_num_threads(),
    }


def _check_requests(requests: Samples, retrievers: Mapping[str, Retriever], methods) -> None:
    if len(requests) == 0:
        raise ConfigError("no requests to time; pass a non-empty set of samples")
    missing = sorted({E2E_RETRIEVER[m] for m in methods} - set(retrievers))
    if missing:
        raise ConfigError(f"methods {list(methods)} need fitted retriever(s) {missing}")


def run_end_to_end(
    requests: Samples,
    pipeline: Pipeline,
    point: ExitPoint,
    config: ExitBenchmarkConfig | None = None,
    *,
    saved: Mapping[str, pd.DataFrame] | None = None,
    k: int | None = None,
) -> EndToEndBenchmark:
    """Time whole requests (retrieval → prompt → score) for each method on the same requests.

    Args:
        requests: the CTR samples to answer (their user, item, time; labels for AUC).
        pipeline: the retrievers, prompt builder and scoring model that answer them.
        point: the exit setting of ``e2e_gcn_exit``.
        config: ``e2e_methods``, ``e2e_batch_size``, ``e2e_repeats``, ``warmup``,
            ``padding_side``, ``n_boot`` and ``seed`` are used. (default: ``ExitBenchmarkConfig()``)
        saved: optional saved predictions per context (``{"gcn": frame, "llm": frame}``); fills
            ``max_abs_diff_vs_saved`` (and ``exit_agreement`` for the exit method).
        k: neighbours retrieved per request. (default: ``builder.config.retrieve_k``, what a
            prompt needs, as when the recommender built its prompts)

    Returns:
        ``table``: one row per method (:data:`~ragrec.experiments.early_exit.timed_runs.EARLY_EXIT_COLUMNS`);
        ``reference`` names the row that ``speedup_vs_full`` is relative to (``e2e_llm_full`` when
        run, else the first method). ``predictions``: per request and method.
    """
    config = config or ExitBenchmarkConfig()
    methods = config.e2e_methods
    _check_requests(requests, pipeline.retrievers, methods)
    k = pipeline.builder.config.retrieve_k if k is None else k
    batch = _Requests.of(requests, config.e2e_batch_size)
    runs, timings = _time_methods(batch, pipeline, point, k, config)

    reference = "e2e_llm_full" if "e2e_llm_full" in methods else methods[0]
    rows, predictions = [], []
    for m in methods:
        row, answers = _method_results(m, runs[m], timings, reference, batch, pipeline, point, config, saved)
        rows.append(row)
        predictions.append(answers)
    return EndToEndBenchmark(results_table(rows), pd.concat(predictions, ignore_index=True))


def _method_results(
    method: str,
    run: TimedRun,
    timings: Mapping[str, list[list[float]]],
    reference: str,
    batch: _Requests,
    pipeline: Pipeline,
    point: ExitPoint,
    config: ExitBenchmarkConfig,
    saved: Mapping[str, pd.DataFrame] | None,
) -> tuple[dict[str, object], pd.DataFrame]:
    """One method's table row (timing against ``reference``, agreement with its context's saved
    predictions when given) and its per-request predictions."""
    columns = run_columns(
        batch.labels,
        run,
        timings[method],
        timings[reference],
        [len(b) for b in batch.batches],
        pipeline.heads.num_layers,
        n_boot=config.n_boot,
        seed=config.seed,
    )
    exits = method == "e2e_gcn_exit"
    stages = _stage_columns(run, len(batch.labels))
    row = _method_row(method, point if exits else None, reference, columns, stages, config)
    context = E2E_RETRIEVER[method]
    if saved is not None and context in saved:
        per_head = saved_per_head(saved[context], pipeline.heads.head_layers, batch.sample_ids)
        criterion = point.criterion() if exits else None
        row.update(saved_agreement(run, per_head, criterion, pipeline.heads.head_layers))
    answers = method_predictions(method, str(row["form"]), float(row["tau"]), run.p_yes, run.exit_layer)
    items = batch.samples.frame["item"].to_numpy()
    return row, answers.assign(sample_id=batch.sample_ids, user=batch.users, item=items, label=batch.labels)
