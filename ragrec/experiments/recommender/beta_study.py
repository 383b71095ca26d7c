"""The β study (:class:`ragrec.config.BetaStudy`): runs identical but for β and seed, scored on
the same test samples, with their learning curves and the mean learning rate of each run.

For every seed, both arms (the profile's β, then β = 0) train on the study's schedule from a fresh
backbone and are scored under the GCN context on the reduced test samples in the profile's scoring
dtype (variants ``study_beta<β>_seed<s>``). Seeds run in turn, both arms each, so a run cut short
leaves complete pairs. The learning curve: validation AUC per head on the study's validation
subset (GCN context) at ``curve_points`` evenly spaced steps, the last at the run's end, each
scored from the run's snapshot as the final model is (LoRA merged, the scoring dtype), which
costs a fraction of validating in fp32 inside the training loop.

The mean learning-rate factor of a run is ``Σ_g n_g · exp(−β · d_g) / Σ_g n_g`` over its
optimizer groups ``g`` (depth ``d_g``, ``n_g`` trainable parameters): the share of lr_0 an average
trainable parameter learns at. β = 0 gives 1; β > 0 less, since the deeper groups train slower.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ragrec.data import cap_samples
from ragrec.experiments.recommender.prepare import load_model
from ragrec.experiments.recommender.run import Run
from ragrec.experiments.recommender.scoring import (
    TrainedModel,
    evaluate_contexts,
    model_dir,
    study_config,
    to_scoring,
    train_model,
    training_log,
    validation_prompts,
)
from ragrec.llm.backbone import Backbone
from ragrec.metrics import auc
from ragrec.model.checkpoints import load_trained, snapshot_name
from ragrec.model.heads import ExitHeads
from ragrec.model.inference import scoring_dtype
from ragrec.model.lora import attach_lora, parameter_groups
from ragrec.model.predict import predict_heads
from ragrec.model.prompts import PromptBuilder
from ragrec.result_files import study_variant

CURVE_COLUMNS = ("variant", "beta", "seed", "step", "prompts_seen", "head_layer", "auc", "n")
RUN_COLUMNS = (
    "variant",
    "beta",
    "seed",
    "lr0",
    "mean_lr_factor",
    "train_steps",
    "prompts_seen",
    "train_seconds",
)


@dataclass
class StudyOutput:
    """What the study's runs leave: ``heads.csv`` rows, training logs, learning-curve rows
    (:data:`CURVE_COLUMNS`) and one row per run (:data:`RUN_COLUMNS`)."""

    heads: list[pd.DataFrame]
    logs: list[pd.DataFrame]
    curve: pd.DataFrame
    runs: pd.DataFrame


def mean_lr_factor(backbone: Backbone, heads: ExitHeads, beta: float) -> float:
    """The parameter-weighted mean of ``exp(−β · d)`` over the optimizer groups (module docstring)
    of a backbone with LoRA attached and its heads."""
    groups = parameter_groups(backbone, heads, 1.0, beta)
    sizes = np.array([sum(p.numel() for p in g["params"]) for g in groups], dtype=np.float64)
    rates = np.array([g["lr"] for g in groups])
    return float((sizes * rates).sum() / sizes.sum())


def prompts_seen(step: int, n_prompts: int, batch: int, steps_per_epoch: int) -> int:
    """Training prompts read after ``step`` optimizer steps of ``batch`` prompts (``batch`` with
    gradient accumulation), epochs of ``steps_per_epoch`` steps over ``n_prompts`` (the last
    batch of an epoch may be partial)."""
    epoch, within = divmod(step, steps_per_epoch)
    return epoch * n_prompts + min(within * batch, n_prompts)


def curve_rows(
    records: list[dict], model: TrainedModel, variant: str, n_prompts: int, batch: int, n_valid: int
) -> pd.DataFrame:
    """A run's learning curve (:data:`CURVE_COLUMNS`) from its validation records, each
    ``{"step": s, "<layer>": auc, …}`` (:attr:`TrainResult.valid_auc`'s form); a record taken
    after a readout refit (``readouts`` key) is left out, it is no step of the schedule."""
    per_epoch = max(1, -(-n_prompts // batch))
    rows = [
        {
            "variant": variant,
            "beta": model.beta,
            "seed": model.seed,
            "step": int(record["step"]),
            "prompts_seen": prompts_seen(int(record["step"]), n_prompts, batch, per_epoch),
            "head_layer": int(layer),
            "auc": float(value),
            "n": n_valid,
        }
        for record in records
        if "readouts" not in record
        for layer, value in record.items()
        if layer != "step"
    ]
    return pd.DataFrame(rows, columns=list(CURVE_COLUMNS))


def run_beta_study(run: Run) -> StudyOutput:
    """Every run of the profile's β study (module docstring), trained (or reloaded) and scored."""
    p, dataset, gcn = run.profile, run.prepared.dataset, run.retrievers["gcn"]
    study, dtype = p.beta_study, scoring_dtype(p.evaluation.dtype)
    valid_samples = cap_samples(
        run.prepared.valid, min(study.valid_cap, len(run.prepared.valid)), seed=p.seed
    )
    heads, logs, curves, runs, valid = [], [], [], [], None
    for seed in study.seeds:
        for beta in study.arms(p.train.beta):
            variant = study_variant(beta, seed)
            # a fresh backbone: LoRA is injected into the one it trains in place
            base = load_model(p, dataset)
            builder = PromptBuilder(dataset, base, gcn.sequences, p.prompt)
            valid = valid or validation_prompts(run, builder, valid_samples)
            trained = train_model(run, base, builder, beta=beta, study=study, seed=seed)
            factor = mean_lr_factor(trained.backbone, trained.heads, beta)
            logs.append(training_log(trained, variant))
            runs.append(_run_row(run, trained, variant, factor))
            model = to_scoring(trained, dtype)
            records = _snapshot_records(run, trained, valid) + [
                _record(run, model, valid, trained.result.steps)
            ]
            curves.append(_curve(run, records, trained, variant))
            builder = PromptBuilder(dataset, model.backbone, gcn.sequences, p.prompt)
            heads.append(evaluate_contexts(run, model, builder, ("gcn",), variant=variant, reduced=True))
    return StudyOutput(
        heads, logs, pd.concat(curves, ignore_index=True), pd.DataFrame(runs, columns=list(RUN_COLUMNS))
    )


def _record(run: Run, model: TrainedModel, valid: tuple[list, np.ndarray], step: int) -> dict:
    """Validation AUC of every head of a scoring model, keyed by layer, at ``step``."""
    per_head = predict_heads(model.backbone, model.heads, valid[0], run.profile.eval_batch_size)
    return {
        "step": step,
        **{str(layer): auc(valid[1], per_head[:, h]) for h, layer in enumerate(model.heads.head_layers)},
    }


def _snapshot_records(run: Run, trained: TrainedModel, valid: tuple[list, np.ndarray]) -> list[dict]:
    """:func:`_record` of each snapshot the run kept, loaded into a fresh backbone and prepared
    for scoring like the final model."""
    p, study = run.profile, run.profile.beta_study
    n, _ = _schedule(run)
    _, steps = study_config(dataclasses.replace(p.train, beta=trained.beta), study, n)
    directory = model_dir(p, trained.beta, run.results_root, study=study, seed=trained.seed)
    records = []
    for step in steps:
        tuned = attach_lora(load_model(p, run.prepared.dataset), p.train.lora, seed=trained.seed)
        heads = ExitHeads(tuned, p.model.head_layers, readout=p.train.readout_fit is not None)
        result = load_trained(directory, tuned, heads, snapshot_name(step))
        snapshot = to_scoring(
            TrainedModel(tuned, heads, result, trained.beta, trained.seed), scoring_dtype(p.evaluation.dtype)
        )
        records.append(_record(run, snapshot, valid, step))
    return records


def _schedule(run: Run) -> tuple[int, int]:
    """The study's training prompts per epoch and prompts per optimizer step."""
    p, study = run.profile, run.profile.beta_study
    n = len(run.prepared.train) if study.train_cap is None else min(study.train_cap, len(run.prepared.train))
    return n, (study.batch_size or p.train.batch_size) * p.train.grad_accum


def _curve(run: Run, records: list[dict], trained: TrainedModel, variant: str) -> pd.DataFrame:
    n, batch = _schedule(run)
    n_valid = min(run.profile.beta_study.valid_cap, len(run.prepared.valid))
    return curve_rows(records, trained, variant, n, batch, n_valid)


def _run_row(run: Run, trained: TrainedModel, variant: str, factor: float) -> dict:
    n, batch = _schedule(run)
    study, steps = run.profile.beta_study, trained.result.steps
    return {
        "variant": variant,
        "beta": trained.beta,
        "seed": trained.seed,
        "lr0": study.lr or run.profile.train.lr,
        "mean_lr_factor": factor,
        "train_steps": steps,
        "prompts_seen": prompts_seen(steps, n, batch, max(1, -(-n // batch))),
        "train_seconds": trained.result.seconds,
    }
