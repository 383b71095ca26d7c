"""The recommender's inputs: a profile's data and samples, its backbone, and the retrievers
that choose each prompt's neighbours (folded for training prompts).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ragrec.config import Profile
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
from ragrec.experiments.contexts import FoldedRetriever, LeaveTargetOut
from ragrec.llm.backbone import Backbone, load_backbone, tiny_backbone
from ragrec.model.distributed import current_shard
from ragrec.results import CHECKPOINTS, result_dir
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
    samples = build_samples(
        split,
        dataset.n_users,
        min_history=d.min_history,
        history_len=d.history_len,
        history_scope=d.history_scope,
    )
    caps = {"train": d.train_cap, "valid": d.valid_cap, "test": d.test_cap}
    parts = {name: cap_samples(samples.part(name), caps[name], seed=profile.seed) for name in caps}
    return Prepared(profile, dataset, split, samples, parts["train"], parts["valid"], parts["test"])


def load_model(profile: Profile, dataset: Dataset) -> Backbone:
    """The profile's backbone; the tiny test model gets the dataset's words in its vocabulary."""
    m = profile.model
    if m.source == "tiny":
        words = [w for title in dataset.items["title"] for w in str(title).split()]
        return tiny_backbone(
            num_layers=m.tiny_layers, hidden_size=m.tiny_hidden, seed=profile.seed, vocab_words=words
        )
    torch.manual_seed(profile.seed)
    return load_backbone(m.source, device=m.device)  # None: the default device


def checkpoint_dir(profile: Profile, results_root: str | os.PathLike | None = None) -> Path:
    return result_dir(profile.name, profile.data.dataset, results_root) / CHECKPOINTS


def fit_retrievers(
    prepared: Prepared,
    backbone: Backbone,
    names: tuple[str, ...],
    *,
    results_root=None,
    progress: bool = False,
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
            name,
            prepared.dataset,
            lightgcn=p.lightgcn,
            backbone=backbone,
            history_items=p.data.history_len,
            llm_batch_size=p.eval_batch_size,
            seed=p.seed,
            progress=progress,
        )
        use_cache(retriever, prepared.split.train, checkpoint_dir(p, results_root))
        with current_shard().main_first():  # data-parallel: one fit, the others load its cache
            out[name] = retriever.fit(prepared.split.train, prepared.split.valid)
    return out


def fold_retrievers(
    prepared: Prepared, backbone: Backbone | None, name: str, *, results_root=None, progress: bool = False
) -> FoldedRetriever:
    """A :class:`FoldedRetriever` over ``prepared.train`` with the profile's ``train_folds``."""
    p = prepared.profile
    rng = np.random.default_rng(p.seed)
    fold_of = pd.Series(
        rng.permutation(len(prepared.train)) % p.train_folds, index=prepared.train.frame.index
    )
    train = prepared.split.train
    pairs = train["user"].to_numpy(np.int64) * prepared.dataset.n_items + train["item"].to_numpy(np.int64)
    sample_pairs = prepared.train.frame["user"].to_numpy(
        np.int64
    ) * prepared.dataset.n_items + prepared.train.frame["item"].to_numpy(np.int64)
    folds = []
    for f in range(p.train_folds):
        held_out = np.isin(pairs, sample_pairs[fold_of.to_numpy() == f])
        retriever = make_retriever(
            name,
            prepared.dataset,
            lightgcn=p.lightgcn,
            backbone=backbone,
            history_items=p.data.history_len,
            llm_batch_size=p.eval_batch_size,
            seed=p.seed,
            progress=progress,
        )
        use_cache(retriever, train[~held_out], checkpoint_dir(p, results_root))
        with current_shard().main_first():
            folds.append(retriever.fit(train[~held_out], prepared.split.valid))
    return FoldedRetriever(name, folds, fold_of)


def training_retrievers(
    prepared: Prepared, retrievers: dict[str, Retriever], *, results_root=None, progress: bool = False
) -> dict[str, Retriever | FoldedRetriever]:
    """The retrievers training prompts are built with: when the profile has ``train_folds > 1``,
    the GCN folded (:class:`FoldedRetriever`) and the LLM retriever querying without the
    sample's target (:class:`LeaveTargetOut`); the others as they are."""
    out: dict[str, Retriever | FoldedRetriever | LeaveTargetOut] = dict(retrievers)
    if "gcn" in retrievers and prepared.profile.train_folds > 1:
        out["gcn"] = fold_retrievers(prepared, None, "gcn", results_root=results_root, progress=progress)
    if "llm" in retrievers and prepared.profile.train_folds > 1:
        out["llm"] = LeaveTargetOut("llm", retrievers["llm"])
    return out
