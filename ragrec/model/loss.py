"""Multi-head training loss.

Loss (one batch of B prompts with labels y ∈ {0, 1}):

    L = Σ_h w_h · CE(softmax([logit_No, logit_Yes]_h), y),    Σ_h w_h = 1 (uniform by default)

Optional self-distillation (``distill = α > 0``; not in the paper, off by default): every head
but the last trains on ``(1 − α) · CE(·, y) + α · CE(·, p_last)``, where ``p_last`` is the last
head's [P(No), P(Yes)] for the same prompt, detached. An intermediate head then learns to say
what the full model will say, not only the label — what the exit rule needs, since a row that
exits early keeps that head's answer instead of the last head's (the early-exit literature's
self-distillation, e.g. FastBERT). The last head's loss is unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ragrec.errors import ConfigError
from ragrec.model.heads import ExitHeads


def multihead_losses(logits: torch.Tensor, y: torch.Tensor, distill: float = 0.0) -> torch.Tensor:
    """Per-head losses ``[H]`` for logits ``[B, H, 2]`` and labels ``[B]`` (module docstring):
    cross-entropy on ``y``, mixed for every head but the last with cross-entropy on the last
    head's detached probabilities when ``distill > 0``."""
    hard = torch.stack([F.cross_entropy(logits[:, h], y) for h in range(logits.shape[1])])
    if distill == 0.0:
        return hard
    teacher = torch.softmax(logits[:, -1].detach(), dim=-1)  # [B, 2]
    soft = torch.stack([F.cross_entropy(logits[:, h], teacher) for h in range(logits.shape[1] - 1)])
    return torch.cat([(1.0 - distill) * hard[:-1] + distill * soft, hard[-1:]])


def head_weights(given: tuple[float, ...] | None, heads: ExitHeads) -> torch.Tensor:
    """The loss weight ``w_h`` ``[H]`` of every head (``given``, else uniform), normalised to sum to 1."""
    weights = torch.tensor(given or [1.0] * len(heads.head_layers), dtype=torch.float32)
    if len(weights) != len(heads.head_layers):
        raise ConfigError(f"{len(weights)} head weights for {len(heads.head_layers)} heads")
    return weights / weights.sum()
