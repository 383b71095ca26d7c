"""The settings a profile is made of, each typed: data, model, evaluation, the β study, the
collaborative-token variant, and :class:`Profile` itself."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ragrec.config.compute import ComputeConfig
from ragrec.config.exit import ExitBenchmarkConfig
from ragrec.config.sweeps import RetrievalSweeps
from ragrec.errors import ConfigError
from ragrec.model.prompts import PromptConfig
from ragrec.model.train import TrainConfig
from ragrec.retrieval.base import RetrieverConfig
from ragrec.retrieval.factory import retriever_class
from ragrec.retrieval.gcn import GCNRetrieverConfig
from ragrec.retrieval.lightgcn import LightGCNConfig
from ragrec.retrieval.llm import LLMRetrieverConfig
from ragrec.retrieval.simple import RandomRetrieverConfig


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


ATTENTION = ("sdpa", "eager")
"""The attention kernels the layer-by-layer engine builds masks for."""
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
    # The attention kernel every path runs (training, scoring, the engine, the plain forward).
    # "eager" on CPU: SDPA's CPU kernel blocks its sums by the padded length, so a bf16 row's
    # scores move (up to 2e-3 after one layer) when its batch mates change, and the engine's exits
    # then disagree with the replay of the saved predictions on ~8% of requests; eager attention
    # with right padding gives every row the same numbers in any batch (issue #27, measured on
    # SmolLM2: 100% agreement, and not slower at these lengths).
    attention: str = "sdpa"

    def __post_init__(self) -> None:
        if self.attention not in ATTENTION:
            raise ConfigError(f"attention must be one of {ATTENTION}, got {self.attention!r}")


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
        valid_contexts: contexts whose validation predictions are saved (split ``valid``, all
            heads: :class:`ragrec.result_files.Predictions`) for the choices made on them.
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
class BetaStudy:
    """The β study: runs identical but for β (the profile's β and 0), each repeated with several
    seeds, on one schedule of its own, scored on the same test samples (the reduced subset, GCN
    context, the profile's scoring dtype). The verdict rests on the between-seed spread.

    A seed sets what differs from run to run: the LoRA init (``attach_lora(seed=)``), the batch
    order and the LoRA dropout (``TrainConfig.seed``). The two arms of one seed share all three,
    so they are paired seed by seed; the training prompts are the same for every run.

    Attributes:
        seeds: one run per arm and seed (≥ 2, distinct: an interval over seeds needs two).
        train_cap: training prompts of every run, a seeded label-stratified subset of the main
            run's in the same order (None: all of them).
        epochs: epochs of every run (None: the main run's).
        lr: lr_0 of both arms (None: the main run's); β > 0 scales the deeper groups down from it.
        batch_size: prompts per optimizer step (None: the main run's).
        valid_cap: validation prompts (a stratified subset, GCN context) of the learning curve.
        curve_points: validation AUCs per run, evenly spaced, the last at the run's end.
        matched_depth: the early-exit trade-off's compute budget, a share of the deepest head's
            layer: the stability rule's AUC at that mean exit layer (interpolated along τ).
    """

    seeds: tuple[int, ...] = (0, 1, 2)
    train_cap: int | None = None
    epochs: int | None = None
    lr: float | None = None
    batch_size: int | None = None
    valid_cap: int = 300
    curve_points: int = 3
    matched_depth: float = 0.5

    def __post_init__(self) -> None:
        if len(self.seeds) < 2 or len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
            raise ConfigError(f"BetaStudy needs ≥ 2 distinct seeds ≥ 0, got {self.seeds}")
        for name in ("train_cap", "epochs", "batch_size"):
            if (value := getattr(self, name)) is not None and value < 1:
                raise ConfigError(f"BetaStudy.{name} must be ≥ 1 or None, got {value}")
        if self.lr is not None and not self.lr > 0:
            raise ConfigError(f"BetaStudy.lr must be > 0 or None, got {self.lr}")
        if self.valid_cap < 1 or self.curve_points < 1:
            raise ConfigError(
                f"BetaStudy needs valid_cap and curve_points ≥ 1, got {self.valid_cap}, {self.curve_points}"
            )
        if not 0.0 < self.matched_depth <= 1.0:
            raise ConfigError(
                f"BetaStudy.matched_depth is a share of the depth in (0, 1], got {self.matched_depth}"
            )

    def arms(self, beta: float) -> tuple[float, float]:
        """The two arms' β: the profile's ``beta`` (depth-wise decay) and 0 (uniform rates)."""
        return (beta, 0.0)


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
        if (
            (self.train_cap is not None and self.train_cap < 1)
            or self.epochs < 1
            or self.lr <= 0
            or self.expansion < 1
        ):
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
    # (ragrec.experiments.early_exit.benchmark.default_exit_config).
    exit: ExitBenchmarkConfig
    contexts: tuple[str, ...] = ("none", "random", "gcn", "llm")
    eval_batch_size: int = 16
    evaluation: EvalSettings = EvalSettings()
    # Training prompts' GCN neighbours come from retrievers fitted without the sample's own
    # interaction, in this many folds (1: the plain retriever, which has seen that edge).
    train_folds: int = 2
    beta_study: BetaStudy | None = BetaStudy()  # None: no β ablation
    cf: CFSettings | None = CFSettings()  # None: no collaborative-token variant
    # The retrieval chapter's sweeps: density and depth, LightGCN architecture, ANN at scale
    sweeps: RetrievalSweeps = RetrievalSweeps()
    compute: ComputeConfig = ComputeConfig()  # the compute table's sizes (compute.csv)
    notes: str = ""

    @property
    def k(self) -> int:
        """Similar users whose histories a prompt shows."""
        return self.prompt.k

    def retriever_config(self, name: str) -> RetrieverConfig:
        """The typed config of retriever ``name`` with the values this profile picks; every other
        field keeps the retriever module's default."""
        picks = {
            GCNRetrieverConfig: {"lightgcn": self.lightgcn},
            LLMRetrieverConfig: {
                "history_items": self.data.history_len,
                "batch_size": self.eval_batch_size,
                "backbone": self.model.source,
            },
            RandomRetrieverConfig: {"seed": self.seed},
        }
        config_class = retriever_class(name)
        return config_class(**picks.get(config_class, {}))

    def with_dataset(self, dataset: str) -> Profile:
        return dataclasses.replace(self, data=dataclasses.replace(self.data, dataset=dataset))
