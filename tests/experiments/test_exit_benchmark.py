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
from ragrec.experiments.exit_benchmark import default_exit_config, run_exit_benchmark
from ragrec.experiments.exit_sweep import saved_per_head
from ragrec.metrics import auc
from ragrec.model.criteria import StabilityExit, simulate_exits

ATOL = 1e-5
REQUIRED = [
    "method", "tau", "auc", "auc_ci_low", "auc_ci_high", "logloss", "rps", "p50_ms", "p99_ms",
    "mean_exit_layer", "speedup_vs_full", "compute_bound_speedup",
]


def test_step_reproduces_the_saved_predictions(step):
    """Merged LoRA model: the engine at "never exit" equals the plain forward, which equals the
    recommender's saved last head (unmerged model, forward_all); the real engine's exits equal
    the simulated ones on the saved predictions."""
    checks = step.out["checks"].iloc[0]
    assert checks["n_check"] == 8
    assert checks["engine_never_vs_plain"] < ATOL
    assert checks["plain_vs_saved"] < ATOL
    table = step.out["early_exit"]
    exits = table[table["method"] == "exit"]
    assert (exits["exit_agreement"] == 1.0).all()
    assert (table["max_abs_diff_vs_saved"] < ATOL).all()


def test_every_auc_is_recomputable_from_the_saved_requests(step):
    table = pd.read_csv(step.directory / "early_exit.csv")
    per_request = pd.read_csv(step.directory / "early_exit_predictions.csv")
    assert len(per_request) == int(table["n"].sum())
    for row in table.itertuples():
        mine = per_request[(per_request["method"] == row.method) & (per_request["form"] == row.form)
                           & ((per_request["tau"] == row.tau) | (per_request["tau"].isna() & math.isnan(row.tau)))]
        assert len(mine) == row.n
        assert auc(mine["label"], mine["p_yes"]) == pytest.approx(row.auc, abs=1e-12)
        assert mine["exit_layer"].mean() == pytest.approx(row.mean_exit_layer)
    # The sweep's rows are recomputable from the recommender's saved predictions the same way.
    sweep = pd.read_csv(step.directory / "threshold_sweep.csv")
    saved = pd.read_csv(step.directory / "predictions_gcn.csv")
    row = sweep[sweep["operating_point"]].iloc[0]
    layers = step.profile.model.head_layers
    p, _ = simulate_exits(saved_per_head(saved, layers), StabilityExit(row["tau"], form=row["form"]), layers)
    assert auc(saved["label"], p) == pytest.approx(row["auc"], abs=1e-12)


def test_step_writes_tables_and_provenance(step):
    table = pd.read_csv(step.directory / "early_exit.csv")
    sweep = pd.read_csv(step.directory / "threshold_sweep.csv")
    assert set(REQUIRED) <= set(table.columns)
    assert set(table["method"]) == {"full", "exit", *E2E_METHODS}
    assert (table["method"] == "full").sum() == 1
    numbers = table[[c for c in REQUIRED if c not in ("method", "tau")]].to_numpy(dtype=float)
    assert np.isfinite(numbers).all()
    assert table.loc[table["method"] != "full", "tau"].notna().sum() >= 2  # exit rows + e2e_gcn_exit
    assert (table.loc[table["method"] == "exit", "role"] == "operating_point").sum() == 1
    assert (table.loc[table["method"] == "exit", "tau"] == 1e9).any()  # the extra point
    assert sweep["operating_point"].sum() == 1
    op = sweep[sweep["operating_point"]].iloc[0]
    assert op["auc"] >= op["auc_full"] - 0.005 - 1e-12
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
    profile = get_profile(name)
    config = default_exit_config(profile)
    assert config == dataclasses.replace(profile.exit, seed=profile.seed, context="gcn")
    # A notebook's seed override reaches the request draw; without a GCN context the first is used.
    assert default_exit_config(dataclasses.replace(profile, seed=7)).seed == 7
    assert default_exit_config(dataclasses.replace(profile, contexts=("none", "llm"))).context == "none"
