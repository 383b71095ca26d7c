"""Real engine vs plain forward, timed side by side on the same prompts in the same batches."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from ragrec.errors import ConfigError, DataError
from ragrec.experiments.exit_sweep import ExitPoint, accuracy_with_ci
from ragrec.experiments.timing import summarize, time_calls
from ragrec.llm.backbone import Backbone
from ragrec.llm.batching import length_sorted_batches, pad_prompts
from ragrec.model.criteria import simulate_exits
from ragrec.model.engine import EarlyExitEngine, ExitResult
from ragrec.model.forward import check_prompts, plain_full_forward_p_yes
from ragrec.model.heads import ExitHeads

if TYPE_CHECKING:  # config may one day hold an ExitBenchmarkConfig; no import cycle then
    pass


EARLY_EXIT_COLUMNS = (
    "method", "form", "tau", "role", "reference", "n", "auc", "auc_ci_low", "auc_ci_high", "logloss",
    "rps", "p50_ms", "p99_ms", "mean_exit_layer", "layer_share", "speedup_vs_full", "compute_bound_speedup",
    "speedup_efficiency", "exit_agreement", "max_abs_diff_vs_saved",
    "retrieval_share", "prompt_share", "model_share", "retrieval_ms", "prompt_ms", "model_ms",
    "batch_size", "repeats", "threads",
)


# --------------------------------------------------------------------------------------------
# 2. the real engine against the plain forward


def plain_predict(backbone: Backbone, prompts: Sequence[Sequence[int]], batch_size: int,
                  padding_side: str = "left") -> np.ndarray:
    """P(Yes) ``[N]`` from the plain Hugging Face full-depth forward, batched exactly as the
    engine batches (:func:`~ragrec.early_exit.length_sorted_batches`, :func:`~ragrec.early_exit.pad_prompts`)."""
    check_prompts(backbone, prompts)
    if padding_side not in ("left", "right"):
        raise ConfigError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    out = np.full(len(prompts), np.nan)
    pad_id = backbone.tokenizer.pad_token_id or 0  # as the engine pads
    device = backbone.device
    with torch.inference_mode():
        for idx in length_sorted_batches(prompts, batch_size):
            ids, valid = pad_prompts([prompts[i] for i in idx], pad_id, padding_side)
            p = plain_full_forward_p_yes(backbone, ids.to(device), valid.long().to(device))
            out[idx] = p.to("cpu", torch.float64).numpy()
    return out


@dataclass
class TimedRun:
    """One method's outputs (original prompt order) and, end to end, its per-repeat stage splits."""

    p_yes: np.ndarray
    exit_layer: np.ndarray
    stages: list[np.ndarray] = dataclasses.field(default_factory=list)  # [repeat] → [batch, 3]


def interleaved(
    calls: Mapping[str, Callable[[int], None]], n_batches: int, repeats: int, warmup: int,
    after_pass: Callable[[str], None] | None = None,
) -> dict[str, list[list[float]]]:
    """Per-batch seconds ``[repeat][batch]`` of every method; methods alternate within each
    repeat, in an order that rotates between repeats; ``warmup`` untimed batches before the first.
    ``after_pass(name)`` runs (untimed) after each timed pass of a method."""
    names = list(calls)
    out: dict[str, list[list[float]]] = {name: [] for name in names}
    for r in range(repeats):
        for j in range(len(names)):
            name = names[(j + r) % len(names)]
            out[name].append(time_calls(calls[name], list(range(n_batches)), warmup=warmup if r == 0 else 0))
            if after_pass is not None:
                after_pass(name)
    return out


def method_predictions(method: str, form: str, tau: float, p_yes: np.ndarray, exit_layer: np.ndarray) -> pd.DataFrame:
    """Long per-request predictions of one method (``row`` = position in the input order)."""
    return pd.DataFrame({
        "method": method, "form": form, "tau": tau, "row": np.arange(len(p_yes)),
        "p_yes": p_yes, "exit_layer": np.asarray(exit_layer, dtype=np.int64),
    })


def timing_columns(seconds: list[list[float]], sizes: list[int]) -> dict[str, float]:
    """Median over repeats of RPS and per-request p50/p99 (see the module docstring)."""
    rps, p50, p99 = [], [], []
    for per_batch in seconds:
        rps.append(summarize(per_batch, items_per_call=sizes).per_s)
        per_request = summarize(np.repeat(per_batch, sizes))
        p50.append(per_request.p50_ms)
        p99.append(per_request.p99_ms)
    return {"rps": float(np.median(rps)), "p50_ms": float(np.median(p50)), "p99_ms": float(np.median(p99))}


@dataclass(frozen=True)
class EngineBenchmark:
    """:func:`benchmark_engine`'s table and the raw outputs behind it (original prompt order).

    ``predictions``: one row per (method, prompt): ``method, form, tau, row, p_yes, exit_layer``
    (``row`` = the prompt's position), from which every AUC of ``table`` can be recomputed.
    """

    table: pd.DataFrame
    predictions: pd.DataFrame
    full_p_yes: np.ndarray
    results: dict[str, ExitResult]  # keyed "<form>:<tau>"


@dataclass(frozen=True)
class EndToEndBenchmark:
    """:func:`run_end_to_end`'s table and per-request predictions (``method, form, tau, row,
    p_yes, exit_layer, sample_id, user, item, label``)."""

    table: pd.DataFrame
    predictions: pd.DataFrame


def benchmark_engine(
    backbone: Backbone,
    heads: ExitHeads,
    prompts: Sequence[Sequence[int]],
    labels: Sequence[int] | np.ndarray,
    points: Sequence[ExitPoint],
    *,
    batch_size: int = 8,
    repeats: int = 3,
    warmup: int = 2,
    padding_side: str = "left",
    saved: np.ndarray | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> EngineBenchmark:
    """Time the plain full forward (``method="full"``) and the engine at every point
    (``method="exit"``) on the same prompts and batches (see the module docstring).

    Args:
        backbone: a plain Llama (merge LoRA first: an unmerged adapter is correct but slower).
        heads: exit heads built on ``backbone``'s model.
        prompts, labels: token-id prompts and their 0/1 labels.
        points: the exit settings to run.
        saved: optional ``[N, n_heads]`` saved per-head P(Yes) of the same prompts; fills
            ``exit_agreement`` and ``max_abs_diff_vs_saved``.
    """
    check_prompts(backbone, prompts)
    labels = np.asarray(labels).astype(int)
    if len(labels) != len(prompts):
        raise DataError(f"{len(labels)} labels for {len(prompts)} prompts")
    if not points:
        raise ConfigError("give at least one ExitPoint for the engine")
    if saved is not None and np.shape(saved) != (len(prompts), heads.num_heads):
        raise DataError(f"saved per-head predictions have shape {np.shape(saved)}, expected {(len(prompts), heads.num_heads)}")
    engines = {f"{pt.form}:{pt.tau:g}": (pt, EarlyExitEngine(backbone, heads, pt.criterion())) for pt in points}
    batches = length_sorted_batches(prompts, batch_size)
    sizes = [len(b) for b in batches]
    n, num_layers = len(prompts), heads.num_layers

    runs = {"full": TimedRun(np.full(n, np.nan), np.full(n, num_layers))}
    for key in engines:
        runs[key] = TimedRun(np.full(n, np.nan), np.zeros(n, dtype=np.int64))
    per_head = {key: np.full((n, heads.num_heads), np.nan) for key in engines}

    def full_call(b: int) -> None:
        idx = batches[b]
        runs["full"].p_yes[idx] = plain_predict(backbone, [prompts[i] for i in idx], len(idx), padding_side)

    def engine_call(key: str) -> Callable[[int], None]:
        engine = engines[key][1]

        def call(b: int) -> None:
            idx = batches[b]
            result = engine.predict([prompts[i] for i in idx], batch_size=len(idx), padding_side=padding_side)
            runs[key].p_yes[idx] = result.p_yes
            runs[key].exit_layer[idx] = result.exit_layer
            per_head[key][idx] = result.per_head_p

        return call

    calls: dict[str, Callable[[int], None]] = {"full": full_call}
    calls.update({key: engine_call(key) for key in engines})
    timings = interleaved(calls, len(batches), repeats, warmup)

    rows, predictions = [], []
    for key, run in runs.items():
        row: dict[str, object] = {"method": "full" if key == "full" else "exit", "reference": "full"}
        if key == "full":
            row.update(form="none", tau=math.nan, role="full_depth")
            layers_run = n * num_layers
        else:
            point = engines[key][0]
            row.update(form=point.form, tau=point.tau, role=point.role)
            layers_run = int(run.exit_layer.sum())  # exited rows leave the batch (engine contract)
        row.update(n=n, **accuracy_with_ci(labels, run.p_yes, n_boot, seed), **timing_columns(timings[key], sizes))
        mean_layer = float(np.mean(run.exit_layer))
        row.update(
            mean_exit_layer=mean_layer, layer_share=mean_layer / num_layers,
            speedup_vs_full=row["rps"] / timing_columns(timings["full"], sizes)["rps"],
            compute_bound_speedup=n * num_layers / layers_run,
        )
        row["speedup_efficiency"] = row["speedup_vs_full"] / row["compute_bound_speedup"]
        if saved is not None:
            if key == "full":
                row["exit_agreement"] = math.nan
                row["max_abs_diff_vs_saved"] = float(np.max(np.abs(run.p_yes - saved[:, -1])))
            else:
                sim_p, sim_head = simulate_exits(saved, engines[key][0].criterion(), heads.head_layers)
                row["exit_agreement"] = float(np.mean(np.asarray(heads.head_layers)[sim_head] == run.exit_layer))
                row["max_abs_diff_vs_saved"] = float(np.max(np.abs(run.p_yes - sim_p)))
        row.update(batch_size=batch_size, repeats=repeats, threads=torch.get_num_threads())
        rows.append(row)
        predictions.append(method_predictions(str(row["method"]), str(row["form"]), float(row["tau"]), run.p_yes, run.exit_layer))
    results = {
        key: ExitResult(runs[key].p_yes, runs[key].exit_layer, per_head[key], int(runs[key].exit_layer.sum()), heads.head_layers)
        for key in engines
    }
    return EngineBenchmark(results_table(rows), pd.concat(predictions, ignore_index=True), runs["full"].p_yes, results)


def results_table(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    for column in EARLY_EXIT_COLUMNS:
        if column not in frame.columns:
            frame[column] = math.nan
    return frame[list(EARLY_EXIT_COLUMNS)]


