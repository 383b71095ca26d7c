"""LoRA parameter groups follow the paper's depth-wise learning-rate decay."""

import math

import pytest
import torch

from ragrec.errors import ConfigError
from ragrec.llm.backbone import tiny_backbone
from ragrec.model.heads import ExitHeads
from ragrec.model.lora import LoraSettings, attach_lora, depth_lr, parameter_groups


def lora_backbone():
    return attach_lora(tiny_backbone(num_layers=6, hidden_size=32), LoraSettings(r=4, alpha=8, dropout=0.0))


@pytest.mark.parametrize("beta", [0.0, 0.3, 1.0])
def test_parameter_groups_follow_the_depth_decay_formula(beta):
    bb = lora_backbone()
    heads = ExitHeads(bb, (2, 4, 6))
    groups = parameter_groups(bb, heads, lr0=1e-3, beta=beta)
    assert [g["lr"] for g in groups] == pytest.approx([1e-3 * math.exp(-beta * d) for d in range(3)])
    # Head d owns the LoRA of layers (L_{d-1}, L_d]: two layers × 4 projections × (A, B) + its norm.
    assert [len(g["params"]) for g in groups] == [2 * 4 * 2 + 1, 2 * 4 * 2 + 1, 2 * 4 * 2]
    assert depth_lr(1.0, beta, 2) == pytest.approx(math.exp(-2 * beta))


def test_layers_past_the_last_head_train_with_the_deepest_head():
    bb = lora_backbone()
    heads = ExitHeads(bb, (1, 3))  # layers 4..6 feed no head
    groups = parameter_groups(bb, heads, lr0=1e-3, beta=0.5)
    assert [g["head_layer"] for g in groups] == [1, 3]
    # layer 1's LoRA + head 1's norm; layers 2..6's LoRA + head 3's norm
    assert [len(g["params"]) for g in groups] == [1 * 8 + 1, 5 * 8 + 1]
    trainable = [p for p in [*bb.model.parameters(), *heads.parameters()] if p.requires_grad]
    assert sorted(map(id, trainable)) == sorted(id(p) for g in groups for p in g["params"])


def test_a_bf16_base_keeps_fp32_adapters():
    bb = attach_lora(
        tiny_backbone(num_layers=6, hidden_size=32), LoraSettings(r=4, alpha=8, base_dtype="bfloat16")
    )
    frozen = {p.dtype for p in bb.model.parameters() if not p.requires_grad}
    trainable = {p.dtype for p in bb.model.parameters() if p.requires_grad}
    assert frozen == {torch.bfloat16}
    assert trainable == {torch.float32}  # the optimizer's master weights


def test_a_base_left_as_loaded_is_not_cast():
    bb = attach_lora(tiny_backbone(num_layers=6, hidden_size=32), LoraSettings(r=4, alpha=8))
    assert {p.dtype for p in bb.model.parameters()} == {torch.float32}


def test_an_unknown_base_dtype_is_a_config_error():
    with pytest.raises(ConfigError, match="base_dtype"):
        LoraSettings(base_dtype="float16")
