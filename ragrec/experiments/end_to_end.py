"""End-to-end requests: retrieval → prompt building → score, per request, for the paper's pipeline
(LLM retriever, full depth) and ours (GCN retriever, early exit)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from ragrec.data import Samples
from ragrec.errors import ConfigError
from ragrec.experiments.exit_sweep import ExitPoint, accuracy_with_ci, saved_per_head
from ragrec.experiments.exit_timing import (
    EndToEndBenchmark,
    TimedRun,
    interleaved,
    method_predictions,
    plain_predict,
    results_table,
    timing_columns,
)
from ragrec.llm.backbone import Backbone
from ragrec.model.criteria import simulate_exits
from ragrec.model.engine import EarlyExitEngine
from ragrec.model.heads import ExitHeads
from ragrec.retrieval.base import Retriever

if TYPE_CHECKING:  # config may one day hold an ExitBenchmarkConfig; no import cycle then
    pass

E2E_METHODS = ("e2e_llm_full", "e2e_gcn_full", "e2e_gcn_exit")
E2E_RETRIEVER = {"e2e_llm_full": "llm", "e2e_gcn_full": "gcn", "e2e_gcn_exit": "gcn"}
# --------------------------------------------------------------------------------------------
# 3. end-to-end requests


def check_methods(methods: Sequence[str]) -> None:
    if not methods:
        raise ConfigError(f"give at least one end-to-end method of {E2E_METHODS}")
    unknown = [m for m in methods if m not in E2E_METHODS]
    if unknown:
        raise ConfigError(f"unknown end-to-end method(s) {unknown}; choose from {E2E_METHODS}")



def run_end_to_end(
    requests: Samples,
    retrievers: Mapping[str, Retriever],
    builder,
    backbone: Backbone,
    heads: ExitHeads,
    point: ExitPoint,
    *,
    k: int | None = None,
    batch_size: int = 8,
    repeats: int = 2,
    warmup: int = 2,
    methods: Sequence[str] = E2E_METHODS,
    padding_side: str = "left",
    saved: Mapping[str, pd.DataFrame] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> EndToEndBenchmark:
    """Time whole requests (retrieval → prompt → score) for each method on the same requests.

    Args:
        requests: the CTR samples to answer (their user, item, time; labels for AUC).
        retrievers: fitted ``"gcn"`` and/or ``"llm"`` retrievers (the LLM one should embed with the
            untuned backbone, as at fit).
        builder: a :class:`ragrec.model.prompts.PromptBuilder`.
        backbone, heads: the scoring model (LoRA merged) and its exit heads.
        point: the exit setting of ``e2e_gcn_exit``.
        k: neighbours retrieved per request (default ``builder.config.retrieve_k``: what a
            prompt needs, as when the recommender built its prompts).
        saved: optional saved predictions per context (``{"gcn": frame, "llm": frame}``); fills
            ``max_abs_diff_vs_saved`` (and ``exit_agreement`` for the exit method).

    Returns:
        ``table``: one row per method (:data:`EARLY_EXIT_COLUMNS`); ``reference`` names the row
        that ``speedup_vs_full`` is relative to (``e2e_llm_full`` when run, else the first
        method). ``predictions``: per request and method.
    """
    check_methods(methods)
    if len(requests) == 0:
        raise ConfigError("no requests to time; pass a non-empty set of samples")
    missing = sorted({E2E_RETRIEVER[m] for m in methods} - set(retrievers))
    if missing:
        raise ConfigError(f"methods {list(methods)} need fitted retriever(s) {missing}")
    k = builder.config.retrieve_k if k is None else k
    frame = requests.frame
    sample_ids = frame.index.to_numpy()
    users = frame["user"].to_numpy(np.int64)
    times = frame["timestamp"].to_numpy(np.int64)
    labels = frame["label"].to_numpy().astype(int)
    n, num_layers = len(frame), heads.num_layers
    batches = [list(range(s, min(s + batch_size, n))) for s in range(0, n, batch_size)]
    sizes = [len(b) for b in batches]
    engine = EarlyExitEngine(backbone, heads, point.criterion())
    runs = {m: TimedRun(np.full(n, np.nan), np.full(n, num_layers)) for m in methods}
    stage_now = {m: np.zeros((len(batches), 3)) for m in methods}

    def make_call(method: str) -> Callable[[int], None]:
        retriever = retrievers[E2E_RETRIEVER[method]]
        run, stages = runs[method], stage_now[method]

        def call(b: int) -> None:
            idx = batches[b]
            t0 = time.perf_counter()
            histories = [requests.history(sample_ids[i])[:2] for i in idx]
            hoods = retriever.retrieve(users[idx], k, before=times[idx], histories=histories, precomputed=False)
            t1 = time.perf_counter()
            prompts = [builder.encode(requests, sample_ids[i], hoods[j]) for j, i in enumerate(idx)]
            t2 = time.perf_counter()
            if method == "e2e_gcn_exit":
                result = engine.predict(prompts, batch_size=len(prompts), padding_side=padding_side)
                run.p_yes[idx], run.exit_layer[idx] = result.p_yes, result.exit_layer
            else:
                run.p_yes[idx] = plain_predict(backbone, prompts, len(prompts), padding_side)
            t3 = time.perf_counter()
            stages[b] = (t1 - t0, t2 - t1, t3 - t2)

        return call

    calls = {m: make_call(m) for m in methods}
    # Stage splits are recorded inside each timed call; copied out after every timed pass.
    timings = interleaved(calls, len(batches), repeats, warmup, lambda m: runs[m].stages.append(stage_now[m].copy()))

    names = list(calls)
    reference = "e2e_llm_full" if "e2e_llm_full" in methods else names[0]
    rows, predictions = [], []
    for m in names:
        run = runs[m]
        layers_run = int(run.exit_layer.sum())
        stage_sums = np.stack([s.sum(0) for s in run.stages])  # [repeat, 3]
        shares = np.median(stage_sums / stage_sums.sum(1, keepdims=True), axis=0)
        per_request_ms = np.median(stage_sums, axis=0) * 1e3 / n
        mean_layer = float(np.mean(run.exit_layer))
        row: dict[str, object] = {
            "method": m, "form": point.form if m == "e2e_gcn_exit" else "none",
            "tau": point.tau if m == "e2e_gcn_exit" else math.nan,
            "role": point.role if m == "e2e_gcn_exit" else "full_depth", "reference": reference, "n": n,
            **accuracy_with_ci(labels, run.p_yes, n_boot, seed), **timing_columns(timings[m], sizes),
            "mean_exit_layer": mean_layer, "layer_share": mean_layer / num_layers,
            "speedup_vs_full": timing_columns(timings[m], sizes)["rps"] / timing_columns(timings[reference], sizes)["rps"],
            "compute_bound_speedup": n * num_layers / layers_run,
            "retrieval_share": shares[0], "prompt_share": shares[1], "model_share": shares[2],
            "retrieval_ms": per_request_ms[0], "prompt_ms": per_request_ms[1], "model_ms": per_request_ms[2],
            "batch_size": batch_size, "repeats": repeats, "threads": torch.get_num_threads(),
        }
        # The compute-bound figure covers the model stage only; the pipeline's is diluted by the
        # retrieval and prompt stages, so no efficiency ratio is given for e2e rows.
        context = E2E_RETRIEVER[m]
        if saved is not None and context in saved:
            per_head = saved_per_head(saved[context], heads.head_layers, sample_ids)
            if m == "e2e_gcn_exit":
                sim_p, sim_head = simulate_exits(per_head, point.criterion(), heads.head_layers)
                row["exit_agreement"] = float(np.mean(np.asarray(heads.head_layers)[sim_head] == run.exit_layer))
                row["max_abs_diff_vs_saved"] = float(np.max(np.abs(run.p_yes - sim_p)))
            else:
                row["max_abs_diff_vs_saved"] = float(np.max(np.abs(run.p_yes - per_head[:, -1])))
        rows.append(row)
        predictions.append(method_predictions(m, str(row["form"]), float(row["tau"]), run.p_yes, run.exit_layer).assign(
            sample_id=sample_ids, user=users, item=frame["item"].to_numpy(), label=labels,
        ))
    return EndToEndBenchmark(results_table(rows), pd.concat(predictions, ignore_index=True))


