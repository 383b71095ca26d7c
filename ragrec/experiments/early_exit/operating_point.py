"""The operating point: which exit criterion and τ the real engine runs, chosen on validation.

:func:`choose_operating_point` picks, from a threshold sweep
(:func:`ragrec.experiments.early_exit.sweep.threshold_sweep`), the point that uses the least layer
compute among those whose AUC is within ``tolerance`` (0.005 = 0.5 AUC points) of full depth.
:func:`engine_points` lists what the real engine runs (that point, each family's own best, the
configured extras) as :class:`ExitPoint` values, and :func:`choose_on_validation` does both on
the saved validation predictions and reports the choice on the test ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ragrec.config import ExitBenchmarkConfig
from ragrec.errors import ConfigError, DataError
from ragrec.experiments.early_exit.sweep import saved_per_head, threshold_sweep
from ragrec.model.criteria import CriterionFamily, ExitCriterion
from ragrec.model.heads import ExitHeads


@dataclass(frozen=True)
class ExitPoint:
    """One exit criterion at one τ, as run by the real engine.

    ``role``: why it is run — ``"operating_point"`` (the chosen point), ``"best_<label>"`` (the
    choice within one family) or ``"extra"`` (asked for in the configuration).
    """

    family: CriterionFamily
    tau: float
    role: str = "extra"

    @property
    def form(self) -> str:
        """The family's label: the ``form`` column of the point's rows."""
        return self.family.label

    def criterion(self) -> ExitCriterion:
        return self.family.criterion(self.tau)

    def describe(self) -> dict[str, object]:
        """The point as the provenance records it."""
        return {"form": self.form, "tau": self.tau, "first_head": self.family.first_head, "role": self.role}


def choose_operating_point(
    sweep: pd.DataFrame, tolerance: float = 0.005, *, form: str | None = None
) -> pd.Series:
    """The sweep row that uses the least layer compute (lowest ``mean_exit_layer``) among those
    whose AUC is within ``tolerance`` of full depth (``auc >= auc_full − tolerance``).

    Ties: higher AUC, then lower LogLoss, then the first row.

    Args:
        sweep: a :func:`~ragrec.experiments.early_exit.sweep.threshold_sweep` table (needs ``auc``,
            ``auc_full``, ``mean_exit_layer``, ``logloss``).
        tolerance: the AUC a point may lose against full depth. (default: ``0.005``)
        form: choose within the family of this label (its ``form`` column) only. (default:
            :obj:`None`, every family)

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
        which = "" if form is None else f" of form {form!r}"
        raise DataError(
            f"no sweep point{which} has an AUC within {tolerance} of full depth; include the τ that means "
            "full depth (τ = 0 for the stability rule) in the grid"
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
    criteria: Sequence[CriterionFamily],
    tolerance: float,
    *,
    extra: Sequence[tuple[CriterionFamily, float]] = (),
) -> list[ExitPoint]:
    """The points the real engine runs: the operating point, each family's own best point (if it
    differs) and ``extra`` ones; no duplicates, in that order. ``criteria`` are the families the
    sweep ran (its ``form`` column holds their labels)."""
    family = {f.label: f for f in criteria}
    best = choose_operating_point(sweep, tolerance)
    points = [ExitPoint(family[str(best["form"])], float(best["tau"]), "operating_point")]
    for one in criteria:
        row = choose_operating_point(sweep, tolerance, form=one.label)
        points.append(ExitPoint(one, float(row["tau"]), f"best_{one.label}"))
    points += [ExitPoint(f, float(t), "extra") for f, t in extra]
    seen = set()
    out = []
    for point in points:
        if (point.form, point.tau) not in seen:
            seen.add((point.form, point.tau))
            out.append(point)
    return out


def choose_on_validation(
    test: pd.DataFrame, valid: pd.DataFrame, heads: ExitHeads, config: ExitBenchmarkConfig
) -> tuple[pd.DataFrame, pd.Series, list[ExitPoint]]:
    """Validation chooses, test reports: the sweep on the saved validation predictions picks the
    operating point and the points the real engine runs (the operating point first); the sweep
    on the saved test predictions reports them, each with a paired interval of its AUC drop
    against full depth. Returns both sweeps (column ``split``, the chosen point flagged), the
    chosen point's *test* row and the engine points."""
    sweeps = {}
    for split, frame in (("valid", valid), ("test", test)):
        sweeps[split] = threshold_sweep(
            frame["label"].to_numpy(),
            saved_per_head(frame, heads.head_layers),
            heads.head_layers,
            config.criteria,
            num_layers=heads.num_layers,
            n_boot=config.n_boot,
            seed=config.seed,
            paired=split == "test",
        )
        sweeps[split].insert(0, "split", split)
    chosen = choose_operating_point(sweeps["valid"], config.auc_tolerance)
    points = engine_points(sweeps["valid"], config.criteria, config.auc_tolerance, extra=config.extra_points)
    sweep = pd.concat([sweeps["valid"], sweeps["test"]], ignore_index=True)
    sweep["operating_point"] = (sweep["form"] == chosen["form"]) & (sweep["tau"] == chosen["tau"])
    best = sweep[sweep["operating_point"] & (sweep["split"] == "test")].iloc[0].copy()
    best["chosen_on"] = "valid"
    return sweep, best, points
