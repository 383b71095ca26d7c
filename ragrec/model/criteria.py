"""Exit criteria: when a row stops at a head, and the same decision replayed on saved predictions.

The paper's rule (difference form) and its ratio form::

    D_h = |P_h(Yes) − P_{h−1}(Yes)| < τ               difference
    |log odds_h − log odds_{h−1}| < τ (nats)        ratio

One vectorised ``decide`` serves the engine and :func:`simulate_exits`, so the two agree exactly."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from ragrec.errors import ConfigError

# --------------------------------------------------------------------------------------------
# exit criteria
#
# Every criterion decides on float64 numpy arrays. The engine converts each head's P(Yes) to
# float64 once, stores exactly those values in per_head_p, and calls the same ``decide`` that
# simulate_exits calls on per_head_p: identical inputs through identical code, so a threshold
# sweep on saved predictions reproduces the engine bit for bit.

ArrayLike = np.ndarray | Tensor

# Probabilities are clipped into [ε, 1−ε] for the odds: P can round to exactly 0 or 1 in fp32,
# where the odds are 0 or infinite and two saturated heads would compare inf/inf = NaN.
_ODDS_EPS = 1e-12


def as_numpy(p: ArrayLike) -> np.ndarray:
    if isinstance(p, Tensor):
        return p.detach().to("cpu", torch.float64).numpy()
    return np.asarray(p, dtype=np.float64)


def _like(mask: np.ndarray, template: ArrayLike) -> ArrayLike:
    if isinstance(template, Tensor):
        return torch.from_numpy(mask).to(template.device)
    return mask


def _odds(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _ODDS_EPS, 1.0 - _ODDS_EPS)
    return p / (1.0 - p)


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

    The last head always exits. τ = 0 never exits early; τ = inf exits at the second head.
    """

    tau: float
    form: Literal["difference", "ratio"] = "difference"
    first_head: Literal["wait", "confident"] = "wait"

    def __post_init__(self) -> None:
        if not isinstance(self.tau, numbers.Real) or math.isnan(self.tau) or self.tau < 0:
            raise ConfigError(f"tau must be a number ≥ 0 (larger = earlier exit), got {self.tau!r}")
        if self.form not in ("difference", "ratio"):
            raise ConfigError(f"form must be 'difference' or 'ratio', got {self.form!r}")
        if self.first_head not in ("wait", "confident"):
            raise ConfigError(f"first_head must be 'wait' or 'confident', got {self.first_head!r}")
        if self.form == "ratio" and self.first_head == "confident":
            raise ConfigError(
                "first_head='confident' is defined on probabilities (form='difference'); with "
                "form='ratio' use first_head='wait'"
            )

    def decide(
        self,
        p_prev: ArrayLike | None,
        p_cur: ArrayLike,
        head_index: int,
        is_last: bool,
        *,
        layer: int | None = None,
    ) -> ArrayLike:
        """Exit mask ``[B]`` (bool, same kind as ``p_cur``) for rows at head ``head_index``."""
        cur = as_numpy(p_cur)
        if is_last:
            out = np.ones(cur.shape, dtype=bool)
        elif head_index == 0 or p_prev is None:
            if self.first_head == "wait":
                out = np.zeros(cur.shape, dtype=bool)
            else:
                out = np.maximum(cur, 1.0 - cur) > 1.0 - self.tau
        else:
            prev = as_numpy(p_prev)
            if self.form == "difference":
                out = np.abs(cur - prev) < self.tau
            else:
                # |log(odds_h) − log(odds_{h−1})| < τ  ⟺  e^−τ < odds_h / odds_{h−1} < e^τ.
                # Only ×, ÷ and comparisons act on the arrays (correctly rounded in IEEE
                # arithmetic), so SIMD or strided numpy paths cannot flip a decision between the
                # engine and simulate_exits the way a vectorised log might by one ulp.
                ratio = _odds(cur) / _odds(prev)
                bound = math.exp(min(float(self.tau), 700.0))  # capped: math.exp overflows past ~709
                out = (ratio > 1.0 / bound) & (ratio < bound)
        return _like(out, p_cur)


@dataclass(frozen=True)
class NeverExit:
    """Run every head, exit only at the last: the full-depth reference."""

    def decide(
        self,
        p_prev: ArrayLike | None,
        p_cur: ArrayLike,
        head_index: int,
        is_last: bool,
        *,
        layer: int | None = None,
    ) -> ArrayLike:
        cur = as_numpy(p_cur)
        return _like(np.full(cur.shape, is_last, dtype=bool), p_cur)


@dataclass(frozen=True)
class FixedHead:
    """Always exit at the head on ``layer`` (a static shallower model; must be a head layer)."""

    layer: int

    def __post_init__(self) -> None:
        if not isinstance(self.layer, int) or self.layer < 1:
            raise ConfigError(f"FixedHead.layer must be a layer number ≥ 1, got {self.layer!r}")

    def decide(
        self,
        p_prev: ArrayLike | None,
        p_cur: ArrayLike,
        head_index: int,
        is_last: bool,
        *,
        layer: int | None = None,
    ) -> ArrayLike:
        if layer is None:
            raise ConfigError("FixedHead.decide needs the head's layer number (layer=...)")
        cur = as_numpy(p_cur)
        return _like(np.full(cur.shape, is_last or layer == self.layer, dtype=bool), p_cur)


ExitCriterion = StabilityExit | NeverExit | FixedHead


def check_criterion(criterion: ExitCriterion, head_layers: Sequence[int]) -> None:
    if not isinstance(criterion, (StabilityExit, NeverExit, FixedHead)):
        raise ConfigError(
            f"unknown exit criterion {criterion!r}; use StabilityExit(tau), NeverExit() or FixedHead(layer)"
        )
    if isinstance(criterion, FixedHead) and criterion.layer not in head_layers:
        raise ConfigError(
            f"FixedHead(layer={criterion.layer}) has no exit head; heads are at layers {list(head_layers)}"
        )


def simulate_exits(
    per_head_p: np.ndarray, criterion: ExitCriterion, head_layers: Sequence[int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Replay ``criterion`` on saved per-head P(Yes) ``[N, n_heads]`` → ``(p_final[N], exit_head_index[N])``.

    Agrees exactly with :class:`EarlyExitEngine` on the engine's own ``per_head_p`` (heads after a
    row's exit may be NaN). ``head_layers`` is needed only for :class:`FixedHead`; if omitted, the
    heads are taken to be at layers 1..n_heads.
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
        prev = p[:, k - 1] if k else None
        with np.errstate(invalid="ignore"):  # NaNs of already-exited rows are masked below
            decision = np.asarray(criterion.decide(prev, cur, k, k == n_heads - 1, layer=layers[k]))
        new = decision & ~exited
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
            f"per_head_p[{row}, {head}] = {float(p[row, head])!r} is not a probability: every P(Yes) must lie "
            f"in [0, 1] ({len(outside)} of {p.size} values do not); pass the heads' P(Yes), not logits or percentages"
        )
