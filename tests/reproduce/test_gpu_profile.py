"""The gpu profile by one command: ``MODEL`` (or ``$RAGREC_MODEL``) points it at a local
Llama-family folder, the exit heads follow that model's depth, and each way the model or the
device can be wrong stops the run with a message that names the fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ragrec.config import (
    DEVICE_ENV,
    DRY_RUN_ENV,
    GPU,
    MODEL_ENV,
    SMOKE,
    get_profile,
    gpu_profile,
    run_profile,
)
from ragrec.errors import ConfigError


def _model_folder(
    root: Path, *, layers: int | None = 32, model_type: str = "llama", weights: bool = True
) -> Path:
    """A folder that looks like a Hugging Face checkpoint to the profile (config.json and a
    weights file; the profile never loads the weights)."""
    folder = root / f"{model_type}-{layers}"
    folder.mkdir()
    config = {"model_type": model_type, "hidden_size": 4096}
    if layers is not None:
        config["num_hidden_layers"] = layers
    (folder / "config.json").write_text(json.dumps(config))
    if weights:
        (folder / "model.safetensors").write_bytes(b"")
    return folder


@pytest.fixture
def clean_env(monkeypatch):
    for name in (MODEL_ENV, DEVICE_ENV, DRY_RUN_ENV):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.mark.parametrize(
    ("layers", "heads"),
    [
        (32, (5, 10, 15, 20, 25, 30, 32)),
        (30, (5, 10, 15, 20, 25, 30)),
        (40, (5, 10, 15, 20, 25, 30, 35, 40)),
        (3, (3,)),
    ],
    ids=["vicuna-7b", "smollm2", "llama-13b", "shallower-than-five"],
)
def test_heads_sit_every_five_layers_and_on_the_last(tmp_path, clean_env, layers, heads):
    profile = gpu_profile(_model_folder(tmp_path, layers=layers), device="cpu")
    assert profile.model.head_layers == heads
    assert profile.model.head_layers[-1] == layers, "the full model is a head"


def test_model_and_device_come_from_the_environment(tmp_path, clean_env):
    folder = _model_folder(tmp_path)
    clean_env.setenv(MODEL_ENV, str(folder))
    clean_env.setenv(DEVICE_ENV, "cpu")
    profile = get_profile("gpu")
    assert (profile.name, profile.model.source, profile.model.device) == ("gpu", str(folder), "cpu")
    assert profile.data == GPU.data and profile.train == GPU.train, "no dry run unless asked"


def test_without_a_model_the_profile_is_its_template_but_a_run_refuses(clean_env):
    assert get_profile("gpu") is GPU and get_profile("gpu", resolve=False) is GPU
    with pytest.raises(ConfigError, match="needs a model"):
        run_profile("gpu")


@pytest.mark.parametrize(
    ("make_folder", "message"),
    [
        (lambda root: None, "needs a model: make reproduce PROFILE=gpu MODEL="),
        (lambda root: root / "nowhere", "is not a folder"),
        (lambda root: _model_folder(root) / "..", "cannot read its config.json"),
        (lambda root: _model_folder(root, model_type="mistral"), "Llama-family"),
        (lambda root: _model_folder(root, weights=False), r"no weights \(\*.safetensors or \*.bin\)"),
        (lambda root: _model_folder(root, layers=None), "num_hidden_layers"),
    ],
    ids=["no-model", "not-a-folder", "no-config-json", "not-llama", "no-weights", "no-depth"],
)
def test_a_wrong_model_is_a_clear_error(tmp_path, clean_env, make_folder, message):
    folder = make_folder(tmp_path)
    with pytest.raises(ConfigError, match=message):
        gpu_profile(folder, device="cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_says_how_to_dry_run_on_the_cpu(tmp_path, clean_env):
    with pytest.raises(ConfigError, match=f"sees no CUDA GPU.*{DEVICE_ENV}=cpu"):
        gpu_profile(_model_folder(tmp_path))


def test_an_unknown_device_is_a_clear_error(tmp_path, clean_env):
    with pytest.raises(ConfigError, match="unknown device 'tpu9'"):
        gpu_profile(_model_folder(tmp_path), device="tpu9")


def test_a_dry_run_keeps_the_gpu_code_path_at_the_smoke_sizes(tmp_path, clean_env):
    clean_env.setenv(DRY_RUN_ENV, "1")
    profile = gpu_profile(_model_folder(tmp_path), device="cpu")
    assert profile.name == "gpu" and profile.train == GPU.train and profile.model.source != GPU.model.source
    assert (profile.prompt.k, profile.prompt.max_tokens) == (GPU.prompt.k, SMOKE.prompt.max_tokens)
    caps = (profile.data.train_cap, profile.data.valid_cap, profile.data.test_cap)
    assert caps == (SMOKE.data.train_cap, SMOKE.data.valid_cap, SMOKE.data.test_cap)
    assert profile.lightgcn.max_epochs == SMOKE.lightgcn.max_epochs
