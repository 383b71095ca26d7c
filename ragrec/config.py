"""Run profiles as typed dataclasses: ``smoke`` (seconds to minutes, tiny model, synthetic data),
``cpu`` (SmolLM2 on MovieLens-100K within 100 minutes on 2 cores) and ``gpu`` (paper scale).

A profile composes the configuration objects of the modules that use them (data, LightGCN,
prompts, training), so each module owns its own settings and the profile only picks values.
The early-exit benchmark's settings (:class:`ExitBenchmarkConfig`) are defined here rather than
beside :func:`ragrec.experiments.exit_benchmark.run_exit_benchmark`: a profile carries them, and
this module sits below ``ragrec.experiments`` in the import order.

The ``gpu`` profile is a template until it is pointed at a model: :func:`get_profile` resolves it
with :func:`gpu_profile` against the folder in ``$RAGREC_MODEL`` (``make reproduce PROFILE=gpu
MODEL=/path``) and derives the exit heads from the model's depth. Environment variables carry
the choice because the notebooks run in kernels, which inherit the runner's environment.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ragrec.errors import ConfigError
from ragrec.llm.backbone import SUPPORTED_MODEL_TYPES
from ragrec.model.criteria import StabilityExit
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


# --------------------------------------------------------------------------------------------
# the early-exit benchmark

FORMS = ("difference", "ratio")  # the exit rule's forms (ragrec.model.criteria.StabilityExit)

# Probability grid for the difference form; log-odds (nats) grid for the ratio form. Near
# P = 0.5 a change of Δp is a log-odds change of about 4·Δp, hence the larger ratio values.
TAUS_DIFFERENCE = (0.0, 0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2)
TAUS_RATIO = (0.0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0)

# Whole requests: the paper's pipeline (LLM retriever, full depth), the GCN retriever at full
# depth, and ours (GCN retriever, early exit); see ragrec.experiments.end_to_end.
E2E_METHODS = ("e2e_llm_full", "e2e_gcn_full", "e2e_gcn_exit")


def check_taus(taus: Mapping[str, Sequence[float]]) -> None:
    """ConfigError unless ``taus`` maps known forms to non-empty grids of numbers ≥ 0."""
    if not isinstance(taus, Mapping) or not taus:
        raise ConfigError(f"taus must map a form ({FORMS}) to a non-empty sequence of τ ≥ 0, got {taus!r}")
    for form, grid in taus.items():
        if form not in FORMS:
            raise ConfigError(f"unknown exit form {form!r}; choose from {FORMS}")
        if len(grid) == 0:
            raise ConfigError(f"the τ grid of form {form!r} is empty")
        for tau in grid:
            number = isinstance(tau, (int, float, np.floating, np.integer)) and not isinstance(tau, bool)
            if not number or math.isnan(tau) or tau < 0:
                raise ConfigError(f"τ must be a number ≥ 0 (larger = earlier exit), got {tau!r} for form {form!r}")


def check_methods(methods: Sequence[str]) -> None:
    """ConfigError unless ``methods`` is a non-empty selection of :data:`E2E_METHODS`."""
    if not methods:
        raise ConfigError(f"give at least one end-to-end method of {E2E_METHODS}")
    unknown = [m for m in methods if m not in E2E_METHODS]
    if unknown:
        raise ConfigError(f"unknown end-to-end method(s) {unknown}; choose from {E2E_METHODS}")


def _check_count(config: object, name: str, minimum: int) -> None:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an int >= {minimum}, got {value!r}")


@dataclass(frozen=True)
class ExitBenchmarkConfig:
    """What :func:`ragrec.experiments.exit_benchmark.run_exit_benchmark` runs; each profile
    carries one (:attr:`Profile.exit`).

    Attributes:
        taus: τ grid per form (``{"difference": (...), "ratio": (...)}``); the difference form's τ
            is a probability, the ratio form's a log-odds change in nats. Include 0 (= full depth).
        first_head: ``"wait"`` (the first head has no predecessor and never exits; the paper's
            rule) or ``"confident"`` (see :class:`~ragrec.model.criteria.StabilityExit`).
        auc_tolerance: operating point = least compute with AUC ≥ full-depth AUC − this.
        n_boot: bootstrap resamples for the AUC intervals.
        context: which saved predictions / retriever the sweep and the engine benchmark use.
        n_requests: test samples (seeded draw) the engine benchmark scores.
        batch_size: prompts per batch, for the engine and the plain forward alike.
        repeats, warmup: timed passes per method (median reported) and untimed warm-up batches
            per method before the first.
        padding_side: how batches are padded (``"left"`` lets the plain forward compute the
            vocabulary logits at one position, as ``generate`` does).
        extra_points: ``(form, τ)`` pairs the real engine runs besides the operating point and
            each form's best point.
        check_requests: prompts on which the engine with "never exit" is checked against the
            plain forward (DESIGN §5: within 1e-5 in fp32) before timing.
        e2e_requests, e2e_batch_size, e2e_repeats, e2e_methods: the end-to-end measurement (its
            requests are the first ``e2e_requests`` of the engine benchmark's samples).
        threads: torch intra-op threads for the whole run (None: leave torch's setting; the count
            in effect is written to the table and provenance either way).
        seed: the request draw and the bootstrap.
    """

    taus: Mapping[str, tuple[float, ...]] = dataclasses.field(
        default_factory=lambda: {"difference": TAUS_DIFFERENCE, "ratio": TAUS_RATIO}
    )
    first_head: str = "wait"
    auc_tolerance: float = 0.005
    n_boot: int = 1000
    context: str = "gcn"
    n_requests: int = 96
    batch_size: int = 8
    repeats: int = 3
    warmup: int = 2
    padding_side: str = "left"
    extra_points: tuple[tuple[str, float], ...] = ()
    check_requests: int = 16
    e2e_requests: int = 48
    e2e_batch_size: int = 8
    e2e_repeats: int = 2
    e2e_methods: tuple[str, ...] = E2E_METHODS
    threads: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        check_taus(self.taus)
        for form, tau in self.extra_points:
            StabilityExit(float(tau), form=form, first_head=self.first_head)  # type: ignore[arg-type]
        for form in self.taus:  # e.g. first_head="confident" is defined for the difference form only
            StabilityExit(0.0, form=form, first_head=self.first_head)  # type: ignore[arg-type]
        if not 0 <= self.auc_tolerance < 1:
            raise ConfigError(f"auc_tolerance must lie in [0, 1), got {self.auc_tolerance}")
        if self.padding_side not in ("left", "right"):
            raise ConfigError(f"padding_side must be 'left' or 'right', got {self.padding_side!r}")
        for name in ("n_boot", "n_requests", "batch_size", "repeats", "e2e_batch_size", "e2e_repeats"):
            _check_count(self, name, 1)
        for name in ("warmup", "check_requests", "e2e_requests"):
            _check_count(self, name, 0)
        check_methods(self.e2e_methods)
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be >= 1 or None, got {self.threads}")


# --------------------------------------------------------------------------------------------
# profiles


@dataclass(frozen=True)
class EvalSettings:
    """Which samples each evaluation scores (validation chooses, test reports: DESIGN §5).

    Attributes:
        full_contexts: contexts scored on every test sample (``DataSettings.test_cap`` of them).
        reduced_cap: the other contexts and the ablation variants score this many test samples, a
            label-stratified subset of the same samples (so every comparison stays paired); None:
            all of them.
        valid_contexts: contexts whose validation predictions are saved
            (``predictions_valid_<context>.csv``, all heads) for the choices made on them.
        dtype: the dtype every trained model is scored in (LoRA merged, then cast); training
            keeps fp32 weights.
        dtype_check: this many of the reduced test samples are also scored in fp32 (variant
            ``fp32``) to measure what ``dtype`` costs in AUC (None: no check).
        validate_while_training: score the validation prompts every ``eval_every`` steps and at
            the end of each training run (into its ``state.json``).
    """

    full_contexts: tuple[str, ...] = ("gcn", "llm")
    reduced_cap: int | None = None
    valid_contexts: tuple[str, ...] = ("gcn",)
    dtype: str = "float32"
    dtype_check: int | None = None
    # Off: the validation predictions saved after training serve every choice, and scoring the same
    # prompts during training as well would pay for them twice (in fp32, the slower dtype).
    validate_while_training: bool = False

    def __post_init__(self) -> None:
        if self.reduced_cap is not None and self.reduced_cap < 1:
            raise ConfigError(f"reduced_cap must be ≥ 1 or None, got {self.reduced_cap}")
        if self.dtype not in ("float32", "bfloat16"):
            raise ConfigError(f"dtype must be 'float32' or 'bfloat16', got {self.dtype!r}")
        if self.dtype_check is not None and self.dtype_check < 1:
            raise ConfigError(f"dtype_check must be ≥ 1 or None, got {self.dtype_check}")


@dataclass(frozen=True)
class BetaPair:
    """The β ablation: two runs identical but for β (the profile's and 0), each with its complete
    schedule, scored on the same test samples.

    Attributes:
        train_cap: training prompts of both runs (the first ones of the main run's, same order);
            None: all of them, and the β > 0 member is the main model itself.
        epochs: epochs of both runs (None: the main run's).
    """

    train_cap: int | None = None
    epochs: int | None = None

    def __post_init__(self) -> None:
        if (self.train_cap is not None and self.train_cap < 1) or (self.epochs is not None and self.epochs < 1):
            raise ConfigError(f"BetaPair needs train_cap and epochs ≥ 1 or None, got {self}")

    @property
    def is_main_schedule(self) -> bool:
        return self.train_cap is None and self.epochs is None


@dataclass(frozen=True)
class CFSettings:
    """The ``cf`` variant (beyond the paper): collaborative soft tokens on the trained main model.

    CoLLM's second step: the main run's LoRA and heads stay frozen and only the projection (and
    the unknown-id vectors) trains, on the main run's training prompts rebuilt with the slots.

    Attributes:
        contexts: contexts the variant is scored under (on the same samples as the main model).
        train_cap: training prompts (a stratified subset of the main run's; None: all).
        epochs: passes over them.
        lr: the projection's learning rate.
        expansion: the projection's hidden width as a multiple of the vectors' (CoLLM: 10).
    """

    contexts: tuple[str, ...] = ("gcn", "none")
    train_cap: int | None = None
    epochs: int = 1
    lr: float = 1e-3
    expansion: int = 10

    def __post_init__(self) -> None:
        if (self.train_cap is not None and self.train_cap < 1) or self.epochs < 1 or self.lr <= 0 or self.expansion < 1:
            raise ConfigError(f"invalid CFSettings {self}")


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
    # The early-exit benchmark's sizes; its seed and context follow the profile's
    # (ragrec.experiments.exit_benchmark.default_exit_config).
    exit: ExitBenchmarkConfig
    contexts: tuple[str, ...] = ("none", "random", "gcn", "llm")
    eval_batch_size: int = 16
    evaluation: EvalSettings = EvalSettings()
    # Training prompts' GCN neighbours come from retrievers fitted without the sample's own
    # interaction, in this many folds (1: the plain retriever, which has seen that edge).
    train_folds: int = 2
    beta_pair: BetaPair | None = BetaPair()  # None: no β ablation
    cf: CFSettings | None = CFSettings()  # None: no collaborative-token variant
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
    exit=ExitBenchmarkConfig(n_boot=200, n_requests=64, batch_size=8, repeats=2, warmup=1,
                             check_requests=8, e2e_requests=32, e2e_batch_size=8, e2e_repeats=1),
    eval_batch_size=32,
    evaluation=EvalSettings(reduced_cap=96, dtype="bfloat16", dtype_check=48),
    beta_pair=BetaPair(train_cap=96, epochs=1),
    cf=CFSettings(train_cap=96, lr=5e-3),
    notes="Whole pipeline on a synthetic dataset with a tiny random Llama: checks plumbing, not accuracy.",
)

CPU = Profile(
    name="cpu",
    seed=0,
    data=DataSettings(dataset="ml-100k", history_len=10, train_cap=1600, valid_cap=600, test_cap=2000),
    model=ModelSettings(source="bundled", head_layers=(5, 10, 15, 20, 25, 30)),
    lightgcn=LightGCNConfig(),
    # Training prompts (mixed contexts) average ~180 tokens: ~195 with similar users, ~138 without.
    # vote_k=200: 94% of test targets have a rater among the 200 nearest users (83% with 50), and
    # the share who liked it is less noisy.
    prompt=PromptConfig(history_len=5, k=2, neighbour_items=1, vote_k=200, max_tokens=224),
    # Two epochs of 800 steps of 4 under bf16 autocast: bf16 steps are faster on this CPU and
    # track fp32's losses (README, "Wall times"; method chapter), and the time saved buys more
    # prompts. Batch 4, lr 3e-3 and the second epoch come from earlier sessions' comparisons,
    # whose figures are in this comment's git history (not re-measured under this protocol).
    train=TrainConfig(lr=3e-3, beta=0.1, epochs=2, batch_size=4, bf16_autocast=True, eval_every=400, checkpoint_every=50),
    # bf16 scoring: the plain forward runs ~1.8x faster than fp32 on this CPU (AVX512-BF16)
    evaluation=EvalSettings(reduced_cap=1000, dtype="bfloat16", dtype_check=300),
    # Two more 800-step runs do not fit the budget: the β pair trains two complete 100-step runs.
    beta_pair=BetaPair(train_cap=400, epochs=1),
    # 256 timed requests: enough to time the engine steadily; accuracy is read off every test sample
    exit=ExitBenchmarkConfig(n_requests=256, batch_size=8, repeats=2, warmup=2, check_requests=16,
                             e2e_requests=32, e2e_batch_size=8, e2e_repeats=2),
    # CoLLM's second step: the projection alone, one pass over half the main run's prompts
    cf=CFSettings(train_cap=800, epochs=1, lr=1e-3),
    notes="SmolLM2-135M-Instruct on MovieLens-100K, sized for 100 minutes on 2 CPU cores.",
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
    # Timed batches as large as the evaluation's (eval_batch_size).
    exit=ExitBenchmarkConfig(n_requests=1024, batch_size=64, repeats=5, warmup=2, check_requests=64,
                             e2e_requests=512, e2e_batch_size=64, e2e_repeats=3),
    eval_batch_size=64,
    notes="Paper scale: full splits, longer prompts, a local Llama-family model (e.g. Vicuna-7B) in bf16 on CUDA.",
)

PROFILES: dict[str, Profile] = {p.name: p for p in (SMOKE, CPU, GPU)}


def get_profile(name: str, *, resolve: bool = True) -> Profile:
    """The profile called ``name``; ConfigError listing the choices otherwise.

    Args:
        name (str): ``smoke``, ``cpu`` or ``gpu``.
        resolve (bool, optional): point the ``gpu`` template at its model with
            :func:`gpu_profile`, which raises when none is set; False returns the template, for
            callers that need only the name and seed (planning, status, the book).
            (default: :obj:`True`)
    """
    try:
        profile = PROFILES[name]
    except KeyError:
        raise ConfigError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}") from None
    return gpu_profile() if name == "gpu" and resolve else profile


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
