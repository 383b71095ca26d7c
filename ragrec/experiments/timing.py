"""Latency and throughput measurement shared by every benchmark.

Timings never decide a test's pass or fail (machines are shared and noisy); benchmarks write
them to ``results/`` with provenance and compare methods side by side in one process.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Latency:
    """Per-call latencies in milliseconds and calls per second over the whole measured run."""

    p50_ms: float
    p95_ms: float
    p99_ms: float
    per_s: float
    n: int


def summarize(latencies_s: Sequence[float], items_per_call: Sequence[int] | None = None) -> Latency:
    """Percentiles of per-call seconds; ``per_s`` = items / total seconds (items = calls when
    ``items_per_call`` is None)."""
    lat = np.asarray(latencies_s, dtype=float)
    items = len(lat) if items_per_call is None else int(np.sum(items_per_call))
    p50, p95, p99 = np.percentile(lat * 1e3, [50, 95, 99])
    return Latency(float(p50), float(p95), float(p99), items / float(lat.sum()), len(lat))


def time_calls(fn: Callable[[object], object], inputs: Sequence[object], *, warmup: int = 2) -> list[float]:
    """Run ``fn`` on every input (after ``warmup`` untimed calls on the first inputs) and return
    each call's wall time in seconds (``time.perf_counter``)."""
    for x in inputs[:warmup]:
        fn(x)
    out = []
    for x in inputs:
        t = time.perf_counter()
        fn(x)
        out.append(time.perf_counter() - t)
    return out


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block on ``threads`` torch intra-op threads (None: leave torch's setting), and
    restore the previous count afterwards, also on error."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
