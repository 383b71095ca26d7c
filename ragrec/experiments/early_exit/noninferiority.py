"""The operating-point rule: non-inferiority against full depth, on validation samples.

Candidates are fixed before any scoring (the profile's criterion families over their grids,
:attr:`ragrec.config.ExitBenchmarkConfig.criteria`). For each candidate ``c`` the rule bootstraps
the AUC drop against full depth on the validation samples, *paired* (both scored on the same
resampled rows) and with the *same* resamples for every candidate::

    Δ_c = AUC(full) − AUC(c)          U_c = q_{level}(Δ_c over resamples)   (one-sided, 95%)

and takes the cheapest candidate (fewest mean exit layers) with ``U_c ≤ margin`` (0.005). A
point at full depth has ``Δ = 0`` on every resample, so it always qualifies and the rule never
fails when the grid holds one. :func:`selection_honesty` checks the rule on held-out halves.

AUCs on resamples come from :mod:`ragrec.experiments.early_exit.bootstrap` (one sort and a few
``[B, N]`` passes per candidate, not a thousand ``roc_auc_score`` calls).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ragrec.errors import ConfigError, DataError
from ragrec.experiments.early_exit.bootstrap import resample_counts, resampled_aucs
from ragrec.metrics import auc


@dataclass(frozen=True)
class Candidate:
    """One candidate exit point on the validation samples: its P(Yes) at exit ``[N]`` and its
    mean exit layer (the compute it costs)."""

    p: np.ndarray
    mean_layer: float


@dataclass(frozen=True)
class NonInferiority:
    """:func:`non_inferior_point`'s answer: the chosen candidate's index, and per candidate
    ``[K]`` the drop ``AUC(full) − AUC(c)``, its one-sided upper bound and whether it qualifies."""

    chosen: int
    drop: np.ndarray
    upper: np.ndarray
    qualifies: np.ndarray


def _drops_and_bounds(
    labels: np.ndarray,
    p_full: np.ndarray,
    candidates: Sequence[Candidate],
    n_boot: int,
    seed: int,
    level: float,
    cache: dict | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per candidate ``[K]``: ``AUC(full) − AUC(c)`` and its one-sided ``level`` upper bound over
    ``n_boot`` paired resamples (drawn once, the same for every candidate)."""
    seen = {} if cache is None else cache
    resamples: dict[str, np.ndarray] = {}
    drop, upper = np.empty(len(candidates)), np.empty(len(candidates))
    for k, candidate in enumerate(candidates):
        p = np.asarray(candidate.p, dtype=np.float64)
        key = (p.tobytes(), n_boot, seed, level)
        if key not in seen:  # many τ give the same exits: bootstrap each pattern once
            if not resamples:
                resamples["counts"] = counts = resample_counts(len(labels), n_boot, seed)
                resamples["full"] = resampled_aucs(labels, p_full, counts)
            delta = resamples["full"] - resampled_aucs(labels, p, resamples["counts"])  # [B] paired
            seen[key] = (auc(labels, p_full) - auc(labels, p), float(np.nanquantile(delta, level)))
        drop[k], upper[k] = seen[key]
    return drop, upper


def non_inferior_point(
    labels: Sequence[int] | np.ndarray,
    p_full: np.ndarray,
    candidates: Sequence[Candidate],
    *,
    margin: float = 0.005,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    cache: dict | None = None,
) -> NonInferiority:
    """The operating-point rule: the cheapest candidate whose one-sided ``level`` paired-bootstrap
    upper bound of ``AUC(full) − AUC(candidate)`` is ≤ ``margin``.

    Ties, in order: fewest mean exit layers; then the smaller upper bound (the point more surely
    non-inferior); then the higher AUC; then the first in the order given (the profile's families
    in order, each over its grid in order).

    Args:
        labels: ``[N]`` 0/1 validation labels.
        p_full: ``[N]`` full-depth P(Yes) (the last head) on the same samples.
        candidates: the candidate points, fixed before scoring.
        margin: the AUC a point may lose against full depth. (default: ``0.005``)
        n_boot, seed: the paired bootstrap; every candidate uses the same resamples.
        level: one-sided level of the upper bound. (default: ``0.95``)
        cache: a dict shared by calls on the same labels and full-depth P(Yes) (e.g. the rule within
            each family after the rule over all): each exit pattern is bootstrapped once.

    Raises:
        ConfigError: no candidates, a bad margin or level, or a candidate of the wrong length.
        DataError: no candidate qualifies (put full depth in the grid).
    """
    labels = np.asarray(labels).astype(int).ravel()
    p_full = np.asarray(p_full, dtype=np.float64).ravel()
    if not candidates:
        raise ConfigError("the operating-point rule needs at least one candidate")
    if margin < 0 or not 0.5 <= level < 1:
        raise ConfigError(f"margin must be >= 0 and level in [0.5, 1), got {margin}, {level}")
    if any(np.shape(c.p) != p_full.shape for c in candidates) or len(labels) != len(p_full):
        raise ConfigError(f"every candidate and the labels need one value per sample ({len(p_full)})")
    drop, upper = _drops_and_bounds(labels, p_full, candidates, n_boot, seed, level, cache)
    qualifies = upper <= margin + 1e-12
    if not qualifies.any():
        raise DataError(
            f"no candidate's upper bound of the AUC drop is within {margin}; include full depth in the grid"
        )
    layers = np.array([c.mean_layer for c in candidates], dtype=np.float64)
    order = np.lexsort((np.arange(len(candidates)), drop, upper, layers))  # last key sorts first
    chosen = int(next(k for k in order if qualifies[k]))
    return NonInferiority(chosen, drop, upper, qualifies)


@dataclass(frozen=True)
class Honesty:
    """:func:`selection_honesty`'s answer over its splits: the share of splits whose choice loses
    more than the margin on the held-out part, the mean held-out drop of the choice, the mean drop
    the choice showed on the part that chose it (their gap is the winner's curse), and the mean
    compute of the choice (mean exit layers)."""

    share_over_margin: float
    held_out_drop: float
    selection_drop: float
    mean_layer: float
    n_splits: int


def selection_honesty(
    labels: Sequence[int] | np.ndarray,
    p_full: np.ndarray,
    candidates: Sequence[Candidate],
    *,
    margin: float = 0.005,
    n_splits: int = 100,
    select_share: float = 0.5,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> Honesty:
    """Check the rule by repeated selection / held-out splits of the same samples: each split
    chooses with :func:`non_inferior_point` on a random ``select_share`` of the samples and
    measures the choice's ``AUC(full) − AUC(choice)`` on the rest.

    A candidate's compute is its ``mean_layer`` over all samples (the split only changes which
    samples judge its accuracy). Raises ConfigError for a split that leaves a part empty.
    """
    labels = np.asarray(labels).astype(int).ravel()
    p_full = np.asarray(p_full, dtype=np.float64).ravel()
    n_select = int(round(select_share * len(labels)))
    if not 0 < n_select < len(labels) or n_splits < 1:
        raise ConfigError(f"select_share {select_share} and n_splits {n_splits} leave a part empty")
    rng = np.random.default_rng(seed)
    held_out, selection, layers = [], [], []
    for split in range(n_splits):
        order = rng.permutation(len(labels))
        chose, held = order[:n_select], order[n_select:]
        answer = non_inferior_point(
            labels[chose],
            p_full[chose],
            [Candidate(np.asarray(c.p)[chose], c.mean_layer) for c in candidates],
            margin=margin,
            n_boot=n_boot,
            seed=seed + split,
            level=level,
        )
        p = np.asarray(candidates[answer.chosen].p)
        held_out.append(auc(labels[held], p_full[held]) - auc(labels[held], p[held]))
        selection.append(answer.drop[answer.chosen])
        layers.append(candidates[answer.chosen].mean_layer)
    held_out = np.asarray(held_out)
    return Honesty(
        float((held_out > margin).mean()),
        float(held_out.mean()),
        float(np.mean(selection)),
        float(np.mean(layers)),
        n_splits,
    )
