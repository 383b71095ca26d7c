"""The β study's table: per-seed differences, the t-interval over seeds, the matched-compute
early-exit measure, recomputed from hand-made prediction files."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from ragrec.errors import DataError
from ragrec.experiments.reporting.beta_study import (
    BETA_STUDY_COLUMNS,
    auc_at_mean_layer,
    beta_study_table,
    curve_means,
    seed_interval,
    study_summary,
)
from ragrec.metrics import auc
from ragrec.result_files import BETA_RUNS, predictions, study_variant


def _write(directory, beta, seed, labels, heads: dict[int, np.ndarray], ids=None):
    frame = pd.DataFrame({"sample_id": np.arange(len(labels)) if ids is None else ids, "label": labels})
    for layer, p in heads.items():
        frame[f"p_head_{layer}"] = p
    frame.to_csv(directory / predictions("gcn", study_variant(beta, seed)), index=False)


@pytest.fixture
def study(tmp_path):
    """Three seeds: the decay arm's head 2 carries the label, the uniform arm's is noise; head 10
    is the same good score in both arms."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300)
    for seed in range(3):
        good = labels * 0.6 + rng.random(300) * 0.4
        _write(tmp_path, 0.1, seed, labels, {2: good, 10: good})
        _write(tmp_path, 0, seed, labels, {2: rng.random(300), 10: good})
    return tmp_path, labels


def test_the_seed_interval_is_the_t_interval_over_the_per_seed_differences():
    mean, lo, hi = seed_interval([0.01, 0.02, 0.06])
    half = 4.302653 * np.std([0.01, 0.02, 0.06], ddof=1) / math.sqrt(3)  # t_{0.975, 2}
    assert (
        mean == pytest.approx(0.03) and lo == pytest.approx(0.03 - half) and hi == pytest.approx(0.03 + half)
    )
    with pytest.raises(DataError, match="≥ 2 seeds"):
        seed_interval([0.01])


def test_a_head_better_in_every_seed_gets_an_interval_above_zero_and_an_equal_head_zero(study):
    directory, labels = study
    table = beta_study_table(directory, n_boot=100)
    assert list(table.columns) == list(BETA_STUDY_COLUMNS)
    head2, head10 = study_summary(table, "head", 2), study_summary(table, "head", 10)
    assert head2["n_seeds"] == 3 and head2["diff"] > 0.3 and head2["diff_ci_low"] > 0
    assert head10["diff"] == pytest.approx(0) and head10["interval"] == "t over seeds"
    # the summary's AUCs are the means of the per-seed rows
    per_seed = table[(table["measure"] == "head") & (table["layers"] == 2) & table["seed"].notna()]
    assert sorted(per_seed["seed"]) == [0, 1, 2]
    assert head2["auc_decay"] == pytest.approx(per_seed["auc_decay"].mean())
    assert (per_seed["diff_ci_low"] > 0).all(), "each seed's own paired bootstrap over samples"


def test_the_early_exit_row_compares_both_arms_at_the_same_mean_exit_layer(study):
    directory, _ = study
    table = beta_study_table(directory, matched_depth=0.5, n_boot=50)
    row = study_summary(table, "early_exit", 5.0)
    assert row is not None and row["n_seeds"] == 3 and not math.isnan(row["diff"])


def test_auc_at_mean_layer_follows_the_tau_sweep_between_its_ends():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 400)
    first, last = rng.random(400), labels * 0.5 + rng.random(400) * 0.5
    # every head from the second on gives the same answer, so the exit AUC is the last head's at
    # every τ (rows exit by layer 6 for τ > 0, at layer 9 for τ = 0)
    per_head = np.stack([first, last, last, last], axis=1)
    layers = (1, 3, 6, 9)
    assert auc_at_mean_layer(labels, per_head, layers, 9.0) == pytest.approx(auc(labels, last))
    assert auc_at_mean_layer(labels, per_head, layers, 3.0) == pytest.approx(auc(labels, last))
    # outside the sweep's range the end points hold
    assert auc_at_mean_layer(labels, per_head, layers, 1.0) == pytest.approx(auc(labels, last))


def test_the_arms_mean_learning_rates_come_from_the_run_table(study):
    directory, _ = study
    pd.DataFrame({"beta": [0.1, 0.1, 0.0], "mean_lr_factor": [0.8, 0.8, 1.0]}).to_csv(
        directory / BETA_RUNS, index=False
    )
    table = beta_study_table(directory, n_boot=20)
    assert (table["mean_lr_factor_decay"] == 0.8).all() and (table["mean_lr_factor_uniform"] == 1.0).all()


def test_one_seed_makes_no_table_and_arms_on_other_samples_are_a_clear_error(tmp_path):
    labels = np.array([0, 1] * 20)
    _write(tmp_path, 0.1, 0, labels, {2: labels * 0.5})
    _write(tmp_path, 0, 0, labels, {2: labels * 0.5})
    assert beta_study_table(tmp_path).empty, "an interval over seeds needs two"
    _write(tmp_path, 0.1, 1, labels, {2: labels * 0.5})
    _write(tmp_path, 0, 1, labels, {2: labels * 0.5}, ids=np.arange(1, 41))
    with pytest.raises(DataError, match="seed 1 score different test samples"):
        beta_study_table(tmp_path)


def test_no_study_files_make_an_empty_table(tmp_path):
    assert beta_study_table(tmp_path).empty


def test_curve_means_average_the_seeds_of_each_arm_and_keep_the_main_run_apart():
    rows = [
        ("study_beta0.1_seed0", 0.1, 0, 10, 40, 30, 0.60),
        ("study_beta0.1_seed1", 0.1, 1, 10, 40, 30, 0.64),
        ("study_beta0.1_seed0", 0.1, 0, 20, 80, 30, 0.70),
        ("study_beta0.1_seed1", 0.1, 1, 20, 80, 30, 0.72),
        ("main", 0.1, 0, 20, 80, 30, 0.75),
    ]
    columns = ["variant", "beta", "seed", "step", "prompts_seen", "head_layer", "auc"]
    means = curve_means(pd.DataFrame(rows, columns=columns).assign(n=100))
    study = means[means["runs"] == "study"].set_index("step")
    assert study.loc[10, "auc_mean"] == pytest.approx(0.62) and study.loc[20, "auc_mean"] == pytest.approx(
        0.71
    )
    assert study.loc[20, "from_end"] == 0 and study.loc[10, "from_end"] == 1 and (study["n_seeds"] == 2).all()
    assert study.loc[20, "auc_low"] < 0.71 < study.loc[20, "auc_high"]
    main = means[means["runs"] == "main"].iloc[0]
    assert main["auc_mean"] == 0.75 and math.isnan(main["auc_low"]) and main["prompts_seen"] == 80
