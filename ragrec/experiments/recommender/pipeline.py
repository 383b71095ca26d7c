"""The recommender experiment end to end, as functions the notebooks call.

data → retrievers → prompts → multi-head training → per-head evaluation → results. One model is
trained on *mixed* contexts (each training sample gets one of the profile's contexts — none,
random, GCN, LLM — as ReLLa mixes its prompts) and evaluated under every context, so the
context ablation needs no retraining. The β ablation is a study of runs that differ only in β
and seed (same samples, same schedule of its own), each run to the end of that schedule, with its
learning curve (:mod:`ragrec.experiments.recommender.beta_study`).

Validation chooses, test reports: validation predictions (split ``valid``, every head) are
saved for the choices later steps make (the early-exit τ); the test set is only scored. The profile's full
contexts score every test sample; the other contexts and the ablation variants a label-stratified
subset of the same samples, so every comparison is paired.

Artefacts (LightGCN embeddings, LoRA + head checkpoints) live in
``results/<profile>/<dataset>/checkpoints/`` (git-ignored); a rerun reloads them instead of
retraining, and an interrupted training resumes.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import torch

from ragrec.config import Profile
from ragrec.experiments.recommender.beta_study import CURVE_COLUMNS, curve_rows, run_beta_study
from ragrec.experiments.recommender.cf_model import fit_cf_variant, score_cf_variant
from ragrec.experiments.recommender.contexts import information_rows
from ragrec.experiments.recommender.launched import launcher, run_launched
from ragrec.experiments.recommender.prepare import (
    fit_retrievers,
    load_model,
    prepare_data,
    training_retrievers,
)
from ragrec.experiments.recommender.run import Run
from ragrec.experiments.recommender.scoring import (
    TrainedModel,
    dtype_check,
    evaluate_contexts,
    fp32_reference,
    save_validation_predictions,
    to_scoring,
    train_model,
    training_log,
)
from ragrec.llm.backbone import Backbone
from ragrec.model.inference import scoring_dtype
from ragrec.model.prompts import PromptBuilder
from ragrec.result_files import (
    BETA_RUNS,
    HEADS,
    INFORMATION,
    LEARNING_CURVE,
    LEGACY_PAIR_VARIANT,
    STUDY_VARIANT,
    TRAINING,
    find_predictions,
    predictions,
)
from ragrec.results import Provenance, read_csv, result_dir, write_csv


def run_recommender(
    profile: Profile, *, data_root=None, results_root=None, beta_ablation: bool = True, progress: bool = True
) -> pd.DataFrame:
    """The whole model half: train once on mixed contexts, save validation predictions, evaluate
    every context and head on test, then the ``cf`` variant (fitted by
    :func:`~ragrec.experiments.recommender.cf_model.fit_cf_variant` before the main model is
    merged for scoring) and the β study (:func:`~ragrec.experiments.recommender.beta_study.run_beta_study`)
    when the profile has them; write ``heads.csv``, ``training.csv``, ``information.csv``, the
    learning curves (``learning_curve.csv``; the β study's runs, and the main run when it
    validates), the study's runs (``beta_runs.csv``) and provenance. Returns the heads table.

    With ``RAGREC_LAUNCH`` set, this call runs in the launched processes instead, data-parallel
    (:mod:`ragrec.experiments.recommender.launched`), and the table is read back from their results."""
    if launcher() is not None:
        run_launched(
            run_recommender,
            profile,
            data_root=data_root,
            results_root=results_root,
            beta_ablation=beta_ablation,
            progress=progress,
        )
        return read_csv(result_dir(profile.name, profile.data.dataset, results_root) / HEADS)
    started = time.perf_counter()
    torch.manual_seed(profile.seed)
    run = Run(prepare_data(profile, data_root=data_root), results_root, progress)
    backbone = load_model(profile, run.prepared.dataset)
    run, builder = _with_retrievers(run, backbone)
    # 1) the main model, and the cf variant, which trains on its (unmerged) LoRA before scoring merges it
    trained = train_model(run, backbone, builder, validate=profile.evaluation.validate_while_training)
    cf = fit_cf_variant(run, trained) if profile.cf is not None and "gcn" in run.retrievers else None
    # the check scores in fp32 what the profile scores in its dtype: nothing to compare in fp32
    checked = profile.evaluation.dtype_check and profile.evaluation.dtype != "float32"
    fp32 = fp32_reference(trained) if checked else None
    model = to_scoring(trained, scoring_dtype(profile.evaluation.dtype))
    _drop_stale_variants(run.out_dir)
    write_csv(_information(run, builder), run.out_dir / INFORMATION)
    # 2) validation predictions (what later choices are made on), then every context on test
    outputs = save_validation_predictions(run, model, builder)
    tables = [evaluate_contexts(run, model, builder, profile.contexts)]
    logs = [training_log(trained)]
    if fp32 is not None:
        tables.append(dtype_check(run, fp32, builder))
    # 3) the variants: collaborative tokens, the β study; the learning curves
    variant_tables, variant_logs, curve, variant_files = _score_variants(
        run, model, trained, cf, beta_ablation
    )
    tables, logs, outputs = tables + variant_tables, logs + variant_logs, outputs + variant_files
    heads = pd.concat(tables, ignore_index=True)
    write_csv(heads, run.out_dir / HEADS)
    write_csv(pd.concat(logs, ignore_index=True), run.out_dir / TRAINING)
    write_csv(curve, run.out_dir / LEARNING_CURVE)
    outputs += [HEADS, TRAINING, INFORMATION, LEARNING_CURVE] + [predictions(c) for c in profile.contexts]
    Provenance("recommender", profile.name, profile.data.dataset, profile.seed, profile).write(
        run.out_dir, outputs
    )
    print(f"recommender step: {time.perf_counter() - started:.0f} s")
    return heads


def _score_variants(
    run: Run, model: TrainedModel, trained: TrainedModel, cf: TrainedModel | None, beta_ablation: bool
) -> tuple[list[pd.DataFrame], list[pd.DataFrame], pd.DataFrame, list[str]]:
    """The ``cf`` variant (trained, not yet prepared for scoring), scored beside ``model``, and the
    β study (writes ``beta_runs.csv``): their ``heads.csv`` rows and training logs, the learning
    curves (the main run's, from ``trained``, when it validated) and the files they wrote."""
    p, tables, logs, files = run.profile, [], [], []
    prepared = run.prepared
    records = trained.result.valid_auc
    curves = [
        curve_rows(records, trained, "main", len(prepared.train), _step_prompts(p), len(prepared.valid))
    ]
    if cf is not None:
        scored_cf = to_scoring(cf, scoring_dtype(p.evaluation.dtype), model.backbone)
        cf_tables, files = score_cf_variant(run, scored_cf)
        tables, logs = tables + cf_tables, logs + [training_log(cf, "cf")]
    study = beta_ablation and p.beta_study is not None and p.train.beta != 0
    if study and "gcn" in run.retrievers:
        out = run_beta_study(run)
        tables, logs, curves = tables + out.heads, logs + out.logs, curves + [out.curve]
        write_csv(out.runs, run.out_dir / BETA_RUNS)
        files = files + [BETA_RUNS]
    curve = pd.concat([c for c in curves if len(c)] or [pd.DataFrame(columns=list(CURVE_COLUMNS))])
    return tables, logs, curve.reset_index(drop=True), files


def _step_prompts(profile: Profile) -> int:
    """Training prompts per optimizer step of the main run."""
    return profile.train.batch_size * profile.train.grad_accum


def _with_retrievers(run: Run, backbone: Backbone) -> tuple[Run, PromptBuilder]:
    """Fit the profile's retrievers (before LoRA: the LLM retriever embeds with the untuned
    model) and their training views; the prompt builder on the first context's sequences."""
    p, prepared = run.profile, run.prepared
    retrievers = fit_retrievers(
        prepared, backbone, p.contexts, results_root=run.results_root, progress=run.progress
    )
    train_retrievers = training_retrievers(prepared, retrievers, results_root=run.results_root)
    builder = PromptBuilder(prepared.dataset, backbone, retrievers[p.contexts[0]].sequences, p.prompt)
    return run.with_retrievers(retrievers, train_retrievers), builder


def _drop_stale_variants(out_dir: Path) -> None:
    """A variant of another profile (β study, cf, an older β pair) must not outlive it in this
    folder, nor the study's run table."""
    for found in find_predictions(out_dir):
        if found.variant == "cf" or found.variant.startswith((STUDY_VARIANT, LEGACY_PAIR_VARIANT)):
            (out_dir / found.name).unlink()
    (out_dir / BETA_RUNS).unlink(missing_ok=True)


def _information(run: Run, builder: PromptBuilder) -> pd.DataFrame:
    """``information.csv``: vote coverage and later-interaction share of training prompts (with the
    plain retrievers and as trained) and of test prompts."""
    prepared, retrievers, train_retrievers = run.prepared, run.retrievers, run.training_retrievers
    pick = [c for c in ("gcn", "llm") if c in retrievers]
    parts = {
        "train (plain)": (prepared.train, {c: retrievers[c] for c in pick}),
        "train (as trained)": (prepared.train, {c: train_retrievers[c] for c in pick}),
        "test": (prepared.test, {c: retrievers[c] for c in pick}),
    }
    return information_rows(builder.train, parts, prepared.profile.prompt.k, prepared.profile.prompt.vote_k)
