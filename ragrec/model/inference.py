"""The trained model as it is scored: LoRA merged into the base weights, cast to the scoring dtype.

Every path that scores prompts after training (per-head test and validation predictions, the
early-exit engine and the plain forward it is timed against) goes through
:func:`for_inference`, so they all read the same weights in the same dtype and the engine can
reproduce the saved predictions exactly. Training keeps fp32 weights (with optional bf16
autocast); scoring may run in bf16, which is faster on a CPU with native bf16 (the measured ratio
and the fp32–bf16 AUC difference are in the book's method chapter).
"""

from __future__ import annotations

import copy
import dataclasses

import torch

from ragrec.errors import ConfigError, ModelError
from ragrec.llm.backbone import Backbone
from ragrec.model.heads import ExitHeads

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def scoring_dtype(name: str) -> torch.dtype:
    """The torch dtype called ``name`` (``float32`` or ``bfloat16``)."""
    if name not in DTYPES:
        raise ConfigError(f"unknown scoring dtype {name!r}; choose one of {', '.join(DTYPES)}")
    return DTYPES[name]


def for_inference(
    backbone: Backbone, heads: ExitHeads, dtype: torch.dtype = torch.float32
) -> tuple[Backbone, ExitHeads]:
    """A plain (LoRA-merged) backbone in ``dtype`` and a copy of ``heads`` bound to it.

    ``merge_and_unload`` folds the adapters into the base weights **in place** (in their fp32
    weights, before the cast): the peft-wrapped ``backbone`` must not be used afterwards. Heads
    built on a backbone that is already merged are simply rebound (several head sets may share
    one backbone: the main model and its ``cf`` variant do).
    """
    model = backbone.model
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    if any("lora_" in name for name, _ in model.named_parameters()):
        # peft injects its layers into the base model in place: only the PeftModel wrapper can
        # merge them, so an unwrapped model with adapters would be scored unmerged, silently
        raise ModelError(
            "this model carries LoRA layers but no peft wrapper to merge them; pass the Backbone "
            "that attach_lora returned"
        )
    model = model.to(dtype).eval()
    merged = dataclasses.replace(backbone, model=model)
    out = ExitHeads(merged, heads.head_layers, readout=heads.has_readouts)
    if heads.cf is not None:
        out.attach_cf(copy.deepcopy(heads.cf))  # cast to the model's dtype on attach
    out.load_state_dict(heads.state_dict())
    out.eval()
    return merged, out
