"""The LightGCN architecture sweep's settings: one factor at a time around the base."""

from __future__ import annotations

import pytest

from ragrec.config.sweeps import ArchitectureSweepConfig
from ragrec.errors import ConfigError
from ragrec.experiments.retrieval.architecture import sweep_settings
from ragrec.retrieval.lightgcn import LightGCNConfig


def test_settings_vary_one_factor_at_a_time_and_hold_the_base_once():
    base = LightGCNConfig(dim=64, num_layers=3, max_epochs=300)
    config = ArchitectureSweepConfig(
        layers=(1, 3), dims=(32, 64), combinations=("mean", "last"), max_epochs=7
    )
    settings = sweep_settings(base, config)
    factors = [f for f, _ in settings]
    assert factors == ["base", "num_layers", "dim", "layer_combination"], "duplicates of the base are dropped"
    for factor, lgc in settings:
        assert lgc.max_epochs == 7 and not lgc.progress
        changed = {
            name
            for name in ("num_layers", "dim", "layer_combination")
            if getattr(lgc, name) != getattr(base, name)
        }
        assert changed == (set() if factor == "base" else {factor})


def test_bad_architecture_settings_are_a_clear_error():
    with pytest.raises(ConfigError):
        ArchitectureSweepConfig(layers=(0, 1))
    with pytest.raises(ConfigError):
        ArchitectureSweepConfig(max_epochs=0)
