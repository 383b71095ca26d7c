"""Fixtures of the model tests: 16 random prompts and every tiny head's P(Yes) on them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ragrec.model.forward import p_yes_from_logits
from tests.model.inputs import make_prompts, pad


@pytest.fixture(scope="module")
def prompts() -> list[list[int]]:
    return make_prompts(16, seed=0)


@pytest.fixture(scope="module")
def all_heads(tiny_backbone, tiny_heads, prompts) -> np.ndarray:
    """P(Yes) ``[16, 6]`` of every head from forward_all."""
    ids, mask = pad(prompts)
    with torch.no_grad():
        return p_yes_from_logits(tiny_heads.forward_all(tiny_backbone.model, ids, mask)).double().numpy()
