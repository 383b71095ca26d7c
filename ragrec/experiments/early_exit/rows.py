"""The early-exit table's timed rows for one model: the engine at its exit points against the
plain forward on the drawn requests (:func:`~ragrec.experiments.early_exit.engine_timing.benchmark_engine`),
whole requests (:func:`~ragrec.experiments.early_exit.end_to_end.run_end_to_end`), each row's AUC over
every test sample, and the operating point's rows marked as chosen on validation."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ragrec.config import ExitBenchmarkConfig
from ragrec.data import Samples
from ragrec.experiments.early_exit.end_to_end import E2E_RETRIEVER, Pipeline, run_end_to_end
from ragrec.experiments.early_exit.engine_timing import EngineBenchmark, benchmark_engine
from ragrec.experiments.early_exit.operating_point import ExitPoint
from ragrec.experiments.early_exit.sweep import accuracy_with_ci, saved_per_head
from ragrec.experiments.reporting.ablations import head_columns
from ragrec.llm.backbone import Backbone
from ragrec.model.criteria import simulate_exits
from ragrec.model.heads import ExitHeads


def _whole_test_accuracy(
    table: pd.DataFrame, saved: dict[str, pd.DataFrame], points: list[ExitPoint], config: ExitBenchmarkConfig
) -> pd.DataFrame:
    """The timed rows' AUC and LogLoss over *every* test sample, not the few hundred timed ones:
    an exit row's exits (its point among ``points``) replayed on its context's saved test
    predictions (the engine's exits equal the replay's, see ``exit_agreement``), a full-depth
    row that context's last head."""
    table = table.astype({"auc_over": object})  # a text column, empty until filled
    accuracy = ["auc", "auc_ci_low", "auc_ci_high", "logloss"]
    by_setting = {(point.form, point.tau): point for point in points}
    for i, row in table.iterrows():
        frame = saved.get(E2E_RETRIEVER.get(str(row["method"]), config.context))
        if frame is None:
            continue
        layers = [int(c.rsplit("_", 1)[1]) for c in head_columns(frame)]
        per_head = saved_per_head(frame, layers)
        p = per_head[:, -1]
        if row["form"] != "none":
            criterion = by_setting[(row["form"], float(row["tau"]))].criterion()
            p, _ = simulate_exits(per_head, criterion, layers)
        scores = accuracy_with_ci(frame["label"].to_numpy(), p, config.n_boot, config.seed)
        table.loc[i, accuracy] = [scores[c] for c in accuracy]
        table.loc[i, "auc_over"] = "every test sample"
    return table


def _mark_chosen(table: pd.DataFrame, point: ExitPoint) -> pd.DataFrame:
    """``chosen_on = "valid"`` on the rows that run the operating point (engine and end to end)."""
    table = table.astype({"chosen_on": object})
    at = (table["form"] == point.form) & np.isclose(table["tau"].astype(float), point.tau)
    table.loc[at & (table["role"] == "operating_point"), "chosen_on"] = "valid"
    return table


def _with_requests(predictions: pd.DataFrame, requests: Samples) -> pd.DataFrame:
    """Per-request predictions (``row`` = position in ``requests``) with each request's sample id,
    user, item and label."""
    rows = predictions["row"]
    frame = requests.frame
    return predictions.assign(
        sample_id=frame.index.to_numpy()[rows],
        user=frame["user"].to_numpy()[rows],
        item=frame["item"].to_numpy()[rows],
        label=frame["label"].to_numpy()[rows],
    )


def engine_rows(
    backbone: Backbone,
    heads: ExitHeads,
    prompts: list[list[int]],
    requests: Samples,
    points: list[ExitPoint],
    saved_requests: np.ndarray,
    config: ExitBenchmarkConfig,
    cf_ids: np.ndarray | None = None,
) -> EngineBenchmark:
    """:func:`~ragrec.experiments.early_exit.engine_timing.benchmark_engine` on the drawn ``requests``, run as
    ``config`` says."""
    return benchmark_engine(
        backbone,
        heads,
        prompts,
        requests.frame["label"].to_numpy(),
        points,
        config=config,
        saved=saved_requests,
        cf_ids=cf_ids,
    )


def main_rows(
    pipeline: Pipeline,
    requests: Samples,
    prompts: list[list[int]],
    saved_requests: np.ndarray,
    points: list[ExitPoint],
    config: ExitBenchmarkConfig,
    saved_test: dict[str, pd.DataFrame],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The main model's rows: the engine at ``points`` against the plain forward on the drawn
    requests, whole requests at the operating point on the first ``e2e_requests`` of them; AUCs
    over every test sample. Returns the table and the per-request predictions."""
    bench = engine_rows(pipeline.backbone, pipeline.heads, prompts, requests, points, saved_requests, config)
    tables = [bench.table]
    predictions = [_with_requests(bench.predictions, requests)]
    if config.e2e_requests:
        e2e_requests = requests.subset(requests.frame.index[: config.e2e_requests])
        e2e = run_end_to_end(e2e_requests, pipeline, points[0], config, saved=saved_test)
        tables.append(e2e.table)
        predictions.append(e2e.predictions)
    table = _whole_test_accuracy(pd.concat(tables, ignore_index=True), saved_test, points, config)
    table = _mark_chosen(table.assign(variant="main"), points[0])
    return table, pd.concat(predictions, ignore_index=True).assign(variant="main")


def cf_rows(
    backbone: Backbone,
    heads: ExitHeads,
    prompts: list[list[int]],
    requests: Samples,
    point: ExitPoint,
    saved_test: pd.DataFrame,
    config: ExitBenchmarkConfig,
    cf_ids: np.ndarray,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ``cf`` variant's rows: its engine at its operating ``point`` against the plain forward
    with the same filled slots; AUCs over every test sample of its saved predictions."""
    saved_requests = saved_per_head(saved_test, heads.head_layers, requests.frame.index)
    bench = engine_rows(backbone, heads, prompts, requests, [point], saved_requests, config, cf_ids)
    table = _whole_test_accuracy(bench.table, {config.context: saved_test}, [point], config)
    table = _mark_chosen(table.assign(variant="cf"), point)
    return table, _with_requests(bench.predictions, requests).assign(variant="cf")
