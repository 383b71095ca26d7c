"""Profiles by name: :func:`get_profile`, which points the ``gpu`` template at a local model folder
(its depth sets the exit heads; a dry run takes the same code path on a CPU at smoke sizes)."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from ragrec.config.compute import ComputeConfig
from ragrec.config.profiles import CPU, GPU, SMOKE
from ragrec.config.settings import DEVICE_ENV, DRY_RUN_ENV, MODEL_ENV, Profile
from ragrec.errors import ConfigError
from ragrec.llm.backbone import SUPPORTED_MODEL_TYPES
from ragrec.model.heads import default_head_layers

# --------------------------------------------------------------------------------------------
# the gpu profile, pointed at a model


def gpu_profile(
    model: str | os.PathLike | None = None, *, device: str | None = None, smoke_sizes: bool | None = None
) -> Profile:
    """The ``gpu`` profile running a local Llama-family Hugging Face folder, with exit heads every
    5 layers plus the last (:func:`~ragrec.model.heads.default_head_layers` of its depth).

    Args:
        model (str or PathLike, optional): the model folder. (default: ``$RAGREC_MODEL``)
        device (str, optional): where the backbone runs; ``cpu`` runs the gpu code path on a CPU
            in fp32. (default: ``$RAGREC_DEVICE``, else ``cuda``)
        smoke_sizes (bool, optional): apply :func:`dry_run`. (default: whether
            ``$RAGREC_DRY_RUN`` is ``1``)

    Raises:
        ConfigError: no model given, a folder that is not a Llama-family model, or a CUDA device
            that is absent or lacks bf16.
    """
    folder = _model_folder(model if model is not None else os.environ.get(MODEL_ENV))
    layers = llama_depth(folder)
    device = device or os.environ.get(DEVICE_ENV) or "cuda"
    check_device(device)
    settings = dataclasses.replace(
        GPU.model, source=str(folder), head_layers=default_head_layers(layers), device=device
    )
    profile = dataclasses.replace(GPU, model=settings)
    if smoke_sizes is None:
        smoke_sizes = os.environ.get(DRY_RUN_ENV) == "1"
    return dry_run(profile) if smoke_sizes else profile


def _model_folder(model: str | os.PathLike | None) -> Path:
    if not model:
        raise ConfigError(
            "the gpu profile needs a model: make reproduce PROFILE=gpu MODEL=/path/to/hf-llama-folder "
            f"(or export {MODEL_ENV}=/path), a local Hugging Face folder of a Llama-family model such as "
            "Vicuna-7B"
        )
    folder = Path(model).expanduser()
    if not folder.is_dir():
        raise ConfigError(
            f"MODEL={str(model)!r} is not a folder; point it at a local Hugging Face model folder"
        )
    return folder


def llama_depth(folder: str | os.PathLike) -> int:
    """The number of decoder layers of the Llama-family model in ``folder``, read from its
    ``config.json`` without loading weights; ConfigError naming what is wrong otherwise."""
    folder = Path(folder)
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(
            f"{folder} is not a Hugging Face model folder: cannot read its config.json ({err})"
        ) from None
    model_type = config.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ConfigError(
            f"{folder} holds a {model_type!r} model; the layer-by-layer early-exit engine runs Llama-family "
            f"models only (config.json model_type in {sorted(SUPPORTED_MODEL_TYPES)}), e.g. Vicuna or SmolLM2"
        )
    if not any(folder.glob("*.safetensors")) and not any(folder.glob("*.bin")):
        raise ConfigError(f"{folder} has a config.json but no weights (*.safetensors or *.bin)")
    layers = config.get("num_hidden_layers")
    if not isinstance(layers, int) or layers < 1:
        raise ConfigError(f"{folder / 'config.json'} gives no positive num_hidden_layers (got {layers!r})")
    return layers


def check_device(device: str) -> None:
    """A CUDA ``device`` must be there and support bf16 (the gpu profile's memory budget assumes it)."""
    import torch

    try:
        kind = torch.device(device).type
    except RuntimeError:
        raise ConfigError(f"unknown device {device!r}; use cuda, cuda:N or cpu") from None
    if kind != "cuda":
        return
    if not torch.cuda.is_available():
        raise ConfigError(
            f"the gpu profile runs on CUDA, but torch {torch.__version__} sees no CUDA GPU; on a GPU machine "
            "install a CUDA build of torch (make install TORCH_SPEC=...), or dry-run the code path on "
            f"this CPU with {DEVICE_ENV}=cpu (make reproduce PROFILE=gpu MODEL=... DEVICE=cpu)"
        )
    if not torch.cuda.is_bf16_supported():
        raise ConfigError(
            f"{torch.cuda.get_device_name()} has no bf16, which the gpu profile's batch sizes "
            "assume; use an Ampere or newer GPU"
        )


def dry_run(profile: Profile) -> Profile:
    """``profile``'s code path at smoke sizes: the smoke profile's sample caps, prompt token
    budget, LightGCN epochs, β study, retrieval sweeps and compute table. The model, its heads,
    the prompts' contents, the training settings and the profile's name (on which the
    benchmarks' defaults key) stay."""
    data = dataclasses.replace(
        profile.data,
        train_cap=SMOKE.data.train_cap,
        valid_cap=SMOKE.data.valid_cap,
        test_cap=SMOKE.data.test_cap,
    )
    prompt = dataclasses.replace(profile.prompt, max_tokens=SMOKE.prompt.max_tokens)
    # The smoke schedule at the profile's own batch size: smoke's small batches make an epoch
    # of a real dataset's graph 4x longer.
    smoke = SMOKE.lightgcn
    lightgcn = dataclasses.replace(
        profile.lightgcn,
        max_epochs=smoke.max_epochs,
        eval_every=smoke.eval_every,
        patience=smoke.patience,
        progress=False,
    )
    # the β study, the retrieval sweeps and the compute table at smoke's sizes too: the gpu
    # profile's own (seeds × arms of full runs, ANN at 10⁶ users) would take hours on a CPU
    return dataclasses.replace(
        profile,
        data=data,
        prompt=prompt,
        lightgcn=lightgcn,
        beta_study=SMOKE.beta_study,
        sweeps=SMOKE.sweeps,
        compute=_dry_compute(profile),
        notes=f"{profile.notes} Dry run at the smoke profile's sizes.",
    )


def _dry_compute(profile: Profile) -> ComputeConfig:
    """Smoke's compute table with enough prompts for its training steps at ``profile``'s own
    batch and accumulation (the gpu profile's step takes 32 prompts)."""
    smoke = SMOKE.compute
    per_step = profile.train.batch_size * profile.train.grad_accum
    return dataclasses.replace(
        smoke, n_prompts=max(smoke.n_prompts, (smoke.warmup + smoke.train_steps) * per_step)
    )


PROFILES: dict[str, Profile] = {p.name: p for p in (SMOKE, CPU, GPU)}


def get_profile(name: str, *, resolve: bool = True) -> Profile:
    """The profile called ``name``; ConfigError listing the choices otherwise.

    Args:
        name (str): ``smoke``, ``cpu`` or ``gpu``.
        resolve (bool, optional): point the ``gpu`` template at the model in ``$RAGREC_MODEL``
            with :func:`gpu_profile` when one is set; False always returns the template, for
            callers that need only the name and seed (planning, status, the book).
            (default: :obj:`True`)
    """
    try:
        profile = PROFILES[name]
    except KeyError:
        raise ConfigError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}") from None
    if name == "gpu" and resolve and os.environ.get(MODEL_ENV):
        return gpu_profile()
    return profile


def run_profile(name: str) -> Profile:
    """The profile a run executes: :func:`get_profile`, except that the ``gpu`` profile must be
    pointed at a model (:func:`gpu_profile` raises why it cannot be)."""
    return gpu_profile() if name == "gpu" else get_profile(name)
