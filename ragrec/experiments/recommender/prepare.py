"""The recommender's inputs: a profile's data and samples, its backbone, and the retrievers
that choose each prompt's neighbours (their training views for training prompts).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

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
from ragrec.errors import DataError
from ragrec.llm.backbone import Backbone, load_backbone, tiny_backbone
from ragrec.model.distributed import current_shard
from ragrec.results import CHECKPOINTS, result_dir
from ragrec.retrieval.base import PromptNeighbours, Retriever, TrainingFolds


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
    parts = {name: _capped(samples, name, cap, profile) for name, cap in caps.items()}
    return Prepared(profile, dataset, split, samples, parts["train"], parts["valid"], parts["test"])


def _capped(samples: Samples, part: str, cap: int | None, profile: Profile) -> Samples:
    """The profile's cap of one split's samples; a cap beyond the data names both ways out."""
    try:
        return cap_samples(samples.part(part), cap, seed=profile.seed)
    except DataError as exc:
        dataset = profile.data.dataset
        raise DataError(
            f"{dataset}: the {profile.name} profile's {part} {exc}; run the smoke profile "
            f"(make reproduce PROFILE=smoke) or give it more data (a larger {dataset} in "
            f"data/raw/{dataset}/)"
        ) from None


def load_model(profile: Profile, dataset: Dataset) -> Backbone:
    """The profile's backbone with its attention kernel; the tiny test model gets the dataset's words
    in its vocabulary."""
    m = profile.model
    if m.source == "tiny":
        words = [w for title in dataset.items["title"] for w in str(title).split()]
        backbone = tiny_backbone(
            num_layers=m.tiny_layers, hidden_size=m.tiny_hidden, seed=profile.seed, vocab_words=words
        )
    else:
        torch.manual_seed(profile.seed)
        backbone = load_backbone(m.source, device=m.device)  # None: the default device
    backbone.model.set_attn_implementation(m.attention)  # ModelSettings.attention says why
    return backbone


def checkpoint_dir(profile: Profile, results_root: str | os.PathLike | None = None) -> Path:
    return result_dir(profile.name, profile.data.dataset, results_root) / CHECKPOINTS


def fit_retrievers(
    prepared: Prepared,
    backbone: Backbone | None,
    names: tuple[str, ...],
    *,
    results_root=None,
    progress: bool = False,
) -> dict[str, Retriever]:
    """Fit the named retrievers, with the profile's settings, on the training interactions.

    Fits are cached in the checkpoint folder (:meth:`ragrec.retrieval.base.Retriever.use_cache`),
    where the retrieval benchmark finds them too. Call before LoRA is attached: the LLM retriever
    embeds users with the *untuned* backbone, as in the paper's LLM-based retrieval baseline.
    """
    configs = {name: prepared.profile.retriever_config(name) for name in names}
    fit = _cached_fit(prepared, results_root)
    return {
        name: fit(config.build(prepared.dataset, backbone=backbone, progress=progress), prepared.split.train)
        for name, config in configs.items()
    }


def training_retrievers(
    prepared: Prepared, retrievers: dict[str, Retriever], *, results_root=None
) -> dict[str, PromptNeighbours]:
    """The neighbours training prompts take: each retriever's own training view
    (:meth:`~ragrec.retrieval.base.Retriever.for_training`) when the profile has
    ``train_folds > 1``; with 1, the plain retrievers (which have seen each sample's own
    interaction)."""
    p = prepared.profile
    if p.train_folds <= 1:
        return dict(retrievers)
    folds = TrainingFolds(prepared.split.train, p.train_folds, p.seed, _cached_fit(prepared, results_root))
    return {name: r.for_training(prepared.train, folds) for name, r in retrievers.items()}


def _cached_fit(prepared: Prepared, results_root) -> Callable[[Retriever, pd.DataFrame], Retriever]:
    """Fit a retriever on (part of) the training interactions through its cache in the checkpoint
    folder, with the validation interactions for early stopping; under data parallelism the
    main process fits and the others load its cache."""
    directory = checkpoint_dir(prepared.profile, results_root)

    def fit(retriever: Retriever, train: pd.DataFrame) -> Retriever:
        retriever.use_cache(train, directory)
        with current_shard().main_first():
            return retriever.fit(train, prepared.split.valid)

    return fit
