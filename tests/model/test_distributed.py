"""Data parallelism (:mod:`ragrec.model.distributed`): the row and batch shares, and two gloo
processes under ``accelerate launch`` training and scoring as one process does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ragrec.model.distributed import Shard, current_shard

PROJECT_DIR = Path(__file__).resolve().parents[2]


def test_the_processes_share_every_row_of_a_batch_once():
    rows = np.arange(11)
    shares = [Shard(rank, 3).rows(rows) for rank in range(3)]
    assert sorted(np.concatenate(shares).tolist()) == rows.tolist()
    assert [len(s) for s in shares] == [4, 4, 3]
    batches = [np.array([i]) for i in range(5)]
    assert [b[0] for b in Shard(1, 2).batches(batches)] == [1, 3]


def test_one_process_is_the_identity():
    shard = current_shard()
    assert shard == Shard() and shard.is_main
    p = torch.nn.Parameter(torch.ones(3))
    p.grad = torch.full((3,), 2.0)
    shard.sum_gradients([p])
    assert p.grad.tolist() == [2.0, 2.0, 2.0] and shard.sum(1.5) == 1.5
    local = np.arange(6.0).reshape(3, 2)
    assert shard.gather(local) is local


def _launch(out, processes: int) -> dict:
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join([str(PROJECT_DIR), os.environ.get("PYTHONPATH", "")]),
    )
    module = ["-m", "tests.model.data_parallel_job", str(out)]
    if processes == 1:
        command = [sys.executable, *module]
    else:
        command = [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--multi_gpu",
            "--num_processes",
            str(processes),
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            "--main_process_port",
            "0",
            *module,
        ]
    done = subprocess.run(command, cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.distributed
def test_two_gloo_processes_train_and_score_as_one_process_with_the_same_global_batch(tmp_path):
    one = _launch(tmp_path / "one.json", 1)
    two = _launch(tmp_path / "two.json", 2)
    assert (one["world"], two["world"]) == (1, 2)
    # The same steps: the global batch's loss, summed over processes in another order.
    assert len(two["loss"]) == len(one["loss"]) == 6
    np.testing.assert_allclose(two["loss"], one["loss"], rtol=1e-5, atol=1e-6)
    for a, b in zip(one["valid_auc"], two["valid_auc"], strict=True):
        assert a["step"] == b["step"] and a == pytest.approx(b, abs=1e-9)
    # Predictions gathered once, in sample order; the AUCs are identical.
    np.testing.assert_allclose(two["predictions"], one["predictions"], atol=1e-5)
    assert two["test_auc"] == one["test_auc"]
