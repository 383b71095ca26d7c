"""Graph density and neighbours in the prompt (issue #28; the paper summary's check 1 and its
retrieval-depth trade-off).

**Density.** LightGCN is retrained on seeded subsamples of the training interactions (``fractions``
of them; 1.0 is the full graph). For each graph: its validation Recall@k/NDCG@k, the neighbour hit
rate of its neighbours (:func:`~ragrec.experiments.retrieval.benchmark.neighbour_hit_rate`, judged
on the full training histories, which is what a prompt shows), the vote baseline (logistic
regression on the prompt's numbers with the vote polled from *its* neighbours,
:mod:`ragrec.experiments.reporting.prompt_numbers`) and the trained LLM's final-head AUC with
neighbours from it. The LLM is the recommender's main model, trained once on the full graph's
neighbours, and the prompts still show the full training histories and vote counts: only *which*
users are retrieved changes. A retrieval-only ablation, scored on the same ``n_samples`` test
samples at every density, with the paired difference to the full graph.

**Depth.** With the full graph, the prompt shows ``k`` ∈ ``ks`` retrieved users (the vote keeps the
profile's ``vote_k``): mean prompt tokens, final-head AUC (paired against the k the model was
trained on) and measured requests/s of the plain forward (:func:`ragrec.model.predict.predict_heads`,
the profile's scoring dtype and batch size). The samples are scored in chunks, each chunk at every k
in a rotating order, so the k values' timings interleave on a shared machine.

Outputs: ``density.csv``, ``prompt_depth.csv`` and the per-sample final-head P(Yes) of every
setting, ``density_predictions.csv``.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pandas as pd
import torch

from ragrec import result_files
from ragrec.config import Profile
from ragrec.config.sweeps import DensitySweepConfig
from ragrec.data import Samples, cap_samples
from ragrec.experiments.reporting.prompt_numbers import (
    FEATURES,
    PromptNumberConfig,
    fit_predict,
    prompt_number_features,
    vote_counts,
)
from ragrec.experiments.retrieval.benchmark import neighbour_hit_rate, select_query_users
from ragrec.metrics import auc, auc_ci, paired_auc_difference
from ragrec.results import Provenance, result_dir, write_csv
from ragrec.retrieval.gcn import GCNRetriever

DENSITY_COLUMNS = (
    "fraction",
    "n_interactions",
    "recall_at_k",
    "ndcg_at_k",
    "cutoff",
    "neighbour_hit_rate",
    "vote_auc",
    "vote_auc_ci_low",
    "vote_auc_ci_high",
    "llm_auc",
    "llm_auc_ci_low",
    "llm_auc_ci_high",
    "llm_minus_full",
    "diff_ci_low",
    "diff_ci_high",
    "n",
    "fit_s",
)
DEPTH_COLUMNS = (
    "k",
    "trained_k",
    "mean_prompt_tokens",
    "llm_auc",
    "llm_auc_ci_low",
    "llm_auc_ci_high",
    "minus_trained_k",
    "diff_ci_low",
    "diff_ci_high",
    "rps",
    "seconds",
    "n",
    "batch_size",
    "threads",
)


def subsample_interactions(train: pd.DataFrame, fraction: float, seed: int) -> pd.DataFrame:
    """A seeded uniform ``fraction`` of the interactions (rows kept in their order; 1.0: all)."""
    if fraction >= 1.0:
        return train
    keep = np.random.default_rng(seed).random(len(train)) < fraction
    return train[keep]


def fit_graph(prepared, fraction: float, results_root=None) -> GCNRetriever:
    """The profile's GCN-Retriever fitted on ``fraction`` of the training interactions (cached in
    the checkpoint folder, keyed by the interactions: reruns load it)."""
    from ragrec.experiments.recommender.prepare import checkpoint_dir

    p = prepared.profile
    sub = subsample_interactions(prepared.split.train, fraction, p.seed)
    retriever = p.retriever_config("gcn").build(prepared.dataset)
    retriever.use_cache(sub, checkpoint_dir(p, results_root))
    return retriever.fit(sub, prepared.split.valid)


def vote_baseline(prepared, retriever, samples: Samples) -> np.ndarray:
    """Logistic regression on the prompt's four numbers, the vote polled from ``retriever``'s
    first ``vote_k`` neighbours, fitted on the LLM's training samples: P(like) of ``samples``."""
    d, vote_k = prepared.dataset, prepared.profile.prompt.vote_k
    train = prepared.split.train

    def features(s: Samples) -> np.ndarray:
        votes = vote_counts(
            train,
            s,
            retriever.neighbours(s, vote_k),
            vote_k,
            d.like_threshold,
            has_timestamps=d.has_timestamps,
        )
        x = prompt_number_features(train, s, d.n_items, votes, has_timestamps=d.has_timestamps)
        return x[list(FEATURES)].to_numpy()

    y = prepared.train.frame["label"].to_numpy(int)
    return fit_predict("lr", features(prepared.train), y, features(samples), PromptNumberConfig())


@dataclasses.dataclass(frozen=True)
class _Scorer:
    """The trained LLM, prepared for scoring, and what its prompts are built from."""

    model: object  # ragrec.experiments.recommender.scoring.TrainedModel, merged for scoring
    prepared: object
    full: GCNRetriever  # the full graph: its training sequences fill every prompt
    batch_size: int

    def prompts(self, retriever, samples: Samples, k: int) -> list[list[int]]:
        """Prompt ids with ``retriever``'s neighbours, ``k`` of them shown."""
        from ragrec.experiments.recommender.contexts import encode_contexts
        from ragrec.model.prompts import PromptBuilder

        config = dataclasses.replace(self.prepared.profile.prompt, k=k)
        builder = PromptBuilder(self.prepared.dataset, self.model.backbone, self.full.sequences, config)
        return encode_contexts(builder, {"gcn": retriever}, samples, ["gcn"] * len(samples))

    def final_head(self, prompts: list[list[int]]) -> np.ndarray:
        """``[n]`` the last head's P(Yes)."""
        from ragrec.model.predict import predict_heads

        return predict_heads(self.model.backbone, self.model.heads, prompts, self.batch_size)[:, -1]


def _scorer(prepared, full: GCNRetriever, results_root) -> _Scorer:
    """The recommender's main model, reloaded (never trained here) and merged for scoring in the
    profile's dtype."""
    from ragrec.experiments.recommender.prepare import load_model
    from ragrec.experiments.recommender.scoring import load_trained_model, to_scoring
    from ragrec.model.inference import scoring_dtype

    p = prepared.profile
    backbone = load_model(p, prepared.dataset)
    trained = load_trained_model(prepared, backbone, results_root=results_root)
    model = to_scoring(trained, scoring_dtype(p.evaluation.dtype))
    return _Scorer(model, prepared, full, p.eval_batch_size)


def depth_sweep(scorer: _Scorer, samples: Samples, config: DensitySweepConfig) -> tuple[pd.DataFrame, dict]:
    """The depth rows (module docstring) and each k's per-sample final-head P(Yes)."""
    trained_k = scorer.prepared.profile.prompt.k
    ks = sorted({*config.ks, trained_k})
    prompts = {k: scorer.prompts(scorer.full, samples, k) for k in ks}
    p = {k: np.empty(len(samples)) for k in ks}
    seconds = dict.fromkeys(ks, 0.0)
    scorer.final_head(prompts[ks[0]][: scorer.batch_size])  # warm-up, untimed
    for c, lo in enumerate(range(0, len(samples), config.chunk)):
        hi = min(lo + config.chunk, len(samples))
        for k in ks[c % len(ks) :] + ks[: c % len(ks)]:  # rotate which k goes first
            started = time.perf_counter()
            p[k][lo:hi] = scorer.final_head(prompts[k][lo:hi])
            seconds[k] += time.perf_counter() - started
    y = samples.frame["label"].to_numpy(int)
    rows = []
    for k in ks:
        lo_ci, hi_ci = auc_ci(y, p[k], seed=scorer.prepared.profile.seed)
        d = paired_auc_difference(y, p[k], p[trained_k], seed=scorer.prepared.profile.seed)
        tokens = float(np.mean([len(x) for x in prompts[k]]))
        rows.append(
            (k, k == trained_k, tokens, auc(y, p[k]), lo_ci, hi_ci, d.diff, d.ci_low, d.ci_high)
            + (len(y) / seconds[k], seconds[k], len(y), scorer.batch_size, torch.get_num_threads())
        )
    return pd.DataFrame(rows, columns=list(DEPTH_COLUMNS)), p


def _density_row(prepared, fraction, retriever, full, queries, samples, p_llm, p_full, hit_items) -> dict:
    """One density row: the graph's retrieval metrics, the vote baseline and the LLM's AUC."""
    seed = prepared.profile.seed
    y = samples.frame["label"].to_numpy(int)
    nb = retriever.retrieve(queries.users, prepared.profile.prompt.k, before=queries.times)
    vote = vote_baseline(prepared, retriever, samples)
    valid = retriever.result.valid
    row = {
        "fraction": fraction,
        "n_interactions": len(subsample_interactions(prepared.split.train, fraction, seed)),
        "recall_at_k": valid.recall if valid else np.nan,
        "ndcg_at_k": valid.ndcg if valid else np.nan,
        "cutoff": valid.k if valid else np.nan,
        "neighbour_hit_rate": neighbour_hit_rate(full, nb, queries, hit_items),
        "vote_auc": auc(y, vote),
        "n": len(y),
        "fit_s": retriever.result.fit_s,
    }
    row["vote_auc_ci_low"], row["vote_auc_ci_high"] = auc_ci(y, vote, seed=seed)
    if p_llm is not None:
        d = paired_auc_difference(y, p_llm, p_full, seed=seed)
        row.update(llm_auc=auc(y, p_llm), llm_minus_full=d.diff, diff_ci_low=d.ci_low, diff_ci_high=d.ci_high)
        row["llm_auc_ci_low"], row["llm_auc_ci_high"] = auc_ci(y, p_llm, seed=seed)
    return row


def run_density_sweep(profile: Profile, *, data_root=None, results_root=None) -> dict[str, pd.DataFrame]:
    """Run the profile's density and depth sweep (``profile.sweeps.density``); write
    ``density.csv``, ``prompt_depth.csv``, ``density_predictions.csv`` and provenance."""
    from ragrec.experiments.recommender.prepare import fit_retrievers, prepare_data

    started = time.perf_counter()
    config = profile.sweeps.density or DensitySweepConfig()
    prepared = prepare_data(profile, data_root=data_root)
    full = fit_retrievers(prepared, None, ("gcn",), results_root=results_root)["gcn"]
    cap = None if config.n_samples is None or config.n_samples >= len(prepared.test) else config.n_samples
    samples = cap_samples(prepared.test, cap, seed=profile.seed)
    queries = select_query_users(prepared.split, config.n_queries, seed=profile.seed)
    per_sample = {"sample_id": samples.frame.index.to_numpy(), "label": samples.frame["label"].to_numpy()}
    depth, p_full = pd.DataFrame(columns=list(DEPTH_COLUMNS)), None
    scorer = _scorer(prepared, full, results_root) if config.score_llm else None
    if scorer is not None:
        depth, by_k = depth_sweep(scorer, samples, config)
        p_full = by_k[profile.prompt.k]
        per_sample.update({f"p_k{k}": v for k, v in by_k.items()})
    rows = []
    for fraction in sorted(config.fractions):
        graph = full if fraction >= 1.0 else fit_graph(prepared, fraction, results_root)
        p_llm = None
        if scorer is not None:
            p_llm = (
                p_full
                if graph is full
                else scorer.final_head(scorer.prompts(graph, samples, profile.prompt.k))
            )
            per_sample[f"p_density{fraction:g}"] = p_llm
        rows.append(
            _density_row(
                prepared,
                fraction,
                graph,
                full,
                queries,
                samples,
                p_llm,
                p_full,
                profile.prompt.neighbour_items,
            )
        )
    density = pd.DataFrame(rows, columns=list(DENSITY_COLUMNS))
    out_dir = result_dir(profile.name, profile.data.dataset, results_root)
    files = {
        result_files.DENSITY: density,
        result_files.PROMPT_DEPTH: depth,
        result_files.DENSITY_PREDICTIONS: pd.DataFrame(per_sample),
    }
    for name, frame in files.items():
        write_csv(frame, out_dir / name)
    provenance = Provenance("density", profile.name, profile.data.dataset, profile.seed, {"config": config})
    provenance.parameters = {
        "config": config,
        "n_samples": len(samples),
        "seconds": time.perf_counter() - started,
    }
    provenance.write(out_dir, list(files))
    return {"density": density, "depth": depth}
