"""Prompt contexts: which retrieved users each CTR sample's prompt shows, and its token ids.

Test and validation prompts take their neighbours from retrievers fitted on the training
interactions. Training prompts take them from a :class:`FoldedRetriever` (GCN, profiles with
``train_folds > 1``) or :class:`LeaveTargetOut` (LLM), so a training sample's own interaction
does not choose its neighbours.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ragrec.data import Samples
from ragrec.data.text import history_text
from ragrec.errors import ConfigError
from ragrec.experiments.information import later_interaction_share, vote_coverage
from ragrec.model.prompts import PromptBuilder
from ragrec.retrieval.base import Retriever
from ragrec.retrieval.llm import LLMRetriever, embed_texts


@dataclass
class FoldedRetriever:
    """Neighbours for *training* samples, retrieved without the sample's own interaction.

    A training sample's (user, target) pair is an edge of the retriever's graph, so the plain
    retriever picks neighbours partly because of the target; a test sample has no such edge.
    Here the training samples are cut into folds, and fold f's samples query a retriever fitted
    on the training interactions minus fold f's (user, target) pairs, so training prompts are
    built like test prompts (DESIGN §5).
    """

    name: str
    folds: list[Retriever]
    fold_of: pd.Series  # sample id → fold

    def neighbours(self, samples: Samples, k: int) -> np.ndarray:
        out = np.full((len(samples), k), -1, dtype=np.int64)
        fold = self.fold_of.loc[samples.frame.index].to_numpy()
        for f, retriever in enumerate(self.folds):
            rows = np.flatnonzero(fold == f)
            if len(rows):
                out[rows] = context_neighbours(retriever, samples.subset(samples.frame.index[rows]), k)
        return out


@dataclass
class LeaveTargetOut:
    """LLM-retriever neighbours for *training* samples without the sample's own interaction.

    The LLM retriever represents a user by the text of their most recent training interactions;
    a training sample's target is often among them (a test sample's never is). For those samples
    the query text is rebuilt without the target and embedded, then searched like any query.
    """

    name: str
    retriever: LLMRetriever
    # (sample id, k) → neighbours: the information table asks again for samples the training
    # prompts already queried, and each re-embedding is an LLM forward
    _seen: dict = field(default_factory=dict, repr=False)

    def neighbours(self, samples: Samples, k: int) -> np.ndarray:
        ids = samples.frame.index
        new = [i for i in ids if (i, k) not in self._seen]
        if new:
            self._seen.update({(i, k): row for i, row in zip(new, self._query(samples.subset(new), k))})
        return np.stack([self._seen[(i, k)] for i in ids]) if len(ids) else np.zeros((0, k), np.int64)

    def _query(self, samples: Samples, k: int) -> np.ndarray:
        out = context_neighbours(self.retriever, samples, k)
        r, frame = self.retriever, samples.frame
        users, items = frame["user"].to_numpy(np.int64), frame["item"].to_numpy(np.int64)
        texts, rows = [], []
        for row, (user, item) in enumerate(zip(users, items)):
            window = r.sequences.window(int(user), None, r.history_items)
            shown, ratings = r.sequences.items[window], r.sequences.ratings[window]
            if item in shown:
                keep = shown != item
                texts.append(history_text(r.dataset, shown[keep], ratings[keep]))
                rows.append(row)
        if rows:
            queries = embed_texts(r.backbone, texts, batch_size=r.batch_size, max_tokens=r.max_tokens)
            times = frame["timestamp"].to_numpy()[rows]
            out[rows] = r.retrieve_with(queries, users[rows], k, before=times)
        return out


def context_neighbours(retriever: Retriever | FoldedRetriever, samples: Samples, k: int) -> np.ndarray | None:
    """``[len(samples), k]`` neighbours of each sample's user among users active before the
    sample (None for the ``none`` context). Uses the retriever's index vectors for the query
    users too: for prompt building the query user's text is the one embedded at fit, so
    re-embedding it per sample would only cost time (the latency benchmark does pay it)."""
    if retriever.name == "none":
        return None
    if isinstance(retriever, (FoldedRetriever, LeaveTargetOut)):
        return retriever.neighbours(samples, k)
    frame = samples.frame
    return retriever.retrieve(
        frame["user"].to_numpy(), k, before=frame["timestamp"].to_numpy(), precomputed=True
    )


def encode_contexts(
    builder: PromptBuilder, retrievers: dict[str, Retriever], samples: Samples, contexts: list[str]
) -> list[list[int]]:
    """Prompt ids for ``samples``, sample i built with context ``contexts[i]`` (the builder's
    ``retrieve_k`` neighbours each)."""
    if len(contexts) != len(samples):
        raise ConfigError(f"{len(contexts)} contexts for {len(samples)} samples")
    prompts: list[list[int] | None] = [None] * len(samples)
    for name in dict.fromkeys(contexts):
        rows = np.flatnonzero(np.asarray(contexts) == name)
        subset = samples.subset(samples.frame.index[rows])
        hoods = context_neighbours(retrievers[name], subset, builder.config.retrieve_k)
        for j, ids in enumerate(builder.encode_all(subset, hoods)):
            prompts[rows[j]] = ids
    return prompts


def mixed_contexts(n: int, contexts: tuple[str, ...], seed: int) -> list[str]:
    """Each of ``n`` training samples gets one context, balanced and seeded."""
    reps = np.resize(np.arange(len(contexts)), n)
    return [contexts[i] for i in np.random.default_rng(seed).permutation(reps)]


def information_rows(
    train_sequences,
    parts: dict[str, tuple[Samples, dict[str, Retriever | FoldedRetriever]]],
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
            hoods = context_neighbours(retriever, samples, max(k, vote_k))
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
