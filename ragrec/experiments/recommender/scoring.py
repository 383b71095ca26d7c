"""Training the recommender and scoring it: per-head predictions of CTR samples under a prompt
context, on test or validation samples, and the ``heads.csv`` rows.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ragrec.config import BetaStudy, Profile
from ragrec.data import (
    Samples,
    cap_samples,
)
from ragrec.experiments.recommender.contexts import encode_contexts, mixed_contexts
from ragrec.experiments.recommender.prepare import Prepared, checkpoint_dir
from ragrec.experiments.recommender.run import Run
from ragrec.llm.backbone import Backbone
from ragrec.metrics import head_table
from ragrec.model.checkpoints import TrainResult, load_trained
from ragrec.model.heads import ExitHeads
from ragrec.model.inference import for_inference
from ragrec.model.lora import attach_lora
from ragrec.model.predict import predict_heads
from ragrec.model.prompts import PromptBuilder
from ragrec.model.train import TrainConfig, train_multihead
from ragrec.result_files import predictions
from ragrec.results import write_csv


@dataclass
class TrainedModel:
    backbone: Backbone
    heads: ExitHeads
    result: TrainResult
    beta: float
    seed: int = 0  # the run's LoRA init, batch order and dropout (TrainConfig.seed)


def capped_rows(prepared: Prepared, cap: int | None) -> np.ndarray:
    """Positions in ``prepared.train`` of a seeded, label-stratified subset of ``cap`` samples, in
    the main run's order (all of them for None): a shorter run on the main run's prompts."""
    if cap is None or cap >= len(prepared.train):
        return np.arange(len(prepared.train))
    kept = cap_samples(prepared.train, cap, seed=prepared.profile.seed).frame.index
    return np.flatnonzero(prepared.train.frame.index.isin(kept))


def train_model(
    run: Run,
    backbone: Backbone,
    builder: PromptBuilder,
    *,
    beta: float | None = None,
    study: BetaStudy | None = None,
    seed: int | None = None,
    validate: bool = True,
) -> TrainedModel:
    """LoRA + all heads on mixed-context training prompts (built with ``run.training_retrievers``;
    validation prompts with ``run.retrievers``). Reloads a finished run, resumes a killed one.

    Args:
        beta: the heads' depth-wise learning-rate decay (default: the profile's).
        study: train one run of the β study instead (:class:`ragrec.config.BetaStudy`): its
            prompts and schedule, with snapshots for its learning curve (:func:`study_config`).
        seed: the run's seed (LoRA init, batch order, dropout; default: the profile's).
        validate: per-head validation AUC on GCN-context prompts every ``eval_every`` steps
            (never for a β study run: its curve is scored from the snapshots).
    """
    prepared, p = run.prepared, run.profile
    config = dataclasses.replace(p.train, beta=p.train.beta if beta is None else beta)
    if seed is None:  # the main run: LoRA init from the profile's seed, batches from the config's
        seed = p.seed
    else:
        config = dataclasses.replace(config, seed=seed)
    contexts = mixed_contexts(len(prepared.train), p.contexts, p.seed)
    prompts = encode_contexts(builder, run.training_retrievers, prepared.train, contexts)
    labels = prepared.train.frame["label"].to_numpy()
    valid = validation_prompts(run, builder, prepared.valid) if validate and study is None else None
    snapshots: list[int] = []
    if study is not None:
        # a seeded, label-stratified subset of the main run's prompts, in the same order, for
        # every run of the study: its runs differ only in β and seed
        rows = capped_rows(prepared, study.train_cap)
        prompts, labels = [prompts[r] for r in rows], labels[rows]
        # the learning curve is scored from snapshots after training, in the scoring dtype
        config, snapshots = study_config(config, study, len(prompts))
    tuned = attach_lora(backbone, config.lora, seed=seed)
    heads = ExitHeads(tuned, p.model.head_layers, readout=p.train.readout_fit is not None)
    directory = model_dir(p, config.beta, run.results_root, study=study, seed=seed)
    result = train_multihead(
        tuned,
        heads,
        prompts,
        labels,
        config,
        directory,
        valid=valid,
        snapshot_at=snapshots,
        progress=run.progress,
    )
    return TrainedModel(tuned, heads, result, config.beta, seed)


def study_config(config: TrainConfig, study: BetaStudy, n_prompts: int) -> tuple[TrainConfig, list[int]]:
    """``config`` on the β study's schedule for ``n_prompts`` training prompts (its epochs, lr_0
    and batch size where it sets them; no resumable checkpoint, a run is short), and the steps
    before the end where the learning curve takes a snapshot: every ``steps / curve_points``."""
    config = dataclasses.replace(
        config,
        epochs=study.epochs or config.epochs,
        lr=study.lr or config.lr,
        batch_size=study.batch_size or config.batch_size,
    )
    steps = config.epochs * math.ceil(math.ceil(n_prompts / config.batch_size) / config.grad_accum)
    every = max(1, math.ceil(steps / study.curve_points))
    return dataclasses.replace(config, checkpoint_every=steps), list(range(every, steps, every))


def validation_prompts(run: Run, builder: PromptBuilder, samples: Samples) -> tuple[list, np.ndarray]:
    """``samples`` as GCN-context prompts (the first context without GCN) and their labels."""
    ctx = "gcn" if "gcn" in run.retrievers else run.profile.contexts[0]
    prompts = encode_contexts(builder, run.retrievers, samples, [ctx] * len(samples))
    return prompts, samples.frame["label"].to_numpy()


def model_dir(
    profile: Profile,
    beta: float | None = None,
    results_root=None,
    *,
    study: BetaStudy | None = None,
    seed: int = 0,
) -> Path:
    """Where the model trained with ``beta`` (default: the profile's) keeps its checkpoints; each
    run of the β study gets its own folder, named by its schedule and seed."""
    name = f"model_beta{profile.train.beta if beta is None else beta:g}"
    if study is not None:
        t = profile.train
        lr, batch = study.lr or t.lr, study.batch_size or t.batch_size
        name += f"_study{study.train_cap or 'all'}x{study.epochs or t.epochs}_b{batch}_lr{lr:g}_seed{seed}"
    return checkpoint_dir(profile, results_root) / name


def load_trained_model(
    prepared: Prepared, backbone: Backbone, *, beta: float | None = None, results_root=None
) -> TrainedModel:
    """The finished model of the recommender step, reloaded (never trained here): LoRA is
    attached to ``backbone`` and the adapters and heads are loaded. ModelError if absent."""
    p = prepared.profile
    beta = p.train.beta if beta is None else beta
    tuned = attach_lora(backbone, p.train.lora, seed=p.seed)
    heads = ExitHeads(tuned, p.model.head_layers, readout=p.train.readout_fit is not None)
    result = load_trained(model_dir(p, beta, results_root), tuned, heads, "final")
    tuned.model.eval()
    heads.eval()
    return TrainedModel(tuned, heads, result, beta)


def per_sample_frame(samples: Samples, per_head_p: np.ndarray, head_layers) -> pd.DataFrame:
    """Per-sample predictions: user, item, label, timestamp and P(Yes) of every head."""
    frame = samples.frame
    out = pd.DataFrame(
        {
            "sample_id": frame.index.to_numpy(),
            "user": frame["user"].to_numpy(),
            "item": frame["item"].to_numpy(),
            "label": frame["label"].to_numpy(),
            "timestamp": frame["timestamp"].to_numpy(),
        }
    )
    for h, layer in enumerate(head_layers):
        out[f"p_head_{layer}"] = per_head_p[:, h]
    return out


def test_samples(prepared: Prepared, context: str | None = None) -> Samples:
    """The test samples a context (or, for None, an ablation variant) is scored on: all of them
    for the profile's full contexts, else the label-stratified reduced subset of the same."""
    e = prepared.profile.evaluation
    if context in e.full_contexts or e.reduced_cap is None or e.reduced_cap >= len(prepared.test):
        return prepared.test
    return cap_samples(prepared.test, e.reduced_cap, seed=prepared.profile.seed)


def cf_ids_of(samples: Samples) -> np.ndarray:
    """``[n, 2]`` (user, target item) per sample: what the collaborative slots are filled with."""
    return samples.frame[["user", "item"]].to_numpy(np.int64)


def score_context(
    run: Run, model: TrainedModel, builder: PromptBuilder, samples: Samples, context: str
) -> tuple[np.ndarray, float]:
    """Per-head P(Yes) ``[len(samples), n_heads]`` of ``samples`` under one context, and the
    prompts' mean length in tokens."""
    prompts = encode_contexts(builder, run.retrievers, samples, [context] * len(samples))
    per_head = predict_heads(
        model.backbone,
        model.heads,
        prompts,
        run.profile.eval_batch_size,
        progress=run.progress,
        cf_ids=cf_ids_of(samples) if model.heads.cf is not None else None,
    )
    return per_head, float(np.mean([len(x) for x in prompts]))


def evaluate_contexts(
    run: Run,
    model: TrainedModel,
    builder: PromptBuilder,
    contexts: tuple[str, ...],
    *,
    variant: str = "main",
    reduced: bool = False,
) -> pd.DataFrame:
    """Per-head AUC/LogLoss of ``model`` on the test samples under each context (all of them or
    the reduced subset, :func:`test_samples`; always the reduced one when ``reduced``); writes
    its predictions file (:class:`~ragrec.result_files.Predictions`) per context and returns the
    ``heads.csv`` rows."""
    tables = [
        evaluate_samples(
            run, model, builder, test_samples(run.prepared, None if reduced else ctx), ctx, variant=variant
        )
        for ctx in contexts
    ]
    return pd.concat(tables, ignore_index=True)


def evaluate_samples(
    run: Run,
    model: TrainedModel,
    builder: PromptBuilder,
    samples: Samples,
    context: str,
    *,
    variant: str = "main",
) -> pd.DataFrame:
    """Score ``samples`` under one context, write its predictions file
    (:class:`~ragrec.result_files.Predictions`) and return its ``heads.csv`` rows."""
    p = run.profile
    per_head, mean_tokens = score_context(run, model, builder, samples, context)
    write_csv(
        per_sample_frame(samples, per_head, model.heads.head_layers),
        run.out_dir / predictions(context, variant),
    )
    table = head_table(
        samples.frame["label"].to_numpy(), per_head, model.heads.head_layers, context=context, seed=p.seed
    )
    table.insert(1, "variant", variant)
    table.insert(2, "beta", model.beta)
    table.insert(3, "train_steps", model.result.steps)
    table["mean_prompt_tokens"] = mean_tokens
    return table


def to_scoring(model: TrainedModel, dtype: torch.dtype, backbone: Backbone | None = None) -> TrainedModel:
    """``model`` as it is scored (:func:`ragrec.model.inference.for_inference`): LoRA merged in
    place, cast to ``dtype``; ``backbone``: an already merged backbone the heads share."""
    merged, heads = for_inference(backbone or model.backbone, model.heads, dtype)
    return TrainedModel(merged, heads, model.result, model.beta)


def fp32_reference(model: TrainedModel) -> TrainedModel:
    """An fp32 scoring copy of ``model`` (the original stays untouched), for the dtype check."""
    return to_scoring(
        TrainedModel(copy.deepcopy(model.backbone), model.heads, model.result, model.beta), torch.float32
    )


def dtype_check(run: Run, fp32: TrainedModel, builder: PromptBuilder) -> pd.DataFrame:
    """The fp32 model on ``evaluation.dtype_check`` of the reduced test samples, GCN context
    (variant ``fp32``): what scoring in the profile's dtype costs."""
    p = run.profile
    reduced = test_samples(run.prepared)
    samples = cap_samples(reduced, min(p.evaluation.dtype_check, len(reduced)), seed=p.seed)
    return evaluate_samples(run, fp32, builder, samples, "gcn", variant="fp32")


def save_validation_predictions(
    run: Run, model: TrainedModel, builder: PromptBuilder, *, variant: str = "main"
) -> list[str]:
    """Validation predictions (every head, split ``valid``) for the profile's validation contexts: what
    the operating τ and any other accuracy-dependent choice are made on. Returns the file names."""
    valid, names = run.prepared.valid, []
    for ctx in run.profile.evaluation.valid_contexts:
        per_head, _ = score_context(run, model, builder, valid, ctx)
        names.append(predictions(ctx, variant, split="valid"))
        write_csv(per_sample_frame(valid, per_head, model.heads.head_layers), run.out_dir / names[-1])
    return names


def training_log(model: TrainedModel, variant: str = "main") -> pd.DataFrame:
    """The run's loss per optimizer step (``training.csv`` rows, one run per ``variant``), with
    each step's wall seconds and real tokens (NaN for a run saved before they were recorded):
    tokens/s is their sums' ratio."""
    r = model.result
    frame = pd.DataFrame(
        {"variant": variant, "beta": model.beta, "step": np.arange(1, len(r.loss) + 1), "loss": r.loss}
    )
    frame["train_seconds"] = r.seconds
    timed = len(r.step_seconds) == len(r.loss)
    frame["step_seconds"] = r.step_seconds if timed else np.nan
    frame["step_tokens"] = r.step_tokens if timed else np.nan
    return frame
