"""What ``run_prompt_numbers`` writes: the prompt-number models beside the LLM, the vote's
information by retrieval depth, and AUC by item cold start (issue #28).

* :data:`~ragrec.result_files.PROMPT_NUMBERS` — LR and GBDT on the prompt's numbers
  (:mod:`ragrec.experiments.reporting.prompt_numbers`) with and without the vote, fitted on the
  LLM's own training samples (``_llm``) and on a seeded subset of every training sample (``_all``,
  ``PromptNumberRunConfig.all_cap`` of them), beside the LLM's final head per context, with
  paired-bootstrap AUC differences LLM(gcn) − method on the same test samples.
* :data:`~ragrec.result_files.VOTE_DEPTH` — per ``vote_k`` in ``depths`` (0: no vote), the
  models fitted on the LLM's training samples with the vote polled from the first ``vote_k``
  GCN neighbours, and the vote's test coverage: how much a deeper (or shallower) poll would carry.
* :data:`~ragrec.result_files.COLD_START` — AUC per bucket of the target item's earlier training
  ratings (:mod:`ragrec.experiments.reporting.cold_start`) for the LLM per context, the
  prompt-number models and the classical baselines (when ``predictions_baselines.csv`` exists).
* :data:`~ragrec.result_files.CONTEXT_EFFECT` — the LLM's final-head AUC differences between
  prompt contexts, and each prompt-number model with the vote minus without, paired
  (:mod:`ragrec.experiments.reporting.context_effect`).

Every feature is computed from training interactions strictly before its sample. Training
samples' neighbours come from the retriever fitted on all training interactions (the vote they
poll is still time-filtered, so a sample's own rating never enters its vote).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ragrec import result_files
from ragrec.config import Profile
from ragrec.data import cap_samples
from ragrec.errors import ConfigError
from ragrec.experiments.reporting.baseline_table import llm_predictions, score_table
from ragrec.experiments.reporting.baselines import item_likes_before
from ragrec.experiments.reporting.cold_start import BUCKET_EDGES, cold_start_table
from ragrec.experiments.reporting.context_effect import context_table, vote_rows
from ragrec.experiments.reporting.prompt_numbers import (
    PromptNumberConfig,
    prompt_number_features,
    prompt_number_scores,
    vote_counts,
)
from ragrec.metrics import auc
from ragrec.results import Provenance, read_csv, result_dir, write_csv

DEPTH_COLUMNS = ("vote_k", "model", "features", "auc", "vote_coverage", "n", "n_train")


@dataclass(frozen=True)
class PromptNumberRunConfig:
    """Settings of :func:`run_prompt_numbers`.

    Attributes:
        models: the models and their settings.
        all_cap: training samples of the ``_all`` fit (a seeded, label-stratified subset; None:
            every training sample).
        depths: ``vote_k`` values of the depth sweep (0: without the vote).
        edges: lower edges of the cold-start buckets.
        n_boot: bootstrap resamples of the intervals.
    """

    models: PromptNumberConfig = field(default_factory=PromptNumberConfig)
    all_cap: int | None = 20000
    depths: tuple[int, ...] = (0, 1, 2, 4, 8, 50, 200)
    edges: tuple[int, ...] = BUCKET_EDGES
    n_boot: int = 1000

    def __post_init__(self) -> None:
        if (
            (self.all_cap is not None and self.all_cap < 2)
            or self.n_boot < 1
            or min(self.depths, default=-1) < 0
        ):
            raise ConfigError(
                f"need all_cap ≥ 2 (or None), n_boot ≥ 1 and depths ≥ 0; "
                f"got {self.all_cap}, {self.n_boot}, {self.depths}"
            )


def _features(prepared, retriever, samples, vote_k: int, neighbours=None) -> pd.DataFrame:
    d = prepared.dataset
    train = prepared.split.train
    votes = None
    if vote_k > 0:
        nb = retriever.neighbours(samples, vote_k) if neighbours is None else neighbours
        votes = vote_counts(train, samples, nb, vote_k, d.like_threshold, has_timestamps=d.has_timestamps)
    return prompt_number_features(train, samples, d.n_items, votes, has_timestamps=d.has_timestamps)


def depth_table(prepared, neighbours_train, neighbours_test, config: PromptNumberRunConfig) -> pd.DataFrame:
    """The vote-depth sweep (module docstring); ``neighbours_*`` hold ≥ max(depths) columns."""
    y, y_test = prepared.train.frame["label"].to_numpy(int), prepared.test.frame["label"].to_numpy(int)
    rows = []
    for k in config.depths:
        x = _features(prepared, None, prepared.train, k, neighbours_train)
        x_test = _features(prepared, None, prepared.test, k, neighbours_test)
        coverage = float(np.mean(np.expm1(x_test["vote_count"]) > 0.5)) if k else 0.0
        for name, s in prompt_number_scores(x, y, x_test, config.models).items():
            model, features = name.split("_", 1)
            if k and features == "shares":
                continue  # the same at every depth: reported once, at vote_k = 0
            rows.append((k, model, features, auc(y_test, s), coverage, len(y_test), len(y)))
    return pd.DataFrame(rows, columns=list(DEPTH_COLUMNS))


def run_prompt_numbers(
    profile: Profile, *, config: PromptNumberRunConfig | None = None, data_root=None, results_root=None
) -> dict[str, pd.DataFrame]:
    """Fit and score the prompt-number models; write the module docstring's tables and provenance."""
    from ragrec.experiments.recommender.prepare import fit_retrievers, prepare_data

    started = time.perf_counter()
    config = config or PromptNumberRunConfig()
    prepared = prepare_data(profile, data_root=data_root)
    # a poll deeper than every other user does not exist (small datasets: the smoke profile)
    n_users = prepared.dataset.n_users
    config = dataclasses.replace(config, depths=tuple(k for k in config.depths if k < n_users))
    vote_k = profile.prompt.vote_k
    retriever = fit_retrievers(prepared, None, ("gcn",), results_root=results_root)["gcn"]
    deepest = max((*config.depths, vote_k))
    nb_train = retriever.neighbours(prepared.train, deepest)
    nb_test = retriever.neighbours(prepared.test, deepest)
    test, y_test = prepared.test, prepared.test.frame["label"].to_numpy(int)
    x_test = _features(prepared, None, test, vote_k, nb_test)
    all_train, scores = _fit_and_score(profile, config, prepared, retriever, nb_train, x_test)
    n_train = {m: len(prepared.train) if m.endswith("_llm") else len(all_train) for m in scores}
    out_dir = result_dir(profile.name, profile.data.dataset, results_root)
    sample_ids = test.frame.index.to_numpy()
    llm = llm_predictions(out_dir, profile.contexts, sample_ids)
    kinds = {**{m: "prompt_numbers" for m in scores}, **{m: "llm" for m in llm}}
    n_train.update({m: len(prepared.train) for m in llm})
    reference = next((n for n in llm if n.startswith("llm_gcn_")), next(iter(llm), None))
    table = score_table(
        y_test,
        {**llm, **scores},
        kinds,
        n_train=n_train,
        reference=reference,
        n_boot=config.n_boot,
        seed=profile.seed,
    )
    counts, cold, contexts = _cold_and_context(profile, config, prepared, out_dir, {**llm, **scores}, scores)
    depth = depth_table(prepared, nb_train, nb_test, config)
    per_sample = pd.DataFrame({"sample_id": sample_ids, "label": y_test, "item_raters": counts})
    per_sample = pd.concat([per_sample, x_test.reset_index(drop=True), pd.DataFrame(scores)], axis=1)
    extra = {"reference": reference, "vote_k": vote_k, "n_test": len(test)}
    extra.update({"n_train_llm": len(prepared.train), "n_train_all": len(all_train)})
    _write(
        out_dir,
        profile,
        config,
        {"table": table, "depth": depth, "cold": cold, "per_sample": per_sample, "context": contexts},
        extra,
        started,
    )
    return {"table": table, "depth": depth, "cold_start": cold, "context": contexts}


def _cold_and_context(profile, config, prepared, out_dir, every: dict, scores: dict):
    """The cold-start table of ``every`` method (and the classical baselines, when scored), and
    the paired context-effect table: LLM contexts from their files, then the vote's gain."""
    test, y_test = prepared.test, prepared.test.frame["label"].to_numpy(int)
    counts, _ = item_likes_before(
        prepared.split.train, test, prepared.dataset.n_items, has_timestamps=prepared.dataset.has_timestamps
    )
    classical = _classical_scores(out_dir, test.frame.index.to_numpy())
    cold = cold_start_table(
        y_test, {**every, **classical}, counts, edges=config.edges, n_boot=config.n_boot, seed=profile.seed
    )
    contexts = pd.concat(
        [
            context_table(out_dir, n_boot=config.n_boot, seed=profile.seed),
            vote_rows(y_test, scores, n_boot=config.n_boot, seed=profile.seed),
        ],
        ignore_index=True,
    )
    return counts, cold, contexts


def _fit_and_score(profile, config, prepared, retriever, nb_train, x_test):
    """The prompt-number models fitted on the LLM's own training samples (``_llm``) and on a
    seeded subset of every training sample (``_all``), each scoring ``x_test``."""
    vote_k = profile.prompt.vote_k
    x_llm = _features(prepared, None, prepared.train, vote_k, nb_train)
    everything = prepared.samples.part("train")
    cap = None if config.all_cap is None or config.all_cap >= len(everything) else config.all_cap
    all_train = cap_samples(everything, cap, seed=profile.seed)
    x_all = _features(prepared, retriever, all_train, vote_k)
    scores = {
        **prompt_number_scores(
            x_llm, prepared.train.frame["label"].to_numpy(int), x_test, config.models, tag="_llm"
        ),
        **prompt_number_scores(
            x_all, all_train.frame["label"].to_numpy(int), x_test, config.models, tag="_all"
        ),
    }
    return all_train, scores


def _classical_scores(out_dir, sample_ids: np.ndarray) -> dict[str, np.ndarray]:
    """The classical baselines' test scores on exactly ``sample_ids`` (empty when
    ``predictions_baselines.csv`` is absent or holds other samples)."""
    baseline_file = out_dir / result_files.BASELINE_PREDICTIONS
    if not baseline_file.exists():
        return {}
    frame = read_csv(baseline_file).set_index("sample_id")
    if set(frame.index) != set(sample_ids):
        return {}
    frame = frame.loc[sample_ids]
    return {c: frame[c].to_numpy(float) for c in frame.columns if c not in ("user", "item", "label")}


def _write(
    out_dir, profile: Profile, config: PromptNumberRunConfig, tables: dict, extra: dict, started: float
):
    """Write the five tables atomically and the step's provenance."""
    files = {
        result_files.PROMPT_NUMBERS: tables["table"],
        result_files.VOTE_DEPTH: tables["depth"],
        result_files.COLD_START: tables["cold"],
        result_files.PREDICTIONS_PROMPT_NUMBERS: tables["per_sample"],
        result_files.CONTEXT_EFFECT: tables["context"],
    }
    for name, frame in files.items():
        write_csv(frame, out_dir / name)
    provenance = Provenance(
        "prompt_numbers", profile.name, profile.data.dataset, profile.seed, {"config": config}
    )
    provenance.parameters = {"config": config, **extra, "seconds": time.perf_counter() - started}
    provenance.write(out_dir, list(files))
