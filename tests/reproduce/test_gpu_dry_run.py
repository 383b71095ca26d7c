"""A dry run of the gpu profile on the CPU: every notebook, through the exact code path of
``make reproduce PROFILE=gpu MODEL=...``, with a tiny random Llama of Vicuna-7B's depth (32
layers, hidden 64) saved as a Hugging Face folder, at the smoke profile's sample caps, on the
synthetic dataset (the loaders are tested on their own; ml-100k's full graph would add minutes of
LightGCN training here). It proves the plumbing (a local model folder, heads derived from its
depth, the gpu branches of every benchmark), not the numbers. Minutes on 2 cores."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from ragrec.config import DEVICE_ENV, DRY_RUN_ENV, MODEL_ENV
from ragrec.llm.backbone import tiny_backbone
from ragrec.model.heads import default_head_layers
from ragrec.reproduce.runner import run
from ragrec.reproduce.tasks import NOTEBOOKS

pytestmark = pytest.mark.gpu_dry_run

VICUNA_LAYERS = 32


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    """Run every notebook of the gpu profile once; yields (report, results folder, model folder)."""
    root = tmp_path_factory.mktemp("gpu-dry-run")
    model = root / "tiny-vicuna"
    backbone = tiny_backbone(num_layers=VICUNA_LAYERS, hidden_size=64, seed=0)
    backbone.model.save_pretrained(model)
    backbone.tokenizer.save_pretrained(model)
    with pytest.MonkeyPatch.context() as env:  # the notebooks' kernels inherit these
        env.setenv(MODEL_ENV, str(model))
        env.setenv(DEVICE_ENV, "cpu")
        env.setenv(DRY_RUN_ENV, "1")
        report = run("gpu", ["synthetic"], results_root=root / "results", progress_bar=False)
    yield report, root / "results" / "gpu" / "synthetic", model


def test_every_notebook_of_the_gpu_profile_runs(dry_run):
    report, out, _ = dry_run
    assert [name for name, _, _ in report.ran] == [spec.name for spec in NOTEBOOKS]
    for spec in NOTEBOOKS:
        for name in spec.outputs:
            assert (out / name).exists(), f"{spec.name} did not write {name}"


def test_the_heads_are_the_models_every_five_layers_plus_the_last(dry_run):
    _, out, _ = dry_run
    layers = sorted(pd.read_csv(out / "heads.csv")["head_layer"].unique().tolist())
    assert tuple(layers) == default_head_layers(VICUNA_LAYERS) == (5, 10, 15, 20, 25, 30, 32)


def test_the_run_records_the_model_folder_and_the_dry_run(dry_run):
    _, out, model = dry_run
    step = json.loads((out / "provenance.json").read_text())["steps"]["recommender"]
    assert step["parameters"]["model"]["source"] == str(model)
    assert step["parameters"]["model"]["device"] == "cpu"
    assert "Dry run" in step["parameters"]["notes"]
