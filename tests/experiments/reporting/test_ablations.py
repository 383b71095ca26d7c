"""Ablations recomputed from per-sample predictions: per-head AUC and paired differences."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ragrec.errors import DataError
from ragrec.experiments.reporting.ablations import (
    ABLATION_COLUMNS,
    context_ablation,
    run_ablations,
)
from ragrec.metrics import auc


def _write(path, labels, heads: dict[int, np.ndarray], ids=None):
    frame = pd.DataFrame({"sample_id": np.arange(len(labels)) if ids is None else ids, "label": labels})
    for layer, p in heads.items():
        frame[f"p_head_{layer}"] = p
    frame.to_csv(path, index=False)


@pytest.fixture
def predictions(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300)
    good = labels * 0.6 + rng.random(300) * 0.4
    noise = rng.random(300)
    _write(tmp_path / "predictions_gcn.csv", labels, {2: noise, 10: good})
    _write(tmp_path / "predictions_none.csv", labels, {2: noise, 10: rng.random(300)})
    return tmp_path, labels, good


def test_context_ablation_gives_every_head_and_the_paired_difference_to_gcn(predictions):
    directory, labels, good = predictions
    table = context_ablation(directory, ("none", "random", "gcn", "llm"), n_boot=100)
    assert list(table.columns) == list(ABLATION_COLUMNS)
    assert set(table["variant"]) == {"gcn", "none"}, "contexts without predictions are skipped"
    gcn10 = table[(table["variant"] == "gcn") & (table["head_layer"] == 10)].iloc[0]
    assert gcn10["auc"] == pytest.approx(auc(labels, good)) and np.isnan(gcn10["reference_minus_variant"])
    none10 = table[(table["variant"] == "none") & (table["head_layer"] == 10)].iloc[0]
    assert none10["reference_minus_variant"] > 0 and none10["diff_ci_low"] > 0


def test_a_context_scored_on_a_subset_is_paired_on_that_subset(predictions):
    directory, labels, good = predictions
    _write(
        directory / "predictions_none.csv",
        labels[::2],
        {2: good[::2], 10: good[::2]},
        ids=np.arange(0, 300, 2),
    )
    table = context_ablation(directory, ("none", "gcn"), n_boot=100)
    none10 = table[(table["variant"] == "none") & (table["head_layer"] == 10)].iloc[0]
    assert none10["n"] == 150 and none10["reference_minus_variant"] == pytest.approx(0.0)
    _write(directory / "predictions_none.csv", labels, {2: good, 10: good}, ids=np.arange(1000, 1300))
    with pytest.raises(DataError, match="does not"):
        context_ablation(directory, ("none", "gcn"), n_boot=10)


def test_absent_predictions_give_an_empty_table(tmp_path):
    table = run_ablations(tmp_path, ("gcn", "none"), n_boot=10)
    assert table.empty and list(table.columns) == list(ABLATION_COLUMNS)


def test_predictions_of_other_samples_are_refused(predictions):
    directory, labels, good = predictions
    _write(directory / "predictions_llm.csv", labels, {2: good, 10: good}, ids=np.arange(1, 301))
    with pytest.raises(DataError, match="does not"):
        context_ablation(directory, ("gcn", "llm"), n_boot=10)


def test_cf_and_dtype_ablations_pair_each_variant_with_the_main_models_samples(predictions):
    directory, labels, good = predictions
    _write(directory / "predictions_gcn_cf.csv", labels, {2: good, 10: good})
    _write(
        directory / "predictions_gcn_fp32.csv",
        labels[:100],
        {2: good[:100], 10: good[:100]},
        ids=np.arange(100),
    )
    table = run_ablations(directory, ("gcn", "none"), n_boot=50, dtype="bfloat16")
    cf = table[(table["ablation"] == "cf_tokens") & (table["variant"] == "gcn+cf")].set_index("head_layer")
    assert cf.loc[2, "reference_minus_variant"] < 0  # the cf file's head 2 is the good one
    dtype = table[(table["ablation"] == "dtype") & (table["variant"] == "float32")]
    assert (dtype["n"] == 100).all() and set(table[table["ablation"] == "dtype"]["reference"]) == {"bfloat16"}
