"""Every results-file name, and how a predictions file's name is built and parsed.

A notebook writes its tables into ``results/<profile>/<dataset>/``; the book, the claims check,
the status report and other notebooks read them back. This module is the one place that spells
those names: everything else imports the constant, or builds a :class:`Predictions` name.

The recommender's per-sample predictions are one file per (split, context, variant)::

    predictions_[valid_]<context>[_<variant>].csv

``split`` is ``test`` (no infix) or ``valid``; ``context`` is a prompt context (``none``,
``random``, ``gcn``, ``llm``, …: no underscore, so the name parses back); ``variant`` is the
model variant, ``main`` left out of the name (``cf``, ``fp32``, ``study_beta0.1_seed2``, …).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

DATA = "data.csv"
HEADS = "heads.csv"
TRAINING = "training.csv"
INFORMATION = "information.csv"
CF_CHOICE = "cf_choice.csv"
RETRIEVAL = "retrieval.csv"
LIGHTGCN = "lightgcn.csv"
LIGHTGCN_HISTORY = "lightgcn_history.csv"
ABLATIONS = "ablations.csv"
EARLY_EXIT = "early_exit.csv"
THRESHOLD_SWEEP = "threshold_sweep.csv"
EARLY_EXIT_PREDICTIONS = "early_exit_predictions.csv"
BASELINES = "baselines.csv"
BASELINE_PREDICTIONS = "predictions_baselines.csv"
"""The classical baselines' per-sample scores: not a recommender predictions file."""
PROMPT_NUMBERS = "prompt_numbers.csv"
"""LR/GBDT on the prompt's numbers with and without the vote, beside the LLM (issue #28)."""
VOTE_DEPTH = "vote_depth.csv"
"""The prompt-number models' AUC as the vote polls more retrieved users."""
COLD_START = "cold_start.csv"
"""AUC by the target item's earlier training ratings, per method."""
PREDICTIONS_PROMPT_NUMBERS = "prompt_numbers_predictions.csv"
"""The prompt-number features and models' per-sample test scores."""
CONTEXT_EFFECT = "context_effect.csv"
"""Final-head AUC differences between prompt contexts, paired on the samples both scored."""
DENSITY = "density.csv"
"""The GCN retrained on subsampled training graphs: retrieval metrics, vote baseline, LLM AUC."""
PROMPT_DEPTH = "prompt_depth.csv"
"""The trained LLM with k retrieved users shown: AUC, prompt tokens and measured requests/s."""
DENSITY_PREDICTIONS = "density_predictions.csv"
"""Final-head P(Yes) per test sample at every density and k of the two sweeps."""
ARCHITECTURE = "architecture.csv"
"""The LightGCN architecture sweep (layers, size, read-out) judged on validation."""
ANN_BENCHMARK = "ann_benchmark.csv"
"""Exact vs FAISS HNSW/IVF cosine top-k over synthetic user embeddings at 10⁴–10⁶ users."""
BETA_STUDY = "beta_study.csv"
"""The β study's verdict table: per head and for the early-exit trade-off, per seed and the
between-seed mean difference with its seed-level interval."""
BETA_RUNS = "beta_runs.csv"
"""One row per β-study run: arm, seed, lr_0, the mean learning-rate factor, steps, prompts seen."""
LEARNING_CURVE = "learning_curve.csv"
"""Validation AUC per head against training steps: the β study's runs and the main run (issue #28)."""
LEARNING_CURVE_MEANS = "learning_curve_means.csv"
"""The learning curves per arm: mean validation AUC over seeds with its t-interval, per step and head."""
CLAIMS = "claims.csv"
COMPUTE = "compute.csv"
"""Tokens/s and the share of the measured bf16 matmul limit of each model path (issue #26)."""
RUN_TIMES = "run_times.csv"
PROVENANCE = "provenance.json"
MANIFEST = "reproduce.json"

Split = Literal["test", "valid"]
SPLITS: tuple[str, ...] = get_args(Split)

_PREFIX, _SUFFIX, _VALID = "predictions_", ".csv", "valid_"
_RESERVED_CONTEXTS = ("valid", "baselines")  # would read back as a split or the baselines file


@dataclass(frozen=True, order=True)
class Predictions:
    """One recommender predictions file: columns ``sample_id``, ``user``, ``item``, ``label``,
    ``p_head_<L>`` per exit head (P(Yes) in [0, 1]), written by the recommender notebook.

    Args:
        context (str): the prompt context the samples were scored under (no underscore).
        variant (str, optional): the model variant. (default: ``"main"``)
        split (str, optional): ``"test"`` or ``"valid"``. (default: ``"test"``)
    """

    context: str
    variant: str = "main"
    split: Split = "test"

    def __post_init__(self) -> None:
        if not self.context or "_" in self.context or self.context in _RESERVED_CONTEXTS:
            raise ValueError(
                f"context {self.context!r} cannot name a predictions file: it must be non-empty, "
                f"without '_', and not one of {_RESERVED_CONTEXTS}"
            )
        if not self.variant:
            raise ValueError("variant must be non-empty ('main' for the main model)")
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {self.split!r}")

    @property
    def name(self) -> str:
        """The file name, e.g. ``predictions_valid_gcn_cf.csv``."""
        split = _VALID if self.split == "valid" else ""
        variant = "" if self.variant == "main" else f"_{self.variant}"
        return f"{_PREFIX}{split}{self.context}{variant}{_SUFFIX}"

    @classmethod
    def parse(cls, name: str) -> Predictions | None:
        """The file ``name`` stands for, or None when it is no recommender predictions file."""
        if not (name.startswith(_PREFIX) and name.endswith(_SUFFIX)) or name == BASELINE_PREDICTIONS:
            return None
        stem = name[len(_PREFIX) : -len(_SUFFIX)]
        split: Split = "test"
        if stem.startswith(_VALID):
            split, stem = "valid", stem[len(_VALID) :]
        context, _, variant = stem.partition("_")
        try:
            return cls(context, variant or "main", split)
        except ValueError:
            return None


LEGACY_PAIR_VARIANT = "pair_beta"
"""Variant prefix of the β ablation's earlier single-seed pair (``pair_beta<β>``): no step writes
it any more; the recommender drops such files from a results folder it reruns in."""
STUDY_VARIANT = "study_beta"
"""Variant prefix of the β study's runs: ``study_beta<β>_seed<s>`` (:func:`study_variant`)."""
_SEED = "_seed"


def study_variant(beta: float, seed: int) -> str:
    """The β study run's variant name, e.g. ``study_beta0.1_seed2`` (β printed with ``:g``)."""
    return f"{STUDY_VARIANT}{beta:g}{_SEED}{seed}"


def parse_study_variant(variant: str) -> tuple[float, int] | None:
    """``(beta, seed)`` of a :func:`study_variant` name, or None when ``variant`` is no study run."""
    if not variant.startswith(STUDY_VARIANT) or _SEED not in variant:
        return None
    beta, _, seed = variant[len(STUDY_VARIANT) :].partition(_SEED)
    try:
        parsed = float(beta), int(seed)
    except ValueError:
        return None
    return parsed if study_variant(*parsed) == variant else None


def predictions(context: str, variant: str = "main", split: Split = "test") -> str:
    """The predictions file name for (context, variant, split): see :class:`Predictions`."""
    return Predictions(context, variant, split).name


def find_predictions(directory: str | Path) -> list[Predictions]:
    """Every recommender predictions file in ``directory``, sorted (the baselines' file is not one)."""
    found = (Predictions.parse(path.name) for path in Path(directory).glob(f"{_PREFIX}*{_SUFFIX}"))
    return sorted(p for p in found if p is not None)
