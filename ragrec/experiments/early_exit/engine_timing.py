"""Real engine vs plain forward, timed side by side on the same prompts in the same batches.

:func:`benchmark_engine` runs the :class:`~ragrec.model.engine.EarlyExitEngine` at chosen exit
points, the same engine told never to exit (``method="engine_full"``), and the plain Hugging
Face full-depth forward of the same (LoRA-merged) model (``method="full"``,
:func:`ragrec.experiments.early_exit.plain_forward.plain_predict`), on the same prompts, cut into the same
batches (:func:`ragrec.llm.batching.length_sorted_batches`: longest first, similar lengths),
padded the same way, same batch size and threads. Each batch is one timed call, the methods
interleaved (:func:`ragrec.experiments.early_exit.timed_runs.interleaved`); the table's columns are
defined in :mod:`ragrec.experiments.early_exit.timed_runs`.

Every timed call ends with its scores on the CPU (the engine reads each head's P(Yes) there; the
plain forward returns its P(Yes)), so GPU timings include the device's work.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ragrec.config import ExitBenchmarkConfig
from ragrec.errors import ConfigError, DataError
from ragrec.experiments.early_exit.operating_point import ExitPoint
from ragrec.experiments.early_exit.plain_forward import plain_predict
from ragrec.experiments.early_exit.timed_runs import (
    TimedRun,
    interleaved,
    method_predictions,
    results_table,
    run_columns,
    saved_agreement,
    timing_columns,
)
from ragrec.llm.backbone import Backbone
from ragrec.llm.batching import length_sorted_batches
from ragrec.model.criteria import NeverExit
from ragrec.model.engine import EarlyExitEngine, ExitResult
from ragrec.model.forward import check_prompts
from ragrec.model.heads import ExitHeads

# --------------------------------------------------------------------------------------------
# the real engine against the plain forward


@dataclass(frozen=True)
class EngineBenchmark:
    """:func:`benchmark_engine`'s table and the raw outputs behind it (original prompt order).

    ``predictions``: one row per (method, prompt): ``method, form, tau, row, p_yes, exit_layer``
    (``row`` = the prompt's position), from which every AUC of ``table`` can be recomputed.
    """

    table: pd.DataFrame
    predictions: pd.DataFrame
    full_p_yes: np.ndarray
    results: dict[str, ExitResult]  # keyed "<form>:<tau>" (form: the family's label), and "engine_full"


def _check_engine_input(backbone, heads, prompts, labels, points, saved) -> np.ndarray:
    """The labels as ints, or a clear error for prompts, labels, points or saved predictions."""
    check_prompts(backbone, prompts)
    labels = np.asarray(labels).astype(int)
    if len(labels) != len(prompts):
        raise DataError(f"{len(labels)} labels for {len(prompts)} prompts")
    if not points:
        raise ConfigError("give at least one ExitPoint for the engine")
    expected = (len(prompts), heads.num_heads)
    if saved is not None and np.shape(saved) != expected:
        raise DataError(f"saved per-head predictions have shape {np.shape(saved)}, expected {expected}")
    return labels


def _engines(
    backbone: Backbone, heads: ExitHeads, points: Sequence[ExitPoint]
) -> dict[str, tuple[ExitPoint | None, EarlyExitEngine]]:
    """The engines timed, keyed as :attr:`EngineBenchmark.results`: never exiting, then one per
    point, each with the point it runs (None for the one never exiting)."""
    engines: dict[str, tuple[ExitPoint | None, EarlyExitEngine]] = {
        ENGINE_FULL: (None, EarlyExitEngine(backbone, heads, NeverExit()))
    }
    for point in points:
        engines[f"{point.form}:{point.tau:g}"] = (point, EarlyExitEngine(backbone, heads, point.criterion()))
    return engines


def _engine_calls(
    backbone, engines, prompts, batches, runs, per_head, padding_side, heads=None, cf_ids=None
) -> dict[str, Callable[[int], None]]:
    """One timed call per method: score batch ``b`` and store its outputs in the method's run."""

    def rows_cf(idx):
        return None if cf_ids is None else np.asarray(cf_ids)[idx]

    def full_call(b: int) -> None:
        idx = batches[b]
        runs["full"].p_yes[idx] = plain_predict(
            backbone,
            [prompts[i] for i in idx],
            len(idx),
            padding_side,
            heads=heads if cf_ids is not None else None,
            cf_ids=rows_cf(idx),
        )

    def engine_call(key: str) -> Callable[[int], None]:
        engine = engines[key][1]

        def call(b: int) -> None:
            idx = batches[b]
            result = engine.predict(
                [prompts[i] for i in idx], batch_size=len(idx), padding_side=padding_side, cf_ids=rows_cf(idx)
            )
            runs[key].p_yes[idx] = result.p_yes
            runs[key].exit_layer[idx] = result.exit_layer
            per_head[key][idx] = result.per_head_p

        return call

    calls: dict[str, Callable[[int], None]] = {"full": full_call}
    calls.update({key: engine_call(key) for key in engines})
    return calls


def _run_timed(
    backbone, heads, engines, prompts, batches, padding_side, cf_ids, *, repeats: int, warmup: int
) -> tuple[dict[str, TimedRun], dict[str, np.ndarray], dict[str, list[list[float]]]]:
    """Every method on every batch, interleaved: each method's outputs (original prompt order),
    each engine's per-head P(Yes) ``[N, n_heads]`` and each method's seconds ``[repeat][batch]``."""
    n, num_layers = len(prompts), heads.num_layers
    runs = {"full": TimedRun(np.full(n, np.nan), np.full(n, num_layers))}
    runs.update({key: TimedRun(np.full(n, np.nan), np.zeros(n, dtype=np.int64)) for key in engines})
    per_head = {key: np.full((n, heads.num_heads), np.nan) for key in engines}
    calls = _engine_calls(backbone, engines, prompts, batches, runs, per_head, padding_side, heads, cf_ids)
    return runs, per_head, interleaved(calls, len(batches), repeats, warmup)


def _engine_results(
    runs: dict[str, TimedRun], per_head: dict[str, np.ndarray], heads: ExitHeads
) -> dict[str, ExitResult]:
    """Each engine's outputs as the engine returns them (the plain forward has no heads)."""
    return {
        key: ExitResult(
            run.p_yes, run.exit_layer, per_head[key], int(run.exit_layer.sum()), heads.head_layers
        )
        for key, run in runs.items()
        if key != "full"
    }


ENGINE_FULL = "engine_full"  # the engine told never to exit: the forward path of early exit, at full depth


def _engine_row(
    key: str, point: ExitPoint | None, columns: dict, batch_size: int, repeats: int
) -> dict[str, object]:
    """A row of the engine table: the method (``key`` ``"full"``: the plain forward;
    :data:`ENGINE_FULL`: the engine never exiting; else the engine at ``point``), its exit
    setting, its measured columns and how it was run."""
    if point is None:
        role = "full_depth" if key == "full" else "engine_full_depth"
        row: dict[str, object] = {
            "method": key,
            "reference": "full",
            "form": "none",
            "tau": math.nan,
            "role": role,
        }
    else:
        row = {
            "method": "exit",
            "reference": "full",
            "form": point.form,
            "tau": point.tau,
            "role": point.role,
        }
    row.update(columns)
    row["speedup_efficiency"] = row["speedup_vs_full"] / row["compute_bound_speedup"]
    row.update(batch_size=batch_size, repeats=repeats, threads=torch.get_num_threads())
    return row


def _rows_and_predictions(
    runs: dict[str, TimedRun],
    engines: dict,
    timings: dict[str, list[list[float]]],
    sizes: list[int],
    labels: np.ndarray,
    heads: ExitHeads,
    saved: np.ndarray | None,
    *,
    batch_size: int,
    repeats: int,
    n_boot: int,
    seed: int,
) -> tuple[list[dict], list[pd.DataFrame]]:
    """Every method's table row (speed-ups against the plain forward and against the engine never
    exiting) and its long per-request predictions."""
    rows, predictions = [], []
    engine_full_rps = timing_columns(timings[ENGINE_FULL], sizes)["rps"]
    for key, run in runs.items():
        point = None if key == "full" else engines[key][0]
        columns = run_columns(
            labels, run, timings[key], timings["full"], sizes, heads.num_layers, n_boot=n_boot, seed=seed
        )
        columns["speedup_vs_engine_full"] = columns["rps"] / engine_full_rps
        row = _engine_row(key, point, columns, batch_size, repeats)
        if saved is not None:
            row.update(
                saved_agreement(run, saved, None if point is None else point.criterion(), heads.head_layers)
            )
        rows.append(row)
        predictions.append(
            method_predictions(
                str(row["method"]), str(row["form"]), float(row["tau"]), run.p_yes, run.exit_layer
            )
        )
    return rows, predictions


def benchmark_engine(
    backbone: Backbone,
    heads: ExitHeads,
    prompts: Sequence[Sequence[int]],
    labels: Sequence[int] | np.ndarray,
    points: Sequence[ExitPoint],
    *,
    config: ExitBenchmarkConfig | None = None,
    saved: np.ndarray | None = None,
    cf_ids: np.ndarray | None = None,
) -> EngineBenchmark:
    """Time the plain forward (``method="full"``), the engine never exiting (``"engine_full"``)
    and the engine at every point (``"exit"``) alike.

    Args:
        backbone: a plain Llama (merge LoRA first: an unmerged adapter is correct but slower).
        heads: exit heads built on ``backbone``'s model.
        prompts, labels: token-id prompts and their 0/1 labels.
        points: the exit settings to run.
        config: how it is timed: ``batch_size`` (every method), ``repeats`` (timed passes, medians
            reported), ``warmup`` batches, ``padding_side``, and ``n_boot``/``seed`` of the AUC
            intervals. (default: :class:`~ragrec.config.ExitBenchmarkConfig`'s)
        saved: optional ``[N, n_heads]`` saved per-head P(Yes) of the same prompts; fills
            ``exit_agreement`` and ``max_abs_diff_vs_saved``.
        cf_ids: ``[N, 2]`` (user, item) per prompt for heads with collaborative tokens.
    """
    c = config or ExitBenchmarkConfig()
    labels = _check_engine_input(backbone, heads, prompts, labels, points, saved)
    engines = _engines(backbone, heads, points)
    batches = length_sorted_batches(prompts, c.batch_size)
    sizes = [len(b) for b in batches]
    runs, per_head, timings = _run_timed(
        backbone, heads, engines, prompts, batches, c.padding_side, cf_ids, repeats=c.repeats, warmup=c.warmup
    )
    rows, predictions = _rows_and_predictions(
        runs,
        engines,
        timings,
        sizes,
        labels,
        heads,
        saved,
        batch_size=c.batch_size,
        repeats=c.repeats,
        n_boot=c.n_boot,
        seed=c.seed,
    )
    return EngineBenchmark(
        results_table(rows),
        pd.concat(predictions, ignore_index=True),
        runs["full"].p_yes,
        _engine_results(runs, per_head, heads),
    )
