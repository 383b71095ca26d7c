"""Retrievers of similar users, behind one interface, and the neighbours' leakage-free events.

Every retriever is fitted on the *training* interactions only (``Split.train``, DESIGN §5) and
answers ``retrieve(users, k, before=None) -> int64 [len(users), k]`` neighbour user ids, best
first, never the query user itself:

* ``gcn`` — the paper's GCN-Retriever: cosine similarity of LightGCN user embeddings
  (:mod:`ragrec.retrieval.lightgcn`, mean over the K+1 layer outputs, or the last layer as ablation),
  exact top-k by one matrix product over the L2-normalised embeddings. A query is a row lookup
  plus a ``[U, d]`` matrix–vector product.
* ``llm`` — the baseline the paper replaces: the backbone LLM embeds each user's training
  history text (:func:`ragrec.data.text.history_text` of the ``history_items`` most recent training
  interactions) as the mean over real tokens of its final-norm hidden states (as ReLLa embeds
  items). Every other user's vector is precomputed at fit; the *query* user's text is embedded
  at query time — one LLM forward per query, the cost the GCN-Retriever removes.
  ``retrieve(..., precomputed=True)`` reuses the fit-time vector of a query user instead (same
  text, same neighbours): for building many prompts, not for measuring the query cost.
* ``random`` — uniformly drawn users, seeded per (seed, query user), so a user's neighbours do
  not depend on the order of queries.
* ``none`` — no neighbours (zero context): ``[len(users), 0]``.

Time. With ``before`` (one time per query, e.g. the CTR sample's timestamp) only users with at
least one training interaction strictly before that time are candidates (an empty neighbour
brings no context), and :func:`neighbour_events` returns only a neighbour's training
interactions strictly before it. Under the per-user split another user's *training* events can
lie after a query's time, so the prompt builder must pass it. When the dataset has no real
timestamps (``Dataset.has_timestamps`` is False, Book-Crossing: times are seeded per-user
orders, not comparable across users) the time filter is skipped, both here and in
:func:`neighbour_events`. When fewer than ``k`` users qualify the row is padded with ``-1``.

Query representation. A query user is represented by all of their training interactions (the
trained LightGCN embedding; the LLM text of their most recent training items), whatever
``before`` is: the GCN is transductive over the training graph, and the LLM retriever is given
the same information so the two compare fairly.

Cold start (a query user without training interactions — common under the global time split):
the caller passes the user's own earlier interactions in ``histories`` (e.g. the CTR sample's
history with ``history_scope="prior"``). ``gcn`` folds the user into the frozen trained graph by
propagation (:meth:`GCNRetriever.fold_in`), ``llm`` embeds the text of that history, ``random``
needs nothing. Without a usable history a :class:`~ragrec.errors.DataError` names the user.

Extension. A retriever is a :class:`Retriever` subclass plus a frozen :class:`RetrieverConfig`
subclass that builds it, registered under its stable name with :func:`register_retriever`
(:mod:`ragrec.retrieval.factory` looks configs up by name). It owns three things: its defaults
(the config's fields), its fit cache (:meth:`Retriever.use_cache`) and how its *training* prompts
stay leak-free (:meth:`Retriever.for_training`).
"""

from __future__ import annotations

import hashlib
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd

from ragrec.data import Dataset, Samples, UserSequences
from ragrec.errors import ConfigError, DataError


def neighbour_events(
    train_sequences: UserSequences,
    neighbour: int,
    before_time: int | None,
    limit: int,
    *,
    has_timestamps: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A neighbour's up-to-``limit`` most recent *training* interactions strictly before
    ``before_time``, oldest first, as (items, ratings, timestamps).

    ``train_sequences`` must be built from the training interactions only (e.g.
    ``retriever.sequences``). ``before_time=None`` or ``has_timestamps=False`` (pseudo-times, not
    comparable across users) skips the time filter. ``neighbour == -1`` (padding) gives empty
    arrays.
    """
    if limit < 0:
        raise ConfigError(f"limit must be ≥ 0, got {limit}")
    n_users = len(train_sequences.offsets) - 1
    if neighbour == -1 or limit == 0:
        s = slice(0, 0)
    elif not 0 <= neighbour < n_users:
        raise DataError(f"neighbour id {neighbour} outside [0, {n_users})")
    else:
        s = train_sequences.window(int(neighbour), before_time if has_timestamps else None, limit)
    return train_sequences.items[s], train_sequences.ratings[s], train_sequences.timestamps[s]


History = tuple[np.ndarray, np.ndarray]
"""A query user's own earlier interactions: (item ids, ratings), oldest first."""

_NEVER = np.iinfo(np.int64).max  # "first training time" of a user without training events


# --------------------------------------------------------------------------------------------
# typed configs, registered by name


@dataclass(frozen=True)
class RetrieverConfig(ABC):
    """A retriever's settings, with its module's defaults; :meth:`build` makes the retriever.

    A subclass declares ``name: str = field(default="<name>", init=False)``: the stable key of
    profiles and result tables (``"gcn"``, ``"llm"``, ...), written with the settings wherever
    the config is recorded (provenance).
    """

    @abstractmethod
    def build(self, dataset: Dataset, *, backbone: Any = None, progress: bool = False) -> Retriever:
        """An unfitted retriever for ``dataset``.

        Args:
            dataset: gives the user and item counts, whether times are real, and item texts.
            backbone: an already loaded :class:`ragrec.llm.backbone.Backbone`, for retrievers that
                embed with an LLM (the others ignore it). (default: load the config's own source)
            progress: a bar over a slow fit, where the retriever has one. (default: :obj:`False`)
        """


_REGISTRY: dict[str, type[RetrieverConfig]] = {}


def register_retriever(config_class: type[RetrieverConfig]) -> type[RetrieverConfig]:
    """Class decorator: make ``config_class`` the config of the retriever ``config_class.name``."""
    name = getattr(config_class, "name", "")
    taken = _REGISTRY.get(name)
    if not name or (taken is not None and taken.__qualname__ != config_class.__qualname__):
        raise ConfigError(f"cannot register {config_class.__qualname__} as retriever {name!r}")
    _REGISTRY[name] = config_class
    return config_class


def registered_retrievers() -> dict[str, type[RetrieverConfig]]:
    """Name → config class of every retriever registered so far, in registration order."""
    return dict(_REGISTRY)


class PromptNeighbours(Protocol):
    """What prompts take neighbours from: a fitted :class:`Retriever`, or its training view."""

    name: str

    def neighbours(self, samples: Samples, k: int) -> np.ndarray | None:
        """int64 ``[len(samples), k]`` neighbour ids per sample (None: no neighbours at all)."""


def _fit(retriever: Retriever, train: pd.DataFrame) -> Retriever:
    return retriever.fit(train)


@dataclass(frozen=True, eq=False)
class TrainingFolds:
    """How a retriever refits itself for training prompts (:meth:`Retriever.for_training`).

    Attributes:
        train: the training interactions the retriever was fitted on.
        n_folds: the training samples are cut into this many seeded folds; fold f's samples
            query a retriever fitted on ``train`` minus fold f's (user, item) pairs.
        seed: the fold assignment's seed.
        fit: fits an unfitted retriever on part of ``train`` (the caller's caches, validation
            data and process order). (default: ``retriever.fit(part)``)
    """

    train: pd.DataFrame
    n_folds: int = 2
    seed: int = 0
    fit: Callable[[Retriever, pd.DataFrame], Retriever] = _fit


def fit_key(train: pd.DataFrame, *settings) -> str:
    """A short digest of ``settings`` and the training interactions, to key a fit cache's file."""
    users, items, times = (train[c].to_numpy(np.int64) for c in ("user", "item", "timestamp"))
    pairs = int((users * 1_000_003 + items).sum() % (1 << 61))
    data = (len(train), int(users.sum()), int(items.sum()), int(times.sum()), pairs)
    return hashlib.sha1(repr((*settings, data)).encode()).hexdigest()[:10]


# --------------------------------------------------------------------------------------------
# the interface


class Retriever(ABC):
    """Fit on training interactions; retrieve top-k neighbour users.

    After :meth:`fit`: ``sequences`` (the training interactions as :class:`UserSequences`, for
    :func:`neighbour_events`) and ``fit_s`` (one-off wall seconds of fitting/indexing).
    """

    name: str = ""
    block_size: int = 1024  # queries scored at once

    def __init__(self, n_users: int, *, has_timestamps: bool = True) -> None:
        if n_users < 2:
            raise ConfigError(f"retrieval needs at least 2 users, got n_users={n_users}")
        self.n_users = n_users
        self.has_timestamps = has_timestamps
        self.sequences: UserSequences | None = None
        self.fit_s: float | None = None
        self._first_time = np.full(n_users, _NEVER, dtype=np.int64)
        self._candidate = np.zeros(n_users, dtype=bool)

    def fit(self, train: pd.DataFrame, valid: pd.DataFrame | None = None) -> Retriever:
        """Index the training interactions (``valid`` is only used by ``gcn``, for early stopping)."""
        started = time.perf_counter()
        if len(train) == 0:
            raise DataError("cannot fit a retriever on zero training interactions")
        users = train["user"].to_numpy(np.int64)
        if users.min() < 0 or users.max() >= self.n_users:
            raise DataError(
                f"training user ids must lie in [0, {self.n_users}), got [{users.min()}, {users.max()}]"
            )
        self.sequences = UserSequences(train, self.n_users)
        counts = np.diff(self.sequences.offsets)
        self._first_time[:] = _NEVER
        has = counts > 0
        self._first_time[has] = self.sequences.timestamps[self.sequences.offsets[:-1][has]]
        self._candidate = has.copy()  # subclasses narrow it to users they can represent
        self._fit(train, valid)
        self.fit_s = time.perf_counter() - started + self._extra_fit_s()
        return self

    def retrieve(
        self,
        users: Sequence[int] | np.ndarray,
        k: int,
        before: Sequence[int] | np.ndarray | None = None,
        histories: Sequence[History | None] | None = None,
        *,
        precomputed: bool = False,
    ) -> np.ndarray:
        """Top-``k`` neighbours of each query user.

        Args:
            users: query user ids ``[n]``.
            k: neighbours per query, ``1 ≤ k < n_users``.
            before: optional times ``[n]``; neighbours need a training interaction strictly
                before their query's time (ignored without real timestamps).
            histories: optional per-query (items, ratings) of the user's own earlier
                interactions, used only for users without training interactions (cold start).
            precomputed: represent query users that are in the index by their vector from
                :meth:`fit` instead of computing it now. For ``llm`` this skips the per-query
                LLM forward (the text is the same, so the neighbours are too): use it to build
                many prompts; leave it off to measure the query-time cost the paper compares.

        Returns:
            int64 ``[n, k]`` neighbour ids, most similar first; ``-1`` pads rows with fewer
            than ``k`` candidates.
        """
        if self.sequences is None:
            raise ConfigError(f"the {self.name!r} retriever is not fitted; call fit(train) first")
        users = self._check_users(users)
        check_k(k, self.n_users)
        if histories is not None and len(histories) != len(users):
            raise ConfigError(f"histories has {len(histories)} entries for {len(users)} query users")
        if before is not None:
            before = np.asarray(before, dtype=np.int64)
            if before.shape != users.shape:
                raise ConfigError(
                    f"before must give one time per query user: {before.shape} vs {users.shape}"
                )
        out = np.empty((len(users), k), dtype=np.int64)
        # Blocks of queries bound the [block, U] score and mask matrices (e.g. one call for
        # every CTR sample of a dataset).
        for start in range(0, len(users), self.block_size):
            rows = slice(start, start + self.block_size)
            out[rows] = self._retrieve(
                users[rows],
                k,
                self._allowed(users[rows], None if before is None else before[rows]),
                None if histories is None else histories[rows],
                precomputed,
            )
        return out

    def neighbours(self, samples: Samples, k: int) -> np.ndarray | None:
        """int64 ``[len(samples), k]`` neighbours of each sample's user among users active before
        the sample's time. Query users are represented by their fit-time vectors
        (``precomputed=True``): for prompts the query user's text is the one embedded at fit, so
        re-embedding it per sample would only cost time (the latency benchmark does pay it)."""
        frame = samples.frame
        return self.retrieve(
            frame["user"].to_numpy(), k, before=frame["timestamp"].to_numpy(), precomputed=True
        )

    @abstractmethod
    def for_training(self, samples: Samples, folds: TrainingFolds) -> PromptNeighbours:
        """The neighbours *training* prompts take, chosen without each sample's own interaction.

        A training sample (u, i, t) is one of the interactions this retriever was fitted on; a
        test sample never is. So that training prompts are built like test prompts (DESIGN §5),
        each retriever says how: refitted without the samples' pairs
        (:class:`~ragrec.retrieval.training.FoldedRetriever`), queried without the target
        (:class:`~ragrec.retrieval.llm.LeaveTargetOut`), or itself when its neighbours never
        depend on a training interaction's item or label. ``tests/retrieval/test_training_views.py``
        checks every registered retriever.

        Args:
            samples: the training samples the view will be asked about (folds are drawn over them).
            folds: how to refit, for retrievers that refit.

        Returns:
            neighbours for any subset of ``samples``.
        """

    def use_cache(self, train: pd.DataFrame, directory: str | os.PathLike) -> Retriever:
        """Keep this retriever's fit in ``directory``, keyed by ``train`` and its settings
        (:func:`fit_key`), so a later fit on the same inputs loads it. Retrievers that fit in
        milliseconds keep none and return themselves."""
        return self

    def neighbour_events(
        self, neighbour: int, before_time: int | None, limit: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:func:`neighbour_events` on this retriever's training interactions and time rule."""
        if self.sequences is None:
            raise ConfigError(f"the {self.name!r} retriever is not fitted; call fit(train) first")
        return neighbour_events(
            self.sequences, neighbour, before_time, limit, has_timestamps=self.has_timestamps
        )

    # -- for subclasses

    @abstractmethod
    def _fit(self, train: pd.DataFrame, valid: pd.DataFrame | None) -> None: ...

    @abstractmethod
    def _retrieve(
        self, users: np.ndarray, k: int, allowed: np.ndarray, histories, precomputed: bool
    ) -> np.ndarray: ...

    def _extra_fit_s(self) -> float:
        return 0.0

    # -- shared checks

    def _check_users(self, users) -> np.ndarray:
        arr = np.asarray(users)
        if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
            raise ConfigError(
                f"users must be a 1-D sequence of integer ids, got shape {arr.shape} dtype {arr.dtype}"
            )
        arr = arr.astype(np.int64)
        if arr.size and (arr.min() < 0 or arr.max() >= self.n_users):
            raise DataError(f"query user ids must lie in [0, {self.n_users}), got [{arr.min()}, {arr.max()}]")
        return arr

    def _allowed(self, users: np.ndarray, before) -> np.ndarray:
        """bool ``[n, U]``: who may be returned for each query (a candidate, not the user, and —
        with ``before`` and real timestamps — with a training event strictly before the time)."""
        allowed = np.repeat(self._candidate[None, :], len(users), axis=0)
        if before is not None and self.has_timestamps:
            allowed &= self._first_time[None, :] < before[:, None]
        allowed[np.arange(len(users)), users] = False
        return allowed

    def _cold_history(self, user: int, histories, position: int) -> History:
        """The given history of a cold query user, or a DataError saying what to pass."""
        history = None if histories is None else histories[position]
        if history is None or len(history[0]) == 0:
            raise DataError(
                f"user {user} has no training interactions (cold start) and no earlier interactions "
                f"were given; pass histories=[(items, ratings), ...] with the user's own earlier "
                f"interactions so the {self.name!r} retriever can fold the user in"
            )
        return np.asarray(history[0], dtype=np.int64), np.asarray(history[1], dtype=np.float32)


def check_k(k: int, n_users: int) -> int:
    """``1 ≤ k < n_users`` (a user cannot be their own neighbour), else ConfigError."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise ConfigError(f"k must be an integer, got {k!r}")
    if not 1 <= k < n_users:
        raise ConfigError(
            f"k must satisfy 1 ≤ k < n_users = {n_users} (the user itself is never retrieved), got k={k}"
        )
    return int(k)
