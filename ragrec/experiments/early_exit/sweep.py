"""Threshold sweep: exit criteria replayed on saved per-head predictions over their τ grids.

On saved per-head test predictions (:class:`ragrec.result_files.Predictions`) each criterion
family the profile names (:class:`ragrec.model.criteria.CriterionFamily`; by default the paper's rule in its
difference form ``|P_h − P_{h−1}| < τ`` and its ratio form ``|Δ log-odds| < τ``, τ in nats) is
replayed with :func:`ragrec.model.criteria.simulate_exits` (the engine's own decision code)
over its τ grid. Per point: AUC with a 95% bootstrap interval, LogLoss, mean exit layer, share
of layer compute used (``mean exit layer / num_layers``) and the compute-bound speedup (its
inverse). Which point runs is chosen in :mod:`ragrec.experiments.early_exit.operating_point`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise

import numpy as np
import pandas as pd

from ragrec.errors import ConfigError, DataError
from ragrec.experiments.early_exit.bootstrap import percentile_interval, resample_counts, resampled_aucs
from ragrec.metrics import auc, auc_ci, logloss
from ragrec.model.criteria import CriterionFamily, bind_heads, check_families, simulate_exits

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


class _Sweep:
    """One sweep's checked inputs, and the accuracy of each distinct exit pattern (many small τ
    give the same exits; each pattern is bootstrapped once, on resamples drawn once for all)."""

    def __init__(self, labels, p, layers, num_layers, *, n_boot: int, seed: int, paired: bool):
        self.labels, self.p, self.layers, self.num_layers = labels, p, layers, num_layers
        self.paired = paired
        self.two_classes = len(np.unique(labels)) == 2
        # the rows metrics.auc_ci would draw: every pattern's interval on the same resamples
        self.counts = resample_counts(len(labels), n_boot, seed)
        self.full = self._accuracy_of(p[:, -1])
        self._full_aucs = resampled_aucs(labels, p[:, -1], self.counts) if self.two_classes else None
        self._accuracy: dict[bytes, dict[str, float]] = {}

    def _accuracy_of(self, p_final: np.ndarray) -> dict[str, float]:
        """AUC with its 95% interval and LogLoss (NaN when the labels hold one class)."""
        if not self.two_classes:
            return {"auc": math.nan, "auc_ci_low": math.nan, "auc_ci_high": math.nan, "logloss": math.nan}
        lo, hi = percentile_interval(resampled_aucs(self.labels, p_final, self.counts))
        return {
            "auc": auc(self.labels, p_final),
            "auc_ci_low": lo,
            "auc_ci_high": hi,
            "logloss": logloss(self.labels, p_final),
        }

    def _pattern_accuracy(self, p_final: np.ndarray) -> dict[str, float]:
        """AUC (with interval) and LogLoss of one exit pattern, and when ``paired`` the paired 95%
        interval of its AUC drop against full depth (the same resamples for both)."""
        out = self._accuracy_of(p_final)
        lo = hi = math.nan
        if self.paired and self.two_classes:
            lo, hi = percentile_interval(self._full_aucs - resampled_aucs(self.labels, p_final, self.counts))
        out["drop_ci_low"], out["drop_ci_high"] = lo, hi
        return out

    def row(self, family: CriterionFamily, tau: float) -> dict[str, object]:
        """The sweep row of ``family`` at ``tau`` (see :func:`threshold_sweep`)."""
        p_final, head = simulate_exits(self.p, family.criterion(tau), self.layers)
        key = p_final.tobytes()
        if key not in self._accuracy:
            self._accuracy[key] = self._pattern_accuracy(p_final)
        accuracy = self._accuracy[key]
        mean_layer = float(np.asarray(self.layers)[head].mean())
        row = {
            "form": family.label,
            "first_head": family.first_head,
            "tau": float(tau),
            **accuracy,
            "auc_full": self.full["auc"],
            "auc_drop": self.full["auc"] - accuracy["auc"],
            "mean_exit_layer": mean_layer,
            "layer_share": mean_layer / self.num_layers,
            "compute_bound_speedup": self.num_layers / mean_layer,
            "n": len(self.labels),
        }
        row.update({f"exit_share_{layer}": float((head == k).mean()) for k, layer in enumerate(self.layers)})
        return row


def threshold_sweep(
    labels: Sequence[int] | np.ndarray,
    per_head_p: np.ndarray,
    head_layers: Sequence[int],
    criteria: Sequence[CriterionFamily],
    *,
    num_layers: int | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    paired: bool = False,
) -> pd.DataFrame:
    """Replay every criterion family on saved per-head P(Yes) over its τ grid.

    Args:
        labels: ``[N]`` 0/1.
        per_head_p: ``[N, n_heads]`` P(Yes) of every head (full-depth predictions).
        head_layers: the heads' layers (1-based, increasing).
        criteria: the families to sweep, e.g. :attr:`ragrec.config.ExitBenchmarkConfig.criteria`
            (a :class:`~ragrec.model.criteria.BindsHeads` one is fitted to ``head_layers``).
        num_layers: decoder layers of the model (a full pass). (default: the last head's layer)
        n_boot, seed: the bootstrap; every row's interval uses the same resampled rows (same
            ``seed``), so rows are compared on equal footing.
        paired: also give ``auc_drop`` a paired-bootstrap 95% interval against full depth on the
            same samples (``drop_ci_low``, ``drop_ci_high``; NaN otherwise).

    Returns:
        One row per (family, τ), in the order given: :data:`SWEEP_COLUMNS` (``form`` is the
        family's label) plus ``exit_share_<L>`` (share of samples exiting at the head on layer
        L). ``auc_full`` is the last head's AUC (full depth), ``auc_drop = auc_full − auc``,
        ``layer_share = mean_exit_layer / num_layers``, ``compute_bound_speedup = num_layers /
        mean_exit_layer``.
    """
    check_families(criteria)
    labels, p, layers, num_layers = _check_predictions(labels, per_head_p, head_layers, num_layers)
    sweep = _Sweep(labels, p, layers, num_layers, n_boot=n_boot, seed=seed, paired=paired)
    families = bind_heads(criteria, layers)  # e.g. a static exit at every head of this model
    frame = pd.DataFrame([sweep.row(family, tau) for family in families for tau in family.taus])
    return frame[[*SWEEP_COLUMNS, *[c for c in frame.columns if c not in SWEEP_COLUMNS]]]
