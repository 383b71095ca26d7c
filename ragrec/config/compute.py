"""The compute table's settings (``compute.csv``, :mod:`ragrec.experiments.compute`): defined
here because a profile carries them and this package sits below ``ragrec.experiments``."""

from __future__ import annotations

from dataclasses import dataclass

from ragrec.errors import ConfigError


@dataclass(frozen=True)
class ComputeConfig:
    """How much the compute table times; every path is timed on the same real prompts.

    Attributes:
        n_prompts: training prompts (the profile's own, mixed contexts) every scoring path reads.
        batch_size: rows per forward of the plain forward, the engine and all-heads scoring.
        train_steps: optimizer steps timed on a fresh LoRA copy, after ``warmup`` untimed ones.
        repeats: timed passes over the prompts per scoring path; the median pass is kept.
        warmup: untimed passes (scoring) or steps (training) before timing.
        matmul_repeats: timed products per shape for the matmul limit; the fastest is kept.
        threads: torch intra-op threads (None: leave torch's setting).
    """

    n_prompts: int = 32
    batch_size: int = 8
    train_steps: int = 4
    repeats: int = 2
    warmup: int = 1
    matmul_repeats: int = 5
    threads: int | None = None

    def __post_init__(self) -> None:
        sizes = (self.n_prompts, self.batch_size, self.train_steps, self.repeats, self.matmul_repeats)
        if min(sizes) < 1 or self.warmup < 0 or (self.threads is not None and self.threads < 1):
            raise ConfigError(f"invalid ComputeConfig {self}: sizes must be ≥ 1, warmup ≥ 0")
