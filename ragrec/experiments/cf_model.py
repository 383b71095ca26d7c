"""The ``cf`` variant (beyond the paper): which collaborative vectors feed the prompt's soft tokens.

Two candidates, both fitted on the training interactions only: the retriever's LightGCN (BPR on
every interaction: who watches what) and a matrix factorisation on the like labels
(:func:`ragrec.retrieval.collaborative.fit_like_mf`: who likes what, CoLLM's MF variant). The
choice is made on *validation* samples: a logistic regression reads each candidate's user
vector, item vector and their elementwise product, is fitted on the training samples and scored
on the validation samples; the candidate with the higher validation AUC feeds the tokens.
``cf_choice.csv`` records both AUCs, so the choice can be redone.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ragrec.data import Samples
from ragrec.metrics import auc
from ragrec.retrieval.collaborative import CFEmbeddings, LikeMFConfig, fit_like_mf
from ragrec.retrieval.gcn import GCNRetriever


def lightgcn_embeddings(retriever: GCNRetriever) -> CFEmbeddings:
    """The retriever's LightGCN read-out as collaborative vectors (ids without a training
    interaction are unknown)."""
    result = retriever.result
    seqs = retriever.sequences
    known_users = np.zeros(retriever.n_users, dtype=bool)
    known_users[seqs.users] = True
    known_items = np.zeros(result.item_embeddings.shape[0], dtype=bool)
    known_items[seqs.items] = True
    return CFEmbeddings(np.asarray(result.user_embeddings, np.float32), np.asarray(result.item_embeddings, np.float32),
                        known_users, known_items, source="lightgcn")


def probe_features(embeddings: CFEmbeddings, samples: Samples) -> np.ndarray:
    """``[n, 3d]``: the user vector, the item vector and their elementwise product per sample."""
    u = embeddings.users[samples.frame["user"].to_numpy(np.int64)]
    i = embeddings.items[samples.frame["item"].to_numpy(np.int64)]
    return np.concatenate([u, i, u * i], axis=1)


def validation_probe_auc(embeddings: CFEmbeddings, train: Samples, valid: Samples, seed: int = 0) -> float:
    """Validation AUC of a logistic regression on :func:`probe_features`, fitted on ``train``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(probe_features(embeddings, train))
    model = LogisticRegression(max_iter=2000, random_state=seed)
    model.fit(scaler.transform(probe_features(embeddings, train)), train.frame["label"].to_numpy(int))
    p = model.predict_proba(scaler.transform(probe_features(embeddings, valid)))[:, 1]
    return auc(valid.frame["label"].to_numpy(), p)


def choose_cf_embeddings(
    train_interactions: pd.DataFrame, gcn: GCNRetriever, n_items: int, train: Samples, valid: Samples, *,
    config: LikeMFConfig = LikeMFConfig(),
) -> tuple[CFEmbeddings, pd.DataFrame]:
    """Fit the like-MF, probe both candidates on validation, return the better one and the
    ``cf_choice.csv`` table (``source, valid_probe_auc, chosen``)."""
    candidates = {
        "lightgcn": lightgcn_embeddings(gcn),
        "like_mf": fit_like_mf(train_interactions, gcn.n_users, n_items, config),
    }
    scores = {name: validation_probe_auc(emb, train, valid, seed=config.seed) for name, emb in candidates.items()}
    best = max(scores, key=scores.get)
    table = pd.DataFrame({"source": list(scores), "valid_probe_auc": list(scores.values()),
                          "chosen": [name == best for name in scores]})
    return candidates[best], table
