"""The early-exit benchmark: threshold sweep, real engine vs plain forward, end-to-end requests.

Three measurements of the paper's second claim (stop at a stable head → more requests per second
at the same AUC), all in one process run:

1. **Threshold sweep** (:mod:`ragrec.experiments.early_exit.sweep`): the profile's exit criteria
   (:attr:`~ragrec.config.ExitBenchmarkConfig.criteria`) replayed on the saved per-head
   predictions over their τ grids, and the operating point chosen on validation
   (:mod:`ragrec.experiments.early_exit.operating_point`: the cheapest candidate whose one-sided
   paired-bootstrap upper bound of the AUC drop against full depth is within the margin).
2. **Real engine vs plain forward** (:mod:`ragrec.experiments.early_exit.engine_timing`): the early-exit
   engine at the chosen points and the plain full-depth forward of the same merged model, timed
   side by side on a seeded draw of test requests.
3. **End-to-end requests** (:mod:`ragrec.experiments.early_exit.end_to_end`): retrieval → prompt → score
   for the paper's pipeline (LLM retriever, full depth) and ours (GCN retriever, early exit).

:func:`run_exit_benchmark` (what the early-exit notebook calls) does all three for a profile and
writes ``threshold_sweep.csv``, ``early_exit.csv``, ``early_exit_predictions.csv`` (per request
and method, so every AUC can be recomputed) and the ``early_exit`` provenance step into
``results/<profile>/<dataset>/``. Timings never decide a test; they are written with provenance.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ragrec.config import ExitBenchmarkConfig, Profile
from ragrec.data import Samples
from ragrec.errors import DataError
from ragrec.experiments.early_exit.end_to_end import E2E_RETRIEVER, Pipeline
from ragrec.experiments.early_exit.operating_point import ExitPoint, choose_on_validation
from ragrec.experiments.early_exit.plain_forward import full_depth_checks
from ragrec.experiments.early_exit.rows import cf_rows, main_rows
from ragrec.experiments.early_exit.sweep import saved_per_head
from ragrec.experiments.recommender.cf_model import cf_builder, load_cf_model
from ragrec.experiments.recommender.contexts import encode_contexts
from ragrec.experiments.recommender.prepare import (
    Prepared,
    fit_retrievers,
    load_model,
    prepare_data,
)
from ragrec.experiments.recommender.scoring import (
    cf_ids_of,
    load_trained_model,
    model_dir,
    to_scoring,
)
from ragrec.experiments.timing import torch_threads
from ragrec.llm.backbone import Backbone
from ragrec.model.heads import ExitHeads
from ragrec.model.inference import for_inference, scoring_dtype
from ragrec.model.prompts import PromptBuilder
from ragrec.result_files import EARLY_EXIT, EARLY_EXIT_PREDICTIONS, THRESHOLD_SWEEP, predictions
from ragrec.results import Provenance, read_csv, result_dir, write_csv

PREDICTION_COLUMNS = ["method", "form", "tau", "sample_id", "user", "item", "label", "p_yes", "exit_layer"]


def default_exit_config(profile: Profile) -> ExitBenchmarkConfig:
    """The profile's :attr:`~ragrec.config.Profile.exit` settings with the profile's seed and its
    GCN context (its first context when it has none), so a notebook's seed override reaches the
    request draw and the bootstrap."""
    context = "gcn" if "gcn" in profile.contexts else profile.contexts[0]
    return dataclasses.replace(profile.exit, seed=profile.seed, context=context)


def merged_for_inference(
    backbone: Backbone, heads: ExitHeads, dtype: torch.dtype = torch.float32
) -> tuple[Backbone, ExitHeads]:
    """A plain (LoRA-merged) backbone in ``dtype`` for timed inference and heads bound to it
    (:func:`ragrec.model.inference.for_inference`: the same weights the recommender scored)."""
    return for_inference(backbone, heads, dtype)


def _request_samples(test: Samples, n: int, seed: int) -> Samples:
    """A seeded draw of ``n`` test samples (all if fewer), in their original order."""
    index = test.frame.index
    if n < len(index):
        rows = np.sort(np.random.default_rng(seed).choice(len(index), size=n, replace=False))
        index = index[rows]
    return test.subset(index)


# --------------------------------------------------------------------------------------------
# the steps of run_exit_benchmark


def _e2e_contexts(config: ExitBenchmarkConfig) -> set[str]:
    """The retrievers the end-to-end methods need (none when no end-to-end requests are run)."""
    return {E2E_RETRIEVER[m] for m in config.e2e_methods} if config.e2e_requests else set()


@dataclass(frozen=True)
class _Saved:
    """The recommender's saved predictions the step reads."""

    test: dict[str, pd.DataFrame]  # context → test predictions (the benchmark's, and the e2e ones)
    valid: pd.DataFrame  # validation predictions of the benchmark's context: τ is chosen on them
    cf_test: pd.DataFrame | None = None  # the cf variant's, when the recommender trained one
    cf_valid: pd.DataFrame | None = None


def _read_saved(out_dir: Path, config: ExitBenchmarkConfig) -> _Saved:
    """The recommender's saved predictions: the benchmark's context on test and validation
    (required), the end-to-end contexts that exist (they only fill agreement columns), and the
    ``cf`` variant's when present."""
    test = {}
    for ctx in dict.fromkeys([config.context, *sorted(_e2e_contexts(config))]):
        path = out_dir / predictions(ctx)
        if ctx == config.context or path.exists():
            test[ctx] = read_csv(path)
    valid = out_dir / predictions(config.context, split="valid")
    if not valid.exists():
        raise DataError(
            f"no validation predictions at {valid.name}: the operating τ is chosen on them; "
            "rerun the recommender step"
        )
    cf_test = out_dir / predictions(config.context, "cf")
    cf_valid = out_dir / predictions(config.context, "cf", "valid")
    if not (cf_test.exists() and cf_valid.exists()):
        return _Saved(test, read_csv(valid))
    return _Saved(test, read_csv(valid), read_csv(cf_test), read_csv(cf_valid))


def _check_trained(profile: Profile, results_root) -> None:
    final = model_dir(profile, results_root=results_root) / "final"
    if not final.is_dir():
        raise DataError(
            f"no trained model at {final}; run the recommender step for profile {profile.name!r} first "
            "(this step reloads the model, it never trains)"
        )


def _load_pipeline(
    profile: Profile, config: ExitBenchmarkConfig, *, data_root, results_root
) -> tuple[Prepared, Pipeline]:
    """The profile's data and the recommender's fitted retrievers and trained model, reloaded."""
    prepared = prepare_data(profile, data_root=data_root)
    # Two copies of the backbone: ``base`` stays untuned (the LLM retriever embeds query
    # users with it, as at fit); ``tuned`` receives the LoRA adapters and is merged.
    base = load_model(profile, prepared.dataset)
    names = tuple(dict.fromkeys([*profile.contexts, config.context, *sorted(_e2e_contexts(config))]))
    retrievers = fit_retrievers(prepared, base, names, results_root=results_root)
    builder = PromptBuilder(prepared.dataset, base, retrievers[names[0]].sequences, profile.prompt)
    tuned = load_model(profile, prepared.dataset)
    model = load_trained_model(prepared, tuned, results_root=results_root)
    backbone, heads = merged_for_inference(
        model.backbone, model.heads, scoring_dtype(profile.evaluation.dtype)
    )
    return prepared, Pipeline(retrievers, builder, backbone, heads)


@dataclass(frozen=True)
class _Measured:
    """What the timed part of the step produced, for the tables and the provenance."""

    sweep: pd.DataFrame
    best: pd.Series
    points: list[ExitPoint]
    table: pd.DataFrame
    per_request: pd.DataFrame
    checks: dict
    n_requests: int
    model: str
    num_layers: int
    head_layers: tuple[int, ...]
    threads: int


def _measure(
    profile: Profile, config: ExitBenchmarkConfig, saved: _Saved, *, data_root, results_root
) -> _Measured:
    """Reload the model, then sweep, time the engine and time whole requests (in that order);
    then the same sweep and engine timing for the ``cf`` variant when there is one."""
    torch.manual_seed(profile.seed)
    prepared, pipeline = _load_pipeline(profile, config, data_root=data_root, results_root=results_root)
    frame = saved.test[config.context]

    # 1. sweep: τ chosen on the validation predictions, reported on the test predictions
    sweep, best, points = choose_on_validation(frame, saved.valid, pipeline.heads, config)

    # 2. real engine vs plain forward on a seeded draw of test requests
    requests = _request_samples(prepared.test, config.n_requests, config.seed)
    prompts = encode_contexts(
        pipeline.builder, pipeline.retrievers, requests, [config.context] * len(requests)
    )
    saved_requests = saved_per_head(frame, pipeline.heads.head_layers, requests.frame.index)
    checks = full_depth_checks(pipeline.backbone, pipeline.heads, prompts, saved_requests, config)

    # 3. the engine against the plain forward, then whole requests: the first e2e_requests of the draw
    table, per_request = main_rows(pipeline, requests, prompts, saved_requests, points, config, saved.test)

    # 4. the cf variant (beyond the paper): its own validation-chosen point, timed on the same requests
    if saved.cf_test is not None:
        cf_sweep, cf_table, cf_predictions = _measure_cf(
            profile, config, saved, prepared, requests, results_root=results_root
        )
        sweep = pd.concat([sweep.assign(variant="main"), cf_sweep], ignore_index=True)
        table = pd.concat([table, cf_table], ignore_index=True)
        per_request = pd.concat([per_request, cf_predictions], ignore_index=True)
    return _Measured(
        sweep,
        best,
        points,
        table,
        per_request[["variant", *PREDICTION_COLUMNS]],
        checks,
        len(prompts),
        pipeline.backbone.name,
        pipeline.heads.num_layers,
        tuple(pipeline.heads.head_layers),
        torch.get_num_threads(),
    )


def _measure_cf(
    profile: Profile,
    config: ExitBenchmarkConfig,
    saved: _Saved,
    prepared: Prepared,
    requests: Samples,
    *,
    results_root,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The ``cf`` variant's sweep (τ chosen on its validation predictions), and its engine at that
    point against the plain forward with the same filled slots, on the main benchmark's requests."""
    model = to_scoring(
        load_cf_model(prepared, load_model(profile, prepared.dataset), results_root=results_root),
        scoring_dtype(profile.evaluation.dtype),
    )
    retrievers = fit_retrievers(prepared, model.backbone, (config.context,), results_root=results_root)
    sweep, _, points = choose_on_validation(saved.cf_test, saved.cf_valid, model.heads, config)
    prompts = encode_contexts(
        cf_builder(prepared, model.backbone, retrievers),
        retrievers,
        requests,
        [config.context] * len(requests),
    )
    table, predictions = cf_rows(
        model.backbone, model.heads, prompts, requests, points[0], saved.cf_test, config, cf_ids_of(requests)
    )
    return sweep.assign(variant="cf"), table, predictions


def _parameters(
    profile: Profile, config: ExitBenchmarkConfig, measured: _Measured, *, n_test: int, wall: float
) -> dict:
    """The step's provenance parameters."""
    return {
        "config": config,
        "profile": profile,
        "context": config.context,
        "operating_point": measured.points[0].describe(),
        "engine_points": [p.describe() for p in measured.points],
        "checks": measured.checks,
        "threads": measured.threads,
        "n_test": n_test,
        "n_requests": measured.n_requests,
        "model": measured.model,
        "num_layers": measured.num_layers,
        "head_layers": list(measured.head_layers),
        "wall_s": wall,
    }


# --------------------------------------------------------------------------------------------
# the whole step


def run_exit_benchmark(
    profile: Profile,
    *,
    results_root: str | os.PathLike | None = None,
    data_root: str | os.PathLike | None = None,
    config: ExitBenchmarkConfig | None = None,
) -> dict[str, pd.DataFrame]:
    """The early-exit step for ``profile``: sweep, real-engine benchmark, end-to-end requests.

    Needs the recommender step's outputs in ``results/<profile>/<dataset>/``
    (the benchmark context's test and validation predictions and the trained model checkpoint,
    which is reloaded, never retrained here). Writes ``threshold_sweep.csv`` (with an
    ``operating_point`` flag), ``early_exit.csv``, ``early_exit_predictions.csv`` (per request
    and method: ``method, form, tau, sample_id, user, item, label, p_yes, exit_layer``) and the
    ``early_exit`` provenance step.

    Args:
        profile: the run profile (its dataset, model and :attr:`~ragrec.config.Profile.exit`).
        results_root: results root. (default: ``$RAGREC_RESULTS`` or ``results``)
        data_root: where the dataset's raw files are. (default: the loader's default)
        config: what to run. (default: :func:`default_exit_config` of ``profile``)

    Returns:
        ``{"threshold_sweep", "early_exit", "predictions", "operating_point", "checks"}``
        DataFrames (``predictions``: per request and method, as in ``early_exit_predictions.csv``;
        the sweep's rows are recomputable from the saved predictions); ``checks``
        holds the full-depth agreement figures (engine "never exit" vs plain forward on the
        merged model; plain forward vs the saved predictions of the unmerged model).
    """
    config = config or default_exit_config(profile)
    started = time.perf_counter()
    provenance = Provenance("early_exit", profile.name, profile.data.dataset, config.seed, {})
    out_dir = result_dir(profile.name, profile.data.dataset, results_root)
    saved = _read_saved(out_dir, config)
    _check_trained(profile, results_root)
    with torch_threads(config.threads):
        measured = _measure(profile, config, saved, data_root=data_root, results_root=results_root)

    outputs = [
        write_csv(measured.sweep, out_dir / THRESHOLD_SWEEP).name,
        write_csv(measured.table, out_dir / EARLY_EXIT).name,
        write_csv(measured.per_request, out_dir / EARLY_EXIT_PREDICTIONS).name,
    ]
    wall = time.perf_counter() - started
    provenance.parameters = _parameters(
        profile, config, measured, n_test=len(saved.test[config.context]), wall=wall
    )
    provenance.write(out_dir, outputs)
    return {
        "threshold_sweep": measured.sweep,
        "early_exit": measured.table,
        "predictions": measured.per_request,
        "operating_point": measured.best.to_frame().T.reset_index(drop=True),
        "checks": pd.DataFrame([measured.checks]),
    }
