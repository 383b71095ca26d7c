"""Run profiles as typed dataclasses: ``smoke`` (seconds to minutes, tiny model, synthetic data),
``cpu`` (SmolLM2 on MovieLens-100K within 60 minutes on 2 cores) and ``gpu`` (paper scale).

A profile composes the configuration objects of the modules that use them (data, LightGCN,
prompts, training), so each module owns its own settings and the profile only picks values.

The ``gpu`` profile is a template until it is pointed at a model: :func:`get_profile` resolves it
with :func:`gpu_profile` against the folder in ``$RAGREC_MODEL`` (``make reproduce PROFILE=gpu
MODEL=/path``) and derives the exit heads from the model's depth. Environment variables carry
the choice because the notebooks run in kernels, which inherit the runner's environment.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

from ragrec.errors import ConfigError
from ragrec.llm.backbone import SUPPORTED_MODEL_TYPES
from ragrec.model.heads import default_head_layers
from ragrec.model.prompts import PromptConfig
from ragrec.model.train import LoraSettings, TrainConfig
from ragrec.retrieval.lightgcn import LightGCNConfig


@dataclass(frozen=True)
class DataSettings:
    """Which samples a run uses. Caps are per split part, drawn stratified by label (None: all)."""

    dataset: str = "ml-100k"
    split_method: str = "per_user"
    min_history: int = 5
    history_len: int = 10
    # The target user's own history: every earlier interaction of theirs ("prior", the paper's and
    # ReLLa's convention), not only the training-period ones ("train"). Training samples see the
    # same histories either way under the per-user split (their past lies in the training period);
    # with "train", a test sample's history would end where the user's training period ends, a
    # staleness the model never saw in training. Other users' interactions (retrieval, neighbours,
    # item shares) stay training-period only.
    history_scope: str = "prior"
    train_cap: int | None = None
    valid_cap: int | None = None
    test_cap: int | None = None
    synthetic_users: int = 200
    synthetic_items: int = 300


MODEL_ENV = "RAGREC_MODEL"
"""The local Hugging Face folder the ``gpu`` profile runs (``make reproduce PROFILE=gpu MODEL=...``)."""
DEVICE_ENV = "RAGREC_DEVICE"
"""Where the ``gpu`` profile's backbone runs (default ``cuda``; ``cpu`` for a dry run)."""
DRY_RUN_ENV = "RAGREC_DRY_RUN"
"""``1``: the ``gpu`` profile's code path at smoke sizes (:func:`dry_run`)."""


@dataclass(frozen=True)
class ModelSettings:
    """The backbone (``bundled``, ``tiny`` or a local HF folder) and where its exit heads sit."""

    source: str = "bundled"
    head_layers: tuple[int, ...] = (5, 10, 15, 20, 25, 30)
    tiny_layers: int = 6
    tiny_hidden: int = 64
    device: str | None = None  # None: CUDA when available, else CPU


@dataclass(frozen=True)
class Profile:
    """Everything a reproduction run needs; one instance per profile name."""

    name: str
    seed: int
    data: DataSettings
    model: ModelSettings
    lightgcn: LightGCNConfig
    prompt: PromptConfig
    train: TrainConfig
    contexts: tuple[str, ...] = ("none", "random", "gcn", "llm")
    eval_batch_size: int = 16
    # Optimizer steps of the β = 0 ablation run (None: the whole main run). When set, the ablation
    # stops there on the main run's learning-rate schedule and is compared with the main run's
    # snapshot at that step (variant "beta_ref"), not with the finished main model.
    beta_ablation_steps: int | None = None
    notes: str = ""

    @property
    def k(self) -> int:
        """Similar users whose histories a prompt shows."""
        return self.prompt.k

    def with_dataset(self, dataset: str) -> Profile:
        return dataclasses.replace(self, data=dataclasses.replace(self.data, dataset=dataset))


SMOKE = Profile(
    name="smoke",
    seed=0,
    data=DataSettings(dataset="synthetic", history_len=6, train_cap=192, valid_cap=64, test_cap=128,
                      synthetic_users=120, synthetic_items=150),
    model=ModelSettings(source="tiny", head_layers=(2, 4, 6), tiny_layers=6, tiny_hidden=64),
    lightgcn=LightGCNConfig(dim=32, max_epochs=20, eval_every=5, patience=2, batch_size=512, progress=False),
    prompt=PromptConfig(history_len=6, k=2, neighbour_items=2, vote_k=10, max_tokens=256),
    train=TrainConfig(lr=5e-3, beta=0.1, epochs=2, batch_size=16, eval_every=1000, checkpoint_every=1000,
                      lora=LoraSettings(r=4, alpha=8, dropout=0.0)),
    eval_batch_size=32,
    beta_ablation_steps=6,
    notes="Whole pipeline on a synthetic dataset with a tiny random Llama: checks plumbing, not accuracy.",
)

CPU = Profile(
    name="cpu",
    seed=0,
    data=DataSettings(dataset="ml-100k", history_len=10, train_cap=1600, valid_cap=150, test_cap=400),
    model=ModelSettings(source="bundled", head_layers=(5, 10, 15, 20, 25, 30)),
    lightgcn=LightGCNConfig(),
    # Training prompts (mixed contexts) average ~180 tokens: ~195 with similar users, ~138 without.
    # vote_k=200: 94% of test targets have a rater among the 200 nearest users (83% with 50), and
    # the share who liked it is less noisy.
    prompt=PromptConfig(history_len=5, k=2, neighbour_items=1, vote_k=200, max_tokens=224),
    # Two epochs: 800 steps of 4 over 1,600 prompts, under bf16 autocast (~2.1 s a step on 2 cores
    # with length-bucketed batches, against ~2.7 s in fp32; at step 100 the two runs' losses agree
    # to 0.001 and the last head's test AUC to 0.0001). The time bf16 saves buys 400 more prompts.
    # A second epoch lifted the last head from 0.736 to 0.760 on 400 further validation samples
    # (GCN-context training, session 5). At one epoch's compute, batch 4 beat batch 8 (0.736 vs
    # 0.729; layer-15 head 0.70 vs 0.61), lr 3e-3 beat 2e-3 (0.727) and 5e-3 (0.720, batch 8);
    # LoRA on the MLPs, self-distillation and trained readouts did not lift the last head.
    train=TrainConfig(lr=3e-3, beta=0.1, epochs=2, batch_size=4, bf16_autocast=True, eval_every=400, checkpoint_every=50),
    # Two 800-step models do not fit the hour: the β = 0 run stops after 100 steps on the same
    # schedule and is compared with the main run's snapshot at step 100.
    beta_ablation_steps=100,
    notes="SmolLM2-135M-Instruct on MovieLens-100K, sized for 60 minutes on 2 CPU cores.",
)

# Paper scale on one 80 GB GPU: Vicuna-7B (32 layers, hidden 4096, MLP 11008) in bf16, LoRA r8.
# Memory of a training step:
#   weights: 6.7 B params x 2 B                                                    13.5 GB
#   LoRA (r8 on q, k, v, o: 8.4 M params) with grads and Adam moments in fp32      0.1 GB
#   activations kept for backward (bf16, no checkpointing), per token and layer:
#     9 x 4096 (norms, q, k, v, attention, residual) + 4 x 11008 (gate, up, act, product)
#     = 81 k values = 162 KB; x 32 layers = 5.2 MB a token, ~6 MB with RMSNorm's fp32 copies;
#     a micro-batch of 4 prompts x 1024 tokens = 4,096 tokens                       25 GB
#   total ~40 GB: half the card, so the estimate may be off by 2x.
# A micro-batch of 16 would need ~110 GB without gradient checkpointing (~21 GB with it, for ~1.3x
# the compute), so the global batch of 32 is 8 accumulated micro-batches of 4, with no checkpointing.
# Evaluation (no grad): 33 hidden states of 64 x 1024 x 4096 in bf16 (18 GB) + weights = ~36 GB.
GPU = Profile(
    name="gpu",
    seed=0,
    data=DataSettings(dataset="ml-100k", history_len=20, train_cap=None, valid_cap=2000, test_cap=None),
    # A template: gpu_profile() sets the source and derives the heads from the folder's depth
    # (shown for Vicuna-7B: every 5 layers plus the last, so the full model is a head).
    model=ModelSettings(source=f"${MODEL_ENV}", head_layers=default_head_layers(32), device="cuda"),
    lightgcn=LightGCNConfig(),
    prompt=PromptConfig(history_len=20, k=5, neighbour_items=5, vote_k=30, max_tokens=1024),
    train=TrainConfig(lr=5e-4, beta=0.1, epochs=2, batch_size=4, grad_accum=8, eval_every=500, checkpoint_every=200),
    eval_batch_size=64,
    notes="Paper scale: full splits, longer prompts, a local Llama-family model (e.g. Vicuna-7B) in bf16 on CUDA.",
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


# --------------------------------------------------------------------------------------------
# the gpu profile, pointed at a model


def gpu_profile(model: str | os.PathLike | None = None, *, device: str | None = None,
                smoke_sizes: bool | None = None) -> Profile:
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
    settings = dataclasses.replace(GPU.model, source=str(folder), head_layers=default_head_layers(layers), device=device)
    profile = dataclasses.replace(GPU, model=settings)
    if smoke_sizes is None:
        smoke_sizes = os.environ.get(DRY_RUN_ENV) == "1"
    return dry_run(profile) if smoke_sizes else profile


def _model_folder(model: str | os.PathLike | None) -> Path:
    if not model:
        raise ConfigError(
            "the gpu profile needs a model: make reproduce PROFILE=gpu MODEL=/path/to/hf-llama-folder "
            f"(or export {MODEL_ENV}=/path), a local Hugging Face folder of a Llama-family model such as Vicuna-7B"
        )
    folder = Path(model).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"MODEL={str(model)!r} is not a folder; point it at a local Hugging Face model folder")
    return folder


def llama_depth(folder: str | os.PathLike) -> int:
    """The number of decoder layers of the Llama-family model in ``folder``, read from its
    ``config.json`` without loading weights; ConfigError naming what is wrong otherwise."""
    folder = Path(folder)
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f"{folder} is not a Hugging Face model folder: cannot read its config.json ({err})") from None
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
        raise ConfigError(f"{torch.cuda.get_device_name()} has no bf16, which the gpu profile's batch sizes "
                          "assume; use an Ampere or newer GPU")


def dry_run(profile: Profile) -> Profile:
    """``profile``'s code path at smoke sizes: the smoke profile's sample caps, prompt token
    budget and LightGCN epochs. The model, its heads, the prompts' contents, the training
    settings and the profile's name (on which the benchmarks' defaults key) stay."""
    data = dataclasses.replace(profile.data, train_cap=SMOKE.data.train_cap, valid_cap=SMOKE.data.valid_cap,
                               test_cap=SMOKE.data.test_cap)
    prompt = dataclasses.replace(profile.prompt, max_tokens=SMOKE.prompt.max_tokens)
    # The smoke schedule at the profile's own batch size: smoke's small batches make an epoch
    # of a real dataset's graph 4x longer.
    smoke = SMOKE.lightgcn
    lightgcn = dataclasses.replace(profile.lightgcn, max_epochs=smoke.max_epochs, eval_every=smoke.eval_every,
                                   patience=smoke.patience, progress=False)
    return dataclasses.replace(profile, data=data, prompt=prompt, lightgcn=lightgcn,
                               notes=f"{profile.notes} Dry run at the smoke profile's sizes.")
