"""The recommender experiment end to end, as functions the notebooks call.

data → retrievers → prompts → multi-head training → per-head evaluation → results. One model is
trained on *mixed* contexts (each training sample gets one of the profile's contexts — none,
random, GCN, LLM — as ReLLa mixes its prompts) and evaluated under every context, so the
context ablation needs no retraining. The β ablation is a pair of runs that differ only in β
(same samples, batches, schedule, seed), each run to the end of its schedule; a profile may give
the pair a shorter schedule than the main model's (:class:`ragrec.config.BetaPair`).

Validation chooses, test reports: validation predictions (``predictions_valid_<context>.csv``,
every head) are saved for the choices later steps make (the early-exit τ); the test set is only
scored. The profile's full contexts score every test sample; the other contexts and the ablation
variants a label-stratified subset of the same samples, so every comparison is paired.

Artefacts (LightGCN embeddings, LoRA + head checkpoints) live in
``results/<profile>/<dataset>/checkpoints/`` (git-ignored); a rerun reloads them instead of
retraining, and an interrupted training resumes.
"""

from __future__ import annotations

import time

import pandas as pd
import torch

from ragrec.config import Profile
from ragrec.experiments.cf_model import fit_cf_variant, score_cf_variant
from ragrec.experiments.contexts import FoldedRetriever, information_rows
from ragrec.experiments.launched import launcher, run_launched
from ragrec.experiments.prepare import (
    Prepared,
    fit_retrievers,
    load_model,
    prepare_data,
    training_retrievers,
)
from ragrec.experiments.scoring import (
    TrainedModel,
    dtype_check,
    evaluate_contexts,
    fp32_reference,
    save_validation_predictions,
    to_scoring,
    train_model,
    training_log,
)
from ragrec.model.inference import scoring_dtype
from ragrec.model.prompts import PromptBuilder
from ragrec.results import Provenance, read_csv, result_dir, write_csv
from ragrec.retrieval.base import Retriever


def run_beta_pair(
    prepared: Prepared,
    main: TrainedModel,
    retrievers: dict[str, Retriever],
    train_retrievers: dict[str, Retriever | FoldedRetriever],
    *,
    results_root=None,
    progress: bool = True,
) -> tuple[list[pd.DataFrame], list[pd.DataFrame]]:
    """The β ablation (:class:`ragrec.config.BetaPair`): the profile's β and β = 0, each a complete
    run on the pair's schedule, scored (like ``main``, already prepared for scoring) under the GCN
    context on the reduced test samples (variants ``pair_beta<β>``). Returns their ``heads.csv``
    rows and training logs."""
    p = prepared.profile
    tables, logs = [], []
    for beta in (p.train.beta, 0.0):
        if beta == p.train.beta and p.beta_pair.is_main_schedule:
            model, builder = main, None
        else:
            # a fresh backbone: LoRA was injected into the main one in place
            base = load_model(p, prepared.dataset)
            builder = PromptBuilder(prepared.dataset, base, retrievers["gcn"].sequences, p.prompt)
            trained = train_model(
                prepared,
                base,
                retrievers,
                builder,
                train_retrievers=train_retrievers,
                beta=beta,
                pair=p.beta_pair,
                validate=False,
                results_root=results_root,
                progress=progress,
            )
            logs.append(training_log(trained, f"pair_beta{beta:g}"))
            model = to_scoring(trained, scoring_dtype(p.evaluation.dtype))
        builder = builder or PromptBuilder(
            prepared.dataset, model.backbone, retrievers["gcn"].sequences, p.prompt
        )
        tables.append(
            evaluate_contexts(
                prepared,
                model,
                retrievers,
                builder,
                ("gcn",),
                results_root=results_root,
                variant=f"pair_beta{beta:g}",
                reduced=True,
                progress=progress,
            )
        )
    return tables, logs


def run_recommender(
    profile: Profile, *, data_root=None, results_root=None, beta_ablation: bool = True, progress: bool = True
) -> pd.DataFrame:
    """The whole model half: train once on mixed contexts, save validation predictions, evaluate
    every context and head on test, then the ``cf`` variant (fitted by
    :func:`~ragrec.experiments.cf_model.fit_cf_variant` before the main model is merged for scoring)
    and the β pair (:func:`run_beta_pair`) when the profile has them; write ``heads.csv``,
    ``training.csv``, ``information.csv`` and provenance. Returns the heads table.

    With ``RAGREC_LAUNCH`` set, this call runs in the launched processes instead, data-parallel
    (:mod:`ragrec.experiments.launched`), and the table is read back from their results."""
    if launcher() is not None:
        run_launched(
            run_recommender,
            profile,
            data_root=data_root,
            results_root=results_root,
            beta_ablation=beta_ablation,
            progress=progress,
        )
        return read_csv(result_dir(profile.name, profile.data.dataset, results_root) / "heads.csv")
    started = time.perf_counter()
    torch.manual_seed(profile.seed)
    prepared = prepare_data(profile, data_root=data_root)
    backbone = load_model(profile, prepared.dataset)
    retrievers = fit_retrievers(
        prepared, backbone, profile.contexts, results_root=results_root, progress=progress
    )
    builder = PromptBuilder(
        prepared.dataset, backbone, retrievers[profile.contexts[0]].sequences, profile.prompt
    )
    train_retrievers = training_retrievers(prepared, retrievers, results_root=results_root)
    trained = train_model(
        prepared,
        backbone,
        retrievers,
        builder,
        train_retrievers=train_retrievers,
        validate=profile.evaluation.validate_while_training,
        results_root=results_root,
        progress=progress,
    )
    logs = [training_log(trained)]
    has_cf = profile.cf is not None and "gcn" in retrievers
    # the cf variant trains on the main model's (unmerged) LoRA, so before scoring merges it
    cf = (
        fit_cf_variant(
            prepared, trained, retrievers, train_retrievers, results_root=results_root, progress=progress
        )
        if has_cf
        else None
    )
    # the check scores in fp32 what the profile scores in its dtype: nothing to compare in fp32
    checked = profile.evaluation.dtype_check and profile.evaluation.dtype != "float32"
    fp32 = fp32_reference(trained) if checked else None
    model = to_scoring(trained, scoring_dtype(profile.evaluation.dtype))
    out_dir = result_dir(profile.name, profile.data.dataset, results_root)
    for stale in [*out_dir.glob("predictions_*_pair_beta*.csv"), *out_dir.glob("predictions*_cf.csv")]:
        stale.unlink()  # a variant of another profile must not outlive it
    write_csv(_information(prepared, builder, retrievers, train_retrievers), out_dir / "information.csv")
    outputs = save_validation_predictions(
        prepared, model, retrievers, builder, results_root=results_root, progress=progress
    )
    tables = [
        evaluate_contexts(
            prepared,
            model,
            retrievers,
            builder,
            profile.contexts,
            results_root=results_root,
            progress=progress,
        )
    ]
    if fp32 is not None:
        tables.append(
            dtype_check(prepared, fp32, retrievers, builder, results_root=results_root, progress=progress)
        )
    if cf is not None:
        cf_tables, cf_files = score_cf_variant(
            prepared,
            to_scoring(cf, scoring_dtype(profile.evaluation.dtype), model.backbone),
            retrievers,
            results_root=results_root,
            progress=progress,
        )
        tables, logs, outputs = tables + cf_tables, logs + [training_log(cf, "cf")], outputs + cf_files
    if beta_ablation and profile.beta_pair is not None and profile.train.beta != 0 and "gcn" in retrievers:
        pair_tables, pair_logs = run_beta_pair(
            prepared, model, retrievers, train_retrievers, results_root=results_root, progress=progress
        )
        tables, logs = tables + pair_tables, logs + pair_logs
    heads = pd.concat(tables, ignore_index=True)
    write_csv(heads, out_dir / "heads.csv")
    write_csv(pd.concat(logs, ignore_index=True), out_dir / "training.csv")
    outputs += ["heads.csv", "training.csv", "information.csv"] + [
        f"predictions_{c}.csv" for c in profile.contexts
    ]
    Provenance("recommender", profile.name, profile.data.dataset, profile.seed, profile).write(
        out_dir, outputs
    )
    print(f"recommender step: {time.perf_counter() - started:.0f} s")
    return heads


def _information(
    prepared: Prepared, builder: PromptBuilder, retrievers: dict, train_retrievers: dict
) -> pd.DataFrame:
    """``information.csv``: vote coverage and later-interaction share of training prompts (with the
    plain retrievers and as trained) and of test prompts."""
    pick = [c for c in ("gcn", "llm") if c in retrievers]
    parts = {
        "train (plain)": (prepared.train, {c: retrievers[c] for c in pick}),
        "train (as trained)": (prepared.train, {c: train_retrievers[c] for c in pick}),
        "test": (prepared.test, {c: retrievers[c] for c in pick}),
    }
    return information_rows(builder.train, parts, prepared.profile.prompt.k, prepared.profile.prompt.vote_k)
