"""The recommender experiment end to end, as functions the notebooks call.

data → retrievers → prompts → multi-head training → per-head evaluation → results. One model is
trained on *mixed* contexts (each training sample gets one of the profile's contexts — none,
random, GCN, LLM — as ReLLa mixes its prompts) and evaluated under every context, so the
context ablation needs no retraining. The β ablation is a pair of runs that differ only in β
(same samples, batches, schedule, seed), each run to the end of its schedule; a profile may give
the pair a shorter schedule than the main model's (:class:`ragrec.config.BetaPair`).

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
    HEADS,
    INFORMATION,
    PAIR_VARIANT,
    TRAINING,
    find_predictions,
    pair_variant,
    predictions,
)
from ragrec.results import Provenance, read_csv, result_dir, write_csv


def run_beta_pair(run: Run, main: TrainedModel) -> tuple[list[pd.DataFrame], list[pd.DataFrame]]:
    """The β ablation (:class:`ragrec.config.BetaPair`): the profile's β and β = 0, each a complete
    run on the pair's schedule, scored (like ``main``, already prepared for scoring) under the GCN
    context on the reduced test samples (variants ``pair_beta<β>``). Returns their ``heads.csv``
    rows and training logs."""
    p, dataset, gcn = run.profile, run.prepared.dataset, run.retrievers["gcn"]
    tables, logs = [], []
    for beta in (p.train.beta, 0.0):
        variant = pair_variant(beta)
        builder = None
        if beta == p.train.beta and p.beta_pair.is_main_schedule:
            model = main
        else:
            # a fresh backbone: LoRA was injected into the main one in place
            base = load_model(p, dataset)
            builder = PromptBuilder(dataset, base, gcn.sequences, p.prompt)
            trained = train_model(run, base, builder, beta=beta, pair=p.beta_pair, validate=False)
            logs.append(training_log(trained, variant))
            model = to_scoring(trained, scoring_dtype(p.evaluation.dtype))
        builder = builder or PromptBuilder(dataset, model.backbone, gcn.sequences, p.prompt)
        tables.append(evaluate_contexts(run, model, builder, ("gcn",), variant=variant, reduced=True))
    return tables, logs


def run_recommender(
    profile: Profile, *, data_root=None, results_root=None, beta_ablation: bool = True, progress: bool = True
) -> pd.DataFrame:
    """The whole model half: train once on mixed contexts, save validation predictions, evaluate
    every context and head on test, then the ``cf`` variant (fitted by
    :func:`~ragrec.experiments.recommender.cf_model.fit_cf_variant` before the main model is
    merged for scoring) and the β pair (:func:`run_beta_pair`) when the profile has them; write ``heads.csv``,
    ``training.csv``, ``information.csv`` and provenance. Returns the heads table.

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
    # 3) the variants: collaborative tokens, the β pair
    variant_tables, variant_logs, variant_files = _score_variants(run, model, cf, beta_ablation)
    tables, logs, outputs = tables + variant_tables, logs + variant_logs, outputs + variant_files
    heads = pd.concat(tables, ignore_index=True)
    write_csv(heads, run.out_dir / HEADS)
    write_csv(pd.concat(logs, ignore_index=True), run.out_dir / TRAINING)
    outputs += [HEADS, TRAINING, INFORMATION] + [predictions(c) for c in profile.contexts]
    Provenance("recommender", profile.name, profile.data.dataset, profile.seed, profile).write(
        run.out_dir, outputs
    )
    print(f"recommender step: {time.perf_counter() - started:.0f} s")
    return heads


def _score_variants(
    run: Run, model: TrainedModel, cf: TrainedModel | None, beta_ablation: bool
) -> tuple[list[pd.DataFrame], list[pd.DataFrame], list[str]]:
    """The ``cf`` variant (trained, not yet prepared for scoring) and the β pair, scored beside
    ``model``: their ``heads.csv`` rows, training logs and the files they wrote."""
    p, tables, logs, files = run.profile, [], [], []
    if cf is not None:
        scored_cf = to_scoring(cf, scoring_dtype(p.evaluation.dtype), model.backbone)
        cf_tables, files = score_cf_variant(run, scored_cf)
        tables, logs = tables + cf_tables, logs + [training_log(cf, "cf")]
    pair = beta_ablation and p.beta_pair is not None and p.train.beta != 0
    if pair and "gcn" in run.retrievers:
        pair_tables, pair_logs = run_beta_pair(run, model)
        tables, logs = tables + pair_tables, logs + pair_logs
    return tables, logs, files


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
    """A variant of another profile (β pair, cf) must not outlive it in this folder."""
    for found in find_predictions(out_dir):
        if found.variant == "cf" or found.variant.startswith(PAIR_VARIANT):
            (out_dir / found.name).unlink()


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
