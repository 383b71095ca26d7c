"""CTR samples and their leakage-free histories.

A sample is one interaction (user, target item, label, timestamp) of a user who already had at
least ``min_history`` strictly earlier interactions. Its history is the up to ``history_len``
most recent interactions of the same user that are (a) strictly earlier than the sample's
timestamp — equal timestamps are not "earlier", MovieLens has many same-second ratings — and
(b) with ``history_scope="train"`` (DESIGN §5) training interactions only; with ``"prior"`` (the
profiles' choice, ReLLa's convention) any of the user's own earlier interactions. Under the
per-user split the two agree on every training sample, so no validation or test rating reaches
training either way; they differ at evaluation, where "train" would show a test sample the
history as it stood at the end of the user's training period.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ragrec.data.split import SPLIT_NAMES, Split
from ragrec.errors import ConfigError, DataError

HISTORY_SCOPES = ("train", "prior")


class UserSequences:
    """Every user's interactions in chronological order, for fast "what did u do before t".

    Arrays are concatenated over users (sorted by user, timestamp, item); user ``u``'s events
    are ``[offsets[u], offsets[u+1])``.
    """

    def __init__(self, interactions: pd.DataFrame, n_users: int):
        inter = interactions.sort_values(["user", "timestamp", "item"], kind="stable")
        self.users = inter["user"].to_numpy(np.int64)
        self.items = inter["item"].to_numpy(np.int64)
        self.ratings = inter["rating"].to_numpy(np.float32)
        self.timestamps = inter["timestamp"].to_numpy(np.int64)
        self.labels = inter["label"].to_numpy(np.int8)
        self.offsets = np.zeros(n_users + 1, dtype=np.int64)
        np.cumsum(np.bincount(self.users, minlength=n_users), out=self.offsets[1:])
        # One sortable key per event, so a batch of (user, time) lookups is one searchsorted.
        self._t0 = int(self.timestamps.min()) if len(self.timestamps) else 0
        self._span = int(self.timestamps.max()) - self._t0 + 2 if len(self.timestamps) else 2
        self._keys = self.users * self._span + (self.timestamps - self._t0)
        # Running count of likes, so "how many of u's events before t were likes" is two lookups.
        self._likes = np.concatenate([[0], np.cumsum(self.labels, dtype=np.int64)])

    def by_item(self, n_items: int) -> UserSequences:
        """The same events keyed by item (``users`` ↔ ``items`` swapped): every lookup of this
        class then answers "what happened to item i before t" — e.g. :meth:`likes_before`."""
        swapped = {
            "user": self.items,
            "item": self.users,
            "rating": self.ratings,
            "timestamp": self.timestamps,
            "label": self.labels,
        }
        return UserSequences(pd.DataFrame(swapped), n_items)

    def end_before(self, users: np.ndarray, times: np.ndarray) -> np.ndarray:
        """For each (user, time): the index one past the user's last event strictly before time.

        Returns an int64 array of absolute indices; the user's events before the time are
        ``[offsets[user], end)``.
        """
        users = np.asarray(users, dtype=np.int64)
        rel = np.clip(np.asarray(times, dtype=np.int64) - self._t0, -1, self._span - 1)
        # rel = -1 (before every event) must still land inside the user's block.
        return np.searchsorted(self._keys, users * self._span + rel, side="left")

    def count_before(self, users: np.ndarray, times: np.ndarray) -> np.ndarray:
        """How many of each user's events are strictly before the given time."""
        return self.end_before(users, times) - self.offsets[np.asarray(users, dtype=np.int64)]

    def likes_before(self, users: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For each (user, time): (events strictly before time, how many of them were likes),
        two int64 arrays of the query's shape."""
        users = np.asarray(users, dtype=np.int64)
        end, start = self.end_before(users, times), self.offsets[users]
        return end - start, self._likes[end] - self._likes[start]

    def window(self, user: int, time: int | None, limit: int) -> slice:
        """The up-to-``limit`` most recent events of ``user`` strictly before ``time``
        (``None``: all of the user's events), as a slice into the arrays."""
        start = int(self.offsets[user])
        end = (
            int(self.offsets[user + 1])
            if time is None
            else int(self.end_before(np.array([user]), np.array([time]))[0])
        )
        return slice(max(start, end - limit), end)


@dataclass(frozen=True)
class Samples:
    """CTR samples: ``frame`` has columns ``user, item, label, rating, timestamp, split,
    hist_start, hist_end`` (one row per sample; the index is a stable sample id) and
    ``sequences`` holds the events the histories index into."""

    frame: pd.DataFrame
    sequences: UserSequences
    history_len: int
    history_scope: str

    def __len__(self) -> int:
        return len(self.frame)

    def part(self, name: str) -> Samples:
        """The samples of one split part (``train``, ``valid`` or ``test``)."""
        if name not in SPLIT_NAMES:
            raise ConfigError(f"unknown split part {name!r}; choose one of {SPLIT_NAMES}")
        return self.subset(self.frame.index[self.frame["split"] == name])

    def subset(self, index) -> Samples:
        return Samples(self.frame.loc[index], self.sequences, self.history_len, self.history_scope)

    def history(self, sample_id) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(items, ratings, timestamps) of a sample's history, oldest first."""
        row = self.frame.loc[sample_id]
        s = slice(int(row["hist_start"]), int(row["hist_end"]))
        seq = self.sequences
        return seq.items[s], seq.ratings[s], seq.timestamps[s]


def build_samples(
    split: Split,
    n_users: int,
    *,
    min_history: int = 5,
    history_len: int = 10,
    history_scope: str = "train",
) -> Samples:
    """One CTR sample per interaction with ≥ ``min_history`` strictly earlier events of its user.

    Raises:
        ConfigError: bad parameters. DataError: a split part ends up with no samples.
    """
    if min_history < 0 or history_len < 1:
        raise ConfigError(f"need min_history ≥ 0 and history_len ≥ 1, got {min_history}, {history_len}")
    if history_scope not in HISTORY_SCOPES:
        raise ConfigError(f"unknown history_scope {history_scope!r}; choose one of {HISTORY_SCOPES}")
    inter = split.interactions
    users = inter["user"].to_numpy(np.int64)
    times = inter["timestamp"].to_numpy(np.int64)
    everything = UserSequences(inter, n_users)
    eligible = everything.count_before(users, times) >= min_history

    source = UserSequences(split.train if history_scope == "train" else inter, n_users)
    end = source.end_before(users, times)
    start = np.maximum(source.offsets[users], end - history_len)
    frame = inter.assign(hist_start=start, hist_end=end)[eligible]
    frame = frame[
        ["user", "item", "label", "rating", "timestamp", "split", "hist_start", "hist_end"]
    ].reset_index(drop=True)
    frame.index.name = "sample_id"
    for name in SPLIT_NAMES:
        if not (frame["split"] == name).any():
            raise DataError(
                f"split part {name!r} has no CTR samples (min_history={min_history}); "
                "the dataset is too small or min_history too large"
            )
    return Samples(frame, source, history_len, history_scope)


def cap_samples(samples: Samples, n: int | None, *, seed: int) -> Samples:
    """A reproducible, label-stratified random subset of ``n`` samples (``None``: all).

    The positive share of the subset equals the full set's up to rounding; the draw depends
    only on ``seed`` and the samples. Raises DataError when ``n`` exceeds the samples at hand.
    """
    if n is None:
        return samples
    if n <= 0:
        raise ConfigError(f"a sample cap must be positive, got {n}")
    if n > len(samples):
        raise DataError(f"cap of {n} samples is larger than the {len(samples)} samples available")
    rng = np.random.default_rng(seed)
    labels = samples.frame["label"].to_numpy()
    pos = np.flatnonzero(labels == 1)
    neg = np.flatnonzero(labels != 1)
    n_pos = int(round(n * len(pos) / len(labels)))
    n_pos = min(max(n_pos, n - len(neg)), len(pos))
    take = np.concatenate([rng.choice(pos, n_pos, replace=False), rng.choice(neg, n - n_pos, replace=False)])
    return samples.subset(samples.frame.index[np.sort(take)])
