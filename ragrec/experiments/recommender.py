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

import dataclasses
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ragrec.config import BetaPair, Profile
from ragrec.data import (
    Dataset,
    Samples,
    Split,
    build_samples,
    cap_samples,
    load_dataset,
    split_interactions,
)
from ragrec.errors import ConfigError
from ragrec.experiments.contexts import (
    FoldedRetriever,
    encode_contexts,
    information_rows,
    mixed_contexts,
)
from ragrec.llm.backbone import Backbone, load_backbone, tiny_backbone
from ragrec.metrics import head_table
from ragrec.model.heads import ExitHeads
from ragrec.model.prompts import PromptBuilder
from ragrec.model.train import (
    TrainResult,
    attach_lora,
    load_trained,
    predict_heads,
    train_multihead,
)
from ragrec.results import CHECKPOINTS, Provenance, result_dir, write_csv
from ragrec.retrieval.base import RETRIEVERS, Retriever
from ragrec.retrieval.factory import make_retriever, use_cache


@dataclass
class Prepared:
    """A profile's data: the dataset, its split, all CTR samples and the capped parts used."""

    profile: Profile
    dataset: Dataset
    split: Split
    samples: Samples
    train: Samples
    valid: Samples
    test: Samples


def prepare_data(profile: Profile, *, data_root: str | os.PathLike | None = None) -> Prepared:
    """Load, split and sample the profile's dataset, and draw its (stratified, seeded) caps."""
    d = profile.data
    options = {}
    if d.dataset == "synthetic":
        options = dict(n_users=d.synthetic_users, n_items=d.synthetic_items, seed=profile.seed)
    dataset = load_dataset(d.dataset, data_root=data_root, **options)
    split = split_interactions(dataset, d.split_method)
    samples = build_samples(split, dataset.n_users, min_history=d.min_history, history_len=d.history_len, history_scope=d.history_scope)
    caps = {"train": d.train_cap, "valid": d.valid_cap, "test": d.test_cap}
    parts = {name: cap_samples(samples.part(name), caps[name], seed=profile.seed) for name in caps}
    return Prepared(profile, dataset, split, samples, parts["train"], parts["valid"], parts["test"])


def load_model(profile: Profile, dataset: Dataset) -> Backbone:
    """The profile's backbone; the tiny test model gets the dataset's words in its vocabulary."""
    m = profile.model
    if m.source == "tiny":
        words = [w for title in dataset.items["title"] for w in str(title).split()]
        return tiny_backbone(num_layers=m.tiny_layers, hidden_size=m.tiny_hidden, seed=profile.seed, vocab_words=words)
    torch.manual_seed(profile.seed)
    return load_backbone(m.source)


def checkpoint_dir(profile: Profile, results_root: str | os.PathLike | None = None) -> Path:
    return result_dir(profile.name, profile.data.dataset, results_root) / CHECKPOINTS


def fit_retrievers(
    prepared: Prepared, backbone: Backbone, names: tuple[str, ...], *, results_root=None, progress: bool = False
) -> dict[str, Retriever]:
    """Fit the named retrievers on the training interactions. LightGCN embeddings and LLM user
    vectors are cached in the checkpoint folder (:func:`ragrec.retrieval.use_cache`), where the
    retrieval benchmark finds them too. Call before LoRA is attached: the LLM retriever embeds
    users with the *untuned* backbone, as in the paper's LLM-based retrieval baseline."""
    unknown = [n for n in names if n not in RETRIEVERS]
    if unknown:
        raise ConfigError(f"unknown context(s) {unknown}; choose from {RETRIEVERS}")
    p = prepared.profile
    out: dict[str, Retriever] = {}
    for name in names:
        retriever = make_retriever(
            name, prepared.dataset, lightgcn=p.lightgcn, backbone=backbone,
            history_items=p.data.history_len, llm_batch_size=p.eval_batch_size, seed=p.seed, progress=progress,
        )
        use_cache(retriever, prepared.split.train, checkpoint_dir(p, results_root))
        out[name] = retriever.fit(prepared.split.train, prepared.split.valid)
    return out


def fold_retrievers(
    prepared: Prepared, backbone: Backbone | None, name: str, *, results_root=None, progress: bool = False
) -> FoldedRetriever:
    """A :class:`FoldedRetriever` over ``prepared.train`` with the profile's ``train_folds``."""
    p = prepared.profile
    rng = np.random.default_rng(p.seed)
    fold_of = pd.Series(rng.permutation(len(prepared.train)) % p.train_folds, index=prepared.train.frame.index)
    train = prepared.split.train
    pairs = train["user"].to_numpy(np.int64) * prepared.dataset.n_items + train["item"].to_numpy(np.int64)
    sample_pairs = prepared.train.frame["user"].to_numpy(np.int64) * prepared.dataset.n_items + prepared.train.frame["item"].to_numpy(np.int64)
    folds = []
    for f in range(p.train_folds):
        held_out = np.isin(pairs, sample_pairs[fold_of.to_numpy() == f])
        retriever = make_retriever(name, prepared.dataset, lightgcn=p.lightgcn, backbone=backbone,
                                   history_items=p.data.history_len, llm_batch_size=p.eval_batch_size,
                                   seed=p.seed, progress=progress)
        use_cache(retriever, train[~held_out], checkpoint_dir(p, results_root))
        folds.append(retriever.fit(train[~held_out], prepared.split.valid))
    return FoldedRetriever(name, folds, fold_of)


@dataclass
class TrainedModel:
    backbone: Backbone
    heads: ExitHeads
    result: TrainResult
    beta: float


def training_retrievers(
    prepared: Prepared, retrievers: dict[str, Retriever], *, results_root=None, progress: bool = False
) -> dict[str, Retriever | FoldedRetriever]:
    """The retrievers training prompts are built with: the GCN folded (:class:`FoldedRetriever`)
    when the profile has ``train_folds > 1``, the others as they are."""
    out: dict[str, Retriever | FoldedRetriever] = dict(retrievers)
    if "gcn" in retrievers and prepared.profile.train_folds > 1:
        out["gcn"] = fold_retrievers(prepared, None, "gcn", results_root=results_root, progress=progress)
    return out


def train_model(
    prepared: Prepared,
    backbone: Backbone,
    retrievers: dict[str, Retriever],
    builder: PromptBuilder,
    *,
    train_retrievers: dict[str, Retriever | FoldedRetriever] | None = None,
    beta: float | None = None,
    pair: BetaPair | None = None,
    validate: bool = True,
    results_root=None,
    progress: bool = True,
) -> TrainedModel:
    """LoRA + all heads on mixed-context training prompts. Reloads a finished run, resumes a
    killed one.

    Args:
        retrievers: the plain retrievers (validation prompts).
        train_retrievers: those the training prompts are built with (:func:`training_retrievers`;
            default: ``retrievers``).
        beta: the heads' depth-wise learning-rate decay (default: the profile's).
        pair: train on the β pair's shorter schedule instead (its first ``train_cap`` prompts of
            the main run's, for ``epochs``).
        validate: per-head validation AUC on GCN-context prompts every ``eval_every`` steps.
    """
    p = prepared.profile
    config = dataclasses.replace(p.train, beta=p.train.beta if beta is None else beta)
    contexts = mixed_contexts(len(prepared.train), p.contexts, p.seed)
    prompts = encode_contexts(builder, train_retrievers or retrievers, prepared.train, contexts)
    labels = prepared.train.frame["label"].to_numpy()
    if pair is not None and not pair.is_main_schedule:
        # a seeded, label-stratified subset of the main run's prompts, in the same order: the
        # two members of the pair differ only in β
        kept = cap_samples(prepared.train, pair.train_cap, seed=p.seed).frame.index
        rows = np.flatnonzero(prepared.train.frame.index.isin(kept))
        prompts, labels = [prompts[r] for r in rows], labels[rows]
        config = dataclasses.replace(config, epochs=pair.epochs or config.epochs)
    valid = None
    if validate:
        valid_ctx = "gcn" if "gcn" in retrievers else p.contexts[0]
        valid_prompts = encode_contexts(builder, retrievers, prepared.valid, [valid_ctx] * len(prepared.valid))
        valid = (valid_prompts, prepared.valid.frame["label"].to_numpy())
    tuned = attach_lora(backbone, config.lora, seed=p.seed)
    heads = ExitHeads(tuned, p.model.head_layers, readout=p.train.readout_fit is not None)
    directory = model_dir(p, config.beta, results_root, pair=pair)
    result = train_multihead(tuned, heads, prompts, labels, config, directory, valid=valid, progress=progress)
    return TrainedModel(tuned, heads, result, config.beta)


def model_dir(profile: Profile, beta: float | None = None, results_root=None, *, pair: BetaPair | None = None) -> Path:
    """Where the model trained with ``beta`` (default: the profile's) keeps its checkpoints; a β
    pair's shorter schedule gets its own folder."""
    name = f"model_beta{profile.train.beta if beta is None else beta:g}"
    if pair is not None and not pair.is_main_schedule:
        name += f"_pair{pair.train_cap or 'all'}x{pair.epochs or profile.train.epochs}"
    return checkpoint_dir(profile, results_root) / name


def load_trained_model(prepared: Prepared, backbone: Backbone, *, beta: float | None = None, results_root=None) -> TrainedModel:
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


def predictions_frame(samples: Samples, per_head_p: np.ndarray, head_layers) -> pd.DataFrame:
    """Per-sample predictions: user, item, label, timestamp and P(Yes) of every head."""
    frame = samples.frame
    out = pd.DataFrame({
        "sample_id": frame.index.to_numpy(),
        "user": frame["user"].to_numpy(),
        "item": frame["item"].to_numpy(),
        "label": frame["label"].to_numpy(),
        "timestamp": frame["timestamp"].to_numpy(),
    })
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


def score_context(
    prepared: Prepared, model: TrainedModel, retrievers: dict[str, Retriever], builder: PromptBuilder,
    samples: Samples, context: str, *, progress: bool = True,
) -> tuple[np.ndarray, float]:
    """Per-head P(Yes) ``[len(samples), n_heads]`` of ``samples`` under one context, and the
    prompts' mean length in tokens."""
    prompts = encode_contexts(builder, retrievers, samples, [context] * len(samples))
    per_head = predict_heads(model.backbone, model.heads, prompts, prepared.profile.eval_batch_size, progress=progress)
    return per_head, float(np.mean([len(x) for x in prompts]))


def evaluate_contexts(
    prepared: Prepared,
    model: TrainedModel,
    retrievers: dict[str, Retriever],
    builder: PromptBuilder,
    contexts: tuple[str, ...],
    *,
    results_root=None,
    variant: str = "main",
    progress: bool = True,
) -> pd.DataFrame:
    """Per-head AUC/LogLoss of ``model`` on the test samples under each context (all of them or
    the reduced subset, :func:`test_samples`; variants always the reduced one); writes
    ``predictions_<context>[_<variant>].csv`` and returns the ``heads.csv`` rows."""
    p = prepared.profile
    out_dir = result_dir(p.name, p.data.dataset, results_root)
    tables = []
    for ctx in contexts:
        samples = test_samples(prepared, ctx if variant == "main" else None)
        per_head, mean_tokens = score_context(prepared, model, retrievers, builder, samples, ctx, progress=progress)
        name = f"predictions_{ctx}.csv" if variant == "main" else f"predictions_{ctx}_{variant}.csv"
        write_csv(predictions_frame(samples, per_head, model.heads.head_layers), out_dir / name)
        table = head_table(samples.frame["label"].to_numpy(), per_head, model.heads.head_layers, context=ctx, seed=p.seed)
        table.insert(1, "variant", variant)
        table.insert(2, "beta", model.beta)
        table.insert(3, "train_steps", model.result.steps)
        table["mean_prompt_tokens"] = mean_tokens
        tables.append(table)
    return pd.concat(tables, ignore_index=True)


def save_validation_predictions(
    prepared: Prepared, model: TrainedModel, retrievers: dict[str, Retriever], builder: PromptBuilder,
    *, results_root=None, progress: bool = True,
) -> list[str]:
    """``predictions_valid_<context>.csv`` (every head) for the profile's validation contexts: what
    the operating τ and any other accuracy-dependent choice are made on. Returns the file names."""
    p = prepared.profile
    out_dir = result_dir(p.name, p.data.dataset, results_root)
    names = []
    for ctx in p.evaluation.valid_contexts:
        per_head, _ = score_context(prepared, model, retrievers, builder, prepared.valid, ctx, progress=progress)
        names.append(f"predictions_valid_{ctx}.csv")
        write_csv(predictions_frame(prepared.valid, per_head, model.heads.head_layers), out_dir / names[-1])
    return names


def run_beta_pair(
    prepared: Prepared, main: TrainedModel, retrievers: dict[str, Retriever],
    train_retrievers: dict[str, Retriever | FoldedRetriever], *, results_root=None, progress: bool = True,
) -> tuple[list[pd.DataFrame], list[pd.DataFrame]]:
    """The β ablation (:class:`ragrec.config.BetaPair`): the profile's β and β = 0, each a complete
    run on the pair's schedule, scored under the GCN context on the reduced test samples
    (variants ``pair_beta<β>``). Returns their ``heads.csv`` rows and training logs."""
    p = prepared.profile
    tables, logs = [], []
    for beta in (p.train.beta, 0.0):
        if beta == p.train.beta and p.beta_pair.is_main_schedule:
            model, builder = main, None
        else:
            # a fresh backbone: LoRA was injected into the main one in place
            base = load_model(p, prepared.dataset)
            builder = PromptBuilder(prepared.dataset, base, retrievers["gcn"].sequences, p.prompt)
            model = train_model(prepared, base, retrievers, builder, train_retrievers=train_retrievers, beta=beta,
                                pair=p.beta_pair, validate=False, results_root=results_root, progress=progress)
            logs.append(_training_log(model))
        builder = builder or PromptBuilder(prepared.dataset, model.backbone, retrievers["gcn"].sequences, p.prompt)
        tables.append(evaluate_contexts(prepared, model, retrievers, builder, ("gcn",), results_root=results_root,
                                        variant=f"pair_beta{beta:g}", progress=progress))
    return tables, logs


def run_recommender(profile: Profile, *, data_root=None, results_root=None, beta_ablation: bool = True, progress: bool = True) -> pd.DataFrame:
    """The whole model half: train once on mixed contexts, save validation predictions, evaluate
    every context and head on test, optionally the β pair (:func:`run_beta_pair`); write
    ``heads.csv``, ``training.csv`` and provenance. Returns the heads table."""
    started = time.perf_counter()
    torch.manual_seed(profile.seed)
    prepared = prepare_data(profile, data_root=data_root)
    backbone = load_model(profile, prepared.dataset)
    retrievers = fit_retrievers(prepared, backbone, profile.contexts, results_root=results_root, progress=progress)
    builder = PromptBuilder(prepared.dataset, backbone, retrievers[profile.contexts[0]].sequences, profile.prompt)
    train_retrievers = training_retrievers(prepared, retrievers, results_root=results_root, progress=progress)
    model = train_model(prepared, backbone, retrievers, builder, train_retrievers=train_retrievers,
                        results_root=results_root, progress=progress)
    write_csv(information_rows(builder.train, {
        "train (plain)": (prepared.train, {c: retrievers[c] for c in ("gcn", "llm") if c in retrievers}),
        "train (as trained)": (prepared.train, {c: train_retrievers[c] for c in ("gcn", "llm") if c in retrievers}),
        "test": (prepared.test, {c: retrievers[c] for c in ("gcn", "llm") if c in retrievers}),
    }, profile.prompt.k, profile.prompt.vote_k), result_dir(profile.name, profile.data.dataset, results_root) / "information.csv")
    outputs = save_validation_predictions(prepared, model, retrievers, builder, results_root=results_root, progress=progress)
    tables = [evaluate_contexts(prepared, model, retrievers, builder, profile.contexts, results_root=results_root, progress=progress)]
    logs = [_training_log(model)]
    out_dir = result_dir(profile.name, profile.data.dataset, results_root)
    for stale in out_dir.glob("predictions_gcn_pair_beta*.csv"):
        stale.unlink()  # a pair of another profile must not outlive it
    if beta_ablation and profile.beta_pair is not None and profile.train.beta != 0 and "gcn" in retrievers:
        pair_tables, pair_logs = run_beta_pair(prepared, model, retrievers, train_retrievers,
                                               results_root=results_root, progress=progress)
        tables += pair_tables
        logs += pair_logs
    heads = pd.concat(tables, ignore_index=True)
    write_csv(heads, out_dir / "heads.csv")
    write_csv(pd.concat(logs, ignore_index=True), out_dir / "training.csv")
    outputs += ["heads.csv", "training.csv", "information.csv"] + [f"predictions_{c}.csv" for c in profile.contexts]
    Provenance("recommender", profile.name, profile.data.dataset, profile.seed, profile).write(out_dir, outputs)
    print(f"recommender step: {time.perf_counter() - started:.0f} s")
    return heads


def _training_log(model: TrainedModel) -> pd.DataFrame:
    r = model.result
    frame = pd.DataFrame({"beta": model.beta, "step": np.arange(1, len(r.loss) + 1), "loss": r.loss})
    frame["train_seconds"] = r.seconds
    return frame
