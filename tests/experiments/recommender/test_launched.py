"""The recommender step under a launcher (``make reproduce LAUNCH=...``): two gloo processes
run it data-parallel, the main one writes, and the results match a single process's."""

from __future__ import annotations

import dataclasses
import sys

import numpy as np
import pandas as pd
import pytest

from ragrec.errors import ConfigError
from ragrec.experiments.recommender import launched
from ragrec.experiments.recommender.launched import LAUNCH_ENV, LAUNCHED_ENV, launcher, run_launched
from ragrec.experiments.recommender.pipeline import run_recommender
from tests.experiments.recommender.test_pipeline import small_smoke

TWO_GLOO = (
    f"{sys.executable} -m accelerate.commands.launch --multi_gpu --num_processes 2 --num_machines 1 "
    "--mixed_precision no --dynamo_backend no --main_process_port 0"
)


def test_the_launcher_comes_from_the_environment_and_never_relaunches(monkeypatch):
    monkeypatch.delenv(LAUNCH_ENV, raising=False)
    assert launcher() is None
    monkeypatch.setenv(LAUNCH_ENV, "accelerate launch --num_processes 2")
    assert launcher() == ["accelerate", "launch", "--num_processes", "2"]
    monkeypatch.setenv(LAUNCHED_ENV, "1")
    assert launcher() is None, "a launched process runs the call itself"


def test_run_launched_without_a_launcher_is_a_config_error(monkeypatch):
    monkeypatch.delenv(LAUNCH_ENV, raising=False)
    with pytest.raises(ConfigError, match=LAUNCH_ENV):
        run_launched(run_recommender, small_smoke())


def test_a_failed_launch_says_so_with_the_processes_output(monkeypatch):
    monkeypatch.setenv(LAUNCH_ENV, f"{sys.executable} -c 'import sys; print(\"boom\"); sys.exit(3)'")
    monkeypatch.delenv(LAUNCHED_ENV, raising=False)
    with pytest.raises(launched.LaunchFailed, match="(?s)exited with 3.*boom"):
        run_launched(run_recommender, small_smoke())


@pytest.mark.distributed
def test_two_processes_run_the_recommender_as_one_does(tmp_path, monkeypatch):
    profile = dataclasses.replace(small_smoke(), beta_study=None, cf=None)
    monkeypatch.delenv(LAUNCHED_ENV, raising=False)
    monkeypatch.delenv(LAUNCH_ENV, raising=False)
    one = run_recommender(profile, results_root=tmp_path / "one", progress=False)
    monkeypatch.setenv(LAUNCH_ENV, TWO_GLOO)
    two = run_recommender(profile, results_root=tmp_path / "two", progress=False)
    keys = ["context", "variant", "head_layer"]
    merged = one.merge(two, on=keys, suffixes=("_one", "_two"))
    assert len(merged) == len(one) == len(two) > 0
    # The same optimizer steps on the same global batches (gradients summed in another order:
    # 9e-8 apart when measured) and the same test samples; the AUCs were identical when
    # measured, the tolerance allows a bf16 rounding flip from another thread count.
    losses = [
        pd.read_csv(tmp_path / run / "smoke" / "synthetic" / "training.csv")["loss"] for run in ("one", "two")
    ]
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-5)
    np.testing.assert_allclose(merged["auc_two"], merged["auc_one"], atol=0.005)
    assert (merged["n_one"] == merged["n_two"]).all()
    written = pd.read_csv(tmp_path / "two" / "smoke" / "synthetic" / "heads.csv")
    pd.testing.assert_frame_equal(written, two)
    leftovers = list((tmp_path / "two").rglob("*.tmp"))
    assert not leftovers, "the other process's copies are dropped, not left beside the results"
