"""What trains, and how fast: LoRA adapters on the backbone and the paper's depth-wise learning rates.

Depth-wise learning-rate decay (the paper): the parameters of depth index d (0 = shallowest
head) train with ``lr_d = lr_0 · exp(−β · d)``, so shallow heads learn faster. "Parameters of
depth d" are head d's own (its norm, and its readout if it has one) and the LoRA adapters of
the decoder layers between head d−1 and head d — the layers whose output only head d and
deeper heads read. β = 0 is the uniform ablation. Implemented as optimizer parameter groups.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from peft import LoraConfig, get_peft_model

from ragrec.errors import ConfigError, ModelError
from ragrec.llm.backbone import Backbone
from ragrec.model.heads import ExitHeads

BASE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class LoraSettings:
    """LoRA on the attention projections (peft). Defaults: r=8, α=16, dropout 0.05.

    ``base_dtype`` is the dtype of the frozen base weights while the adapters train (and when a
    trained run is reloaded, so both see the same base; None: as loaded): ``"bfloat16"`` halves the weights'
    memory traffic and spares autocast a cast of every weight in every step; the adapters (the
    master weights the optimizer updates) and their optimizer state stay fp32 either way
    (peft's ``autocast_adapter_dtype``). Needs ``TrainConfig.bf16_autocast``.
    """

    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    base_dtype: str | None = None

    def __post_init__(self) -> None:
        if self.base_dtype is not None and self.base_dtype not in BASE_DTYPES:
            raise ConfigError(
                f"LoraSettings.base_dtype must be one of {', '.join(BASE_DTYPES)}, got {self.base_dtype!r}"
            )


def attach_lora(backbone: Backbone, settings: LoraSettings, seed: int = 0) -> Backbone:
    """A Backbone whose model is wrapped with fresh LoRA adapters (seeded init), its base weights
    cast to ``settings.base_dtype`` first (in place; None: as loaded), the adapters in fp32."""
    torch.manual_seed(seed)
    if settings.base_dtype is not None:
        backbone.model.to(BASE_DTYPES[settings.base_dtype])
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    # autocast_adapter_dtype: adapters of a bf16 base are created in fp32, the optimizer's masters
    model = get_peft_model(backbone.model, config, autocast_adapter_dtype=True)
    return dataclasses.replace(backbone, model=model)


def depth_lr(lr0: float, beta: float, depth: int) -> float:
    """``lr_d = lr_0 · exp(−β · d)`` (the paper's depth-wise learning-rate decay)."""
    return lr0 * math.exp(-beta * depth)


def _layer_index(name: str) -> int | None:
    """0-based decoder layer index of a parameter name like ``...layers.7.self_attn...``."""
    parts = name.split(".")
    for part, following in zip(parts, parts[1:]):
        if part == "layers" and following.isdigit():
            return int(following)
    return None


def _head_depth(layer_index: int, head_layers: Sequence[int]) -> int:
    """Depth index of the first head that reads decoder layer ``layer_index`` (0-based); layers
    past the last head (which no head reads) go to the deepest head."""
    layer = layer_index + 1  # head layers count from 1
    for depth, head_layer in enumerate(head_layers):
        if layer <= head_layer:
            return depth
    return len(head_layers) - 1


def parameter_groups(backbone: Backbone, heads: ExitHeads, lr0: float, beta: float) -> list[dict]:
    """Optimizer parameter groups, one per head depth d, each with ``lr_0 · exp(−β · d)``.

    Every trainable parameter lands in exactly one group (checked): head d's parameters and the
    trainable (LoRA) parameters of decoder layers ``(head_layers[d−1], head_layers[d]]``; the
    collaborative tokens' projection, when attached, with the first head.
    """
    layers = list(heads.head_layers)
    groups: list[list[torch.nn.Parameter]] = [
        [p for p in heads.head_parameters(d) if p.requires_grad] for d in range(len(layers))
    ]
    if heads.cf is not None:  # collaborative tokens feed layer 1: the first head's rate
        groups[0].extend(p for p in heads.cf.parameters() if p.requires_grad)
    for name, p in backbone.model.named_parameters():
        if not p.requires_grad:
            continue
        i = _layer_index(name)
        if i is None:
            raise ModelError(f"trainable backbone parameter {name} is not inside a decoder layer")
        groups[_head_depth(i, layers)].append(p)
    # minGPT's defence: a parameter in no group would silently stop training
    seen = sum(len(g) for g in groups)
    trainable = sum(1 for p in backbone.model.parameters() if p.requires_grad)
    trainable += sum(1 for p in heads.parameters() if p.requires_grad)
    if seen != trainable:
        raise ModelError(f"parameter groups hold {seen} tensors, but {trainable} are trainable")
    return [
        {
            "params": group,
            "lr": depth_lr(lr0, beta, d),
            "initial_lr": depth_lr(lr0, beta, d),
            "depth": d,
            "head_layer": layers[d],
        }
        for d, group in enumerate(groups)
    ]
