"""The whole early-exit step on a trained tiny model: it reproduces the saved predictions, every
AUC is recomputable from what it writes, its tables and provenance, its settings per profile."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pandas as pd
import pytest

from ragrec.config import E2E_METHODS, get_profile
from ragrec.errors import DataError
from ragrec.experiments.early_exit.benchmark import default_exit_config, run_exit_benchmark
from ragrec.experiments.early_exit.operating_point import rule_on_validation
from ragrec.experiments.early_exit.sweep import saved_per_head, threshold_sweep
from ragrec.metrics import auc
from ragrec.model.criteria import NeverExit, bind_heads, simulate_exits

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
]  # speedup_vs_engine_full is NaN on the whole-request rows, which time no engine of their own


def test_step_reproduces_the_saved_predictions(step):
    """Merged LoRA model: the engine at "never exit" equals the plain forward, which equals the
    recommender's saved last head (unmerged model, forward_all); the real engine's exits equal
    the simulated ones on the saved predictions."""
    checks = step.out["checks"].iloc[0]
    assert checks["n_check"] == 8
    assert checks["engine_never_vs_plain"] < ATOL
    assert checks["plain_vs_saved"] < ATOL
    table = step.out["early_exit"]
    table = table[table["variant"] == "main"]
    exits = table[table["method"] == "exit"]
    assert (exits["exit_agreement"] == 1.0).all()
    assert (table["max_abs_diff_vs_saved"] < ATOL).all()


def _main(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["variant"] == "main"].reset_index(drop=True)


def test_every_auc_is_recomputable_from_the_saved_predictions(step):
    """The timed rows' AUCs are over every test sample: a full-depth row is its context's saved last
    head, an exit row the test sweep's at its (form, τ), which the saved predictions reproduce."""
    table = _main(pd.read_csv(step.directory / "early_exit.csv"))
    per_request = pd.read_csv(step.directory / "early_exit_predictions.csv")
    assert len(per_request) == int(pd.read_csv(step.directory / "early_exit.csv")["n"].sum())
    assert (table["auc_over"] == "every test sample").all()
    saved = pd.read_csv(step.directory / "predictions_gcn.csv")
    layers = step.profile.model.head_layers
    families = {f.label: f for f in bind_heads(default_exit_config(step.profile).criteria, layers)}
    for row in table[table["method"].isin(["full", "engine_full", "exit"])].itertuples():
        mine = per_request[
            (per_request["variant"] == "main")
            & (per_request["method"] == row.method)
            & (per_request["form"] == row.form)
            & ((per_request["tau"] == row.tau) | (per_request["tau"].isna() & math.isnan(row.tau)))
        ]
        assert len(mine) == row.n
        assert mine["exit_layer"].mean() == pytest.approx(row.mean_exit_layer)
        full_depth = row.form == "none"
        criterion = NeverExit() if full_depth else families[row.form].criterion(row.tau)
        p, _ = simulate_exits(saved_per_head(saved, layers), criterion, layers)
        expected = saved[f"p_head_{layers[-1]}"] if full_depth else p
        assert auc(saved["label"], expected) == pytest.approx(row.auc, abs=1e-12)


def test_the_operating_tau_is_chosen_on_validation_and_reported_on_test(step):
    sweep = _main(pd.read_csv(step.directory / "threshold_sweep.csv"))
    valid = sweep[sweep["split"] == "valid"].reset_index(drop=True)
    test = sweep[sweep["split"] == "test"]
    # redo the choice from the saved validation predictions alone
    saved = pd.read_csv(step.directory / "predictions_valid_gcn.csv")
    layers = step.profile.model.head_layers
    config = default_exit_config(step.profile)
    families = bind_heads(config.criteria, layers)
    per_head = saved_per_head(saved, layers)
    redone, choices = rule_on_validation(
        threshold_sweep(saved["label"], per_head, layers, families, n_boot=20, seed=config.seed),
        saved["label"].to_numpy(),
        per_head,
        layers,
        families,
        config,
    )
    again = redone.iloc[choices.operating_point]
    chosen = valid[valid["operating_point"]].iloc[0]
    assert (again["form"], again["tau"]) == (chosen["form"], chosen["tau"])
    np.testing.assert_allclose(redone["drop_upper"], valid["drop_upper"], rtol=0, atol=1e-12)
    reported = test[test["operating_point"]].iloc[0]
    assert (reported["form"], reported["tau"]) == (chosen["form"], chosen["tau"])
    assert reported["drop_ci_low"] <= reported["auc_drop"] <= reported["drop_ci_high"]
    op = _main(pd.read_csv(step.directory / "early_exit.csv"))
    assert op.loc[(op["role"] == "operating_point") & (op["method"] == "exit"), "chosen_on"].tolist() == [
        "valid"
    ]


def test_the_cf_variant_gets_its_own_operating_point_timed_against_its_plain_forward(step):
    table = pd.read_csv(step.directory / "early_exit.csv")
    cf = table[table["variant"] == "cf"].set_index("method")
    assert set(cf.index) == {"full", "engine_full", "exit"}
    assert cf.loc["exit", "role"] == "operating_point" and cf.loc["exit", "chosen_on"] == "valid"
    assert cf.loc["full", "max_abs_diff_vs_saved"] < ATOL  # the plain forward reads the same filled slots
    assert cf.loc["exit", "exit_agreement"] == 1.0


def test_step_writes_tables_and_provenance(step):
    table = _main(pd.read_csv(step.directory / "early_exit.csv"))
    sweep = _main(pd.read_csv(step.directory / "threshold_sweep.csv"))
    assert set(REQUIRED) <= set(table.columns)
    assert set(table["method"]) == {"full", "engine_full", "exit", *E2E_METHODS}
    assert (table["method"] == "full").sum() == 1
    numbers = table[[c for c in REQUIRED if c not in ("method", "tau")]].to_numpy(dtype=float)
    assert np.isfinite(numbers).all()
    assert table.loc[table["method"] != "full", "tau"].notna().sum() >= 2  # exit rows + e2e_gcn_exit
    assert (table.loc[table["method"] == "exit", "role"] == "operating_point").sum() == 1
    assert (table.loc[table["method"] == "exit", "tau"] == 1e9).any()  # the extra point
    assert sweep.groupby("split")["operating_point"].sum().to_dict() == {"test": 1, "valid": 1}
    op = sweep[sweep["operating_point"] & (sweep["split"] == "valid")].iloc[0]
    assert op["auc"] >= op["auc_full"] - 0.005 - 1e-12  # the rule, applied on validation
    provenance = json.loads((step.directory / "provenance.json").read_text())
    assert {"recommender", "early_exit"} <= set(provenance["steps"])
    outputs = set(provenance["steps"]["early_exit"]["outputs"])
    assert outputs == {"threshold_sweep.csv", "early_exit.csv", "early_exit_predictions.csv"}
    parameters = provenance["steps"]["early_exit"]["parameters"]
    assert parameters["operating_point"]["tau"] == op["tau"] and parameters["n_requests"] == 24
    assert set(step.out) == {"threshold_sweep", "early_exit", "predictions", "operating_point", "checks"}


def test_step_needs_the_recommender_outputs(small_profile, tmp_path):
    with pytest.raises(DataError, match="predictions_gcn.csv"):
        run_exit_benchmark(small_profile, results_root=tmp_path)


@pytest.mark.parametrize("name", ["smoke", "cpu", "gpu"])
def test_default_config_is_the_profiles_with_its_seed_and_context(name):
    profile = get_profile(name, resolve=False)
    config = default_exit_config(profile)
    assert config == dataclasses.replace(profile.exit, seed=profile.seed, context="gcn")
    # A notebook's seed override reaches the request draw; without a GCN context the first is used.
    assert default_exit_config(dataclasses.replace(profile, seed=7)).seed == 7
    assert default_exit_config(dataclasses.replace(profile, contexts=("none", "llm"))).context == "none"


def test_the_static_exit_is_a_first_class_row_of_the_sweep_and_of_the_engine_table(step):
    """Every head's static exit on both splits of the sweep, and the engine run for real at the
    static family's own choice: every timed request exits at that very layer."""
    sweep = _main(pd.read_csv(step.directory / "threshold_sweep.csv"))
    layers = [float(layer) for layer in step.profile.model.head_layers]
    for split in ("valid", "test"):
        static = sweep[(sweep["split"] == split) & (sweep["form"] == "static")]
        assert static["tau"].tolist() == layers and static["mean_exit_layer"].tolist() == layers
    table = _main(pd.read_csv(step.directory / "early_exit.csv"))
    static = table[(table["method"] == "exit") & (table["form"] == "static")]
    assert len(static) == 1 and static["exit_agreement"].iloc[0] == 1.0
    per_request = pd.read_csv(step.directory / "early_exit_predictions.csv")
    timed = per_request[(per_request["variant"] == "main") & (per_request["form"] == "static")]
    assert (timed["exit_layer"] == static["tau"].iloc[0]).all()
