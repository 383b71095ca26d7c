"""Batching prompts of different lengths: one place for sorting and padding token-id lists.

Every model call over many prompts (training, evaluation, the early-exit engine and its
baseline, the LLM retriever's embeddings) groups prompts of similar length, to waste little
compute on padding, and pads them the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ragrec.errors import ConfigError


def length_sorted_batches(prompts: Sequence[Sequence[int]], batch_size: int) -> list[list[int]]:
    """Prompt indices grouped into batches of similar length, longest first (an out-of-memory
    batch shows up at once, not at the end). The engine batches with this; so must any baseline
    that is compared with it (same prompts, same batches, same padding)."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be an int >= 1, got {batch_size!r}")
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def pad_prompts(batch: Sequence[Sequence[int]], pad_id: int, padding_side: str = "left") -> tuple[Tensor, Tensor]:
    """Token-id lists → ids ``[B, T]`` (long, ``pad_id`` in the padding) and a bool mask ``[B, T]``
    (True = real token), padded on ``padding_side`` to the longest prompt."""
    seq_len = max(len(p) for p in batch)
    ids = torch.full((len(batch), seq_len), pad_id, dtype=torch.long)
    valid = torch.zeros((len(batch), seq_len), dtype=torch.bool)
    for r, prompt in enumerate(batch):
        span = slice(seq_len - len(prompt), seq_len) if padding_side == "left" else slice(0, len(prompt))
        ids[r, span] = torch.as_tensor(prompt, dtype=torch.long)
        valid[r, span] = True
    return ids, valid
