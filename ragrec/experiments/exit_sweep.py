"""Threshold sweep: the exit rule replayed on saved per-head predictions over a grid of τ.

On saved per-head test predictions (:class:`ragrec.result_files.Predictions`) the exit rule is replayed with
:func:`ragrec.model.criteria.simulate_exits` (the engine's own decision code) over a grid of τ
for both forms (difference ``|P_h − P_{h−1}| < τ``; ratio ``|Δ log-odds| < τ``, τ in nats). Per
point: AUC with a 95% bootstrap interval, LogLoss, mean exit layer, share of layer compute used
(``mean exit layer / num_layers``) and the compute-bound speedup (its inverse). The **operating
point** (:func:`choose_operating_point`) is the point that uses the least layer compute among
those whose AUC is within ``tolerance`` (0.005 = 0.5 AUC points) of full depth.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import pandas as pd

from ragrec.config import FORMS, check_taus
from ragrec.errors import ConfigError, DataError
from ragrec.metrics import auc, auc_ci, logloss, paired_auc_difference
from ragrec.model.criteria import StabilityExit, simulate_exits


@dataclass(frozen=True)
class ExitPoint:
    """One setting of the paper's exit rule, as run by the real engine.

    ``role``: why it is run — ``"operating_point"`` (the chosen point), ``"best_<form>"`` (the
    rule's choice within one form) or ``"extra"`` (asked for in the configuration).
    """

    form: str
    tau: float
    first_head: str = "wait"
    role: str = "extra"

    def criterion(self) -> StabilityExit:
        return StabilityExit(float(self.tau), form=self.form, first_head=self.first_head)  # type: ignore[arg-type]


SWEEP_COLUMNS = (
    "form",
    "first_head",
    "tau",
    "auc",
    "auc_ci_low",
    "auc_ci_high",
    "logloss",
    "auc_full",
    "auc_drop",
    "mean_exit_layer",
    "layer_share",
    "compute_bound_speedup",
    "n",
)


# --------------------------------------------------------------------------------------------
# accuracy helpers


def accuracy_with_ci(labels: np.ndarray, p: np.ndarray, n_boot: int, seed: int) -> dict[str, float]:
    """AUC (+ bootstrap interval) and LogLoss; NaN where one class only (too few requests)."""
    labels = np.asarray(labels).astype(int)
    if len(np.unique(labels)) < 2:
        return {"auc": math.nan, "auc_ci_low": math.nan, "auc_ci_high": math.nan, "logloss": math.nan}
    lo, hi = auc_ci(labels, p, n_boot=n_boot, seed=seed)
    return {"auc": auc(labels, p), "auc_ci_low": lo, "auc_ci_high": hi, "logloss": logloss(labels, p)}


def saved_per_head(
    predictions: pd.DataFrame, head_layers: Sequence[int], sample_ids: Sequence | None = None
) -> np.ndarray:
    """``[N, n_heads]`` P(Yes) columns ``p_head_<L>`` of a saved predictions table.

    Args:
        predictions: a recommender predictions table (``sample_id``, ``p_head_<L>``, ...).
        head_layers: the model's head layers, in order.
        sample_ids: the rows to return, in this order (default: the table's order).

    Raises:
        DataError: a head or a sample is missing from the table.
    """
    columns = [f"p_head_{layer}" for layer in head_layers]
    missing = [c for c in columns if c not in predictions.columns]
    if missing:
        have = [c for c in predictions.columns if c.startswith("p_head_")]
        raise DataError(
            f"saved predictions have heads {have} but the model has heads at layers {list(head_layers)} "
            f"(missing {missing}); rerun the recommender step with this profile"
        )
    frame = predictions
    if sample_ids is not None:
        frame = predictions.set_index("sample_id")
        absent = pd.Index(sample_ids).difference(frame.index)
        if len(absent):
            raise DataError(
                f"{len(absent)} sample(s) are not in the saved predictions, e.g. {list(absent[:3])}"
            )
        frame = frame.loc[list(sample_ids)]
    return frame[columns].to_numpy(dtype=np.float64)


# --------------------------------------------------------------------------------------------
# the sweep


def _grids(taus: Sequence[float] | Mapping[str, Sequence[float]], forms: Sequence[str]) -> dict:
    """``{form: grid}`` from one grid for every form or from a mapping, checked."""
    grids = dict(taus) if isinstance(taus, Mapping) else {form: tuple(taus) for form in forms}
    if not isinstance(taus, Mapping):
        unknown = [f for f in forms if f not in FORMS]
        if unknown or not forms:
            raise ConfigError(f"unknown exit form(s) {unknown or forms!r}; choose from {FORMS}")
    check_taus(grids)
    return grids


def _check_predictions(
    labels, per_head_p, head_layers, num_layers
) -> tuple[np.ndarray, np.ndarray, tuple[int, ...], int]:
    """Labels ``[N]``, P(Yes) ``[N, n_heads]``, the head layers and the model's depth, checked."""
    labels = np.asarray(labels).astype(int).ravel()
    p = np.asarray(per_head_p, dtype=np.float64)
    layers = tuple(int(x) for x in head_layers)
    if p.ndim != 2 or p.shape[1] != len(layers) or len(layers) == 0:
        raise ConfigError(
            f"per_head_p has shape {p.shape}; expected [N, {len(layers)}] for heads at layers {list(layers)}"
        )
    if p.shape[0] != len(labels) or len(labels) == 0:
        raise DataError(
            f"{len(labels)} labels for {p.shape[0]} rows of per-head predictions (need the same, > 0)"
        )
    num_layers = layers[-1] if num_layers is None else int(num_layers)
    increasing = all(b > a for a, b in pairwise(layers))
    if not increasing or layers[0] < 1 or layers[-1] > num_layers:
        raise ConfigError(
            f"head layers {list(layers)} must be increasing and lie within the model's 1..{num_layers} layers"
        )
    return labels, p, layers, num_layers


def _pattern_accuracy(labels, p_full, p_final, n_boot: int, seed: int, paired: bool) -> dict[str, float]:
    """AUC (with interval) and LogLoss of one exit pattern, and when ``paired`` the paired 95%
    interval of its AUC drop against full depth."""
    out = accuracy_with_ci(labels, p_final, n_boot, seed)
    drop = paired_auc_difference(labels, p_full, p_final, n_boot=n_boot, seed=seed) if paired else None
    out["drop_ci_low"] = drop.ci_low if drop else math.nan
    out["drop_ci_high"] = drop.ci_high if drop else math.nan
    return out


def threshold_sweep(
    labels: Sequence[int] | np.ndarray,
    per_head_p: np.ndarray,
    head_layers: Sequence[int],
    taus: Sequence[float] | Mapping[str, Sequence[float]],
    forms: Sequence[str] = FORMS,
    *,
    num_layers: int | None = None,
    first_head: str = "wait",
    n_boot: int = 1000,
    seed: int = 0,
    paired: bool = False,
) -> pd.DataFrame:
    """Replay the exit rule on saved per-head P(Yes) over a τ grid, for each form.

    Args:
        labels: ``[N]`` 0/1.
        per_head_p: ``[N, n_heads]`` P(Yes) of every head (full-depth predictions).
        head_layers: the heads' layers (1-based, increasing).
        taus: one grid for every form, or ``{form: grid}`` (then ``forms`` is its keys).
        forms: ``"difference"`` and/or ``"ratio"``. (default: both)
        num_layers: decoder layers of the model (a full pass). (default: the last head's layer)
        first_head, n_boot, seed: see :class:`~ragrec.config.ExitBenchmarkConfig`. Every row's
            interval uses the same resampled rows (same ``seed``), so rows are compared on
            equal footing.
        paired: also give ``auc_drop`` a paired-bootstrap 95% interval against full depth on the
            same samples (``drop_ci_low``, ``drop_ci_high``; NaN otherwise).

    Returns:
        One row per (form, τ): :data:`SWEEP_COLUMNS` plus ``exit_share_<L>`` (share of samples
        exiting at the head on layer L). ``auc_full`` is the last head's AUC (full depth),
        ``auc_drop = auc_full − auc``, ``layer_share = mean_exit_layer / num_layers``,
        ``compute_bound_speedup = num_layers / mean_exit_layer``.
    """
    grids = _grids(taus, forms)
    labels, p, layers, num_layers = _check_predictions(labels, per_head_p, head_layers, num_layers)
    full = accuracy_with_ci(labels, p[:, -1], n_boot, seed)
    cache: dict[bytes, dict[str, float]] = {}
    rows = []
    for form, grid in grids.items():
        for tau in grid:
            criterion = StabilityExit(float(tau), form=form, first_head=first_head)  # type: ignore[arg-type]
            p_final, head = simulate_exits(p, criterion, layers)
            key = p_final.tobytes()
            if key not in cache:  # many small τ give the same exits; bootstrap each pattern once
                cache[key] = _pattern_accuracy(labels, p[:, -1], p_final, n_boot, seed, paired)
            mean_layer = float(np.asarray(layers)[head].mean())
            row = {
                "form": form,
                "first_head": first_head,
                "tau": float(tau),
                **cache[key],
                "auc_full": full["auc"],
                "auc_drop": full["auc"] - cache[key]["auc"],
                "mean_exit_layer": mean_layer,
                "layer_share": mean_layer / num_layers,
                "compute_bound_speedup": num_layers / mean_layer,
                "n": len(labels),
            }
            for k, layer in enumerate(layers):
                row[f"exit_share_{layer}"] = float((head == k).mean())
            rows.append(row)
    frame = pd.DataFrame(rows)
    return frame[[*SWEEP_COLUMNS, *[c for c in frame.columns if c not in SWEEP_COLUMNS]]]


# --------------------------------------------------------------------------------------------
# the operating point and the points the real engine runs


def choose_operating_point(
    sweep: pd.DataFrame, tolerance: float = 0.005, *, form: str | None = None
) -> pd.Series:
    """The sweep row that uses the least layer compute (lowest ``mean_exit_layer``) among those
    whose AUC is within ``tolerance`` of full depth (``auc >= auc_full − tolerance``).

    Ties: higher AUC, then lower LogLoss, then the first row.

    Args:
        sweep: a :func:`threshold_sweep` table (needs ``auc``, ``auc_full``, ``mean_exit_layer``,
            ``logloss``).
        tolerance: the AUC a point may lose against full depth. (default: ``0.005``)
        form: choose within this form only. (default: :obj:`None`, every form)

    Raises:
        DataError: no row qualifies (put τ = 0, i.e. full depth, in the grid).
    """
    needed = {"auc", "auc_full", "mean_exit_layer", "logloss"}
    if not needed <= set(sweep.columns):
        raise ConfigError(f"the sweep table needs columns {sorted(needed)}, got {list(sweep.columns)}")
    if tolerance < 0:
        raise ConfigError(f"tolerance must be >= 0, got {tolerance}")
    rows = sweep if form is None else sweep[sweep["form"] == form]
    ok = rows[rows["auc"] >= rows["auc_full"] - tolerance - 1e-12]
    if ok.empty:
        raise DataError(
            f"no sweep point{'' if form is None else f' of form {form!r}'} has an AUC within {tolerance} of full "
            "depth; include τ = 0 (full depth) in the grid"
        )
    order = np.lexsort(
        (
            np.arange(len(ok)),
            ok["logloss"].to_numpy(),
            -ok["auc"].to_numpy(),
            ok["mean_exit_layer"].to_numpy(),
        )
    )  # lexsort sorts by the last key first: compute, then AUC, then LogLoss, then position
    return ok.iloc[int(order[0])]


def engine_points(
    sweep: pd.DataFrame,
    tolerance: float,
    *,
    first_head: str = "wait",
    extra: Sequence[tuple[str, float]] = (),
) -> list[ExitPoint]:
    """The points the real engine runs: the operating point, each form's own best point (if it
    differs) and ``extra`` ones; no duplicates, in that order."""
    best = choose_operating_point(sweep, tolerance)
    points = [ExitPoint(str(best["form"]), float(best["tau"]), first_head, "operating_point")]
    for form in dict.fromkeys(sweep["form"]):
        row = choose_operating_point(sweep, tolerance, form=form)
        points.append(ExitPoint(str(form), float(row["tau"]), first_head, f"best_{form}"))
    points += [ExitPoint(f, float(t), first_head, "extra") for f, t in extra]
    seen = set()
    out = []
    for point in points:
        if (point.form, point.tau) not in seen:
            seen.add((point.form, point.tau))
            out.append(point)
    return out
