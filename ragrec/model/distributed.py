"""Data parallelism on Hugging Face accelerate: one process per device, one global batch.

A run started by ``accelerate launch --multi_gpu --num_processes N`` (or ``torchrun``; several
machines through accelerate's own config) has ``WORLD_SIZE = N`` processes; accelerate's
:class:`~accelerate.PartialState` sets up the process group (NCCL on GPUs, gloo on CPUs). A plain
``python`` run is one process and every method here is the identity.

Training keeps the single-process optimizer step. Every process builds the same batches (they
are a pure function of the seed and the epoch), takes every N-th row of each (rank r: rows
r, r + N, …), and scales its loss by ``n_local / n_global``: every term of the loss is a mean
over rows, so the summed gradient over processes is the gradient of the global batch's mean.
The gradients are summed with one all-reduce of a flat buffer after backward, the collective
DDP issues; DDP's wrapper itself cannot be used, because the exit heads run the decoder layers
one by one (:meth:`ragrec.model.heads.ExitHeads.forward_all`) instead of the wrapped module's
``forward``, which is where DDP arms its gradient hooks.

Scoring splits the batches, not the rows: process r scores batches r, r + N, …, each exactly
the batch one process would score, so the gathered predictions equal one process's bit for bit.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Shard:
    """This process's place in a data-parallel run: ``rank`` of ``world`` processes."""

    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")  # where collectives run (NCCL needs CUDA tensors)

    @property
    def is_main(self) -> bool:
        """The process that writes checkpoints and results."""
        return self.rank == 0

    def rows(self, rows: np.ndarray) -> np.ndarray:
        """This process's rows of one global batch ``rows`` (every ``world``-th from ``rank``)."""
        return rows[self.rank :: self.world]

    def batches(self, batches: list[np.ndarray]) -> list[np.ndarray]:
        """This process's batches of a scoring pass."""
        return batches[self.rank :: self.world]

    def sum_gradients(self, parameters: Iterable[torch.nn.Parameter]) -> None:
        """Replace every trainable parameter's gradient by its sum over processes (one
        all-reduce). A parameter without a gradient here (no local rows) counts as zeros."""
        if self.world == 1:
            return
        params = [p for p in parameters if p.requires_grad]
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = _reduce_sum(torch.cat([g.reshape(-1) for g in grads]))
        offset = 0
        for p in params:
            n = p.numel()
            p.grad = flat[offset : offset + n].view_as(p).clone()
            offset += n

    def sum(self, value: float) -> float:
        """A number summed over processes (e.g. each process's share of a step's loss)."""
        if self.world == 1:
            return value
        return float(_reduce_sum(torch.tensor([value], dtype=torch.float64, device=self.device)).item())

    def gather(self, local: np.ndarray) -> np.ndarray:
        """Every process's rows, in sample order: each fills its own rows of a ``[N, …]`` array
        and leaves the rest 0, and the arrays are summed (one all-reduce)."""
        if self.world == 1:
            return local
        summed = _reduce_sum(torch.from_numpy(np.ascontiguousarray(local, dtype=np.float64)).to(self.device))
        return summed.cpu().numpy()

    @contextmanager
    def main_first(self) -> Iterator[None]:
        """Run the block in the main process first, then in the others: the main one fits and
        caches (e.g. the LightGCN, whose GPU training is not bit-reproducible), the others load."""
        if not self.is_main:
            self.barrier()
        yield
        if self.is_main:
            self.barrier()

    def barrier(self) -> None:
        """Wait for every process (e.g. until the main one has written a checkpoint)."""
        if self.world > 1:
            torch.distributed.barrier()


def _reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    from accelerate.utils import reduce

    return reduce(tensor, reduction="sum")


def current_shard() -> Shard:
    """This process's shard: from accelerate's state when launched with several processes,
    else the single process (accelerate is not even imported)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Shard()
    from accelerate import PartialState

    # without cpu=True, accelerate sees no GPU and falls back to one process (no process group)
    state = PartialState(cpu=not torch.cuda.is_available())
    return Shard(state.process_index, state.num_processes, state.device)
