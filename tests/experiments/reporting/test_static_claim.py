"""The dynamic-vs-static claim on hand-made results whose answer is known: a dynamic rule that
sends only the hard rows deeper beats the static exit of no more compute, and one whose deeper
head is worse loses to it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ragrec.experiments.reporting.claims import ClaimSettings, check_claims
from ragrec.experiments.reporting.static_claim import dynamic_vs_static
from ragrec.metrics import auc
from ragrec.model.criteria import StabilityExit, simulate_exits

N = 2000
LAYERS = (2, 4, 6)
TAU = 0.05


def _heads(full_is_worse: bool) -> pd.DataFrame:
    """Easy rows: every head says the same, right answer. Hard rows: heads 2 and 4 are noise that
    disagree, head 6 knows (or, when ``full_is_worse``, head 4 knows and head 6 is noise)."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, N)
    easy = rng.random(N) < 0.5
    sure = np.where(labels == 1, 0.8, 0.2) + rng.normal(0, 0.05, N)
    knows = 1 / (1 + np.exp(-(2.0 * (labels - 0.5) + rng.normal(0, 1, N))))
    noise = [rng.random(N) for _ in range(2)]
    hard = (noise[0], knows, noise[1]) if full_is_worse else (noise[0], noise[1], knows)
    heads = {f"p_head_{layer}": np.where(easy, sure, h) for layer, h in zip(LAYERS, hard, strict=True)}
    return pd.DataFrame({"sample_id": np.arange(N), "label": labels, **heads})


def _sweep(mean_layer: float) -> pd.DataFrame:
    """The rows of threshold_sweep.csv the claim reads: the paper's rule chosen on validation at
    ``mean_layer``, and the static exits (the rule's static choice at layer 6)."""
    rows = [("valid", "difference", TAU, mean_layer, True, True)]
    rows += [
        (split, "static", float(layer), float(layer), False, layer == 6)
        for split in ("valid", "test")
        for layer in LAYERS
    ]
    frame = pd.DataFrame(
        rows, columns=["split", "form", "tau", "mean_exit_layer", "paper_rule_choice", "family_choice"]
    )
    return frame.assign(variant="main")


def _write(tmp_path, full_is_worse: bool):
    heads = _heads(full_is_worse)
    heads.to_csv(tmp_path / "predictions_gcn.csv", index=False)
    per_head = heads[[f"p_head_{layer}" for layer in LAYERS]].to_numpy()
    p, exit_head = simulate_exits(per_head, StabilityExit(TAU), LAYERS)
    _sweep(float(np.asarray(LAYERS)[exit_head].mean())).to_csv(tmp_path / "threshold_sweep.csv", index=False)
    return heads, p, exit_head


def test_a_rule_that_sends_only_hard_rows_deeper_beats_the_static_exit_of_no_more_compute(tmp_path):
    heads, p, exit_head = _write(tmp_path, full_is_worse=False)
    mean_layer = np.asarray(LAYERS)[exit_head].mean()
    assert 4 <= mean_layer < 6  # so the static match is the exit at layer 4
    measured = dynamic_vs_static(tmp_path, n_boot=200)
    expected = auc(heads["label"], p) - auc(heads["label"], heads["p_head_4"])
    assert measured["estimate"] == pytest.approx(expected, abs=1e-12) and measured["ci_low"] > 0
    assert (
        "static exit at layer 4" in measured["evidence"]
        and "chose the static exit at layer 6" in measured["evidence"]
    )
    claim = (
        check_claims(tmp_path, ClaimSettings(n_boot=200)).set_index("claim_id").loc["dynamic_beats_static"]
    )
    assert claim["verdict"] == "supported"


def test_a_static_exit_that_keeps_more_auc_at_less_compute_contradicts(tmp_path):
    _write(tmp_path, full_is_worse=True)
    claim = (
        check_claims(tmp_path, ClaimSettings(n_boot=200)).set_index("claim_id").loc["dynamic_beats_static"]
    )
    assert claim["verdict"] == "contradicted" and claim["ci_high"] < 0


def test_the_claim_is_not_run_without_the_rules_choices(tmp_path):
    _write(tmp_path, full_is_worse=False)
    sweep = pd.read_csv(tmp_path / "threshold_sweep.csv").drop(columns="paper_rule_choice")
    sweep.to_csv(tmp_path / "threshold_sweep.csv", index=False)
    assert dynamic_vs_static(tmp_path) is None
    claim = check_claims(tmp_path, ClaimSettings(n_boot=50)).set_index("claim_id").loc["dynamic_beats_static"]
    assert claim["verdict"] == "not run"
