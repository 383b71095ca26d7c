"""Prompt contexts: which retrieved users each CTR sample's prompt shows, and its token ids.

Test and validation prompts take their neighbours from retrievers fitted on the training
interactions. Training prompts take them from each retriever's training view
(:meth:`ragrec.retrieval.base.Retriever.for_training`, profiles with ``train_folds > 1``: e.g. a
:class:`~ragrec.retrieval.training.FoldedRetriever` for the GCN), so a training sample's own
interaction does not choose its neighbours.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ragrec.data import Samples
from ragrec.errors import ConfigError
from ragrec.experiments.recommender.information import later_interaction_share, vote_coverage
from ragrec.model.prompts import PromptBuilder
from ragrec.retrieval.base import PromptNeighbours


def encode_contexts(
    builder: PromptBuilder, retrievers: dict[str, PromptNeighbours], samples: Samples, contexts: list[str]
) -> list[list[int]]:
    """Prompt ids for ``samples``, sample i built with context ``contexts[i]`` (the builder's
    ``retrieve_k`` neighbours each)."""
    if len(contexts) != len(samples):
        raise ConfigError(f"{len(contexts)} contexts for {len(samples)} samples")
    prompts: list[list[int] | None] = [None] * len(samples)
    for name in dict.fromkeys(contexts):
        rows = np.flatnonzero(np.asarray(contexts) == name)
        subset = samples.subset(samples.frame.index[rows])
        hoods = retrievers[name].neighbours(subset, builder.config.retrieve_k)
        for j, ids in enumerate(builder.encode_all(subset, hoods)):
            prompts[rows[j]] = ids
    return prompts


def mixed_contexts(n: int, contexts: tuple[str, ...], seed: int) -> list[str]:
    """Each of ``n`` training samples gets one context, balanced and seeded."""
    reps = np.resize(np.arange(len(contexts)), n)
    return [contexts[i] for i in np.random.default_rng(seed).permutation(reps)]


def information_rows(
    train_sequences,
    parts: dict[str, tuple[Samples, dict[str, PromptNeighbours]]],
    k: int,
    vote_k: int,
) -> pd.DataFrame:
    """Vote coverage and the neighbours' later-interaction share per context and sample set.

    Args:
        train_sequences: the training interactions the prompts read neighbours from.
        parts: name → (samples, retrievers by context), e.g. ``{"train (folded)": ...,
            "train (plain)": ..., "test": ...}``.
        k: neighbours each prompt shows (the later-interaction share is over these).
        vote_k: neighbours each prompt polls for the vote line.

    Returns:
        one row per (set, context): ``set, context, n, vote_coverage, later_share``.
    """
    rows = []
    for name, (samples, retrievers) in parts.items():
        for ctx, retriever in retrievers.items():
            hoods = retriever.neighbours(samples, max(k, vote_k))
            if hoods is None:
                continue
            times = samples.frame["timestamp"].to_numpy()
            rows.append(
                {
                    "set": name,
                    "context": ctx,
                    "n": len(samples),
                    "vote_coverage": vote_coverage(train_sequences, samples, hoods, vote_k),
                    "later_share": later_interaction_share(train_sequences, hoods[:, :k], times),
                }
            )
    return pd.DataFrame(rows, columns=["set", "context", "n", "vote_coverage", "later_share"])
