"""The compute table: its rows, columns and FLOP arithmetic (never its timings)."""

import dataclasses

import numpy as np
import pandas as pd
import pytest

from ragrec.config import get_profile
from ragrec.config.compute import ComputeConfig
from ragrec.errors import ConfigError
from ragrec.experiments.compute import (
    COLUMNS,
    FORWARD_FLOPS,
    TRAIN_FLOPS,
    compute_table,
    nonembedding_params,
    run_compute,
    training_minutes,
)
from ragrec.llm.backbone import tiny_backbone
from ragrec.model.lora import LoraSettings, attach_lora
from ragrec.result_files import COMPUTE, TRAINING
from ragrec.results import read_csv, write_csv

PATHS = [
    "matmul_limit_bfloat16",
    "matmul_limit_float32",
    "train_step",
    "plain_forward",
    "engine_never_exit",
    "predict_heads",
]


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    """The smoke profile's table at its smallest: 16 prompts, one training step of 8."""
    smoke = get_profile("smoke")
    profile = dataclasses.replace(
        smoke,
        train=dataclasses.replace(smoke.train, batch_size=8),
        compute=ComputeConfig(n_prompts=16, batch_size=8, train_steps=1, repeats=1, warmup=0),
    )
    root = tmp_path_factory.mktemp("results")
    frame = run_compute(profile, results_root=root)
    return frame, read_csv(root / "smoke" / "synthetic" / COMPUTE)


def test_the_table_holds_the_limits_and_four_paths_with_finite_numbers(table):
    frame, written = table
    assert list(written.columns) == list(COLUMNS)
    assert list(written["path"]) == PATHS
    numbers = written.drop(columns=["path", "dtype"]).to_numpy(dtype=float)
    assert np.isfinite(numbers).all() and (numbers > 0).all()
    pd.testing.assert_frame_equal(frame.reset_index(drop=True), written, check_dtype=False)


def test_fractions_follow_from_the_stated_flop_counts(table):
    frame, _ = table
    by_path = frame.set_index("path")
    expected = by_path["flop_per_token"] * by_path["tokens"] / by_path["seconds"] / 1e12
    np.testing.assert_allclose(by_path["tflops"], expected, rtol=1e-9)
    limit = by_path.loc["matmul_limit_bfloat16", "tflops"]
    np.testing.assert_allclose(by_path["fraction_of_limit"], by_path["tflops"] / limit, rtol=1e-9)
    assert by_path.loc["matmul_limit_bfloat16", "fraction_of_limit"] == pytest.approx(1.0)
    # a forward costs 2·N a token, a LoRA step 4·N, N the same model's non-embedding parameters
    assert by_path.loc["train_step", "flop_per_token"] == pytest.approx(
        by_path.loc["plain_forward", "flop_per_token"] * TRAIN_FLOPS / FORWARD_FLOPS
    )


def test_every_scoring_path_reads_the_same_real_tokens(table):
    frame, _ = table
    scoring = frame[frame["path"].isin(["plain_forward", "engine_never_exit", "predict_heads"])]
    assert scoring["tokens"].nunique() == 1
    # one training step of 8 prompts: fewer real tokens than the 16 prompts scored
    assert 0 < frame.loc[frame["path"] == "train_step", "tokens"].item() < scoring["tokens"].iloc[0]


def test_non_embedding_parameters_leave_out_the_embeddings_and_lm_head():
    bb = tiny_backbone(num_layers=2, hidden_size=32)
    core = bb.model.model
    expected = sum(p.numel() for p in bb.model.parameters()) - core.embed_tokens.weight.numel()
    if bb.model.lm_head.weight is not core.embed_tokens.weight:  # untied: its own matrix too
        expected -= bb.model.lm_head.weight.numel()
    assert nonembedding_params(bb) == expected


def test_a_table_without_its_limit_row_is_a_config_error():
    rows = [{"path": "plain_forward", "flop_per_token": 2.0, "tokens_per_s": 1.0}]
    with pytest.raises(ConfigError, match="matmul_limit_bfloat16"):
        compute_table(rows)


@pytest.mark.parametrize(
    "changes",
    [dict(n_prompts=0), dict(repeats=0), dict(warmup=-1), dict(threads=0)],
    ids=["no-prompts", "no-repeats", "negative-warmup", "zero-threads"],
)
def test_bad_compute_settings_are_a_config_error(changes):
    with pytest.raises(ConfigError, match="ComputeConfig"):
        ComputeConfig(**changes)


def test_lora_adapters_do_not_count_as_model_parameters():
    bb = tiny_backbone(num_layers=2, hidden_size=32)
    plain = nonembedding_params(bb)
    assert nonembedding_params(attach_lora(bb, LoraSettings(r=4, alpha=8))) == plain


def _training_log(variant: str, steps: int, timed: bool) -> pd.DataFrame:
    frame = pd.DataFrame({"variant": variant, "beta": 0.1, "step": range(1, steps + 1), "loss": 0.5})
    frame["train_seconds"] = 10.0 * steps
    if timed:
        frame["step_seconds"], frame["step_tokens"] = 2.0, 600
    return frame


@pytest.mark.parametrize("timed", [True, False], ids=["timed", "before-the-timing-columns"])
def test_training_minutes_sum_each_runs_steps_and_tokens(tmp_path, timed):
    log = pd.concat([_training_log("main", 4, timed), _training_log("cf", 2, timed)])
    if not timed:
        log = log.drop(columns=["step_seconds", "step_tokens"], errors="ignore")
    write_csv(log, tmp_path / TRAINING)
    minutes = training_minutes(tmp_path).set_index("variant")
    assert list(minutes.index) == ["main", "cf"]
    assert minutes.loc["main", "steps"] == 4
    assert minutes.loc["cf", "seconds_per_step"] == pytest.approx(10.0)
    if timed:
        assert minutes.loc["main", "tokens_per_s"] == pytest.approx(300.0)  # 600 tokens in 2 s
    else:
        assert minutes["tokens_per_s"].isna().all()
