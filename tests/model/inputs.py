"""Token-id prompts and padded batches for the model tests, built without a tokenizer."""

from __future__ import annotations

import torch


def make_prompts(n: int, seed: int, lo: int = 3, hi: int = 40) -> list[list[int]]:
    """Random token-id prompts of mixed lengths (ids past the special tokens)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(lo, hi, (n,), generator=g)
    return [torch.randint(7, 700, (int(k),), generator=g).tolist() for k in lengths]


def pad(prompts: list[list[int]], side: str = "right") -> tuple[torch.Tensor, torch.Tensor]:
    """ids and a 0/1 mask ``[B, T]``, padded on ``side`` (independent of ragrec's own padding)."""
    width = max(map(len, prompts))
    ids = torch.zeros(len(prompts), width, dtype=torch.long)
    mask = torch.zeros(len(prompts), width, dtype=torch.long)
    for r, p in enumerate(prompts):
        span = slice(width - len(p), width) if side == "left" else slice(0, len(p))
        ids[r, span] = torch.tensor(p)
        mask[r, span] = 1
    return ids, mask
