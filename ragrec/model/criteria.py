"""Exit criteria: when a row stops at a head, and the same decision replayed on saved predictions.

A criterion is anything with ``decide(head) -> mask`` (:class:`ExitCriterion`); the engine and
:func:`simulate_exits` ask it through :func:`exit_mask`, so the two agree exactly. The paper's
rule (difference form) and its ratio form::

    D_h = |P_h(Yes) − P_{h−1}(Yes)| < τ               difference
    |log odds_h − log odds_{h−1}| < τ (nats)        ratio

Two baselines beside it: a static exit at one head for every row (:class:`FixedHead`), and a
confidence rule that stops at the first head already sure of its answer::

    |P_h(Yes) − 0.5| > τ                             confidence (:class:`ConfidenceExit`)

A sweep runs a :class:`CriterionFamily`: criteria indexed by τ, with the label its rows carry
in the tables (:class:`StabilitySpec` for the paper's rule, :class:`StaticSpec` for a static
exit at every head, τ = the head's layer, :class:`ConfidenceSpec` for the confidence rule)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, get_args, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from ragrec.errors import ConfigError

# --------------------------------------------------------------------------------------------
# what a criterion sees, and what it answers
#
# Every criterion decides on float64 numpy arrays. The engine converts each head's P(Yes) to
# float64 once, stores exactly those values in per_head_p, and asks the criterion through the
# same exit_mask that simulate_exits uses on per_head_p: identical inputs through identical
# code, so a threshold sweep on saved predictions reproduces the engine bit for bit.

StabilityForm = Literal["difference", "ratio"]
FORMS: tuple[StabilityForm, ...] = get_args(StabilityForm)  # the stability rule's forms
FirstHead = Literal["wait", "confident"]
FIRST_HEADS: tuple[FirstHead, ...] = get_args(FirstHead)

# Probabilities are clipped into [ε, 1−ε] for the odds: P can round to exactly 0 or 1 in fp32,
# where the odds are 0 or infinite and two saturated heads would compare inf/inf = NaN.
_ODDS_EPS = 1e-12


def as_numpy(p: np.ndarray | Tensor) -> np.ndarray:
    if isinstance(p, Tensor):
        return p.detach().to("cpu", torch.float64).numpy()
    return np.asarray(p, dtype=np.float64)


@dataclass(frozen=True)
class HeadState:
    """What a criterion sees at one exit head, for the ``B`` rows still running there.

    ``p``: ``[B]`` float64 P(Yes) of this head; ``p_prev``: ``[B]`` the previous head's P(Yes)
    of the same rows (None at the first head); ``index``: the head's 0-based index; ``layer``:
    its 1-based decoder layer. Rows that already exited may hold NaN in a replay
    (:func:`simulate_exits`); their answers are ignored.
    """

    p: np.ndarray
    p_prev: np.ndarray | None
    index: int
    layer: int


@runtime_checkable
class ExitCriterion(Protocol):
    """When a row stops: at every head but the last, ``decide`` says which running rows exit.

    The last head exits every row without asking. A criterion that must fit the model's heads
    (e.g. :class:`FixedHead`) also implements :class:`FitsHeads`.
    """

    def decide(self, head: HeadState) -> np.ndarray:
        """Exit mask ``[B]`` (bool, True = stop here) for the rows of ``head``."""
        ...


@runtime_checkable
class FitsHeads(Protocol):
    """A criterion that can check, before any row runs, that it fits the model's heads."""

    def check_heads(self, head_layers: tuple[int, ...]) -> None:
        """ConfigError unless the criterion can act on heads at ``head_layers``."""
        ...


def check_criterion(criterion: object, head_layers: Sequence[int]) -> None:
    """ConfigError unless ``criterion`` implements :class:`ExitCriterion` and fits the heads."""
    if not isinstance(criterion, ExitCriterion):
        raise ConfigError(
            f"{criterion!r} is not an exit criterion: it has no decide(head) method returning a bool "
            "exit mask (see ragrec.model.criteria.ExitCriterion; e.g. StabilityExit(tau), NeverExit(), "
            "FixedHead(layer))"
        )
    if isinstance(criterion, FitsHeads):
        criterion.check_heads(tuple(head_layers))


def exit_mask(criterion: ExitCriterion, head: HeadState, is_last: bool) -> np.ndarray:
    """The rows of ``head`` that stop there: all at the last head, else ``criterion``'s answer,
    checked to be a bool mask ``[B]``."""
    if is_last:
        return np.ones(head.p.shape, dtype=bool)
    mask = np.asarray(criterion.decide(head))
    if mask.dtype != np.bool_ or mask.shape != head.p.shape:
        raise ConfigError(
            f"{type(criterion).__name__}.decide returned {mask.dtype} of shape {mask.shape}; an exit "
            f"criterion returns a bool mask of shape {head.p.shape}, one answer per running row"
        )
    return mask


# --------------------------------------------------------------------------------------------
# the criteria


def _odds(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _ODDS_EPS, 1.0 - _ODDS_EPS)
    return p / (1.0 - p)


def check_tau(tau: object, where: str = "") -> None:
    """ConfigError unless ``tau`` is a real number ≥ 0 (not a bool, not NaN)."""
    number = isinstance(tau, (int, float, np.integer, np.floating)) and not isinstance(tau, bool)
    if not number or math.isnan(tau) or tau < 0:
        raise ConfigError(f"tau must be a number ≥ 0 (larger = earlier exit), got {tau!r}{where}")


@dataclass(frozen=True)
class StabilityExit:
    """Exit at head ``h`` when consecutive heads agree (the paper's criterion).

    - ``form="difference"``: ``|P_h − P_{h−1}| < τ`` (paper: ``D_h = |P_h(Yes) − P_{h−1}(Yes)|``).
    - ``form="ratio"``: on the log odds, ``|log(P_h/(1−P_h)) − log(P_{h−1}/(1−P_{h−1}))| < τ``,
      i.e. the change of the ratio of the positive and negative prediction scores (the paper's
      figure speaks of "ratio scores of positive and negative predictions"). τ is in nats here.
    - ``first_head="wait"``: the first head has no predecessor and never exits.
      ``"confident"``: the first head exits when it is already within τ of a certain answer,
      ``max(P_1, 1−P_1) > 1 − τ`` (equivalently ``|P_1 − 0.5| > 0.5 − τ``). Defined for the
      difference form only, where τ is a probability.

    τ = 0 never exits early; τ = inf exits at the second head.
    """

    tau: float
    form: StabilityForm = "difference"
    first_head: FirstHead = "wait"

    def __post_init__(self) -> None:
        check_tau(self.tau)
        if self.form not in FORMS:
            raise ConfigError(f"form must be one of {FORMS}, got {self.form!r}")
        if self.first_head not in FIRST_HEADS:
            raise ConfigError(f"first_head must be one of {FIRST_HEADS}, got {self.first_head!r}")
        if self.form == "ratio" and self.first_head == "confident":
            raise ConfigError(
                "first_head='confident' is defined on probabilities (form='difference'); with "
                "form='ratio' use first_head='wait'"
            )

    def decide(self, head: HeadState) -> np.ndarray:
        if head.p_prev is None:
            if self.first_head == "wait":
                return np.zeros(head.p.shape, dtype=bool)
            return np.maximum(head.p, 1.0 - head.p) > 1.0 - self.tau
        if self.form == "difference":
            return np.abs(head.p - head.p_prev) < self.tau
        # |log(odds_h) − log(odds_{h−1})| < τ  ⟺  e^−τ < odds_h / odds_{h−1} < e^τ. Only ×, ÷ and
        # comparisons act on the arrays (correctly rounded in IEEE arithmetic), so SIMD or strided
        # numpy paths cannot flip a decision between the engine and simulate_exits the way a
        # vectorised log might by one ulp.
        ratio = _odds(head.p) / _odds(head.p_prev)
        bound = math.exp(min(float(self.tau), 700.0))  # capped: math.exp overflows past ~709
        return (ratio > 1.0 / bound) & (ratio < bound)


@dataclass(frozen=True)
class NeverExit:
    """Run every head, exit only at the last: the full-depth reference."""

    def decide(self, head: HeadState) -> np.ndarray:
        return np.zeros(head.p.shape, dtype=bool)


@dataclass(frozen=True)
class FixedHead:
    """Always exit at the head on ``layer`` (a static shallower model; must be a head layer)."""

    layer: int

    def __post_init__(self) -> None:
        if not isinstance(self.layer, int) or self.layer < 1:
            raise ConfigError(f"FixedHead.layer must be a layer number ≥ 1, got {self.layer!r}")

    def check_heads(self, head_layers: tuple[int, ...]) -> None:
        if self.layer not in head_layers:
            raise ConfigError(
                f"FixedHead(layer={self.layer}) has no exit head; heads are at layers {list(head_layers)}"
            )

    def decide(self, head: HeadState) -> np.ndarray:
        return np.full(head.p.shape, head.layer == self.layer, dtype=bool)


@dataclass(frozen=True)
class ConfidenceExit:
    """Exit at the first head already sure of its answer: ``|P_h(Yes) − 0.5| > τ`` (the first head
    too). τ is a probability margin in [0, 0.5]: τ ≥ 0.5 never exits early, τ = 0 exits at the
    first head unless it says exactly 0.5. Larger τ = *later* exit, unlike the stability rule."""

    tau: float

    def __post_init__(self) -> None:
        check_tau(self.tau)

    def decide(self, head: HeadState) -> np.ndarray:
        return np.abs(head.p - 0.5) > self.tau


# --------------------------------------------------------------------------------------------
# the decision replayed on saved predictions


def simulate_exits(
    per_head_p: np.ndarray, criterion: ExitCriterion, head_layers: Sequence[int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Replay ``criterion`` on saved per-head P(Yes) ``[N, n_heads]`` → ``(p_final[N],
    exit_head_index[N])``.

    Agrees exactly with :class:`EarlyExitEngine` on the engine's own ``per_head_p`` (heads after a
    row's exit may be NaN). ``head_layers`` gives each head's layer (what :class:`FixedHead`
    reads); if omitted, the heads are taken to be at layers 1..n_heads.
    """
    p = np.asarray(per_head_p, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] == 0:
        raise ConfigError(f"per_head_p must be [N, n_heads] with n_heads ≥ 1, got shape {p.shape}")
    _check_probabilities(p)
    n_rows, n_heads = p.shape
    layers = tuple(range(1, n_heads + 1)) if head_layers is None else tuple(head_layers)
    if len(layers) != n_heads:
        raise ConfigError(f"head_layers has {len(layers)} entries but per_head_p has {n_heads} heads")
    check_criterion(criterion, layers)
    exited = np.zeros(n_rows, dtype=bool)
    exit_head = np.full(n_rows, -1, dtype=np.int64)
    p_final = np.full(n_rows, np.nan)
    for k in range(n_heads):
        cur = p[:, k]
        missing = np.flatnonzero(np.isnan(cur) & ~exited)
        if len(missing):
            raise ConfigError(
                f"per_head_p is NaN at head {k} in {len(missing)} rows that have not exited yet (first: "
                f"row {missing[0]}); it needs every head up to the exit"
            )
        head = HeadState(cur, p[:, k - 1] if k else None, k, layers[k])
        with np.errstate(invalid="ignore"):  # NaNs of already-exited rows are masked below
            new = exit_mask(criterion, head, k == n_heads - 1) & ~exited
        exit_head[new] = k
        p_final[new] = cur[new]
        exited |= new
    return p_final, exit_head


def _check_probabilities(p: np.ndarray) -> None:
    """ConfigError naming the first value of ``p`` outside [0, 1] (NaN is checked per head: it
    may follow a row's exit)."""
    with np.errstate(invalid="ignore"):
        outside = np.argwhere((p < 0) | (p > 1))
    if len(outside):
        row, head = outside[0]
        raise ConfigError(
            f"per_head_p[{row}, {head}] = {float(p[row, head])!r} is not a probability: every P(Yes) must "
            f"lie in [0, 1] ({len(outside)} of {p.size} values do not); pass the heads' P(Yes), not "
            "logits or percentages"
        )


# --------------------------------------------------------------------------------------------
# families of criteria: what a sweep runs over its τ grid


@runtime_checkable
class CriterionFamily(Protocol):
    """Exit criteria indexed by τ, as a profile names them for the sweep and the benchmark."""

    @property
    def label(self) -> str:
        """The ``form`` column of its rows in the tables (unique among the families of a run)."""
        ...

    @property
    def first_head(self) -> str:
        """The ``first_head`` column: how its first head decides (``"wait"``: never exits there)."""
        ...

    @property
    def taus(self) -> tuple[float, ...]:
        """The τ grid a sweep runs (include the τ that means full depth)."""
        ...

    def criterion(self, tau: float) -> ExitCriterion:
        """The criterion at ``tau`` (ConfigError for a τ it does not take)."""
        ...


def check_grid(taus: Sequence[float], label: str) -> None:
    """ConfigError unless ``taus`` is a non-empty grid of numbers ≥ 0."""
    if isinstance(taus, (str, bytes)) or not isinstance(taus, Sequence) or len(taus) == 0:
        raise ConfigError(f"the τ grid of {label!r} is empty or not a sequence of numbers: {taus!r}")
    for tau in taus:
        check_tau(tau, f" in the τ grid of {label!r}")


def check_families(families: Sequence[object]) -> None:
    """ConfigError unless ``families`` is a non-empty sequence of :class:`CriterionFamily` with
    distinct labels (a label names the rows of one family in every table)."""
    if isinstance(families, (str, bytes)) or not isinstance(families, Sequence) or not families:
        raise ConfigError(
            "criteria must be a non-empty sequence of criterion families (e.g. StabilitySpec), got "
            f"{families!r}"
        )
    labels = []
    for family in families:
        if not isinstance(family, CriterionFamily):
            raise ConfigError(
                f"{family!r} is not a criterion family: it needs label, first_head, taus and "
                "criterion(tau) (see ragrec.model.criteria.CriterionFamily; e.g. StabilitySpec)"
            )
        labels.append(family.label)
    if len(set(labels)) != len(labels):
        raise ConfigError(f"criterion families must have distinct labels, got {labels}")


@dataclass(frozen=True)
class StabilitySpec:
    """The paper's rule (:class:`StabilityExit`) in one form, over a τ grid: the difference form's
    τ is a probability, the ratio form's a log-odds change in nats. Its label is its form."""

    form: StabilityForm
    taus: tuple[float, ...]
    first_head: FirstHead = "wait"

    def __post_init__(self) -> None:
        StabilityExit(0.0, form=self.form, first_head=self.first_head)  # e.g. "confident" needs "difference"
        check_grid(self.taus, self.form)
        object.__setattr__(self, "taus", tuple(self.taus))  # a list given is kept immutable

    @property
    def label(self) -> str:
        return self.form

    def criterion(self, tau: float) -> StabilityExit:
        check_tau(tau, f" for {self.form!r}")
        return StabilityExit(float(tau), form=self.form, first_head=self.first_head)


STATIC = "static"  # the static exit's label in the tables (its ``form`` column)


@dataclass(frozen=True)
class StaticSpec:
    """A static exit at every head (:class:`FixedHead`): τ is the head's layer, so the point at
    the last head is full depth. ``layers`` None: the model's own heads, filled in by
    :func:`bind_heads` before a sweep (what the profiles use, whatever the model's depth)."""

    layers: tuple[int, ...] | None = None
    label: str = STATIC
    first_head: str = STATIC  # every row exits at the same head, the first only at its own τ

    def __post_init__(self) -> None:
        if self.layers is not None:
            check_grid(self.layers, self.label)
            object.__setattr__(self, "layers", tuple(int(layer) for layer in self.layers))

    @property
    def taus(self) -> tuple[float, ...]:
        return () if self.layers is None else tuple(float(layer) for layer in self.layers)

    def criterion(self, tau: float) -> FixedHead:
        if float(tau) != int(tau):
            raise ConfigError(f"a static exit's τ is a head layer (an integer), got {tau!r}")
        return FixedHead(int(tau))

    def for_heads(self, head_layers: Sequence[int]) -> StaticSpec:
        """This family on the model's heads (kept as it is when it names its own layers)."""
        return self if self.layers is not None else StaticSpec(tuple(head_layers), self.label)


@dataclass(frozen=True)
class ConfidenceSpec:
    """The confidence rule (:class:`ConfidenceExit`) over a τ grid; 0.5 in the grid is full depth."""

    taus: tuple[float, ...]
    label: str = "confidence"
    first_head: str = "confident"  # the first head exits when it is sure, like every other

    def __post_init__(self) -> None:
        check_grid(self.taus, self.label)
        object.__setattr__(self, "taus", tuple(self.taus))

    def criterion(self, tau: float) -> ConfidenceExit:
        check_tau(tau, f" for {self.label!r}")
        return ConfidenceExit(float(tau))


@runtime_checkable
class BindsHeads(Protocol):
    """A family whose grid depends on the model's heads (e.g. :class:`StaticSpec`)."""

    def for_heads(self, head_layers: Sequence[int]) -> CriterionFamily: ...


def bind_heads(
    families: Sequence[CriterionFamily], head_layers: Sequence[int]
) -> tuple[CriterionFamily, ...]:
    """``families`` with every :class:`BindsHeads` one fitted to ``head_layers``, in order."""
    return tuple(f.for_heads(head_layers) if isinstance(f, BindsHeads) else f for f in families)
