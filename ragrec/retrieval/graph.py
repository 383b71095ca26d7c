"""The bipartite user–item graph of the training interactions, as LightGCN consumes it.

Nodes: users ``0 .. U-1`` and items ``U .. U+I-1`` (item ``i`` is node ``U + i``). An undirected
edge joins user ``u`` and item ``i`` when ``u`` interacted with ``i`` in the *training*
interactions (``Split.train``, the only interactions retrieval may see, DESIGN §5); PyG wants both
directions, so ``edge_index`` holds every edge twice.

Which interactions are edges. LightGCN treats feedback as *implicit*: every observed interaction
is an edge, whatever its rating, because choosing to watch/read/buy an item is itself the signal
(the paper's GCN-Retriever follows LightGCN). That is the default (``positives_only=False``).
With ``positives_only=True`` only interactions with ``label == 1`` are edges (low ratings are
dropped); users whose training interactions are all negative are then outside the graph (cold).

Propagation matrix (LightGCN eq. 7): with adjacency ``A = [[0, R], [Rᵀ, 0]]`` and degree matrix
``D``, one layer is ``E^{(k+1)} = D^{-1/2} A D^{-1/2} E^{(k)}``, i.e. for a user

    e_u^{(k+1)} = Σ_{i ∈ N(u)} e_i^{(k)} / sqrt(|N(u)| · |N(i)|)

and symmetrically for items. :meth:`BipartiteGraph.normalized_adjacency` builds that matrix once,
as a sparse CSR tensor: PyG's ``LGConv(normalize=False)`` then runs each layer as one sparse
matrix product, which on a CPU is far faster than scattering messages over ``edge_index`` (the
per-epoch seconds are in ``lightgcn_history.csv``), and deterministic.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd
import torch

from ragrec.errors import ConfigError, DataError


@dataclass(frozen=True, eq=False)
class BipartiteGraph:
    """A user–item graph: one entry per undirected edge in ``users``/``items``, sorted by
    (user, item), no duplicates.

    Attributes:
        n_users: U, the number of users of the dataset (users without edges included).
        n_items: I, the number of items of the dataset (items without edges included).
        users: int64 ``[E]`` user id of each edge.
        items: int64 ``[E]`` item id of each edge (``0 .. I-1``, not the node id).
        positives_only: whether only ``label == 1`` interactions became edges.
    """

    n_users: int
    n_items: int
    users: np.ndarray
    items: np.ndarray
    positives_only: bool = False

    @property
    def n_nodes(self) -> int:
        return self.n_users + self.n_items

    @property
    def n_edges(self) -> int:
        """Undirected edges (interactions); ``edge_index`` has twice as many columns."""
        return len(self.users)

    @cached_property
    def user_degree(self) -> np.ndarray:
        """int64 ``[U]``: |N(u)|, training items per user (0 = not in the graph, cold)."""
        return np.bincount(self.users, minlength=self.n_users).astype(np.int64)

    @cached_property
    def item_degree(self) -> np.ndarray:
        """int64 ``[I]``: |N(i)|, training users per item (the popularity baseline's score)."""
        return np.bincount(self.items, minlength=self.n_items).astype(np.int64)

    @cached_property
    def user_offsets(self) -> np.ndarray:
        """int64 ``[U+1]``: user ``u``'s items are ``items[user_offsets[u]:user_offsets[u+1]]``."""
        out = np.zeros(self.n_users + 1, dtype=np.int64)
        np.cumsum(self.user_degree, out=out[1:])
        return out

    def items_of(self, user: int) -> np.ndarray:
        """The training items of ``user`` (sorted item ids)."""
        return self.items[self.user_offsets[user] : self.user_offsets[user + 1]]

    @cached_property
    def edge_keys(self) -> np.ndarray:
        """Sorted int64 ``user * I + item`` per edge, for vectorised "is (u, i) an edge?"."""
        return self.users * self.n_items + self.items

    def has_edges(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """bool array: whether each (user, item) pair is a training edge."""
        keys = np.asarray(users, dtype=np.int64) * self.n_items + np.asarray(items, dtype=np.int64)
        pos = np.searchsorted(self.edge_keys, keys)
        pos = np.minimum(pos, max(len(self.edge_keys) - 1, 0))
        return (len(self.edge_keys) > 0) & (self.edge_keys[pos] == keys)

    @property
    def edge_index(self) -> torch.Tensor:
        """int64 ``[2, 2E]`` PyG edge index, both directions (user→item, then item→user)."""
        u = torch.from_numpy(self.users)
        v = torch.from_numpy(self.items + self.n_users)
        return torch.stack([torch.cat([u, v]), torch.cat([v, u])])

    def normalized_adjacency(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``D^{-1/2} A D^{-1/2}`` as a sparse CSR tensor ``[U+I, U+I]`` (symmetric, so it is also
        its own transpose, which is what PyG's sparse message passing expects)."""
        n = self.n_nodes
        row = np.concatenate([self.users, self.items + self.n_users])
        col = np.concatenate([self.items + self.n_users, self.users])
        degree = np.concatenate([self.user_degree, self.item_degree]).astype(np.float64)
        weight = 1.0 / np.sqrt(degree[row] * degree[col])  # both ends have degree ≥ 1 on an edge
        order = np.lexsort((col, row))
        row, col, weight = row[order], col[order], weight[order]
        crow = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount(row, minlength=n), out=crow[1:])
        with warnings.catch_warnings():
            # "Sparse CSR tensor support is in beta": sparse @ dense, all we use, is stable.
            warnings.simplefilter("ignore", UserWarning)
            return torch.sparse_csr_tensor(
                torch.from_numpy(crow),
                torch.from_numpy(col),
                torch.from_numpy(weight).to(dtype),
                size=(n, n),
                check_invariants=False,
            )


def build_graph(
    train: pd.DataFrame, n_users: int, n_items: int, *, positives_only: bool = False
) -> BipartiteGraph:
    """The bipartite graph of the training interactions.

    Args:
        train: the training interactions (``Split.train``): columns ``user``, ``item`` (dense
            ids) and, for ``positives_only``, ``label``.
        n_users, n_items: the dataset's sizes (node ids are laid out from them, so users and
            items without training edges keep their ids).
        positives_only: keep only ``label == 1`` interactions as edges (default: every
            interaction is an edge, LightGCN's implicit-feedback convention).

    Raises:
        ConfigError: non-positive sizes. DataError: missing columns, ids out of range, or no
        edge left (an empty graph cannot be trained).
    """
    if n_users < 1 or n_items < 1:
        raise ConfigError(f"a graph needs n_users ≥ 1 and n_items ≥ 1, got {n_users}, {n_items}")
    need = ["user", "item"] + (["label"] if positives_only else [])
    absent = [c for c in need if c not in train.columns]
    if absent:
        raise DataError(f"training interactions lack column(s) {absent}; found {list(train.columns)}")
    frame = train[train["label"] == 1] if positives_only else train
    users = frame["user"].to_numpy(np.int64)
    items = frame["item"].to_numpy(np.int64)
    if len(users) == 0:
        what = "positive (label == 1) training interactions" if positives_only else "training interactions"
        raise DataError(f"the user–item graph is empty: there are no {what}")
    if users.min() < 0 or users.max() >= n_users or items.min() < 0 or items.max() >= n_items:
        raise DataError(
            f"interaction ids out of range: users in [{users.min()}, {users.max()}] for n_users={n_users}, "
            f"items in [{items.min()}, {items.max()}] for n_items={n_items}"
        )
    keys = np.unique(users * n_items + items)  # sorted by (user, item), duplicates merged
    return BipartiteGraph(n_users, n_items, keys // n_items, keys % n_items, positives_only)
