"""A rule the library has never seen, defined in this file, runs through the engine, the sweep
and the engine benchmark without a change to the library: the exit criteria are open."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from ragrec.config import DIFFERENCE, ExitBenchmarkConfig
from ragrec.experiments.early_exit.engine_timing import benchmark_engine
from ragrec.experiments.early_exit.operating_point import ExitPoint, choose_operating_point, engine_points
from ragrec.experiments.early_exit.sweep import threshold_sweep
from ragrec.metrics import auc
from ragrec.model.criteria import HeadState
from ragrec.model.engine import EarlyExitEngine

from .. import HEADS

pytestmark = pytest.mark.usefixtures("one_thread")

ATOL = 1e-5
TAUS = (0.5, 0.2, 0.1, 0.05)  # 0.5: |P − 0.5| never exceeds it, i.e. full depth


@dataclass(frozen=True)
class MarginExit:
    """Stop as soon as a head is sure of its answer, ``|P − 0.5| > τ``; the first head too."""

    tau: float

    def decide(self, head: HeadState) -> np.ndarray:
        return np.abs(head.p - 0.5) > self.tau


@dataclass(frozen=True)
class MarginFamily:
    """The margin rule over a τ grid, labelled ``margin`` in the tables."""

    taus: tuple[float, ...] = TAUS
    label: str = "margin"
    first_head: str = "confident"

    def criterion(self, tau: float) -> MarginExit:
        return MarginExit(float(tau))


def margin_exit_heads(per_head: np.ndarray, tau: float) -> np.ndarray:
    """The rule by hand: the first head with ``|P − 0.5| > τ``, else the last."""
    sure = np.abs(per_head - 0.5) > tau
    sure[:, -1] = True
    return sure.argmax(1)


@pytest.mark.parametrize("tau", TAUS)
def test_the_engine_runs_a_new_rule_and_rows_leave_the_batch_where_it_says(tiny_backbone, exit_data, tau):
    result = EarlyExitEngine(tiny_backbone, exit_data.heads, MarginExit(tau)).predict(
        exit_data.prompts, batch_size=5
    )
    expected = margin_exit_heads(exit_data.per_head, tau)
    np.testing.assert_array_equal(result.exit_layer, np.asarray(HEADS)[expected])
    np.testing.assert_allclose(
        result.p_yes, exit_data.per_head[np.arange(len(expected)), expected], atol=ATOL, rtol=0
    )
    assert result.layers_run == int(result.exit_layer.sum())


def test_the_sweep_replays_a_new_rule_under_its_own_label(exit_data):
    sweep = threshold_sweep(exit_data.labels, exit_data.per_head, HEADS, [MarginFamily()], n_boot=20)
    assert sweep[["form", "first_head"]].drop_duplicates().values.tolist() == [["margin", "confident"]]
    assert sweep["tau"].tolist() == list(TAUS)
    rows = np.arange(len(exit_data.labels))
    for row in sweep.itertuples():
        heads = margin_exit_heads(exit_data.per_head, row.tau)
        assert row.mean_exit_layer == pytest.approx(np.asarray(HEADS)[heads].mean())
        assert row.auc == pytest.approx(auc(exit_data.labels, exit_data.per_head[rows, heads]), abs=1e-12)
    assert sweep["mean_exit_layer"].iloc[0] == HEADS[-1]  # τ = 0.5 is full depth
    assert sweep["mean_exit_layer"].nunique() > 2  # the grid really moves the exits, the first head's too
    assert sweep[f"exit_share_{HEADS[0]}"].iloc[-1] > 0


def test_a_profile_names_a_new_rule_and_the_benchmark_times_it_against_the_plain_forward(
    tiny_backbone, exit_data
):
    config = ExitBenchmarkConfig(
        criteria=(DIFFERENCE, MarginFamily()), extra_points=((MarginFamily(), 0.05),)
    )
    sweep = threshold_sweep(exit_data.labels, exit_data.per_head, HEADS, config.criteria, n_boot=20)
    points = engine_points(sweep, config.criteria, 1.0, extra=config.extra_points)  # any AUC will do
    margin = [p for p in points if p.form == "margin"]  # its own best, the extra point (once each)
    best = choose_operating_point(sweep, 1.0, form="margin")
    assert sorted(p.tau for p in margin) == sorted({float(best["tau"]), 0.05})
    bench = benchmark_engine(
        tiny_backbone,
        exit_data.heads,
        exit_data.prompts,
        exit_data.labels,
        [*margin, ExitPoint(MarginFamily(), 0.5)],
        saved=exit_data.per_head,
        config=ExitBenchmarkConfig(batch_size=5, repeats=1, warmup=0, n_boot=20),
    )
    exits = bench.table[bench.table["method"] == "exit"]
    assert exits["form"].tolist() == ["margin"] * (len(margin) + 1)
    assert (exits["exit_agreement"] == 1.0).all() and (exits["max_abs_diff_vs_saved"] < ATOL).all()
    for point in margin:
        expected = margin_exit_heads(exit_data.per_head, point.tau)
        np.testing.assert_array_equal(
            bench.results[f"margin:{point.tau:g}"].exit_layer, np.asarray(HEADS)[expected]
        )
    np.testing.assert_allclose(bench.results["margin:0.5"].p_yes, bench.full_p_yes, atol=ATOL, rtol=0)
