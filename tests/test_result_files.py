"""The owner of every results-file name: names build as documented and parse back."""

from __future__ import annotations

import pytest

from ragrec.result_files import (
    BASELINE_PREDICTIONS,
    Predictions,
    find_predictions,
    parse_study_variant,
    predictions,
    study_variant,
)


@pytest.mark.parametrize(
    ("file", "name"),
    [
        (Predictions("gcn"), "predictions_gcn.csv"),
        (Predictions("gcn", "cf"), "predictions_gcn_cf.csv"),
        (Predictions("gcn", split="valid"), "predictions_valid_gcn.csv"),
        (Predictions("gcn", "cf", "valid"), "predictions_valid_gcn_cf.csv"),
        (Predictions("gcn", study_variant(0.1, 2)), "predictions_gcn_study_beta0.1_seed2.csv"),
        (Predictions("gcn", study_variant(0, 0)), "predictions_gcn_study_beta0_seed0.csv"),
        (Predictions("none", "fp32"), "predictions_none_fp32.csv"),
    ],
    ids=repr,
)
def test_a_predictions_name_builds_as_documented_and_parses_back(file, name):
    assert file.name == name
    assert Predictions.parse(name) == file


@pytest.mark.parametrize(
    "name",
    [BASELINE_PREDICTIONS, "heads.csv", "predictions_.csv", "predictions_valid_.csv", "predictions_gcn.json"],
)
def test_names_that_are_no_recommender_predictions_parse_to_none(name):
    assert Predictions.parse(name) is None


def test_a_context_starting_with_b_is_found_unlike_a_glob_that_excluded_the_baselines_by_letter(tmp_path):
    for name in ("predictions_bm25.csv", BASELINE_PREDICTIONS, "predictions_valid_gcn.csv", "heads.csv"):
        (tmp_path / name).write_text("sample_id\n")
    assert [p.name for p in find_predictions(tmp_path)] == [
        "predictions_bm25.csv",
        "predictions_valid_gcn.csv",
    ]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"context": ""}, "non-empty"),
        ({"context": "gcn_x"}, "without '_'"),
        ({"context": "valid"}, "not one of"),
        ({"context": "baselines"}, "not one of"),
        ({"context": "gcn", "variant": ""}, "variant must be non-empty"),
        ({"context": "gcn", "split": "train"}, "split must be one of"),
    ],
    ids=repr,
)
def test_a_name_that_would_not_parse_back_is_a_clear_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        predictions(**kwargs)


@pytest.mark.parametrize(("beta", "seed"), [(0.1, 0), (0.0, 2), (0.25, 11)], ids=repr)
def test_a_study_variant_parses_back_to_its_beta_and_seed(beta, seed):
    assert parse_study_variant(study_variant(beta, seed)) == (beta, seed)


@pytest.mark.parametrize(
    "variant", ["main", "cf", "pair_beta0.1", "study_beta0.1", "study_betax_seed1", "study_beta0.1_seedy"]
)
def test_other_variants_are_no_study_runs(variant):
    assert parse_study_variant(variant) is None
