"""Batching prompts of different lengths: one place for sorting and padding token-id lists.

Every model call over many prompts (training, evaluation, the early-exit engine and its
baseline, the LLM retriever's embeddings) groups prompts of similar length, to waste little
compute on padding, and pads them the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from ragrec.errors import ConfigError


def length_sorted_batches(prompts: Sequence[Sequence[int]], batch_size: int) -> list[list[int]]:
    """Prompt indices grouped into batches of similar length, longest first (an out-of-memory
    batch shows up at once, not at the end). The engine batches with this; so must any baseline
    that is compared with it (same prompts, same batches, same padding)."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be an int ≥ 1, got {batch_size!r}")
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def bucketed_batches(
    lengths: Sequence[int], batch_size: int, rng: np.random.Generator, window: int = 50
) -> list[np.ndarray]:
    """One shuffled epoch of training batches whose prompts have similar lengths.

    The prompts are shuffled, cut into windows of ``window · batch_size``, each window is sorted
    by length and cut into batches, and the batches are shuffled again. Every prompt lands in
    exactly one batch, and which prompts share a batch stays random (each window is a random sample
    of the data), but batches pad little: prompts with and without similar users differ in length
    by dozens of tokens, which random batches would pad to their longest. ``rng`` makes the epoch a
    pure function of its seed.
    """
    if not isinstance(batch_size, int) or batch_size < 1 or window < 1:
        raise ConfigError(f"batch_size and window must be ints ≥ 1, got {batch_size!r}, {window!r}")
    lengths = np.asarray(lengths)
    order = rng.permutation(len(lengths))
    span = window * batch_size
    batches = []
    for start in range(0, len(order), span):
        chunk = order[start : start + span]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[b : b + batch_size] for b in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def pad_prompts(
    batch: Sequence[Sequence[int]], pad_id: int, padding_side: str = "left"
) -> tuple[Tensor, Tensor]:
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
