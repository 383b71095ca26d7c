"""The recommender experiment runs end to end on the smoke profile and reloads instead of
retraining on a rerun."""

import dataclasses

import numpy as np
import pandas as pd
import pytest

from ragrec.config import PROFILES, get_profile
from ragrec.errors import ConfigError
from ragrec.experiments.recommender import mixed_contexts, run_recommender
from ragrec.metrics import auc


def small_smoke():
    p = get_profile("smoke")
    return dataclasses.replace(
        p,
        data=dataclasses.replace(p.data, train_cap=48, valid_cap=32, test_cap=48, synthetic_users=60, synthetic_items=80),
        train=dataclasses.replace(p.train, epochs=1),
        beta_ablation_steps=None,
    )


def test_recommender_writes_heads_predictions_and_provenance_and_reloads(tmp_path):
    profile = small_smoke()
    heads = run_recommender(profile, results_root=tmp_path, progress=False)
    out = tmp_path / "smoke" / "synthetic"
    table = pd.read_csv(out / "heads.csv")
    assert {"context", "variant", "beta", "head_layer", "auc", "auc_ci_low", "auc_ci_high", "logloss"} <= set(table.columns)
    assert set(table["context"]) == set(profile.contexts)
    assert set(table["variant"]) == {"main", "beta0"}
    assert (table["auc_ci_low"] <= table["auc"]).all() and (table["auc"] <= table["auc_ci_high"]).all()
    # Every AUC can be recomputed from the saved per-sample predictions.
    preds = pd.read_csv(out / "predictions_gcn.csv")
    row = table[(table["context"] == "gcn") & (table["variant"] == "main") & (table["head_layer"] == 6)].iloc[0]
    assert auc(preds["label"], preds["p_head_6"]) == pytest.approx(row["auc"])
    assert (out / "provenance.json").exists() and (out / "training.csv").exists()

    # A rerun loads the finished checkpoints: same numbers, no new training.
    again = run_recommender(profile, results_root=tmp_path, progress=False)
    np.testing.assert_allclose(again["auc"].to_numpy(), heads["auc"].to_numpy(), atol=1e-9)


def test_a_short_beta_ablation_is_paired_with_the_main_runs_snapshot(tmp_path):
    profile = dataclasses.replace(small_smoke(), beta_ablation_steps=2)
    table = run_recommender(profile, results_root=tmp_path, progress=False)
    out = tmp_path / "smoke" / "synthetic"
    steps = table.groupby("variant")["train_steps"].first()
    assert steps["beta0"] == steps["beta_ref"] == 2 and steps["main"] == 3
    assert set(table[table["variant"] == "beta_ref"]["beta"]) == {profile.train.beta}
    assert (out / "predictions_gcn_beta_ref.csv").exists()
    # Without a short ablation the pair is the finished models again, and no stale snapshot file stays.
    again = run_recommender(dataclasses.replace(profile, beta_ablation_steps=None), results_root=tmp_path, progress=False)
    assert set(again["variant"]) == {"main", "beta0"} and not (out / "predictions_gcn_beta_ref.csv").exists()


def test_mixed_contexts_are_balanced_and_seeded():
    ctx = mixed_contexts(10, ("none", "gcn"), seed=0)
    assert ctx.count("none") == 5 and ctx == mixed_contexts(10, ("none", "gcn"), seed=0)


def test_unknown_profile_is_a_clear_error():
    with pytest.raises(ConfigError, match="unknown profile 'laptop'.*smoke"):
        get_profile("laptop")
    assert set(PROFILES) == {"smoke", "cpu", "gpu"}
