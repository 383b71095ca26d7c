"""The baselines' table: every method (and the LLM, when its predictions exist) scored on the
recommender's test samples with the same AUC, interval and paired differences; what
``run_baselines`` writes for the baselines notebook.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pandas as pd

from ragrec import result_files
from ragrec.config import Profile
from ragrec.data import Dataset, Samples
from ragrec.errors import ConfigError, DataError
from ragrec.experiments.reporting.baselines import (
    PROBABILISTIC,
    TABLE_COLUMNS,
    BaselineConfig,
    lightgcn_scores,
    logistic_regression_before_scores,
    logistic_regression_scores,
    popularity_scores,
    prompt_share_scores,
    recent_mean_rating,
)
from ragrec.metrics import auc, auc_ci, logloss, paired_auc_difference
from ragrec.result_files import predictions
from ragrec.results import Provenance, read_csv, result_dir, write_csv


def score_table(
    labels: np.ndarray,
    scores: dict[str, np.ndarray],
    kinds: dict[str, str],
    *,
    n_train: dict[str, int] | None = None,
    reference: str | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per method: AUC with its bootstrap interval, LogLoss (probabilities only), and —
    when ``reference`` names one of ``scores`` — the paired-bootstrap AUC difference
    reference − method on the same samples."""
    rows = []
    for method, s in scores.items():
        lo, hi = auc_ci(labels, s, n_boot=n_boot, seed=seed)
        row = {
            "method": method,
            "kind": kinds.get(method, ""),
            "auc": auc(labels, s),
            "auc_ci_low": lo,
            "auc_ci_high": hi,
            "logloss": logloss(labels, s) if _is_probability(method, kinds) else np.nan,
            "n": len(s),
            "n_train": (n_train or {}).get(method, np.nan),
            "llm_minus_baseline": np.nan,
            "diff_ci_low": np.nan,
            "diff_ci_high": np.nan,
        }
        if reference is not None and method != reference:
            d = paired_auc_difference(labels, scores[reference], s, n_boot=n_boot, seed=seed)
            row.update(llm_minus_baseline=d.diff, diff_ci_low=d.ci_low, diff_ci_high=d.ci_high)
        rows.append(row)
    return pd.DataFrame(rows, columns=list(TABLE_COLUMNS))


def _is_probability(method: str, kinds: dict[str, str]) -> bool:
    return method in PROBABILISTIC or kinds.get(method) == "llm"


def score_baselines(
    dataset: Dataset,
    train_interactions: pd.DataFrame,
    train: Samples,
    test: Samples,
    embeddings: tuple[np.ndarray, np.ndarray] | None,
    config: BaselineConfig | None = None,
) -> dict[str, np.ndarray]:
    """Scores of every configured baseline on ``test`` (see :mod:`ragrec.experiments.reporting.baselines`).

    Args:
        train_interactions: the split's training interactions (popularity, fallback rating).
        train: training CTR samples (the logistic regression's data).
        embeddings: LightGCN (user, item) embeddings, needed for ``lightgcn_score``.
        config: which baselines, and their settings. (default: :class:`BaselineConfig`)
    """
    config = config or BaselineConfig()
    out: dict[str, np.ndarray] = {}
    for method in config.methods:
        if method == "popularity":
            out[method] = popularity_scores(
                train_interactions, test, dataset.n_items, has_timestamps=dataset.has_timestamps
            )
        elif method == "logistic_regression":
            out[method] = logistic_regression_scores(train, test, dataset.items, config)
        elif method == "logistic_regression_before":
            out[method] = logistic_regression_before_scores(train, test, dataset.items, config)
        elif method == "lightgcn_score":
            if embeddings is None:
                raise ConfigError("lightgcn_score needs the trained LightGCN embeddings")
            out[method] = lightgcn_scores(*embeddings, test)
        elif method == "prompt_shares":
            out[method] = prompt_share_scores(
                train_interactions,
                train,
                test,
                dataset.n_items,
                has_timestamps=dataset.has_timestamps,
                config=config,
            )
        else:
            out[method] = recent_mean_rating(test, float(train_interactions["rating"].mean()))
    return out


def llm_predictions(
    out_dir: os.PathLike, contexts: tuple[str, ...], sample_ids: np.ndarray
) -> dict[str, np.ndarray]:
    """The recommender's final-head P(Yes) per context from its test predictions,
    aligned to ``sample_ids``; contexts without a file, or scored on a subset of the samples only,
    are left out.

    Raises:
        DataError: a predictions file scores other samples than ``sample_ids``.
    """
    out = {}
    for ctx in contexts:
        path = os.path.join(out_dir, predictions(ctx))
        if not os.path.exists(path):
            continue
        frame = read_csv(path)
        heads = sorted(
            (c for c in frame.columns if c.startswith("p_head_")), key=lambda c: int(c.rsplit("_", 1)[1])
        )
        if not heads:
            raise DataError(f"{path} has no p_head_<layer> column")
        ids, wanted = set(frame["sample_id"].to_numpy().tolist()), set(np.asarray(sample_ids).tolist())
        if ids < wanted:
            continue  # a context scored on the reduced subset only: the ablations chapter compares it
        if ids != wanted:
            raise DataError(
                f"{path} scores other samples than the baselines' test samples; rerun the recommender step"
            )
        aligned = frame.set_index("sample_id").loc[np.asarray(sample_ids)]
        out[f"llm_{ctx}_head{heads[-1].rsplit('_', 1)[1]}"] = aligned[heads[-1]].to_numpy(float)
    return out


def run_baselines(
    profile: Profile, *, config: BaselineConfig | None = None, data_root=None, results_root=None
) -> pd.DataFrame:
    """Score the baselines (and the LLM, when its predictions exist) on the recommender's test
    samples; write the table, the per-sample scores and provenance."""
    from ragrec.experiments.recommender.prepare import fit_retrievers, prepare_data

    started = time.perf_counter()
    config = config or BaselineConfig(seed=profile.seed)
    provenance = Provenance("baselines", profile.name, profile.data.dataset, profile.seed, {"config": config})
    prepared = prepare_data(profile, data_root=data_root)
    embeddings = None
    if "lightgcn_score" in config.methods:
        gcn = fit_retrievers(prepared, None, ("gcn",), results_root=results_root)["gcn"]
        embeddings = (gcn.result.user_embeddings, gcn.result.item_embeddings)
    all_train = prepared.samples.part("train")
    test = prepared.test
    scores = score_baselines(prepared.dataset, prepared.split.train, all_train, test, embeddings, config)
    kinds = {m: "baseline" for m in scores}
    n_train = {
        "logistic_regression": len(all_train),
        "logistic_regression_before": len(all_train),
        "prompt_shares": len(all_train),
    }
    out_dir = result_dir(profile.name, profile.data.dataset, results_root)
    sample_ids = test.frame.index.to_numpy()
    llm = llm_predictions(out_dir, profile.contexts, sample_ids)
    for name in llm:
        kinds[name] = "llm"
        n_train[name] = len(prepared.train)
    reference = next((n for n in llm if n.startswith("llm_gcn_")), next(iter(llm), None))
    table = score_table(
        test.frame["label"].to_numpy(),
        {**llm, **scores},
        kinds,
        n_train=n_train,
        reference=reference,
        n_boot=config.n_boot,
        seed=config.seed,
    )
    per_sample = pd.DataFrame(
        {
            "sample_id": sample_ids,
            "user": test.frame["user"].to_numpy(),
            "item": test.frame["item"].to_numpy(),
            "label": test.frame["label"].to_numpy(),
            **scores,
        }
    )
    write_csv(table, out_dir / result_files.BASELINES)
    write_csv(per_sample, out_dir / result_files.BASELINE_PREDICTIONS)
    provenance.parameters = {
        "config": config,
        "reference": reference,
        "n_test": len(test),
        "n_train": len(all_train),
        "seconds": time.perf_counter() - started,
    }
    provenance.write(out_dir, [result_files.BASELINES, result_files.BASELINE_PREDICTIONS])
    return table
