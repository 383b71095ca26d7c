"""The early-exit benchmark: sweep ↔ engine agreement, the operating-point rule, the tables.

Tiny random Llama, synthetic data, one torch thread. Timings are written, never asserted.
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from ragrec.config import get_profile
from ragrec.errors import ConfigError, DataError, ModelError
from ragrec.experiments.end_to_end import E2E_METHODS, run_end_to_end
from ragrec.experiments.exit_benchmark import (
    ExitBenchmarkConfig,
    default_exit_config,
    run_exit_benchmark,
)
from ragrec.experiments.exit_sweep import (
    SWEEP_COLUMNS,
    ExitPoint,
    choose_operating_point,
    engine_points,
    saved_per_head,
    threshold_sweep,
)
from ragrec.experiments.exit_timing import (
    EARLY_EXIT_COLUMNS,
    benchmark_engine,
    plain_predict,
)
from ragrec.metrics import auc
from ragrec.model.criteria import NeverExit, StabilityExit, simulate_exits
from ragrec.model.engine import EarlyExitEngine
from ragrec.model.heads import ExitHeads
from ragrec.model.train import predict_heads

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning"),  # raised inside peft
]

ATOL = 1e-5
HEADS = (2, 4, 6)
REQUIRED = [
    "method", "tau", "auc", "auc_ci_low", "auc_ci_high", "logloss", "rps", "p50_ms", "p99_ms",
    "mean_exit_layer", "speedup_vs_full", "compute_bound_speedup",
]


def make_prompts(n: int, seed: int, lo: int = 3, hi: int = 40) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(lo, hi, (n,), generator=g)
    return [torch.randint(7, 700, (int(k),), generator=g).tolist() for k in lengths]


@pytest.fixture(scope="module")
def heads(tiny_backbone) -> ExitHeads:
    return ExitHeads(tiny_backbone, HEADS)


@pytest.fixture(scope="module")
def data(tiny_backbone, heads):
    """24 prompts, labels with both classes, and their saved-style per-head predictions."""
    prompts = make_prompts(24, seed=3)
    labels = np.random.default_rng(0).permutation(np.resize([0, 1], 24))
    per_head = predict_heads(tiny_backbone, heads, prompts, batch_size=8)  # what the recommender saves
    return prompts, labels, per_head


# -- threshold sweep ↔ the real engine -------------------------------------------------------

POINTS = [("difference", 0.0), ("difference", 0.02), ("difference", 0.05), ("difference", 0.2),
          ("ratio", 0.05), ("ratio", 0.2), ("ratio", 1.0)]


def test_sweep_and_real_engine_agree_row_by_row(tiny_backbone, heads, data):
    prompts, labels, per_head = data
    taus = {"difference": [t for f, t in POINTS if f == "difference"], "ratio": [t for f, t in POINTS if f == "ratio"]}
    sweep = threshold_sweep(labels, per_head, HEADS, taus, n_boot=20)
    assert len(set(sweep["mean_exit_layer"].round(6))) >= 3  # the grid really moves the exits
    bench = benchmark_engine(
        tiny_backbone, heads, prompts, labels, [ExitPoint(f, t) for f, t in POINTS],
        batch_size=5, repeats=1, warmup=0, saved=per_head, n_boot=20,
    )
    exits = bench.table[bench.table["method"] == "exit"]
    assert (exits["exit_agreement"] == 1.0).all()
    assert (exits["max_abs_diff_vs_saved"] < ATOL).all()
    for (form, tau), row in zip(POINTS, sweep.itertuples()):
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


def test_sweep_table_contents(data):
    _, labels, per_head = data
    sweep = threshold_sweep(labels, per_head, HEADS, [0.0, 0.05, 1e9], num_layers=8, n_boot=20)
    assert list(sweep.columns[: len(SWEEP_COLUMNS)]) == list(SWEEP_COLUMNS)
    assert set(sweep["form"]) == {"difference", "ratio"} and len(sweep) == 6
    shares = sweep[[f"exit_share_{L}" for L in HEADS]].to_numpy()
    np.testing.assert_allclose(shares.sum(1), 1.0)
    np.testing.assert_allclose(sweep["layer_share"], sweep["mean_exit_layer"] / 8)
    np.testing.assert_allclose(sweep["compute_bound_speedup"], 8 / sweep["mean_exit_layer"])
    huge = sweep[sweep["tau"] == 1e9]
    assert (huge["mean_exit_layer"] == HEADS[1]).all()  # second head: the first waits
    assert (sweep["auc_ci_low"] <= sweep["auc"]).all() and (sweep["auc"] <= sweep["auc_ci_high"]).all()


def test_plain_predict_batches_like_the_engine_and_matches_it(tiny_backbone, heads, data):
    prompts, _, _ = data
    never = EarlyExitEngine(tiny_backbone, heads, NeverExit()).predict(prompts, batch_size=7)
    for side in ("left", "right"):
        np.testing.assert_allclose(plain_predict(tiny_backbone, prompts, 7, side), never.p_yes, atol=ATOL, rtol=0)


# -- the operating-point rule -----------------------------------------------------------------


def test_operating_point_rule_on_a_hand_made_table():
    full = 0.700
    table = pd.DataFrame([
        # form, tau, auc, logloss, mean_exit_layer
        ("difference", 0.00, 0.700, 0.60, 30.0),   # full depth
        ("difference", 0.01, 0.6990, 0.61, 22.0),
        ("difference", 0.05, 0.6951, 0.62, 15.0),  # within 0.005 (drop 0.0049), least compute → chosen
        ("difference", 0.10, 0.6940, 0.63, 10.0),  # drop 0.006: outside
        ("ratio", 0.00, 0.700, 0.60, 30.0),
        ("ratio", 0.20, 0.6980, 0.60, 15.0),       # as little compute, higher AUC → chosen overall
        ("ratio", 0.50, 0.6900, 0.65, 8.0),        # outside
    ], columns=["form", "tau", "auc", "logloss", "mean_exit_layer"])
    table["auc_full"] = full
    best = choose_operating_point(table, 0.005)
    # Two rows share the least compute (15 layers); the tie goes to the higher AUC.
    assert (best["form"], best["tau"]) == ("ratio", 0.20)
    assert (lambda r: (r["form"], r["tau"]))(choose_operating_point(table, 0.005, form="difference")) == ("difference", 0.05)
    # A tighter tolerance moves the point back toward full depth; zero keeps full depth.
    assert choose_operating_point(table, 0.0015, form="difference")["tau"] == 0.01
    assert choose_operating_point(table, 0.0)["mean_exit_layer"] == 30.0
    # A looser one allows the most aggressive point.
    assert choose_operating_point(table, 0.011)["tau"] == 0.50
    points = engine_points(table, 0.005)
    assert [(p.form, p.tau, p.role) for p in points] == [
        ("ratio", 0.2, "operating_point"), ("difference", 0.05, "best_difference"),
    ]
    with pytest.raises(DataError, match="τ = 0"):
        choose_operating_point(table[table["tau"] > 0.2], 0.005)
    with pytest.raises(ConfigError):
        choose_operating_point(table.drop(columns="auc_full"))


# -- the benchmark table ----------------------------------------------------------------------


def test_benchmark_engine_writes_required_columns(tiny_backbone, heads, data):
    prompts, labels, _ = data
    bench = benchmark_engine(tiny_backbone, heads, prompts, labels, [ExitPoint("difference", 0.05, role="operating_point")],
                             batch_size=8, repeats=2, warmup=1, n_boot=20)
    table = bench.table
    assert list(table.columns) == list(EARLY_EXIT_COLUMNS)
    assert table["method"].tolist() == ["full", "exit"]
    numbers = table[[c for c in REQUIRED if c not in ("method", "tau")]].to_numpy(dtype=float)
    assert np.isfinite(numbers).all()
    full, exit_row = table.iloc[0], table.iloc[1]
    assert full["speedup_vs_full"] == 1.0 and full["compute_bound_speedup"] == 1.0
    assert full["mean_exit_layer"] == heads.num_layers and math.isnan(full["tau"])
    assert exit_row["tau"] == 0.05 and exit_row["role"] == "operating_point"
    assert exit_row["compute_bound_speedup"] >= 1.0
    assert (table["rps"] > 0).all() and (table["p50_ms"] <= table["p99_ms"]).all()
    np.testing.assert_allclose(table["speedup_vs_full"], table["rps"] / full["rps"])  # arithmetic, not timing
    np.testing.assert_allclose(table["speedup_efficiency"], table["speedup_vs_full"] / table["compute_bound_speedup"])
    assert (table["n"] == len(prompts)).all() and (table["repeats"] == 2).all()


# -- bad input --------------------------------------------------------------------------------


def test_bad_input(tiny_backbone, heads, data):
    prompts, labels, per_head = data
    with pytest.raises(ConfigError, match="τ"):
        threshold_sweep(labels, per_head, HEADS, [0.1, -0.01])
    with pytest.raises(ConfigError, match="form"):
        threshold_sweep(labels, per_head, HEADS, [0.1], forms=("difference", "bogus"))
    with pytest.raises(ConfigError, match="form"):
        threshold_sweep(labels, per_head, HEADS, {"bogus": [0.1]})
    with pytest.raises(ConfigError, match="empty"):
        threshold_sweep(labels, per_head, HEADS, {"difference": []})
    with pytest.raises(ConfigError, match="within the model"):  # heads not in the model
        threshold_sweep(labels, per_head, (2, 4, 9), [0.1], num_layers=6)
    with pytest.raises(ConfigError, match="expected"):
        threshold_sweep(labels, per_head, (2, 4), [0.1])
    with pytest.raises(DataError):
        threshold_sweep(labels[:-1], per_head, HEADS, [0.1])
    with pytest.raises(ConfigError, match="no prompts"):
        benchmark_engine(tiny_backbone, heads, [], [], [ExitPoint("difference", 0.1)])
    with pytest.raises(ConfigError, match="empty"):
        benchmark_engine(tiny_backbone, heads, [[5, 6], []], [0, 1], [ExitPoint("difference", 0.1)])
    with pytest.raises(ConfigError, match="max_position_embeddings"):
        plain_predict(tiny_backbone, [[7] * 2000], 1)
    with pytest.raises(ConfigError, match="τ|tau"):
        benchmark_engine(tiny_backbone, heads, prompts, labels, [ExitPoint("difference", -1.0)])
    with pytest.raises(ConfigError, match="form"):
        ExitPoint("bogus", 0.1).criterion()
    other = ExitHeads(__import__("ragrec.llm.backbone", fromlist=["x"]).tiny_backbone(seed=1), HEADS)
    with pytest.raises(ModelError):  # heads built on another model
        benchmark_engine(tiny_backbone, other, prompts, labels, [ExitPoint("difference", 0.1)])
    with pytest.raises(ConfigError, match="outside"):  # heads that do not exist in the model
        ExitHeads(tiny_backbone, (2, 4, 8))
    frame = pd.DataFrame({"sample_id": [0, 1], "label": [0, 1], "p_head_2": [0.1, 0.2], "p_head_4": [0.3, 0.4]})
    with pytest.raises(DataError, match="p_head_6"):
        saved_per_head(frame, HEADS)
    with pytest.raises(DataError, match="not in the saved"):
        saved_per_head(frame, (2, 4), [0, 7])
    with pytest.raises(ConfigError, match="unknown end-to-end method"):
        run_end_to_end(None, {}, None, tiny_backbone, heads, ExitPoint("difference", 0.1), k=2, methods=("e2e_bogus",))
    with pytest.raises(ConfigError, match="unknown end-to-end method"):
        ExitBenchmarkConfig(e2e_methods=("e2e_gcn_full", "nope"))
    with pytest.raises(ConfigError, match="τ"):
        ExitBenchmarkConfig(taus={"difference": (0.0, -0.1)})
    with pytest.raises(ConfigError):
        ExitBenchmarkConfig(first_head="confident")  # not defined for the ratio form
    with pytest.raises(ConfigError):
        ExitBenchmarkConfig(repeats=0)


def test_default_configs_validate():
    for name in ("smoke", "cpu", "gpu"):
        config = default_exit_config(get_profile(name))
        assert config.taus["difference"][0] == 0.0 and config.taus["ratio"][0] == 0.0


# -- the whole step on a trained tiny model ----------------------------------------------------


def small_profile():
    p = get_profile("smoke")
    return dataclasses.replace(
        p,
        data=dataclasses.replace(p.data, train_cap=48, valid_cap=16, test_cap=40, synthetic_users=60, synthetic_items=80),
        train=dataclasses.replace(p.train, epochs=1),
        lightgcn=dataclasses.replace(p.lightgcn, max_epochs=5),
        contexts=("none", "gcn", "llm"),
    )


@pytest.fixture(scope="module")
def step(tmp_path_factory):
    """The recommender step on a small smoke profile, then the early-exit step on its outputs."""
    from ragrec.experiments.recommender import run_recommender

    root = tmp_path_factory.mktemp("results")
    profile = small_profile()
    run_recommender(profile, results_root=root, beta_ablation=False, progress=False)
    config = dataclasses.replace(
        default_exit_config(profile), n_boot=20, n_requests=24, batch_size=8, repeats=1, warmup=1,
        check_requests=8, e2e_requests=12, e2e_batch_size=4, e2e_repeats=1,
        extra_points=(("difference", 1e9),),
    )
    out = run_exit_benchmark(profile, results_root=root, config=config)
    return profile, root, out


def test_step_writes_tables_and_provenance(step):
    profile, root, out = step
    directory = root / profile.name / profile.data.dataset
    table = pd.read_csv(directory / "early_exit.csv")
    sweep = pd.read_csv(directory / "threshold_sweep.csv")
    assert set(REQUIRED) <= set(table.columns)
    assert set(table["method"]) == {"full", "exit", *E2E_METHODS}
    assert (table["method"] == "full").sum() == 1
    numbers = table[[c for c in REQUIRED if c not in ("method", "tau")]].to_numpy(dtype=float)
    assert np.isfinite(numbers).all()
    assert table.loc[table["method"] != "full", "tau"].notna().sum() >= 2  # exit rows + e2e_gcn_exit
    assert (table.loc[table["method"] == "exit", "role"] == "operating_point").sum() == 1
    assert (table.loc[table["method"] == "exit", "tau"] == 1e9).any()  # the extra point
    e2e = table[table["method"].str.startswith("e2e_")].set_index("method")
    assert list(e2e.index) == list(E2E_METHODS)
    shares = e2e[["retrieval_share", "prompt_share", "model_share"]].to_numpy()
    assert np.isfinite(shares).all()
    np.testing.assert_allclose(shares.sum(1), 1.0)
    assert (e2e["n"] == 12).all() and (e2e["reference"] == "e2e_llm_full").all()
    assert sweep["operating_point"].sum() == 1
    op = sweep[sweep["operating_point"]].iloc[0]
    assert op["auc"] >= op["auc_full"] - 0.005 - 1e-12
    assert e2e.loc["e2e_gcn_exit", "tau"] == op["tau"]
    provenance = json.loads((directory / "provenance.json").read_text())
    assert {"recommender", "early_exit"} <= set(provenance["steps"])
    assert set(provenance["steps"]["early_exit"]["outputs"]) == {"threshold_sweep.csv", "early_exit.csv", "early_exit_predictions.csv"}
    assert set(out) == {"threshold_sweep", "early_exit", "predictions", "operating_point", "checks"}


def test_every_auc_is_recomputable_from_the_saved_requests(step):
    profile, root, _ = step
    directory = root / profile.name / profile.data.dataset
    table = pd.read_csv(directory / "early_exit.csv")
    per_request = pd.read_csv(directory / "early_exit_predictions.csv")
    assert len(per_request) == int(table["n"].sum())
    for row in table.itertuples():
        mine = per_request[(per_request["method"] == row.method) & (per_request["form"] == row.form)
                           & ((per_request["tau"] == row.tau) | (per_request["tau"].isna() & math.isnan(row.tau)))]
        assert len(mine) == row.n
        assert auc(mine["label"], mine["p_yes"]) == pytest.approx(row.auc, abs=1e-12)
        assert mine["exit_layer"].mean() == pytest.approx(row.mean_exit_layer)
    # The sweep's rows are recomputable from the recommender's saved predictions the same way.
    sweep = pd.read_csv(directory / "threshold_sweep.csv")
    saved = pd.read_csv(directory / "predictions_gcn.csv")
    row = sweep[sweep["operating_point"]].iloc[0]
    p, head = simulate_exits(saved_per_head(saved, profile.model.head_layers), StabilityExit(row["tau"], form=row["form"]),
                             profile.model.head_layers)
    assert auc(saved["label"], p) == pytest.approx(row["auc"], abs=1e-12)


def test_step_reproduces_the_saved_predictions(step):
    """Merged LoRA model: the engine at "never exit" equals the plain forward, which equals the
    recommender's saved last head (unmerged model, forward_all); the real engine's exits equal
    the simulated ones; the end-to-end requests reproduce the saved GCN/LLM predictions."""
    _, _, out = step
    checks = out["checks"].iloc[0]
    assert checks["n_check"] == 8
    assert checks["engine_never_vs_plain"] < ATOL
    assert checks["plain_vs_saved"] < ATOL
    table = out["early_exit"]
    exits = table[table["method"].isin(["exit", "e2e_gcn_exit"])]
    assert (exits["exit_agreement"] == 1.0).all()
    assert (table["max_abs_diff_vs_saved"] < ATOL).all()


def test_step_needs_the_recommender_outputs(tmp_path):
    with pytest.raises(DataError, match="predictions_gcn.csv"):
        run_exit_benchmark(small_profile(), results_root=tmp_path)
