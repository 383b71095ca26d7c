"""The β study's settings: what it accepts, and the arms it compares."""

import pytest

from ragrec.config import PROFILES, BetaStudy, get_profile
from ragrec.errors import ConfigError


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        pytest.param({"seeds": (0,)}, "≥ 2 distinct seeds", id="one-seed"),
        pytest.param({"seeds": (1, 1)}, "≥ 2 distinct seeds", id="a-seed-twice"),
        pytest.param({"seeds": (-1, 0)}, "≥ 2 distinct seeds", id="negative-seed"),
        pytest.param({"train_cap": 0}, "train_cap", id="train-cap-0"),
        pytest.param({"epochs": 0}, "epochs", id="epochs-0"),
        pytest.param({"batch_size": 0}, "batch_size", id="batch-0"),
        pytest.param({"lr": 0.0}, "lr", id="lr-0"),
        pytest.param({"valid_cap": 0}, "valid_cap", id="valid-cap-0"),
        pytest.param({"curve_points": 0}, "curve_points", id="no-curve-points"),
        pytest.param({"matched_depth": 0.0}, "share of the depth", id="depth-0"),
        pytest.param({"matched_depth": 1.5}, "share of the depth", id="depth-over-1"),
    ],
)
def test_bad_beta_study_settings_are_a_clear_error(changes, match):
    with pytest.raises(ConfigError, match=match):
        BetaStudy(**changes)


def test_the_study_compares_the_profiles_beta_with_uniform_rates():
    assert BetaStudy().arms(0.1) == (0.1, 0.0)


@pytest.mark.parametrize("name", ["smoke", "cpu"])
def test_the_smoke_and_cpu_profiles_run_a_study_with_enough_seeds(name):
    study = get_profile(name, resolve=False).beta_study
    assert study is not None and len(study.seeds) >= (2 if name == "smoke" else 3)
    assert name in PROFILES
