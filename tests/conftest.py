"""Shared fixtures: a tiny random Llama backbone, exit heads on every one of its layers, and a
small synthetic dataset with its split.

All are session-scoped and shared by every test module: treat them as read-only. A test that
trains, wraps with peft or changes the attention implementation builds its own with
``ragrec.llm.backbone.tiny_backbone()`` (a few milliseconds).
"""

from __future__ import annotations

import pytest
import torch

from ragrec.data import Dataset, Split, load_dataset, split_interactions
from ragrec.llm import backbone as backbone_mod
from ragrec.llm.backbone import Backbone
from ragrec.model.heads import ExitHeads

TINY_LAYERS = 6
TINY_HIDDEN = 64


@pytest.fixture(scope="session")
def tiny_backbone() -> Backbone:
    """Random 6-layer, hidden-64 Llama (fp32, CPU, eval) with the word-level test tokenizer."""
    return backbone_mod.tiny_backbone(num_layers=TINY_LAYERS, hidden_size=TINY_HIDDEN, seed=0)


@pytest.fixture(scope="session")
def tiny_heads(tiny_backbone: Backbone) -> ExitHeads:
    """Exit heads after every layer 1..6 of ``tiny_backbone`` (untrained: copies of the final norm)."""
    return ExitHeads(tiny_backbone, list(range(1, TINY_LAYERS + 1)))


@pytest.fixture(scope="module")
def one_thread():
    """Run a test on one torch thread: tiny models gain nothing from more, and on 2 shared cores
    extra threads only wait for each other (tests took 1 s or 60 s depending on the load)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def synthetic() -> tuple[Dataset, Split]:
    """120 users in 4 planted communities, 150 items, 15-25 interactions each, split per user
    8:1:1: what the retrieval, LightGCN and retrieval-benchmark tests run on."""
    dataset = load_dataset("synthetic", n_users=120, n_items=150, min_per_user=15, max_per_user=25, seed=1)
    return dataset, split_interactions(dataset)
