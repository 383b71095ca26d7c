"""Profiles and the early-exit benchmark's settings they carry."""

import pytest

from ragrec.config import PROFILES, TAUS_DIFFERENCE, ExitBenchmarkConfig, get_profile
from ragrec.errors import ConfigError


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_every_profile_carries_exit_settings_whose_grids_start_at_full_depth(name):
    config = get_profile(name, resolve=False).exit
    assert isinstance(config, ExitBenchmarkConfig)
    assert config.taus["difference"][0] == 0.0 and config.taus["ratio"][0] == 0.0


def test_unknown_profile_names_the_choices():
    with pytest.raises(ConfigError, match="smoke"):
        get_profile("laptop")


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        pytest.param(
            {"e2e_methods": ("e2e_gcn_full", "nope")}, "unknown end-to-end method", id="unknown-e2e-method"
        ),
        pytest.param({"e2e_methods": ()}, "at least one end-to-end method", id="no-e2e-methods"),
        pytest.param({"taus": {"difference": (0.0, -0.1)}}, "τ", id="negative-tau"),
        pytest.param({"taus": {"difference": (0.0, float("nan"))}}, "τ", id="nan-tau"),
        pytest.param({"taus": {"difference": ()}}, "empty", id="empty-grid"),
        pytest.param({"taus": {"bogus": TAUS_DIFFERENCE}}, "form", id="unknown-form"),
        pytest.param({"taus": {}}, "taus", id="no-forms"),
        pytest.param(
            {"first_head": "confident"}, "form='ratio'", id="confident-first-head-with-the-ratio-form"
        ),
        pytest.param({"first_head": "eager"}, "first_head", id="unknown-first-head"),
        pytest.param({"extra_points": (("difference", -1.0),)}, "tau", id="negative-extra-tau"),
        pytest.param({"auc_tolerance": 1.0}, "auc_tolerance", id="tolerance-1"),
        pytest.param({"padding_side": "middle"}, "padding_side", id="unknown-padding-side"),
        pytest.param({"repeats": 0}, "repeats", id="repeats-0"),
        pytest.param({"batch_size": True}, "batch_size", id="bool-batch-size"),
        pytest.param({"warmup": -1}, "warmup", id="negative-warmup"),
        pytest.param({"threads": 0}, "threads", id="threads-0"),
    ],
)
def test_bad_exit_benchmark_settings_are_a_clear_error(changes, match):
    with pytest.raises(ConfigError, match=match):
        ExitBenchmarkConfig(**changes)
