"""A collaborative model of *likes* whose embeddings feed the prompt's collaborative tokens.

The retriever's LightGCN is trained with BPR on every interaction, so its embeddings say who
watches what, not who likes it. CoLLM (Zhang et al., 2023) found its MF variant, trained on the
click labels, the one that helped. This is that MF: a matrix factorisation with biases fitted
with the CTR loss on the *training* interactions' like labels::

    logit(u, i) = p_u · q_i + b_u + b_i + b                   BCE against the like label

:func:`fit_like_mf` returns per-user and per-item vectors ``[p_u, b_u]`` and ``[q_i, b_i]``
(``dim + 1`` each) and which ids had a training interaction; ids without one are "unknown" and
the projector gives them a learned vector instead (:mod:`ragrec.model.cf_tokens`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from ragrec.errors import ConfigError, DataError


@dataclass(frozen=True)
class LikeMFConfig:
    """Matrix factorisation on like labels.

    Attributes:
        dim: latent dimension of ``p_u`` and ``q_i``.
        epochs: passes over the training interactions.
        batch_size: interactions per Adam step.
        lr: Adam learning rate.
        l2: weight of the L2 penalty on the embeddings and biases in each batch.
        seed: initialisation and shuffling seed.
    """

    # Chosen on ml-100k's validation interactions (AUC of the MF's own score), not on test.
    dim: int = 16
    epochs: int = 10
    batch_size: int = 2048
    lr: float = 0.01
    l2: float = 0.03
    seed: int = 0

    def __post_init__(self) -> None:
        if self.dim < 1 or self.epochs < 1 or self.batch_size < 1 or self.lr <= 0 or self.l2 < 0:
            raise ConfigError(
                f"invalid LikeMFConfig {self}: need dim, epochs, batch_size ≥ 1, lr > 0, l2 ≥ 0"
            )


@dataclass
class CFEmbeddings:
    """Frozen collaborative vectors for the prompt's soft tokens.

    Attributes:
        users: ``[n_users, d]`` float32.
        items: ``[n_items, d]`` float32.
        known_users: ``[n_users]`` bool, True for users with a training interaction.
        known_items: ``[n_items]`` bool, likewise for items.
        source: which collaborative model made them (``"like_mf"`` or ``"lightgcn"``).
    """

    users: np.ndarray
    items: np.ndarray
    known_users: np.ndarray
    known_items: np.ndarray
    source: str

    @property
    def dim(self) -> int:
        return int(self.users.shape[1])


class LikeMF(nn.Module):
    """``p_u · q_i + b_u + b_i + b``: the logit that user ``u`` likes item ``i``."""

    def __init__(self, n_users: int, n_items: int, dim: int):
        super().__init__()
        self.p = nn.Embedding(n_users, dim)
        self.q = nn.Embedding(n_items, dim)
        self.b_user = nn.Embedding(n_users, 1)
        self.b_item = nn.Embedding(n_items, 1)
        self.b = nn.Parameter(torch.zeros(()))
        for table in (self.p, self.q):
            nn.init.normal_(table.weight, std=0.1)
        for table in (self.b_user, self.b_item):
            nn.init.zeros_(table.weight)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        dot = (self.p(users) * self.q(items)).sum(-1)  # [B]
        return dot + self.b_user(users)[:, 0] + self.b_item(items)[:, 0] + self.b


def fit_like_mf(
    train: pd.DataFrame, n_users: int, n_items: int, config: LikeMFConfig = LikeMFConfig()
) -> CFEmbeddings:
    """Fit :class:`LikeMF` on the training interactions' like labels and return its vectors.

    Args:
        train: training interactions with ``user``, ``item`` and ``label`` columns.
        n_users: number of user ids (rows of ``users``).
        n_items: number of item ids.
        config: model size and schedule.

    Raises:
        DataError: no training interaction, or ids outside the given ranges.
    """
    if len(train) == 0:
        raise DataError("the like MF needs training interactions; the training split is empty")
    users = torch.from_numpy(train["user"].to_numpy(np.int64, copy=True))
    items = torch.from_numpy(train["item"].to_numpy(np.int64, copy=True))
    if int(users.max()) >= n_users or int(items.max()) >= n_items:
        raise DataError(f"interaction ids exceed n_users={n_users} / n_items={n_items}")
    labels = torch.from_numpy(train["label"].to_numpy(np.float32, copy=True))
    gen = torch.Generator().manual_seed(config.seed)
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        model = LikeMF(n_users, n_items, config.dim)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    for _ in range(config.epochs):
        for rows in torch.randperm(len(labels), generator=gen).split(config.batch_size):
            u, i = users[rows], items[rows]
            loss = nn.functional.binary_cross_entropy_with_logits(model(u, i), labels[rows])
            # L2 on the rows in the batch only, as MF recommenders usually regularise
            penalty = (
                model.p(u).pow(2).sum(-1)
                + model.q(i).pow(2).sum(-1)
                + model.b_user(u)[:, 0].pow(2)
                + model.b_item(i)[:, 0].pow(2)
            ).mean()
            optimizer.zero_grad()
            (loss + config.l2 * penalty).backward()
            optimizer.step()
    with torch.no_grad():
        user_vecs = torch.cat([model.p.weight, model.b_user.weight], dim=1).numpy().astype(np.float32)
        item_vecs = torch.cat([model.q.weight, model.b_item.weight], dim=1).numpy().astype(np.float32)
    known_users = np.zeros(n_users, dtype=bool)
    known_users[users.numpy()] = True
    known_items = np.zeros(n_items, dtype=bool)
    known_items[items.numpy()] = True
    return CFEmbeddings(user_vecs, item_vecs, known_users, known_items, source="like_mf")


def like_mf_scores(embeddings: CFEmbeddings, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """The MF's own logit per (user, item) pair, without the global bias: a CTR score (AUC only).

    The last coordinate of each vector is its bias (see :func:`fit_like_mf`), so the score is
    ``p_u · q_i + b_u + b_i``.
    """
    u = embeddings.users[users].astype(np.float64)  # [n, d + 1]
    i = embeddings.items[items].astype(np.float64)  # [n, d + 1]
    return np.einsum("nd,nd->n", u[:, :-1], i[:, :-1]) + u[:, -1] + i[:, -1]
