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
   batches (:func:`ragrec.llm.batching.length_sorted_batches`: longest first, similar lengths),
   padded the same way, same batch size and threads. Each batch is one timed call
   (:func:`ragrec.experiments.timing.time_calls`). Methods are interleaved within every repeat (their order
   rotates between repeats) so machine drift hits all of them alike; the first repeat starts with
   ``warmup`` untimed batches per method. Reported per method, as the **median over repeats**:

   - ``rps``: requests answered / wall seconds of the pass (:func:`ragrec.experiments.timing.summarize`).
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
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from ragrec.data import Samples
from ragrec.errors import ConfigError, DataError
from ragrec.experiments.end_to_end import (
    E2E_METHODS,
    E2E_RETRIEVER,
    check_methods,
    run_end_to_end,
)
from ragrec.experiments.exit_sweep import (
    TAUS_DIFFERENCE,
    TAUS_RATIO,
    ExitPoint,
    check_taus,
    choose_operating_point,
    engine_points,
    saved_per_head,
    threshold_sweep,
)
from ragrec.experiments.exit_timing import benchmark_engine, plain_predict
from ragrec.llm.backbone import Backbone
from ragrec.model.criteria import NeverExit, StabilityExit
from ragrec.model.engine import EarlyExitEngine
from ragrec.model.heads import ExitHeads
from ragrec.results import Provenance, read_csv, result_dir, write_csv

if TYPE_CHECKING:  # config may one day hold an ExitBenchmarkConfig; no import cycle then
    from ragrec.config import Profile

# --------------------------------------------------------------------------------------------
# settings




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
        check_taus(self.taus)
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
        check_methods(self.e2e_methods)
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
    from ragrec.experiments.contexts import encode_contexts
    from ragrec.experiments.prepare import fit_retrievers, load_model, prepare_data
    from ragrec.experiments.scoring import load_trained_model, model_dir
    from ragrec.model.prompts import PromptBuilder

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
