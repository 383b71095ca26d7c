"""Real engine vs plain forward, timed side by side on the same prompts in the same batches.

:func:`benchmark_engine` runs the :class:`~ragrec.model.engine.EarlyExitEngine` at chosen τ values,
the same engine told never to exit (``method="engine_full"``), and the plain Hugging Face
full-depth forward of the same (LoRA-merged) model (``method="full"``), on the same prompts,
cut into the same batches (:func:`ragrec.llm.batching.length_sorted_batches`: longest first,
similar lengths), padded the same way, same batch size and threads. Each batch is one timed
call (:func:`ragrec.experiments.timing.time_calls`). Methods are interleaved within every repeat
(their order rotates between repeats) so machine drift hits all of them alike; the first repeat
starts with ``warmup`` untimed batches per method. Reported per method, as the **median over
repeats**:

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

Every timed call ends with its scores on the CPU (the engine reads each head's P(Yes) there; the
plain forward returns its P(Yes)), so GPU timings include the device's work.

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
import torch

from ragrec.errors import ConfigError, DataError
from ragrec.experiments.exit_sweep import ExitPoint, accuracy_with_ci
from ragrec.experiments.timing import summarize, time_calls
from ragrec.llm.backbone import Backbone
from ragrec.llm.batching import length_sorted_batches, pad_prompts
from ragrec.model.criteria import NeverExit, StabilityExit, simulate_exits
from ragrec.model.engine import EarlyExitEngine, ExitResult
from ragrec.model.forward import check_prompts, plain_full_forward_p_yes
from ragrec.model.heads import ExitHeads

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


def plain_predict(
    backbone: Backbone,
    prompts: Sequence[Sequence[int]],
    batch_size: int,
    padding_side: str = "left",
    *,
    heads: ExitHeads | None = None,
    cf_ids: np.ndarray | None = None,
) -> np.ndarray:
    """P(Yes) ``[N]`` from the plain Hugging Face full-depth forward, batched exactly as the
    engine batches (:func:`~ragrec.llm.batching.length_sorted_batches`,
    :func:`~ragrec.llm.batching.pad_prompts`).

    Args:
        backbone: the model (a plain Llama; LoRA merged or not).
        prompts: token-id prompts.
        batch_size: prompts per forward.
        padding_side: ``"left"`` or ``"right"``. (default: ``"left"``)
        heads, cf_ids: for prompts with collaborative slots, the heads that fill them
            (:meth:`~ragrec.model.heads.ExitHeads.input_embeddings`) and ``[N, 2]`` (user, item)
            per prompt; the model then reads those input embeddings, as the engine does.
    """
    check_prompts(backbone, prompts)
    if (heads is None) != (cf_ids is None):
        raise ConfigError("pass heads and cf_ids together (prompts with collaborative slots) or neither")
    if padding_side not in ("left", "right"):
        raise ConfigError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    out = np.full(len(prompts), np.nan)
    pad_id = backbone.tokenizer.pad_token_id or 0  # as the engine pads
    device = backbone.device
    with torch.inference_mode():
        for idx in length_sorted_batches(prompts, batch_size):
            ids, valid = pad_prompts([prompts[i] for i in idx], pad_id, padding_side)  # [B, T] each
            embeds = (
                None
                if heads is None
                else heads.input_embeddings(
                    ids.to(device), torch.as_tensor(np.asarray(cf_ids)[idx], dtype=torch.long, device=device)
                )
            )
            p = plain_full_forward_p_yes(
                backbone, ids.to(device), valid.long().to(device), inputs_embeds=embeds
            )  # [B]
            out[idx] = p.to("cpu", torch.float64).numpy()
    return out


# --------------------------------------------------------------------------------------------
# shared by the engine benchmark and the end-to-end requests


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
    run: TimedRun, saved: np.ndarray, criterion: StabilityExit | None, head_layers: Sequence[int]
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
    results: dict[str, ExitResult]  # keyed "<form>:<tau>", and "engine_full" for the engine never exiting


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
    batch_size: int = 8,
    repeats: int = 3,
    warmup: int = 2,
    padding_side: str = "left",
    saved: np.ndarray | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    cf_ids: np.ndarray | None = None,
) -> EngineBenchmark:
    """Time the plain forward (``method="full"``), the engine never exiting (``"engine_full"``)
    and the engine at every point (``"exit"``) alike.

    Args:
        backbone: a plain Llama (merge LoRA first: an unmerged adapter is correct but slower).
        heads: exit heads built on ``backbone``'s model.
        prompts, labels: token-id prompts and their 0/1 labels.
        points: the exit settings to run.
        batch_size: prompts per batch, for every method. (default: ``8``)
        repeats: timed passes per method; the table reports medians. (default: ``3``)
        warmup: untimed batches per method before the first pass. (default: ``2``)
        padding_side: ``"left"`` or ``"right"``. (default: ``"left"``)
        saved: optional ``[N, n_heads]`` saved per-head P(Yes) of the same prompts; fills
            ``exit_agreement`` and ``max_abs_diff_vs_saved``.
        n_boot, seed: the AUC intervals' bootstrap.
        cf_ids: ``[N, 2]`` (user, item) per prompt for heads with collaborative tokens.
    """
    labels = _check_engine_input(backbone, heads, prompts, labels, points, saved)
    engines: dict[str, tuple[ExitPoint | None, EarlyExitEngine]] = {
        ENGINE_FULL: (None, EarlyExitEngine(backbone, heads, NeverExit())),
        **{f"{pt.form}:{pt.tau:g}": (pt, EarlyExitEngine(backbone, heads, pt.criterion())) for pt in points},
    }
    batches = length_sorted_batches(prompts, batch_size)
    sizes = [len(b) for b in batches]
    n, num_layers = len(prompts), heads.num_layers

    # outputs land here, in the original prompt order
    runs = {"full": TimedRun(np.full(n, np.nan), np.full(n, num_layers))}
    runs.update({key: TimedRun(np.full(n, np.nan), np.zeros(n, dtype=np.int64)) for key in engines})
    per_head = {key: np.full((n, heads.num_heads), np.nan) for key in engines}
    calls = _engine_calls(backbone, engines, prompts, batches, runs, per_head, padding_side, heads, cf_ids)
    timings = interleaved(calls, len(batches), repeats, warmup)

    rows, predictions = _rows_and_predictions(
        runs,
        engines,
        timings,
        sizes,
        labels,
        heads,
        saved,
        batch_size=batch_size,
        repeats=repeats,
        n_boot=n_boot,
        seed=seed,
    )
    results = {
        key: ExitResult(
            run.p_yes, run.exit_layer, per_head[key], int(run.exit_layer.sum()), heads.head_layers
        )
        for key, run in runs.items()
        if key != "full"
    }
    return EngineBenchmark(
        results_table(rows), pd.concat(predictions, ignore_index=True), runs["full"].p_yes, results
    )
