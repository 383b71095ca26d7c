"""Profiles and the early-exit benchmark's settings they carry."""

import dataclasses

import numpy as np
import pytest

from ragrec.config import DIFFERENCE, PROFILES, ExitBenchmarkConfig, get_profile
from ragrec.errors import ConfigError
from ragrec.model.criteria import bind_heads, simulate_exits


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_every_profile_carries_the_candidate_grid_and_each_family_reaches_full_depth(name):
    """The operating-point rule's candidates: the paper's rule in both forms, the static exit and
    the confidence rule, each grid holding a point that runs every row to the last head."""
    profile = get_profile(name, resolve=False)
    config = profile.exit
    assert isinstance(config, ExitBenchmarkConfig)
    assert [family.label for family in config.criteria] == ["difference", "ratio", "static", "confidence"]
    layers = profile.model.head_layers
    p = np.random.default_rng(0).random((50, len(layers)))
    for family in bind_heads(config.criteria, layers):
        last = [
            (simulate_exits(p, family.criterion(t), layers)[1] == len(layers) - 1).all() for t in family.taus
        ]
        assert any(last), family.label


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
        pytest.param({"criteria": ()}, "criteria must be a non-empty sequence", id="no-criteria"),
        pytest.param({"criteria": (DIFFERENCE, DIFFERENCE)}, "distinct labels", id="one-label-twice"),
        pytest.param(
            {"criteria": ("difference",)}, "not a criterion family", id="a-form-name-is-not-a-family"
        ),
        pytest.param({"extra_points": ((DIFFERENCE, -1.0),)}, "tau", id="negative-extra-tau"),
        pytest.param(
            {"extra_points": (("difference", 0.1),)}, r"\(criterion family, τ\) pair", id="extra-by-name"
        ),
        pytest.param({"margin": 1.0}, "margin", id="margin-1"),
        pytest.param({"rule_level": 0.3}, "rule_level", id="rule-level-below-a-half"),
        pytest.param({"rule_n_boot": 0}, "rule_n_boot", id="rule-without-resamples"),
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


def test_a_dry_run_takes_smokes_study_sweeps_and_compute_sizes():
    from ragrec.config.resolve import dry_run

    dry = dry_run(get_profile("gpu", resolve=False))
    smoke = get_profile("smoke")
    assert (dry.beta_study, dry.sweeps) == (smoke.beta_study, smoke.sweeps)
    assert dataclasses.replace(dry.compute, n_prompts=smoke.compute.n_prompts) == smoke.compute


@pytest.mark.parametrize("dry", [False, True], ids=["profile", "dry run"])
@pytest.mark.parametrize("name", sorted(PROFILES))
def test_every_compute_table_has_prompts_for_its_training_steps(name, dry):
    from ragrec.config.resolve import dry_run

    p = get_profile(name, resolve=False)
    p = dry_run(p) if dry else p
    steps = p.compute.warmup + p.compute.train_steps
    assert steps * p.train.batch_size * p.train.grad_accum <= p.compute.n_prompts
