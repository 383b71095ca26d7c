"""The real engine against the plain forward: agreement with the sweep, the table, the timing
harness and bad input. Tiny random Llama, one torch thread. Timings are written, never asserted."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ragrec.config import ExitBenchmarkConfig
from ragrec.errors import ConfigError, DataError, ModelError
from ragrec.experiments.early_exit.engine_timing import benchmark_engine
from ragrec.experiments.early_exit.operating_point import ExitPoint
from ragrec.experiments.early_exit.plain_forward import plain_predict
from ragrec.experiments.early_exit.sweep import threshold_sweep
from ragrec.experiments.early_exit.timed_runs import (
    EARLY_EXIT_COLUMNS,
    TimedRun,
    interleaved,
    saved_agreement,
)
from ragrec.llm.backbone import tiny_backbone as make_tiny_backbone
from ragrec.metrics import auc
from ragrec.model.criteria import FORMS, NeverExit, StabilityExit, StabilitySpec, simulate_exits
from ragrec.model.engine import EarlyExitEngine
from ragrec.model.heads import ExitHeads

from .. import HEADS

pytestmark = pytest.mark.usefixtures("one_thread")

ATOL = 1e-5
REQUIRED = [
    "method",
    "tau",
    "auc",
    "auc_ci_low",
    "auc_ci_high",
    "logloss",
    "rps",
    "p50_ms",
    "p99_ms",
    "mean_exit_layer",
    "speedup_vs_full",
    "compute_bound_speedup",
]
POINTS = [
    ("difference", 0.0),
    ("difference", 0.02),
    ("difference", 0.05),
    ("difference", 0.2),
    ("ratio", 0.05),
    ("ratio", 0.2),
    ("ratio", 1.0),
]
FAMILIES = {form: StabilitySpec(form, tuple(t for f, t in POINTS if f == form)) for form in FORMS}
DIFFERENCE = FAMILIES["difference"]


# -- against references ------------------------------------------------------------------------


def test_sweep_and_real_engine_agree_row_by_row(tiny_backbone, exit_data):
    prompts, labels, per_head = exit_data.prompts, exit_data.labels, exit_data.per_head
    sweep = threshold_sweep(labels, per_head, HEADS, list(FAMILIES.values()), n_boot=20)
    bench = benchmark_engine(
        tiny_backbone,
        exit_data.heads,
        prompts,
        labels,
        [ExitPoint(FAMILIES[f], t) for f, t in POINTS],
        saved=per_head,
        config=ExitBenchmarkConfig(batch_size=5, repeats=1, warmup=0, n_boot=20),
    )
    exits = bench.table[bench.table["method"] == "exit"]
    assert (exits["exit_agreement"] == 1.0).all()
    assert (exits["max_abs_diff_vs_saved"] < ATOL).all()
    for (form, tau), row in zip(POINTS, sweep.itertuples(), strict=True):
        assert (row.form, row.tau) == (form, tau)
        real = bench.results[f"{form}:{tau:g}"]
        sim_p, sim_head = simulate_exits(per_head, StabilityExit(tau, form=form), HEADS)
        np.testing.assert_array_equal(np.asarray(HEADS)[sim_head], real.exit_layer)  # every row's exit layer
        np.testing.assert_allclose(real.p_yes, sim_p, atol=ATOL, rtol=0)  # and its P(Yes)
        assert row.mean_exit_layer == pytest.approx(real.exit_layer.mean())
        assert row.auc == pytest.approx(auc(labels, real.p_yes), abs=1e-9)
        bench_row = exits[(exits["form"] == form) & (exits["tau"] == tau)].iloc[0]
        assert bench_row["mean_exit_layer"] == pytest.approx(row.mean_exit_layer)
        assert bench_row["compute_bound_speedup"] == pytest.approx(row.compute_bound_speedup)
    # τ = 0 is full depth: the plain forward, the sweep's reference and its first row agree.
    full = bench.table[bench.table["method"] == "full"].iloc[0]
    assert full["max_abs_diff_vs_saved"] < ATOL
    assert sweep["auc"].iloc[0] == pytest.approx(sweep["auc_full"].iloc[0])
    np.testing.assert_allclose(bench.full_p_yes, per_head[:, -1], atol=ATOL, rtol=0)


def test_the_engine_never_exiting_is_timed_as_early_exits_own_reference(tiny_backbone, exit_data):
    bench = benchmark_engine(
        tiny_backbone,
        exit_data.heads,
        exit_data.prompts,
        exit_data.labels,
        [ExitPoint(DIFFERENCE, 0.05)],
        saved=exit_data.per_head,
        config=ExitBenchmarkConfig(batch_size=5, repeats=1, warmup=0, n_boot=20),
    )
    rows = bench.table.set_index("method")
    engine = rows.loc["engine_full"]
    assert engine["role"] == "engine_full_depth" and engine["mean_exit_layer"] == exit_data.heads.num_layers
    assert engine["speedup_vs_engine_full"] == 1.0 and engine["compute_bound_speedup"] == 1.0
    np.testing.assert_allclose(bench.results["engine_full"].p_yes, bench.full_p_yes, atol=ATOL, rtol=0)
    # every row's ratio to the engine never exiting is its rate over that row's rate
    np.testing.assert_allclose(rows["speedup_vs_engine_full"], rows["rps"] / engine["rps"], rtol=1e-12)


@pytest.mark.parametrize("side", ["left", "right"])
def test_plain_predict_batches_like_the_engine_and_matches_it(tiny_backbone, exit_data, side):
    never = EarlyExitEngine(tiny_backbone, exit_data.heads, NeverExit()).predict(
        exit_data.prompts, batch_size=7
    )
    np.testing.assert_allclose(
        plain_predict(tiny_backbone, exit_data.prompts, 7, side), never.p_yes, atol=ATOL, rtol=0
    )


# -- the benchmark table ----------------------------------------------------------------------


def test_benchmark_engine_writes_required_columns(tiny_backbone, exit_data):
    bench = benchmark_engine(
        tiny_backbone,
        exit_data.heads,
        exit_data.prompts,
        exit_data.labels,
        [ExitPoint(DIFFERENCE, 0.05, role="operating_point")],
        config=ExitBenchmarkConfig(batch_size=8, repeats=2, warmup=1, n_boot=20),
    )
    table = bench.table
    assert list(table.columns) == list(EARLY_EXIT_COLUMNS)
    assert table["method"].tolist() == ["full", "engine_full", "exit"]
    numbers = table[[c for c in REQUIRED if c not in ("method", "tau")]].to_numpy(dtype=float)
    assert np.isfinite(numbers).all()
    full, exit_row = table.iloc[0], table.iloc[2]
    assert full["speedup_vs_full"] == 1.0 and full["compute_bound_speedup"] == 1.0
    assert full["mean_exit_layer"] == exit_data.heads.num_layers and math.isnan(full["tau"])
    assert exit_row["tau"] == 0.05 and exit_row["role"] == "operating_point"
    assert exit_row["compute_bound_speedup"] >= 1.0
    assert (table["rps"] > 0).all() and (table["p50_ms"] <= table["p99_ms"]).all()
    np.testing.assert_allclose(table["speedup_vs_full"], table["rps"] / full["rps"])  # arithmetic, not timing
    np.testing.assert_allclose(
        table["speedup_efficiency"], table["speedup_vs_full"] / table["compute_bound_speedup"]
    )
    assert (table["n"] == len(exit_data.prompts)).all() and (table["repeats"] == 2).all()
    assert table["exit_agreement"].isna().all()  # nothing saved to compare with


def test_saved_agreement_compares_exits_and_probabilities():
    saved = np.array([[0.50, 0.51, 0.90], [0.20, 0.60, 0.61], [0.40, 0.70, 0.71]])
    criterion = StabilityExit(0.05)  # row 0 exits at the 2nd head, rows 1-2 at the 3rd
    real = TimedRun(np.array([0.51, 0.61, 0.75]), np.array([4, 6, 4]))
    got = saved_agreement(real, saved, criterion, (2, 4, 6))
    assert got["exit_agreement"] == pytest.approx(2 / 3)  # row 2 exited elsewhere
    assert got["max_abs_diff_vs_saved"] == pytest.approx(0.04)
    full = saved_agreement(TimedRun(np.array([0.9, 0.6, 0.71]), np.full(3, 6)), saved, None, (2, 4, 6))
    assert math.isnan(full["exit_agreement"]) and full["max_abs_diff_vs_saved"] == pytest.approx(0.01)


def test_interleaved_rotates_the_methods_and_warms_up_once():
    order = []
    calls = {name: (lambda b, name=name: order.append((name, b))) for name in ("a", "b", "c")}
    seconds = interleaved(calls, n_batches=2, repeats=3, warmup=1)
    assert order == [
        ("a", 0),
        ("a", 0),
        ("a", 1),
        ("b", 0),
        ("b", 0),
        ("b", 1),
        ("c", 0),
        ("c", 0),
        ("c", 1),  # warm-up + pass
        ("b", 0),
        ("b", 1),
        ("c", 0),
        ("c", 1),
        ("a", 0),
        ("a", 1),  # the order rotates
        ("c", 0),
        ("c", 1),
        ("a", 0),
        ("a", 1),
        ("b", 0),
        ("b", 1),
    ]
    assert {name: [len(r) for r in per] for name, per in seconds.items()} == {n: [2, 2, 2] for n in "abc"}


# -- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "error", "match"),
    [
        pytest.param({"prompts": [], "labels": []}, ConfigError, "no prompts", id="no-prompts"),
        pytest.param({"prompts": [[5, 6], []], "labels": [0, 1]}, ConfigError, "empty", id="empty-prompt"),
        pytest.param({"labels": [0, 1]}, DataError, "labels", id="labels-and-prompts-differ"),
        pytest.param({"points": []}, ConfigError, "ExitPoint", id="no-points"),
        pytest.param({"points": [ExitPoint(DIFFERENCE, -1.0)]}, ConfigError, "τ|tau", id="negative-tau"),
        pytest.param({"saved": np.zeros((3, 3))}, DataError, "shape", id="saved-of-other-prompts"),
        pytest.param({"heads": "of another model"}, ModelError, "another model", id="heads-of-another-model"),
    ],
)
def test_bad_engine_input_is_a_clear_error(tiny_backbone, exit_data, case, error, match):
    args = {
        "heads": exit_data.heads,
        "prompts": exit_data.prompts,
        "labels": exit_data.labels,
        "points": [ExitPoint(DIFFERENCE, 0.1)],
        "saved": None,
        **case,
    }
    heads = ExitHeads(make_tiny_backbone(seed=1), HEADS) if isinstance(args["heads"], str) else args["heads"]
    with pytest.raises(error, match=match):
        benchmark_engine(
            tiny_backbone,
            heads,
            args["prompts"],
            args["labels"],
            args["points"],
            saved=args["saved"],
            config=ExitBenchmarkConfig(repeats=1, warmup=0, n_boot=20),
        )


def test_plain_predict_refuses_prompts_longer_than_the_model(tiny_backbone):
    with pytest.raises(ConfigError, match="max_position_embeddings"):
        plain_predict(tiny_backbone, [[7] * 2000], 1)
    with pytest.raises(ConfigError, match="padding_side"):
        plain_predict(tiny_backbone, [[7, 8]], 1, "middle")
