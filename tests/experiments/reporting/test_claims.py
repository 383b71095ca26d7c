"""Claims check: verdict rules, each claim from hand-made result tables, honest 'not run'."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ragrec.errors import DataError
from ragrec.experiments.reporting.claims import (
    CHECKS,
    ClaimSettings,
    check_claims,
    early_exit_operating_point,
    interval_verdict,
    point_verdict,
)
from ragrec.result_files import predictions, study_variant

FAST = ClaimSettings(n_boot=200)


def test_interval_verdicts_distinguish_at_least_from_better_claims():
    assert interval_verdict(0.01, 0.05, at_least=False) == "supported"
    assert interval_verdict(-0.05, -0.01, at_least=True) == "contradicted"
    assert interval_verdict(-0.01, 0.02, at_least=True) == "consistent"
    assert interval_verdict(-0.01, 0.02, at_least=False) == "inconclusive"
    assert point_verdict(3.0, 1.0) == "supported (no interval)"
    assert point_verdict(0.9, 1.0) == "contradicted (no interval)"


def test_every_claim_is_not_run_without_results(tmp_path):
    table = check_claims(tmp_path, FAST)
    assert (
        len(table) == len(CHECKS) and (table["verdict"] == "not run").all() and table["estimate"].isna().all()
    )


def _predictions(path, labels, p):
    pd.DataFrame(
        {"sample_id": np.arange(len(labels)), "label": labels, "p_head_2": 0.5, "p_head_6": p}
    ).to_csv(path, index=False)


def test_claims_are_checked_from_the_results_they_need(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)
    _predictions(tmp_path / "predictions_gcn.csv", labels, labels * 0.5 + rng.random(400) * 0.5)
    _predictions(tmp_path / "predictions_llm.csv", labels, rng.random(400))
    for seed in (0, 1):
        for beta in (0.1, 0):
            name = predictions("gcn", study_variant(beta, seed))
            _predictions(tmp_path / name, labels, labels * 0.5 + rng.random(400) * 0.5)
    pd.DataFrame(
        {
            "retriever": ["gcn", "gcn", "llm"],
            "layer_combination": ["mean", "last", "n/a"],
            "k": 3,
            "p50_ms": [0.1, 0.1, 50.0],
            "neighbour_hit_rate": [0.30, 0.25, 0.2],
        }
    ).to_csv(tmp_path / "retrieval.csv", index=False)
    pd.DataFrame(
        {
            "method": ["full", "exit", "exit", "e2e_llm_full", "e2e_gcn_exit"],
            "form": ["none", "difference", "ratio", "none", "difference"],
            "tau": [np.nan, 0.01, 0.2, np.nan, 0.01],
            "role": ["full_depth", "operating_point", "best_ratio", "full_depth", "operating_point"],
            "auc": [0.750, 0.748, 0.70, 0.75, 0.748],
            "rps": [4.0, 6.0, 9.0, 2.0, 5.0],
            "speedup_vs_full": [1.0, 1.5, 2.25, 1.0, 2.5],
        }
    ).to_csv(tmp_path / "early_exit.csv", index=False)
    table = check_claims(tmp_path, ClaimSettings(k=3, n_boot=200)).set_index("claim_id")
    assert table.loc["faster_retrieval", "estimate"] == pytest.approx(500.0)
    assert table.loc["faster_retrieval", "verdict"] == "supported (no interval)"
    assert table.loc["gcn_auc_vs_llm", "verdict"] == "supported" and table.loc["gcn_auc_vs_llm", "ci_low"] > 0
    assert table.loc["early_exit_rps", "estimate"] == 1.5, "the benchmark's operating point"
    assert table.loc["early_exit_rps", "verdict"] == "supported (no interval)"
    assert table.loc["pipeline_rps", "estimate"] == pytest.approx(2.5)
    assert table.loc["lr_decay_helps", "verdict"] in {"inconclusive", "supported", "contradicted"}
    assert "2 seeds per arm" in table.loc["lr_decay_helps", "evidence"]
    assert table.loc["layer_mean_beats_last", "estimate"] == pytest.approx(0.05)


def test_early_exit_operating_point_needs_a_full_depth_row():
    with pytest.raises(DataError, match="method=full"):
        early_exit_operating_point(pd.DataFrame({"method": ["exit"], "auc": [0.7], "rps": [5.0]}))


def test_the_claim_never_picks_an_operating_point_by_its_test_auc(tmp_path):
    # No row named by the benchmark (which chooses on validation): the fastest row that keeps the
    # test AUC must not stand in for it, and the claim is not judged.
    frame = pd.DataFrame(
        {
            "method": ["full", "exit", "exit"],
            "tau": [np.nan, 0.01, 0.3],
            "auc": [0.75, 0.748, 0.70],
            "rps": [4.0, 5.0, 9.0],
            "speedup_vs_full": [1.0, 1.25, 2.25],
        }
    )
    assert early_exit_operating_point(frame) is None
    frame.to_csv(tmp_path / "early_exit.csv", index=False)
    claim = check_claims(tmp_path, FAST).set_index("claim_id").loc["early_exit_rps"]
    assert claim["verdict"] == "not run" and "validation" in claim["evidence"]


def test_a_faster_operating_point_that_loses_auc_on_the_timed_requests_contradicts(tmp_path):
    pd.DataFrame(
        {
            "method": ["full", "exit"],
            "form": ["none", "difference"],
            "tau": [np.nan, 0.05],
            "role": ["full_depth", "operating_point"],
            "auc": [0.75, 0.70],
            "rps": [4.0, 8.0],
            "speedup_vs_full": [1.0, 2.0],
        }
    ).to_csv(tmp_path / "early_exit.csv", index=False)
    row = check_claims(tmp_path, FAST).set_index("claim_id").loc["early_exit_rps"]
    assert row["estimate"] == 2.0 and row["verdict"].startswith("contradicted")


def test_the_speed_up_is_early_exits_own_when_the_engine_never_exiting_was_timed(tmp_path):
    # The engine's own layer loop runs 1.6× the plain forward here; early exit itself adds 1.25×.
    frame = pd.DataFrame(
        {
            "method": ["full", "engine_full", "exit"],
            "form": ["none", "none", "difference"],
            "tau": [np.nan, np.nan, 0.05],
            "role": ["full_depth", "engine_full_depth", "operating_point"],
            "auc": [0.75, 0.75, 0.75],
            "rps": [4.0, 6.4, 8.0],
            "speedup_vs_full": [1.0, 1.6, 2.0],
            "speedup_vs_engine_full": [0.625, 1.0, 1.25],
        }
    )
    frame.to_csv(tmp_path / "early_exit.csv", index=False)
    row = check_claims(tmp_path, FAST).set_index("claim_id").loc["early_exit_rps"]
    assert row["estimate"] == 1.25 and "2.00× against the plain Hugging Face forward" in row["evidence"]
    frame.drop(columns="speedup_vs_engine_full").to_csv(tmp_path / "early_exit.csv", index=False)
    row = check_claims(tmp_path, FAST).set_index("claim_id").loc["early_exit_rps"]
    assert row["estimate"] == 2.0 and "did not time the engine never exiting" in row["evidence"]


def test_the_kept_auc_is_the_sweeps_over_every_test_sample_when_the_engine_matched_the_sweep(tmp_path):
    # On 64 timed requests the exit rows score 0.70 against 0.75; over all 400 samples the sweep
    # says the same exits keep the AUC, and the engine's exits equal the sweep's.
    engine = pd.DataFrame(
        {
            "method": ["full", "exit"],
            "form": ["none", "difference"],
            "tau": [np.nan, 0.05],
            "first_head": ["wait", "wait"],
            "role": ["full_depth", "operating_point"],
            "auc": [0.75, 0.70],
            "rps": [4.0, 8.0],
            "speedup_vs_full": [1.0, 2.0],
            "exit_agreement": [np.nan, 1.0],
            "n": [64, 64],
        }
    )
    engine.to_csv(tmp_path / "early_exit.csv", index=False)
    sweep = pd.DataFrame(
        {
            "form": ["difference", "difference", "ratio"],
            "first_head": "wait",
            "tau": [0.0, 0.05, 0.05],
            "auc": [0.730, 0.728, 0.60],
            "auc_full": 0.730,
            "n": 400,
        }
    )
    sweep.to_csv(tmp_path / "threshold_sweep.csv", index=False)
    row = check_claims(tmp_path, FAST).set_index("claim_id").loc["early_exit_rps"]
    assert row["verdict"] == "supported (no interval)" and "400 test samples" in row["evidence"]
    sweep.assign(auc=[0.730, 0.70, 0.60]).to_csv(tmp_path / "threshold_sweep.csv", index=False)
    assert (
        check_claims(tmp_path, FAST)
        .set_index("claim_id")
        .loc["early_exit_rps", "verdict"]
        .startswith("contradicted")
    )
    # Exits that did not match the sweep: only the timed requests' own AUCs count.
    sweep.to_csv(tmp_path / "threshold_sweep.csv", index=False)
    engine.assign(exit_agreement=[np.nan, 0.9]).to_csv(tmp_path / "early_exit.csv", index=False)
    row = check_claims(tmp_path, FAST).set_index("claim_id").loc["early_exit_rps"]
    assert row["verdict"].startswith("contradicted") and "timed requests" in row["evidence"]
    assert "90.0% of timed requests" in row["evidence"]
    # a current table says what its rows' AUCs are over: the evidence names that, not the timing
    engine.assign(exit_agreement=[np.nan, 0.9], auc_over="every test sample").to_csv(
        tmp_path / "early_exit.csv", index=False
    )
    row = check_claims(tmp_path, FAST).set_index("claim_id").loc["early_exit_rps"]
    assert "AUC over every test sample" in row["evidence"]


def test_the_kept_auc_is_read_from_the_test_rows_of_a_sweep_that_also_holds_validation(tmp_path):
    engine = pd.DataFrame(
        {
            "method": ["full", "exit"],
            "form": ["none", "ratio"],
            "tau": [np.nan, 0.3],
            "first_head": ["wait", "wait"],
            "role": ["full_depth", "operating_point"],
            "auc": [0.75, 0.74],
            "rps": [4.0, 8.0],
            "speedup_vs_full": [1.0, 2.0],
            "exit_agreement": [np.nan, 1.0],
            "n": [256, 256],
        }
    )
    engine.to_csv(tmp_path / "early_exit.csv", index=False)
    pd.DataFrame(
        {
            "split": ["valid", "test"],
            "form": "ratio",
            "first_head": "wait",
            "tau": 0.3,
            "auc": [0.70, 0.759],
            "auc_full": [0.71, 0.760],
            "n": [600, 2000],
            "drop_ci_low": [np.nan, -0.007],
            "drop_ci_high": [np.nan, 0.007],
        },
    ).to_csv(tmp_path / "threshold_sweep.csv", index=False)
    row = check_claims(tmp_path, FAST).set_index("claim_id").loc["early_exit_rps"]
    assert (
        "2000 test samples" in row["evidence"]
        and "paired 95% interval of the drop [-0.0070, +0.0070]" in row["evidence"]
    )
    assert "timed requests" not in row["evidence"]


def test_paired_claims_refuse_predictions_of_different_samples(tmp_path):
    labels = np.array([0, 1] * 20)
    _predictions(tmp_path / "predictions_gcn.csv", labels, np.linspace(0, 1, 40))
    pd.DataFrame({"sample_id": np.arange(5, 45), "label": labels, "p_head_6": 0.5}).to_csv(
        tmp_path / "predictions_llm.csv", index=False
    )
    with pytest.raises(DataError, match="different samples"):
        check_claims(tmp_path, FAST)


def test_context_helps_reads_the_paired_gcn_minus_none_row(tmp_path):
    pd.DataFrame(
        {
            "a": ["gcn", "llm"],
            "b": ["none", "none"],
            "n": [2000, 2000],
            "diff": [0.02, -0.01],
            "diff_ci_low": [0.005, -0.02],
            "diff_ci_high": [0.035, 0.0],
        }
    ).to_csv(tmp_path / "context_effect.csv", index=False)
    row = check_claims(tmp_path, FAST).set_index("claim_id").loc["context_helps"]
    assert row["estimate"] == pytest.approx(0.02) and row["verdict"] == "supported"
    assert "n=2000" in row["evidence"]


@pytest.mark.parametrize(
    ("decay_lead", "verdict"),
    [(0.3, "supported"), (-0.3, "contradicted"), (0.0, "inconclusive")],
    ids=repr,
)
def test_the_lr_decay_claim_is_judged_on_the_interval_over_seeds(tmp_path, decay_lead, verdict):
    """Three seeds whose final-head AUCs differ by about ``decay_lead`` (β = 0.1 minus β = 0)."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)
    for seed in range(3):
        strong, weak = labels * 0.6 + rng.random(400) * 0.4, labels * 0.1 + rng.random(400) * 0.9
        decay, uniform = (
            (strong, weak) if decay_lead > 0 else (weak, strong) if decay_lead < 0 else (strong, strong)
        )
        _predictions(tmp_path / predictions("gcn", study_variant(0.1, seed)), labels, decay)
        _predictions(tmp_path / predictions("gcn", study_variant(0, seed)), labels, uniform)
    row = check_claims(tmp_path, FAST).set_index("claim_id").loc["lr_decay_helps"]
    assert row["verdict"] == verdict and "3 seeds per arm" in row["evidence"]
    assert row["ci_low"] <= row["estimate"] <= row["ci_high"]
