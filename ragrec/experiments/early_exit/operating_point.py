"""The operating point: which exit criterion and τ the real engine runs, chosen on validation.

:func:`rule_on_validation` applies the non-inferiority rule
(:func:`ragrec.experiments.early_exit.noninferiority.non_inferior_point`: the cheapest candidate
whose one-sided 95% paired-bootstrap upper bound of the AUC drop against full depth is within the
margin) to every row of a validation sweep, then within each family and within the paper's rule
(its :class:`~ragrec.model.criteria.StabilitySpec` families). :func:`engine_points` lists what
the real engine runs (the operating point, each family's choice, the configured extras) as
:class:`ExitPoint` values, and :func:`choose_on_validation` does both on the saved validation
predictions and reports the choices on the test ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ragrec.config import ExitBenchmarkConfig
from ragrec.experiments.early_exit.noninferiority import Candidate, non_inferior_point
from ragrec.experiments.early_exit.sweep import saved_per_head, threshold_sweep
from ragrec.model.criteria import (
    CriterionFamily,
    ExitCriterion,
    StabilitySpec,
    bind_heads,
    simulate_exits,
)
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


@dataclass(frozen=True)
class Choices:
    """The validation sweep's rows (positions) the rule chose: over every candidate, within each
    family (by label) and within the paper's rule (None when the profile sweeps none of it)."""

    operating_point: int
    family: dict[str, int]
    paper_rule: int | None


def rule_on_validation(
    sweep: pd.DataFrame,
    labels: np.ndarray,
    per_head: np.ndarray,
    head_layers: Sequence[int],
    families: Sequence[CriterionFamily],
    config: ExitBenchmarkConfig,
) -> tuple[pd.DataFrame, Choices]:
    """The non-inferiority rule on a validation sweep (rows in ``families`` order, each over its
    grid, as :func:`threshold_sweep` returns them) and the predictions it was computed on
    (``labels`` ``[N]``, ``per_head`` ``[N, n_heads]``). Returns the sweep with the rule's
    ``drop_upper`` (one-sided upper bound), ``non_inferior``, ``margin``, ``rule_level`` and
    ``rule_n_boot`` columns, and the choices. Every choice uses the same resamples (seeded from
    ``config``), so the choices agree."""
    candidates = [
        Candidate(simulate_exits(per_head, family.criterion(tau), head_layers)[0], layer)
        for family in families
        for tau, layer in zip(
            family.taus, sweep.loc[sweep["form"] == family.label, "mean_exit_layer"], strict=True
        )
    ]
    cache: dict = {}

    def choose(mask: np.ndarray):
        rows = np.flatnonzero(mask)
        answer = non_inferior_point(
            labels,
            per_head[:, -1],
            [candidates[i] for i in rows],
            margin=config.margin,
            n_boot=config.rule_n_boot,
            seed=config.seed,
            level=config.rule_level,
            cache=cache,
        )
        return int(rows[answer.chosen]), answer

    forms = sweep["form"].to_numpy()
    overall, answer = choose(np.ones(len(sweep), dtype=bool))
    # the rule's settings beside its answers, so the book can quote what each row was judged by
    sweep = sweep.assign(
        drop_upper=answer.upper,
        non_inferior=answer.qualifies,
        margin=config.margin,
        rule_level=config.rule_level,
        rule_n_boot=config.rule_n_boot,
    )
    paper = [f.label for f in families if isinstance(f, StabilitySpec)]
    return sweep, Choices(
        overall,
        {f.label: choose(forms == f.label)[0] for f in families},
        choose(np.isin(forms, paper))[0] if paper else None,
    )


def engine_points(
    sweep: pd.DataFrame,
    choices: Choices,
    criteria: Sequence[CriterionFamily],
    *,
    extra: Sequence[tuple[CriterionFamily, float]] = (),
) -> list[ExitPoint]:
    """The points the real engine runs: the operating point, each family's own choice (if it
    differs; a static family's is the engine exiting every row at one layer) and ``extra`` ones;
    no duplicates, in that order. ``criteria`` are the families the sweep ran (its ``form``
    column holds their labels)."""
    family = {f.label: f for f in criteria}

    def point(row: int, role: str) -> ExitPoint:
        return ExitPoint(family[str(sweep["form"].iloc[row])], float(sweep["tau"].iloc[row]), role)

    points = [point(choices.operating_point, "operating_point")]
    points += [point(row, f"best_{label}") for label, row in choices.family.items()]
    points += [ExitPoint(f, float(t), "extra") for f, t in extra]
    seen = set()
    out = []
    for one in points:
        if (one.form, one.tau) not in seen:
            seen.add((one.form, one.tau))
            out.append(one)
    return out


def _flag(sweep: pd.DataFrame, valid: pd.DataFrame, rows: Sequence[int]) -> np.ndarray:
    """Rows of ``sweep`` (both splits) at the (form, τ) of the validation sweep's ``rows``."""
    keys = {(valid["form"].iloc[r], float(valid["tau"].iloc[r])) for r in rows}
    return np.array([(f, float(t)) in keys for f, t in zip(sweep["form"], sweep["tau"], strict=True)])


def choose_on_validation(
    test: pd.DataFrame, valid: pd.DataFrame, heads: ExitHeads, config: ExitBenchmarkConfig
) -> tuple[pd.DataFrame, pd.Series, list[ExitPoint]]:
    """Validation chooses, test reports: the rule on the saved validation predictions picks the
    operating point and the points the real engine runs (the operating point first); the sweep
    on the saved test predictions reports them, each with a paired interval of its AUC drop
    against full depth. Returns both sweeps (column ``split``; the choices flagged
    ``operating_point``, ``family_choice`` and ``paper_rule_choice`` on both splits), the
    chosen point's *test* row and the engine points."""
    families = bind_heads(config.criteria, heads.head_layers)
    sweeps, inputs = {}, {}
    for split, frame in (("valid", valid), ("test", test)):
        inputs[split] = (frame["label"].to_numpy(), saved_per_head(frame, heads.head_layers))
        sweeps[split] = threshold_sweep(
            *inputs[split],
            heads.head_layers,
            families,
            num_layers=heads.num_layers,
            n_boot=config.n_boot,
            seed=config.seed,
            paired=split == "test",
        )
    sweeps["valid"], choices = rule_on_validation(
        sweeps["valid"], *inputs["valid"], heads.head_layers, families, config
    )
    points = engine_points(sweeps["valid"], choices, families, extra=config.extra_points)
    sweep = pd.concat([s.assign(split=k) for k, s in sweeps.items()], ignore_index=True)
    sweep.insert(0, "split", sweep.pop("split"))
    sweep["operating_point"] = _flag(sweep, sweeps["valid"], [choices.operating_point])
    sweep["family_choice"] = _flag(sweep, sweeps["valid"], list(choices.family.values()))
    paper = [] if choices.paper_rule is None else [choices.paper_rule]
    sweep["paper_rule_choice"] = _flag(sweep, sweeps["valid"], paper)
    best = sweep[sweep["operating_point"] & (sweep["split"] == "test")].iloc[0].copy()
    best["chosen_on"] = "valid"
    return sweep, best, points
