"""The early-exit benchmark: threshold sweep, real engine vs plain forward, end-to-end requests.

Three measurements of the paper's second claim (stop at a stable head → more requests per second
at the same AUC), all in one process run:

1. **Threshold sweep** (:func:`threshold_sweep`), on saved per-head predictions
   (``predictions_<context>.csv``): the exit rule is replayed with
   :func:`ragrec.early_exit.simulate_exits` (the engine's own decision code) over a grid of τ for
   both forms (difference ``|P_h − P_{h−1}| < τ``; ratio ``|Δ log-odds| < τ``, τ in nats). Per
   point: AUC with a 95% bootstrap interval, LogLoss, mean exit layer, share of layer compute
   used (``mean exit layer / num_layers``) and the compute-bound speedup (its inverse). The
   **operating point** (:func:`choose_operating_point`) is the point that uses the least layer
   compute among those whose AUC is within ``tolerance`` (0.005 = 0.5 AUC points) of full depth.

2. **Real engine vs plain forward** (:func:`benchmark_engine`): the
   :class:`~ragrec.early_exit.EarlyExitEngine` at chosen τ values and the plain Hugging Face
   full-depth forward of the same (LoRA-merged) model, on the same prompts, cut into the same
   batches (:func:`ragrec.batching.length_sorted_batches`: longest first, similar lengths),
   padded the same way, same batch size and threads. Each batch is one timed call
   (:func:`ragrec.timing.time_calls`). Methods are interleaved within every repeat (their order
   rotates between repeats) so machine drift hits all of them alike; the first repeat starts with
   ``warmup`` untimed batches per method. Reported per method, as the **median over repeats**:

   - ``rps``: requests answered / wall seconds of the pass (:func:`ragrec.timing.summarize`).
   - ``p50_ms``, ``p99_ms``: **per-request latency** under static batching: a request is answered
     when the batch call that holds it returns, so its latency is that call's wall time; the
     percentiles are over requests (each batch's time counted once per request in it).
   - ``speedup_vs_full``: ``rps(method) / rps(full)``, both medians over repeats (so the table's
     own columns reproduce it).
   - ``compute_bound_speedup``: decoder layers a full pass runs (``N · num_layers``) / decoder
     layers the engine actually ran (exited rows leave the batch). ``speedup_efficiency`` =
     measured / compute-bound.

   Every timed call ends with its scores on the CPU (the engine reads each head's P(Yes) there;
   the plain forward returns its P(Yes)), so GPU timings include the device's work.

   Accuracy columns come from the scores of that very run (the engine's P(Yes) at exit; the
   plain forward's P(Yes)). ``exit_agreement`` (share of rows whose real exit layer equals the
   simulated one on the saved predictions) and ``max_abs_diff_vs_saved`` tie the real engine to
   the sweep.

3. **End-to-end requests** (:func:`run_end_to_end`): a request is (user, item, time) → retrieval
   (``retrieve(..., precomputed=False)``: the LLM retriever embeds the user's text with the LLM
   at query time, the paper's cost) → prompt building (tokenisation included) → score. Methods
   ``e2e_llm_full`` (LLM retriever, plain full forward), ``e2e_gcn_full`` (GCN retriever, plain
   full forward), ``e2e_gcn_exit`` (GCN retriever, engine at the operating point), over the same
   requests in the same batches. Same latency definitions; plus the share of time (and mean ms
   per request) in retrieval, prompt building and the model. ``speedup_vs_full`` of e2e rows is
   relative to ``e2e_llm_full`` (the paper's baseline pipeline), named in the ``reference``
   column.

:func:`run_exit_benchmark` (what the early-exit notebook calls) does all three for a profile and
writes ``threshold_sweep.csv``, ``early_exit.csv``, ``early_exit_predictions.csv`` (per request
and method, so every AUC can be recomputed) and the ``early_exit`` provenance step into
``results/<profile>/<dataset>/``. Timings never decide a test; they are written with provenance.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from ragrec.backbone import Backbone
from ragrec.batching import length_sorted_batches, pad_prompts
from ragrec.data import Samples
from ragrec.early_exit import (
    EarlyExitEngine,
    ExitHeads,
    ExitResult,
    NeverExit,
    StabilityExit,
    check_prompts,
    plain_full_forward_p_yes,
    simulate_exits,
    unwrap_llama,
)
from ragrec.errors import ConfigError, DataError
from ragrec.evaluate import auc, auc_ci, logloss
from ragrec.results import Provenance, read_csv, result_dir, write_csv
from ragrec.retrieval import Retriever
from ragrec.timing import summarize, time_calls

if TYPE_CHECKING:  # config may one day hold an ExitBenchmarkConfig; no import cycle then
    from ragrec.config import Profile

FORMS = ("difference", "ratio")
E2E_METHODS = ("e2e_llm_full", "e2e_gcn_full", "e2e_gcn_exit")
E2E_RETRIEVER = {"e2e_llm_full": "llm", "e2e_gcn_full": "gcn", "e2e_gcn_exit": "gcn"}

EARLY_EXIT_COLUMNS = (
    "method", "form", "tau", "role", "reference", "n", "auc", "auc_ci_low", "auc_ci_high", "logloss",
    "rps", "p50_ms", "p99_ms", "mean_exit_layer", "layer_share", "speedup_vs_full", "compute_bound_speedup",
    "speedup_efficiency", "exit_agreement", "max_abs_diff_vs_saved",
    "retrieval_share", "prompt_share", "model_share", "retrieval_ms", "prompt_ms", "model_ms",
    "batch_size", "repeats", "threads",
)
SWEEP_COLUMNS = (
    "form", "first_head", "tau", "auc", "auc_ci_low", "auc_ci_high", "logloss", "auc_full", "auc_drop",
    "mean_exit_layer", "layer_share", "compute_bound_speedup", "n",
)

# Probability grid for the difference form; log-odds (nats) grid for the ratio form. Near
# P = 0.5 a change of Δp is a log-odds change of about 4·Δp, hence the larger ratio values.
TAUS_DIFFERENCE = (0.0, 0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2)
TAUS_RATIO = (0.0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0)


# --------------------------------------------------------------------------------------------
# settings


@dataclass(frozen=True)
class ExitPoint:
    """One setting of the paper's exit rule, as run by the real engine.

    ``role``: why it is run — ``"operating_point"`` (the chosen point), ``"best_<form>"`` (the
    rule's choice within one form) or ``"extra"`` (asked for in the configuration).
    """

    form: str
    tau: float
    first_head: str = "wait"
    role: str = "extra"

    def criterion(self) -> StabilityExit:
        return StabilityExit(float(self.tau), form=self.form, first_head=self.first_head)  # type: ignore[arg-type]


@dataclass(frozen=True)
class ExitBenchmarkConfig:
    """What :func:`run_exit_benchmark` runs (per-profile defaults: :func:`default_exit_config`).

    Attributes:
        taus: τ grid per form (``{"difference": (...), "ratio": (...)}``); the difference form's τ
            is a probability, the ratio form's a log-odds change in nats. Include 0 (= full depth).
        first_head: ``"wait"`` (the first head has no predecessor and never exits; the paper's
            rule) or ``"confident"`` (see :class:`~ragrec.early_exit.StabilityExit`).
        auc_tolerance: operating point = least compute with AUC ≥ full-depth AUC − this.
        n_boot: bootstrap resamples for the AUC intervals.
        context: which saved predictions / retriever the sweep and the engine benchmark use.
        n_requests: test samples (seeded draw) the engine benchmark scores.
        batch_size: prompts per batch, for the engine and the plain forward alike.
        repeats, warmup: timed passes per method (median reported) and untimed warm-up batches
            per method before the first.
        padding_side: how batches are padded (``"left"`` lets the plain forward compute the
            vocabulary logits at one position, as ``generate`` does).
        extra_points: ``(form, τ)`` pairs the real engine runs besides the operating point and
            each form's best point.
        check_requests: prompts on which the engine with "never exit" is checked against the
            plain forward (DESIGN §5: within 1e-5 in fp32) before timing.
        e2e_requests, e2e_batch_size, e2e_repeats, e2e_methods: the end-to-end measurement (its
            requests are the first ``e2e_requests`` of the engine benchmark's samples).
        threads: torch intra-op threads for the whole run (None: leave torch's setting; the count
            in effect is written to the table and provenance either way).
        seed: the request draw and the bootstrap.
    """

    taus: Mapping[str, tuple[float, ...]] = dataclasses.field(
        default_factory=lambda: {"difference": TAUS_DIFFERENCE, "ratio": TAUS_RATIO}
    )
    first_head: str = "wait"
    auc_tolerance: float = 0.005
    n_boot: int = 1000
    context: str = "gcn"
    n_requests: int = 96
    batch_size: int = 8
    repeats: int = 3
    warmup: int = 2
    padding_side: str = "left"
    extra_points: tuple[tuple[str, float], ...] = ()
    check_requests: int = 16
    e2e_requests: int = 48
    e2e_batch_size: int = 8
    e2e_repeats: int = 2
    e2e_methods: tuple[str, ...] = E2E_METHODS
    threads: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        _check_taus(self.taus)
        for form, tau in self.extra_points:
            ExitPoint(form, tau, self.first_head).criterion()  # raises on a bad form or τ
        for form in self.taus:  # e.g. first_head="confident" is defined for the difference form only
            StabilityExit(0.0, form=form, first_head=self.first_head)  # type: ignore[arg-type]
        if not 0 <= self.auc_tolerance < 1:
            raise ConfigError(f"auc_tolerance must lie in [0, 1), got {self.auc_tolerance}")
        if self.padding_side not in ("left", "right"):
            raise ConfigError(f"padding_side must be 'left' or 'right', got {self.padding_side!r}")
        for name in ("n_boot", "n_requests", "batch_size", "repeats", "e2e_batch_size", "e2e_repeats"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an int >= 1, got {value!r}")
        for name in ("warmup", "check_requests", "e2e_requests"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{name} must be an int >= 0, got {value!r}")
        _check_methods(self.e2e_methods)
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be >= 1 or None, got {self.threads}")


def default_exit_config(profile: Profile) -> ExitBenchmarkConfig:
    """Per-profile defaults: smoke (seconds), cpu (a few minutes on 2 cores), gpu (paper scale)."""
    common = dict(seed=profile.seed, context="gcn" if "gcn" in profile.contexts else profile.contexts[0])
    if profile.name == "smoke":
        return ExitBenchmarkConfig(n_boot=200, n_requests=64, batch_size=8, repeats=2, warmup=1,
                                   check_requests=8, e2e_requests=32, e2e_batch_size=8, e2e_repeats=1, **common)
    if profile.name == "gpu":
        return ExitBenchmarkConfig(n_requests=1024, batch_size=profile.eval_batch_size, repeats=5, warmup=2,
                                   check_requests=64, e2e_requests=512, e2e_batch_size=profile.eval_batch_size,
                                   e2e_repeats=3, **common)
    # cpu (and any other profile): SmolLM2 at ~3 prompts/s (full depth, 2 threads), so one full
    # pass over 64 prompts is ~20 s; sized to keep the whole cpu reproduction within the hour.
    return ExitBenchmarkConfig(n_requests=64, batch_size=8, repeats=3, warmup=2, check_requests=16,
                               e2e_requests=32, e2e_batch_size=8, e2e_repeats=2, **common)


def _check_taus(taus: Mapping[str, Sequence[float]]) -> None:
    if not isinstance(taus, Mapping) or not taus:
        raise ConfigError(f"taus must map a form ({FORMS}) to a non-empty sequence of τ ≥ 0, got {taus!r}")
    for form, grid in taus.items():
        if form not in FORMS:
            raise ConfigError(f"unknown exit form {form!r}; choose from {FORMS}")
        if len(grid) == 0:
            raise ConfigError(f"the τ grid of form {form!r} is empty")
        for tau in grid:
            if isinstance(tau, bool) or not isinstance(tau, (int, float, np.floating, np.integer)) or math.isnan(tau) or tau < 0:
                raise ConfigError(f"τ must be a number ≥ 0 (larger = earlier exit), got {tau!r} for form {form!r}")


def _check_methods(methods: Sequence[str]) -> None:
    if not methods:
        raise ConfigError(f"give at least one end-to-end method of {E2E_METHODS}")
    unknown = [m for m in methods if m not in E2E_METHODS]
    if unknown:
        raise ConfigError(f"unknown end-to-end method(s) {unknown}; choose from {E2E_METHODS}")


# --------------------------------------------------------------------------------------------
# accuracy helpers


def _accuracy(labels: np.ndarray, p: np.ndarray, n_boot: int, seed: int) -> dict[str, float]:
    """AUC (+ bootstrap interval) and LogLoss; NaN where one class only (too few requests)."""
    labels = np.asarray(labels).astype(int)
    if len(np.unique(labels)) < 2:
        return {"auc": math.nan, "auc_ci_low": math.nan, "auc_ci_high": math.nan, "logloss": math.nan}
    lo, hi = auc_ci(labels, p, n_boot=n_boot, seed=seed)
    return {"auc": auc(labels, p), "auc_ci_low": lo, "auc_ci_high": hi, "logloss": logloss(labels, p)}


def saved_per_head(predictions: pd.DataFrame, head_layers: Sequence[int], sample_ids: Sequence | None = None) -> np.ndarray:
    """``[N, n_heads]`` P(Yes) columns ``p_head_<L>`` of a saved predictions table, in the order of
    ``sample_ids`` (default: the table's order). DataError when a head or a sample is missing."""
    columns = [f"p_head_{layer}" for layer in head_layers]
    missing = [c for c in columns if c not in predictions.columns]
    if missing:
        have = [c for c in predictions.columns if c.startswith("p_head_")]
        raise DataError(
            f"saved predictions have heads {have} but the model has heads at layers {list(head_layers)} "
            f"(missing {missing}); rerun the recommender step with this profile"
        )
    frame = predictions
    if sample_ids is not None:
        frame = predictions.set_index("sample_id")
        absent = pd.Index(sample_ids).difference(frame.index)
        if len(absent):
            raise DataError(f"{len(absent)} sample(s) are not in the saved predictions, e.g. {list(absent[:3])}")
        frame = frame.loc[list(sample_ids)]
    return frame[columns].to_numpy(dtype=np.float64)


# --------------------------------------------------------------------------------------------
# 1. threshold sweep


def threshold_sweep(
    labels: Sequence[int] | np.ndarray,
    per_head_p: np.ndarray,
    head_layers: Sequence[int],
    taus: Sequence[float] | Mapping[str, Sequence[float]],
    forms: Sequence[str] = FORMS,
    *,
    num_layers: int | None = None,
    first_head: str = "wait",
    n_boot: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """Replay the exit rule on saved per-head P(Yes) over a τ grid, for each form.

    Args:
        labels: ``[N]`` 0/1.
        per_head_p: ``[N, n_heads]`` P(Yes) of every head (full-depth predictions).
        head_layers: the heads' layers (1-based, increasing).
        taus: one grid for every form, or ``{form: grid}`` (then ``forms`` is its keys).
        forms: ``"difference"`` and/or ``"ratio"``.
        num_layers: decoder layers of the model (a full pass); default the last head's layer.
        first_head, n_boot, seed: see :class:`ExitBenchmarkConfig`. Every row's interval uses the
            same resampled rows (same ``seed``), so rows are compared on equal footing.

    Returns:
        One row per (form, τ): :data:`SWEEP_COLUMNS` plus ``exit_share_<L>`` (share of samples
        exiting at the head on layer L). ``auc_full`` is the last head's AUC (full depth),
        ``auc_drop = auc_full − auc``, ``layer_share = mean_exit_layer / num_layers``,
        ``compute_bound_speedup = num_layers / mean_exit_layer``.
    """
    grids = dict(taus) if isinstance(taus, Mapping) else {form: tuple(taus) for form in forms}
    if not isinstance(taus, Mapping):
        unknown = [f for f in forms if f not in FORMS]
        if unknown or not forms:
            raise ConfigError(f"unknown exit form(s) {unknown or forms!r}; choose from {FORMS}")
    _check_taus(grids)
    labels = np.asarray(labels).astype(int).ravel()
    p = np.asarray(per_head_p, dtype=np.float64)
    layers = tuple(int(x) for x in head_layers)
    if p.ndim != 2 or p.shape[1] != len(layers) or len(layers) == 0:
        raise ConfigError(f"per_head_p has shape {p.shape}; expected [N, {len(layers)}] for heads at layers {list(layers)}")
    if p.shape[0] != len(labels) or len(labels) == 0:
        raise DataError(f"{len(labels)} labels for {p.shape[0]} rows of per-head predictions (need the same, > 0)")
    num_layers = layers[-1] if num_layers is None else int(num_layers)
    if any(b <= a for a, b in zip(layers, layers[1:])) or layers[0] < 1 or layers[-1] > num_layers:
        raise ConfigError(
            f"head layers {list(layers)} must be increasing and lie within the model's 1..{num_layers} layers"
        )
    full = _accuracy(labels, p[:, -1], n_boot, seed)
    cache: dict[bytes, dict[str, float]] = {}
    rows = []
    for form, grid in grids.items():
        for tau in grid:
            criterion = StabilityExit(float(tau), form=form, first_head=first_head)  # type: ignore[arg-type]
            p_final, head = simulate_exits(p, criterion, layers)
            key = p_final.tobytes()
            if key not in cache:  # many small τ give the same exits; bootstrap each pattern once
                cache[key] = _accuracy(labels, p_final, n_boot, seed)
            exit_layer = np.asarray(layers)[head]
            mean_layer = float(exit_layer.mean())
            row = {
                "form": form, "first_head": first_head, "tau": float(tau), **cache[key],
                "auc_full": full["auc"], "auc_drop": full["auc"] - cache[key]["auc"],
                "mean_exit_layer": mean_layer, "layer_share": mean_layer / num_layers,
                "compute_bound_speedup": num_layers / mean_layer, "n": len(labels),
            }
            for k, layer in enumerate(layers):
                row[f"exit_share_{layer}"] = float((head == k).mean())
            rows.append(row)
    return pd.DataFrame(rows)


def choose_operating_point(sweep: pd.DataFrame, tolerance: float = 0.005, *, form: str | None = None) -> pd.Series:
    """The sweep row that uses the least layer compute (lowest ``mean_exit_layer``) among those
    whose AUC is within ``tolerance`` of full depth (``auc >= auc_full − tolerance``).

    Ties: higher AUC, then lower LogLoss, then the first row. ``form`` restricts to one form.
    DataError if no row qualifies (put τ = 0, i.e. full depth, in the grid).
    """
    needed = {"auc", "auc_full", "mean_exit_layer", "logloss"}
    if not needed <= set(sweep.columns):
        raise ConfigError(f"the sweep table needs columns {sorted(needed)}, got {list(sweep.columns)}")
    if tolerance < 0:
        raise ConfigError(f"tolerance must be >= 0, got {tolerance}")
    rows = sweep if form is None else sweep[sweep["form"] == form]
    ok = rows[rows["auc"] >= rows["auc_full"] - tolerance - 1e-12]
    if ok.empty:
        raise DataError(
            f"no sweep point{'' if form is None else f' of form {form!r}'} has an AUC within {tolerance} of full "
            "depth; include τ = 0 (full depth) in the grid"
        )
    order = np.lexsort((np.arange(len(ok)), ok["logloss"].to_numpy(), -ok["auc"].to_numpy(), ok["mean_exit_layer"].to_numpy()))
    return ok.iloc[int(order[0])]


def engine_points(sweep: pd.DataFrame, tolerance: float, *, first_head: str = "wait",
                  extra: Sequence[tuple[str, float]] = ()) -> list[ExitPoint]:
    """The points the real engine runs: the operating point, each form's own best point (if it
    differs) and ``extra`` ones; no duplicates."""
    best = choose_operating_point(sweep, tolerance)
    points = [ExitPoint(str(best["form"]), float(best["tau"]), first_head, "operating_point")]
    for form in dict.fromkeys(sweep["form"]):
        row = choose_operating_point(sweep, tolerance, form=form)
        points.append(ExitPoint(str(form), float(row["tau"]), first_head, f"best_{form}"))
    points += [ExitPoint(f, float(t), first_head, "extra") for f, t in extra]
    seen, out = set(), []
    for point in points:
        if (point.form, point.tau) not in seen:
            seen.add((point.form, point.tau))
            out.append(point)
    return out


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
class _Run:
    """One method's outputs (original prompt order) and, end to end, its per-repeat stage splits."""

    p_yes: np.ndarray
    exit_layer: np.ndarray
    stages: list[np.ndarray] = dataclasses.field(default_factory=list)  # [repeat] → [batch, 3]


def _interleaved(
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


def _predictions(method: str, form: str, tau: float, p_yes: np.ndarray, exit_layer: np.ndarray) -> pd.DataFrame:
    """Long per-request predictions of one method (``row`` = position in the input order)."""
    return pd.DataFrame({
        "method": method, "form": form, "tau": tau, "row": np.arange(len(p_yes)),
        "p_yes": p_yes, "exit_layer": np.asarray(exit_layer, dtype=np.int64),
    })


def _timing(seconds: list[list[float]], sizes: list[int]) -> dict[str, float]:
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

    runs = {"full": _Run(np.full(n, np.nan), np.full(n, num_layers))}
    for key in engines:
        runs[key] = _Run(np.full(n, np.nan), np.zeros(n, dtype=np.int64))
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
    timings = _interleaved(calls, len(batches), repeats, warmup)

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
        row.update(n=n, **_accuracy(labels, run.p_yes, n_boot, seed), **_timing(timings[key], sizes))
        mean_layer = float(np.mean(run.exit_layer))
        row.update(
            mean_exit_layer=mean_layer, layer_share=mean_layer / num_layers,
            speedup_vs_full=row["rps"] / _timing(timings["full"], sizes)["rps"],
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
        predictions.append(_predictions(str(row["method"]), str(row["form"]), float(row["tau"]), run.p_yes, run.exit_layer))
    results = {
        key: ExitResult(runs[key].p_yes, runs[key].exit_layer, per_head[key], int(runs[key].exit_layer.sum()), heads.head_layers)
        for key in engines
    }
    return EngineBenchmark(_table(rows), pd.concat(predictions, ignore_index=True), runs["full"].p_yes, results)


def _table(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    for column in EARLY_EXIT_COLUMNS:
        if column not in frame.columns:
            frame[column] = math.nan
    return frame[list(EARLY_EXIT_COLUMNS)]


# --------------------------------------------------------------------------------------------
# 3. end-to-end requests


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
        builder: a :class:`ragrec.prompts.PromptBuilder`.
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
    _check_methods(methods)
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
    runs = {m: _Run(np.full(n, np.nan), np.full(n, num_layers)) for m in methods}
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
    timings = _interleaved(calls, len(batches), repeats, warmup, lambda m: runs[m].stages.append(stage_now[m].copy()))

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
            **_accuracy(labels, run.p_yes, n_boot, seed), **_timing(timings[m], sizes),
            "mean_exit_layer": mean_layer, "layer_share": mean_layer / num_layers,
            "speedup_vs_full": _timing(timings[m], sizes)["rps"] / _timing(timings[reference], sizes)["rps"],
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
        predictions.append(_predictions(m, str(row["form"]), float(row["tau"]), run.p_yes, run.exit_layer).assign(
            sample_id=sample_ids, user=users, item=frame["item"].to_numpy(), label=labels,
        ))
    return EndToEndBenchmark(_table(rows), pd.concat(predictions, ignore_index=True))


# --------------------------------------------------------------------------------------------
# the whole step


def merged_for_inference(backbone: Backbone, heads: ExitHeads) -> tuple[Backbone, ExitHeads]:
    """A plain (LoRA-merged) backbone for timed inference and exit heads bound to it.

    ``merge_and_unload`` folds the adapters into the base weights **in place**: the peft-wrapped
    ``backbone`` must not be used afterwards. The heads are rebuilt on the merged model and
    loaded from ``heads``' checkpoint, whether or not peft returns the same model instance.
    """
    model = backbone.model
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    model.eval()
    merged = dataclasses.replace(backbone, model=model)
    out = ExitHeads(merged, heads.head_layers, readout=heads.has_readouts)
    out.load_checkpoint(heads.checkpoint())
    out.eval()
    return merged, out


def _request_samples(test: Samples, n: int, seed: int) -> Samples:
    """A seeded draw of ``n`` test samples (all if fewer), in their original order."""
    index = test.frame.index
    if n < len(index):
        rows = np.sort(np.random.default_rng(seed).choice(len(index), size=n, replace=False))
        index = index[rows]
    return test.subset(index)


def run_exit_benchmark(
    profile: Profile,
    *,
    results_root: str | os.PathLike | None = None,
    data_root: str | os.PathLike | None = None,
    config: ExitBenchmarkConfig | None = None,
    progress: bool = False,
) -> dict[str, pd.DataFrame]:
    """The early-exit step for ``profile``: sweep, real-engine benchmark, end-to-end requests.

    Needs the recommender step's outputs in ``results/<profile>/<dataset>/``
    (``predictions_<context>.csv`` and the trained model checkpoint, which is reloaded, never
    retrained here). Writes ``threshold_sweep.csv`` (with an ``operating_point`` flag),
    ``early_exit.csv``, ``early_exit_predictions.csv`` (per request and method: ``method, form,
    tau, sample_id, user, item, label, p_yes, exit_layer``) and the ``early_exit`` provenance step.

    Returns:
        ``{"threshold_sweep", "early_exit", "predictions", "operating_point", "checks"}``
        DataFrames (``predictions``: per request and method, as in ``early_exit_predictions.csv``;
        the sweep's rows are recomputable from ``predictions_<context>.csv``); ``checks``
        holds the full-depth agreement figures (engine "never exit" vs plain forward on the
        merged model; plain forward vs the saved predictions of the unmerged model).
    """
    from ragrec.experiment import (
        encode_contexts, fit_retrievers, load_model, load_trained_model, model_dir, prepare_data,
    )
    from ragrec.prompts import PromptBuilder

    config = config or default_exit_config(profile)
    started = time.perf_counter()
    provenance = Provenance("early_exit", profile.name, profile.data.dataset, config.seed, {})
    out_dir = result_dir(profile.name, profile.data.dataset, results_root)
    context = config.context
    e2e_contexts = {E2E_RETRIEVER[m] for m in config.e2e_methods} if config.e2e_requests else set()
    saved = {}
    for ctx in dict.fromkeys([context, *sorted(e2e_contexts)]):
        path = out_dir / f"predictions_{ctx}.csv"
        if ctx == context or path.exists():
            saved[ctx] = read_csv(path)
    final = model_dir(profile, results_root=results_root) / "final"
    if not final.is_dir():
        raise DataError(
            f"no trained model at {final}; run the recommender step for profile {profile.name!r} first "
            "(this step reloads the model, it never trains)"
        )

    previous_threads = torch.get_num_threads()
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    try:
        torch.manual_seed(profile.seed)
        prepared = prepare_data(profile, data_root=data_root)
        # Two copies of the backbone: ``base`` stays untuned (the LLM retriever embeds query
        # users with it, as at fit); ``tuned`` receives the LoRA adapters and is merged.
        base = load_model(profile, prepared.dataset)
        names = tuple(dict.fromkeys([*profile.contexts, context, *sorted(e2e_contexts)]))
        retrievers = fit_retrievers(prepared, base, names, results_root=results_root)
        builder = PromptBuilder(prepared.dataset, base, retrievers[names[0]].sequences, profile.prompt)
        tuned = load_model(profile, prepared.dataset)
        model = load_trained_model(prepared, tuned, results_root=results_root)
        backbone, heads = merged_for_inference(model.backbone, model.heads)
        head_layers = heads.head_layers

        # 1. sweep on the saved test predictions
        frame = saved[context]
        sweep = threshold_sweep(
            frame["label"].to_numpy(), saved_per_head(frame, head_layers), head_layers, config.taus,
            num_layers=heads.num_layers, first_head=config.first_head, n_boot=config.n_boot, seed=config.seed,
        )
        best = choose_operating_point(sweep, config.auc_tolerance)
        sweep["operating_point"] = (sweep["form"] == best["form"]) & (sweep["tau"] == best["tau"])
        points = engine_points(sweep, config.auc_tolerance, first_head=config.first_head, extra=config.extra_points)
        op = points[0]

        # 2. real engine vs plain forward on a seeded draw of test requests
        requests = _request_samples(prepared.test, config.n_requests, config.seed)
        prompts = encode_contexts(builder, retrievers, requests, [context] * len(requests))
        labels = requests.frame["label"].to_numpy()
        ids = requests.frame.index
        saved_requests = saved_per_head(frame, head_layers, ids)
        n_check = min(config.check_requests, len(prompts))
        checks = {"engine_never_vs_plain": math.nan, "plain_vs_saved": math.nan, "n_check": n_check}
        if n_check:
            subset = prompts[:n_check]
            never = EarlyExitEngine(backbone, heads, NeverExit()).predict(subset, config.batch_size, config.padding_side)
            plain = plain_predict(backbone, subset, config.batch_size, config.padding_side)
            checks["engine_never_vs_plain"] = float(np.max(np.abs(never.p_yes - plain)))
            checks["plain_vs_saved"] = float(np.max(np.abs(plain - saved_requests[:n_check, -1])))
            if backbone.dtype == torch.float32 and max(checks["engine_never_vs_plain"], checks["plain_vs_saved"]) > 1e-5:
                warnings.warn(
                    f"full-depth agreement above 1e-5 in fp32: {checks}; the engine or the saved predictions do "
                    "not match the merged model", RuntimeWarning, stacklevel=2,
                )
        bench = benchmark_engine(
            backbone, heads, prompts, labels, points, batch_size=config.batch_size, repeats=config.repeats,
            warmup=config.warmup, padding_side=config.padding_side, saved=saved_requests,
            n_boot=config.n_boot, seed=config.seed,
        )
        rf = requests.frame
        tables = [bench.table]
        predictions = [bench.predictions.assign(
            sample_id=ids.to_numpy()[bench.predictions["row"]], user=rf["user"].to_numpy()[bench.predictions["row"]],
            item=rf["item"].to_numpy()[bench.predictions["row"]], label=labels[bench.predictions["row"]],
        )]

        # 3. end-to-end requests: the first e2e_requests of the same draw
        if config.e2e_requests:
            e2e_requests = requests.subset(ids[: config.e2e_requests])
            e2e = run_end_to_end(
                e2e_requests, retrievers, builder, backbone, heads, op,
                batch_size=config.e2e_batch_size, repeats=config.e2e_repeats, warmup=config.warmup,
                methods=config.e2e_methods, padding_side=config.padding_side, saved=saved,
                n_boot=config.n_boot, seed=config.seed,
            )
            tables.append(e2e.table)
            predictions.append(e2e.predictions)
        table = pd.concat(tables, ignore_index=True)
        per_request = pd.concat(predictions, ignore_index=True)[
            ["method", "form", "tau", "sample_id", "user", "item", "label", "p_yes", "exit_layer"]
        ]
        threads = torch.get_num_threads()
    finally:
        torch.set_num_threads(previous_threads)

    outputs = [
        write_csv(sweep, out_dir / "threshold_sweep.csv").name,
        write_csv(table, out_dir / "early_exit.csv").name,
        write_csv(per_request, out_dir / "early_exit_predictions.csv").name,
    ]
    wall = time.perf_counter() - started
    provenance.parameters = {
        "config": config, "profile": profile, "context": context, "operating_point": dataclasses.asdict(op),
        "engine_points": [dataclasses.asdict(p) for p in points], "checks": checks, "threads": threads,
        "n_test": len(frame), "n_requests": len(prompts), "model": backbone.name, "num_layers": heads.num_layers,
        "head_layers": list(head_layers), "wall_s": wall,
    }
    provenance.write(out_dir, outputs)
    return {
        "threshold_sweep": sweep,
        "early_exit": table,
        "predictions": per_request,
        "operating_point": best.to_frame().T.reset_index(drop=True),
        "checks": pd.DataFrame([checks]),
    }


__all__ = [
    "E2E_METHODS", "EARLY_EXIT_COLUMNS", "FORMS", "SWEEP_COLUMNS", "EndToEndBenchmark", "EngineBenchmark",
    "ExitBenchmarkConfig",
    "ExitPoint", "benchmark_engine", "check_prompts", "choose_operating_point", "default_exit_config",
    "engine_points", "merged_for_inference", "plain_predict", "run_end_to_end", "run_exit_benchmark",
    "saved_per_head", "threshold_sweep",
]
