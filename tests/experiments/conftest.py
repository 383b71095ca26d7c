"""Fixtures of the early-exit benchmark tests: exit heads on the tiny backbone with saved-style
predictions of 24 prompts, and the whole step (recommender, then early exit) on a small smoke
profile, run once per session because it trains a model."""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ragrec.config import DIFFERENCE, Profile, get_profile
from ragrec.experiments.early_exit.benchmark import default_exit_config, run_exit_benchmark
from ragrec.experiments.timing import torch_threads
from ragrec.llm.backbone import Backbone
from ragrec.model.heads import ExitHeads
from ragrec.model.predict import predict_heads

from . import HEADS


def make_prompts(n: int, seed: int, lo: int = 3, hi: int = 40) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(lo, hi, (n,), generator=g)
    return [torch.randint(7, 700, (int(k),), generator=g).tolist() for k in lengths]


@dataclass(frozen=True)
class ExitData:
    """Heads at :data:`HEADS`, 24 prompts, labels with both classes, and the per-head P(Yes)
    ``[24, 3]`` the recommender would have saved for them."""

    heads: ExitHeads
    prompts: list[list[int]]
    labels: np.ndarray
    per_head: np.ndarray


@pytest.fixture(scope="session")
def exit_data(tiny_backbone: Backbone) -> ExitData:
    heads = ExitHeads(tiny_backbone, HEADS)
    prompts = make_prompts(24, seed=3)
    labels = np.random.default_rng(0).permutation(np.resize([0, 1], 24))
    with torch_threads(1):
        per_head = predict_heads(tiny_backbone, heads, prompts, batch_size=8)  # what the recommender saves
    return ExitData(heads, prompts, labels, per_head)


@pytest.fixture(scope="session")
def small_profile() -> Profile:
    """The smoke profile, smaller still, with the contexts the end-to-end methods need."""
    p = get_profile("smoke")
    return dataclasses.replace(
        p,
        data=dataclasses.replace(
            p.data, train_cap=48, valid_cap=16, test_cap=40, synthetic_users=60, synthetic_items=80
        ),
        train=dataclasses.replace(p.train, epochs=1),
        lightgcn=dataclasses.replace(p.lightgcn, max_epochs=5),
        contexts=("none", "gcn", "llm"),
        # fp32: the agreement tests compare batchings and paddings that differ from the
        # recommender's, exact only in fp32 (bf16 agrees within its rounding, tested in tests/model)
        evaluation=dataclasses.replace(p.evaluation, dtype="float32", dtype_check=None),
    )


@dataclass(frozen=True)
class Step:
    profile: Profile
    directory: Path  # results/<profile>/<dataset>
    out: dict[str, pd.DataFrame]  # what run_exit_benchmark returned


@pytest.fixture(scope="session")
def step(tmp_path_factory, small_profile: Profile) -> Step:
    """The recommender step on the small profile, then the early-exit step on its outputs (one
    torch thread: the models are tiny, and the machine's cores are shared)."""
    from ragrec.experiments.recommender.pipeline import run_recommender

    root = tmp_path_factory.mktemp("results")
    config = dataclasses.replace(
        default_exit_config(small_profile),
        n_boot=20,
        n_requests=24,
        batch_size=8,
        repeats=1,
        warmup=1,
        check_requests=8,
        e2e_requests=12,
        e2e_batch_size=4,
        e2e_repeats=1,
        extra_points=((DIFFERENCE, 1e9),),
    )
    with torch_threads(1), warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", ".*is_gradient_checkpointing.*", FutureWarning
        )  # raised inside peft
        run_recommender(small_profile, results_root=root, beta_ablation=False, progress=False)
        out = run_exit_benchmark(small_profile, results_root=root, config=config)
    return Step(small_profile, root / small_profile.name / small_profile.data.dataset, out)
