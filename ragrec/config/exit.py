"""The early-exit benchmark's settings: defined here rather than beside
:func:`ragrec.experiments.early_exit.benchmark.run_exit_benchmark` because a profile carries them and
this package sits below ``ragrec.experiments`` in the import order."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ragrec.errors import ConfigError
from ragrec.model.criteria import (
    ConfidenceSpec,
    CriterionFamily,
    StabilitySpec,
    StaticSpec,
    check_families,
)

# --------------------------------------------------------------------------------------------
# the early-exit benchmark

# Probability grid for the difference form; log-odds (nats) grid for the ratio form. Near
# P = 0.5 a change of Δp is a log-odds change of about 4·Δp, hence the larger ratio values.
TAUS_DIFFERENCE = (0.0, 0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2)
TAUS_RATIO = (0.0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0)

# Margin grid for the confidence rule |P − 0.5| > τ: 0.5 never exits early (full depth).
TAUS_CONFIDENCE = (0.5, 0.45, 0.4, 0.35, 0.3, 0.25, 0.2, 0.15, 0.1, 0.05, 0.0)

# The paper's rule in both forms, each over its grid, then the two baselines it must beat: a
# static exit at every head of the model, and the confidence rule. The candidate grid of the
# operating-point rule, fixed here before any scoring; every profile shares it.
DIFFERENCE = StabilitySpec("difference", TAUS_DIFFERENCE)
RATIO = StabilitySpec("ratio", TAUS_RATIO)
STATIC_EXIT = StaticSpec()
CONFIDENCE = ConfidenceSpec(TAUS_CONFIDENCE)

# Whole requests: the paper's pipeline (LLM retriever, full depth), the GCN retriever at full
# depth, and ours (GCN retriever, early exit); see ragrec.experiments.early_exit.end_to_end.
E2E_METHODS = ("e2e_llm_full", "e2e_gcn_full", "e2e_gcn_exit")


def check_extra_points(points: Sequence[tuple[CriterionFamily, float]]) -> None:
    """ConfigError unless every extra point is a (criterion family, τ) its family takes."""
    for point in points:
        if not (isinstance(point, tuple) and len(point) == 2 and isinstance(point[0], CriterionFamily)):
            raise ConfigError(
                f"an extra point is a (criterion family, τ) pair, e.g. (DIFFERENCE, 0.05), got {point!r}"
            )
        point[0].criterion(point[1])


def check_methods(methods: Sequence[str]) -> None:
    """ConfigError unless ``methods`` is a non-empty selection of :data:`E2E_METHODS`."""
    if not methods:
        raise ConfigError(f"give at least one end-to-end method of {E2E_METHODS}")
    unknown = [m for m in methods if m not in E2E_METHODS]
    if unknown:
        raise ConfigError(f"unknown end-to-end method(s) {unknown}; choose from {E2E_METHODS}")


def _check_count(config: object, name: str, minimum: int) -> None:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an int >= {minimum}, got {value!r}")


@dataclass(frozen=True)
class ExitBenchmarkConfig:
    """What :func:`ragrec.experiments.early_exit.benchmark.run_exit_benchmark` runs; each profile
    carries one (:attr:`Profile.exit`).

    Attributes:
        criteria: the exit rules swept and timed, each a
            :class:`~ragrec.model.criteria.CriterionFamily` with its τ grid and table label
            (default: the paper's rule in its difference and ratio forms, :data:`DIFFERENCE` and
            :data:`RATIO`, a static exit at every head, :data:`STATIC_EXIT`, and the confidence
            rule, :data:`CONFIDENCE`). Each grid should hold the τ that means full depth.
        margin: the non-inferiority margin of the operating-point rule: the cheapest candidate
            whose one-sided upper bound of AUC(full) − AUC(point) on validation is ≤ this
            (:func:`ragrec.experiments.early_exit.noninferiority.non_inferior_point`).
        rule_n_boot, rule_level: the rule's paired bootstrap (resamples; the one-sided level of
            the upper bound).
        n_boot: bootstrap resamples for the AUC intervals.
        context: which saved predictions / retriever the sweep and the engine benchmark use.
        n_requests: test samples (seeded draw) the engine benchmark scores.
        batch_size: prompts per batch, for the engine and the plain forward alike.
        repeats, warmup: timed passes per method (median reported) and untimed warm-up batches
            per method before the first.
        padding_side: how the timed batches are padded. ``"right"``, as scoring pads: with eager
            attention every real token then sees the same keys at the same columns whatever the
            batch, so the engine reproduces the saved predictions bit for bit and its exits equal
            the replayed sweep's (:attr:`ragrec.config.ModelSettings.attention`). The plain
            forward gathers each row's last real token, so it takes either side.
        extra_points: ``(family, τ)`` pairs the real engine runs besides the operating point and
            each family's best point.
        check_requests: prompts on which the engine with "never exit" is checked against the
            plain forward (DESIGN §5: within 1e-5 in fp32) before timing.
        e2e_requests, e2e_batch_size, e2e_repeats, e2e_methods: the end-to-end measurement (its
            requests are the first ``e2e_requests`` of the engine benchmark's samples).
        threads: torch intra-op threads for the whole run (None: leave torch's setting; the count
            in effect is written to the table and provenance either way).
        seed: the request draw and the bootstrap.
    """

    criteria: tuple[CriterionFamily, ...] = (DIFFERENCE, RATIO, STATIC_EXIT, CONFIDENCE)
    margin: float = 0.005
    rule_n_boot: int = 1000
    rule_level: float = 0.95
    n_boot: int = 1000
    context: str = "gcn"
    n_requests: int = 96
    batch_size: int = 8
    repeats: int = 3
    warmup: int = 2
    padding_side: str = "right"
    extra_points: tuple[tuple[CriterionFamily, float], ...] = ()
    check_requests: int = 16
    e2e_requests: int = 48
    e2e_batch_size: int = 8
    e2e_repeats: int = 2
    e2e_methods: tuple[str, ...] = E2E_METHODS
    threads: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        check_families(self.criteria)
        check_extra_points(self.extra_points)
        if not 0 <= self.margin < 1:
            raise ConfigError(f"margin must lie in [0, 1), got {self.margin}")
        if not 0.5 <= self.rule_level < 1:
            raise ConfigError(f"rule_level must lie in [0.5, 1), got {self.rule_level}")
        if self.padding_side not in ("left", "right"):
            raise ConfigError(f"padding_side must be 'left' or 'right', got {self.padding_side!r}")
        for name in (
            "n_boot",
            "rule_n_boot",
            "n_requests",
            "batch_size",
            "repeats",
            "e2e_batch_size",
            "e2e_repeats",
        ):
            _check_count(self, name, 1)
        for name in ("warmup", "check_requests", "e2e_requests"):
            _check_count(self, name, 0)
        check_methods(self.e2e_methods)
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be >= 1 or None, got {self.threads}")
