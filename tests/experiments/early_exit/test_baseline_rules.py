"""The two baselines beside the paper's rule run through the engine, the sweep and the engine
benchmark exactly as the rule does: the confidence rule ``|P − 0.5| > τ`` (checked against the
rule written out by hand) and the static exit at every head."""

from __future__ import annotations

import numpy as np
import pytest

from ragrec.config import DIFFERENCE, ExitBenchmarkConfig
from ragrec.experiments.early_exit.engine_timing import benchmark_engine
from ragrec.experiments.early_exit.operating_point import ExitPoint
from ragrec.experiments.early_exit.sweep import threshold_sweep
from ragrec.metrics import auc
from ragrec.model.criteria import ConfidenceExit, ConfidenceSpec, StaticSpec
from ragrec.model.engine import EarlyExitEngine

from .. import HEADS

pytestmark = pytest.mark.usefixtures("one_thread")

ATOL = 1e-5
TAUS = (0.5, 0.2, 0.1, 0.05)  # 0.5: |P − 0.5| never exceeds it, i.e. full depth
CONFIDENCE = ConfidenceSpec(TAUS)


def confident_heads(per_head: np.ndarray, tau: float) -> np.ndarray:
    """The rule by hand: the first head with ``|P − 0.5| > τ``, else the last."""
    sure = np.abs(per_head - 0.5) > tau
    sure[:, -1] = True
    return sure.argmax(1)


@pytest.mark.parametrize("tau", TAUS)
def test_the_engine_runs_a_new_rule_and_rows_leave_the_batch_where_it_says(tiny_backbone, exit_data, tau):
    result = EarlyExitEngine(tiny_backbone, exit_data.heads, ConfidenceExit(tau)).predict(
        exit_data.prompts, batch_size=5
    )
    expected = confident_heads(exit_data.per_head, tau)
    np.testing.assert_array_equal(result.exit_layer, np.asarray(HEADS)[expected])
    np.testing.assert_allclose(
        result.p_yes, exit_data.per_head[np.arange(len(expected)), expected], atol=ATOL, rtol=0
    )
    assert result.layers_run == int(result.exit_layer.sum())


def test_the_sweep_replays_a_new_rule_under_its_own_label(exit_data):
    sweep = threshold_sweep(exit_data.labels, exit_data.per_head, HEADS, [CONFIDENCE], n_boot=20)
    assert sweep[["form", "first_head"]].drop_duplicates().values.tolist() == [["confidence", "confident"]]
    assert sweep["tau"].tolist() == list(TAUS)
    rows = np.arange(len(exit_data.labels))
    for row in sweep.itertuples():
        heads = confident_heads(exit_data.per_head, row.tau)
        assert row.mean_exit_layer == pytest.approx(np.asarray(HEADS)[heads].mean())
        assert row.auc == pytest.approx(auc(exit_data.labels, exit_data.per_head[rows, heads]), abs=1e-12)
    assert sweep["mean_exit_layer"].iloc[0] == HEADS[-1]  # τ = 0.5 is full depth
    assert sweep["mean_exit_layer"].nunique() > 2  # the grid really moves the exits, the first head's too
    assert sweep[f"exit_share_{HEADS[0]}"].iloc[-1] > 0


def test_the_static_family_sweeps_every_head_of_the_model_and_each_row_is_that_head(exit_data):
    sweep = threshold_sweep(exit_data.labels, exit_data.per_head, HEADS, [StaticSpec()], n_boot=20)
    assert sweep["tau"].tolist() == [float(layer) for layer in HEADS]
    assert sweep["mean_exit_layer"].tolist() == [float(layer) for layer in HEADS]
    for k, row in enumerate(sweep.itertuples()):
        assert row.auc == pytest.approx(auc(exit_data.labels, exit_data.per_head[:, k]), abs=1e-12)
        assert getattr(row, f"exit_share_{HEADS[k]}") == 1.0
    assert sweep["auc_drop"].iloc[-1] == 0.0  # the last head is full depth


def test_the_benchmark_times_both_baselines_against_the_plain_forward(tiny_backbone, exit_data):
    """The engine at a static point exits every row at that layer, at a confidence point where the
    hand-written rule says; both agree with the replay on the saved predictions."""
    static = StaticSpec(HEADS)
    points = [ExitPoint(CONFIDENCE, 0.05), ExitPoint(CONFIDENCE, 0.5), ExitPoint(static, float(HEADS[1]))]
    bench = benchmark_engine(
        tiny_backbone,
        exit_data.heads,
        exit_data.prompts,
        exit_data.labels,
        points,
        saved=exit_data.per_head,
        config=ExitBenchmarkConfig(
            criteria=(DIFFERENCE, CONFIDENCE, static), batch_size=5, repeats=1, warmup=0, n_boot=20
        ),
    )
    exits = bench.table[bench.table["method"] == "exit"]
    assert exits["form"].tolist() == ["confidence", "confidence", "static"]
    assert (exits["exit_agreement"] == 1.0).all() and (exits["max_abs_diff_vs_saved"] < ATOL).all()
    expected = confident_heads(exit_data.per_head, 0.05)
    np.testing.assert_array_equal(bench.results["confidence:0.05"].exit_layer, np.asarray(HEADS)[expected])
    np.testing.assert_allclose(bench.results["confidence:0.5"].p_yes, bench.full_p_yes, atol=ATOL, rtol=0)
    at_static = bench.results[f"static:{HEADS[1]}"]
    assert (at_static.exit_layer == HEADS[1]).all()
    np.testing.assert_allclose(at_static.p_yes, exit_data.per_head[:, 1], atol=ATOL, rtol=0)
