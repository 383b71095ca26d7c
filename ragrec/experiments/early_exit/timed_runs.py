"""What the engine benchmark and the end-to-end requests share: methods timed interleaved over
the same batches, and the table columns computed from one method's run.

Methods are interleaved within every repeat (their order rotates between repeats) so machine
drift hits all of them alike; the first repeat starts with ``warmup`` untimed batches per
method. Each batch is one timed call (:func:`ragrec.experiments.timing.time_calls`). Reported
per method, as the **median over repeats**:

- ``rps``: requests answered / wall seconds of the pass (:func:`ragrec.experiments.timing.summarize`).
- ``p50_ms``, ``p99_ms``: **per-request latency** under static batching: a request is answered
  when the batch call that holds it returns, so its latency is that call's wall time; the
  percentiles are over requests (each batch's time counted once per request in it).
- ``speedup_vs_full``: ``rps(method) / rps(full)``, both medians over repeats (so the table's own
  columns reproduce it): the paper's comparison, early exit against the model without it.
- ``speedup_vs_engine_full``: ``rps(method) / rps(engine_full)``: early exit's own share. The
  engine runs its own layer loop and reads every head on the way, so it need not run exactly as
  fast as the plain forward; only this ratio holds the forward path fixed and changes the exits
  alone.
- ``compute_bound_speedup``: decoder layers a full pass runs (``N · num_layers``) / decoder layers
  the engine actually ran (exited rows leave the batch). ``speedup_efficiency`` = measured /
  compute-bound.

Accuracy columns come from the scores of that very run (the engine's P(Yes) at exit; the plain
forward's P(Yes)). ``exit_agreement`` (share of rows whose real exit layer equals the simulated
one on the saved predictions) and ``max_abs_diff_vs_saved`` tie the real engine to the sweep.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ragrec.experiments.early_exit.sweep import accuracy_with_ci
from ragrec.experiments.timing import summarize, time_calls
from ragrec.model.criteria import ExitCriterion, simulate_exits

EARLY_EXIT_COLUMNS = (
    "variant",
    "chosen_on",
    "auc_over",
    "method",
    "form",
    "tau",
    "role",
    "reference",
    "n",
    "auc",
    "auc_ci_low",
    "auc_ci_high",
    "logloss",
    "rps",
    "p50_ms",
    "p99_ms",
    "mean_exit_layer",
    "layer_share",
    "speedup_vs_full",
    "speedup_vs_engine_full",
    "compute_bound_speedup",
    "speedup_efficiency",
    "exit_agreement",
    "max_abs_diff_vs_saved",
    "retrieval_share",
    "prompt_share",
    "model_share",
    "retrieval_ms",
    "prompt_ms",
    "model_ms",
    "batch_size",
    "repeats",
    "threads",
)


@dataclass
class TimedRun:
    """One method's outputs (original prompt order) and, end to end, its per-repeat stage splits."""

    p_yes: np.ndarray
    exit_layer: np.ndarray
    stages: list[np.ndarray] = dataclasses.field(default_factory=list)  # [repeat] → [batch, 3]


def interleaved(
    calls: Mapping[str, Callable[[int], None]],
    n_batches: int,
    repeats: int,
    warmup: int,
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


def method_predictions(
    method: str, form: str, tau: float, p_yes: np.ndarray, exit_layer: np.ndarray
) -> pd.DataFrame:
    """Long per-request predictions of one method (``row`` = position in the input order)."""
    return pd.DataFrame(
        {
            "method": method,
            "form": form,
            "tau": tau,
            "row": np.arange(len(p_yes)),
            "p_yes": p_yes,
            "exit_layer": np.asarray(exit_layer, dtype=np.int64),
        }
    )


def timing_columns(seconds: list[list[float]], sizes: list[int]) -> dict[str, float]:
    """Median over repeats of RPS and per-request p50/p99 (see the module docstring)."""
    rps, p50, p99 = [], [], []
    for per_batch in seconds:
        rps.append(summarize(per_batch, items_per_call=sizes).per_s)
        per_request = summarize(np.repeat(per_batch, sizes))
        p50.append(per_request.p50_ms)
        p99.append(per_request.p99_ms)
    return {"rps": float(np.median(rps)), "p50_ms": float(np.median(p50)), "p99_ms": float(np.median(p99))}


def run_columns(
    labels: np.ndarray,
    run: TimedRun,
    seconds: list[list[float]],
    reference_seconds: list[list[float]],
    sizes: list[int],
    num_layers: int,
    *,
    n_boot: int,
    seed: int,
) -> dict[str, float]:
    """One method's accuracy, timing and compute columns, its speedup relative to the method
    timed as ``reference_seconds``; exited rows leave the batch (engine contract), so the layers
    run are the sum of the exit layers."""
    n = len(labels)
    timing = timing_columns(seconds, sizes)
    mean_layer = float(np.mean(run.exit_layer))
    return {
        "n": n,
        **accuracy_with_ci(labels, run.p_yes, n_boot, seed),
        **timing,
        "mean_exit_layer": mean_layer,
        "layer_share": mean_layer / num_layers,
        "speedup_vs_full": timing["rps"] / timing_columns(reference_seconds, sizes)["rps"],
        "compute_bound_speedup": n * num_layers / int(run.exit_layer.sum()),
    }


def saved_agreement(
    run: TimedRun, saved: np.ndarray, criterion: ExitCriterion | None, head_layers: Sequence[int]
) -> dict[str, float]:
    """How a real run matches saved per-head P(Yes) ``[N, n_heads]`` of the same prompts: at full
    depth (``criterion`` None) the largest P(Yes) difference from the last head; with an exit
    criterion also the share of rows whose exit layer equals the simulated one."""
    if criterion is None:
        return {
            "exit_agreement": math.nan,
            "max_abs_diff_vs_saved": float(np.max(np.abs(run.p_yes - saved[:, -1]))),
        }
    sim_p, sim_head = simulate_exits(saved, criterion, head_layers)
    return {
        "exit_agreement": float(np.mean(np.asarray(head_layers)[sim_head] == run.exit_layer)),
        "max_abs_diff_vs_saved": float(np.max(np.abs(run.p_yes - sim_p))),
    }


def results_table(rows: list[dict]) -> pd.DataFrame:
    """The rows under :data:`EARLY_EXIT_COLUMNS` (absent columns NaN)."""
    frame = pd.DataFrame(rows)
    for column in EARLY_EXIT_COLUMNS:
        if column not in frame.columns:
            frame[column] = math.nan
    return frame[list(EARLY_EXIT_COLUMNS)]
