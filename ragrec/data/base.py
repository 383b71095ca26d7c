"""The canonical dataset form every loader returns, the duplicate policy, and the row counts.

Every dataset, whatever its raw format, becomes one :class:`Dataset`:

* ``interactions``: one row per (user, item) event, columns
  ``user`` (int64, dense 0..n_users-1), ``item`` (int64, dense 0..n_items-1),
  ``rating`` (float32, the source's scale), ``timestamp`` (int64, seconds; a seeded per-user
  pseudo-order when the source has none, see ``has_timestamps``) and ``label`` (int8, the
  dataset's CTR label rule applied to the rating);
* ``items``: indexed by dense item id, a ``title`` column (str) plus the source's attributes
  (genres, year, author, brand, category ...), all as strings;
* ``users``: indexed by dense user id, the source's user attributes, or ``None``.

Nothing is dropped silently. Every row of the interaction file either becomes an interaction or
is counted in ``Dataset.dropped`` under the first reason of :data:`DROP_REASONS` that applies, so
``rows_read == len(interactions) + sum(dropped.values())``. Rows of the item and user files that
are skipped, and rated items that get a fallback title, are counted in
``Dataset.metadata_issues`` under :data:`METADATA_REASONS`.

Duplicate policy (:func:`drop_duplicate_pairs`, the one place it is applied): one interaction
per (user, item) pair. With timestamps the latest interaction wins (a re-rating replaces the
rating), and of equal timestamps the later row of the file. Without timestamps (Book-Crossing)
the last row of the file wins: file order is then the only evidence of which rating came later,
and the choice must not depend on the seed that draws the pseudo-time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from ragrec.errors import DataError

INTERACTION_COLUMNS = ("user", "item", "rating", "timestamp", "label")

DROP_REASONS: dict[str, str] = {
    "malformed": "the parser could not split the line into the file's fields",
    "missing_id": "no usable user or item id (empty, or not an integer where the format's ids are)",
    "non_numeric_rating": "the rating is empty or not a number",
    "rating_out_of_range": "the rating lies outside the dataset's scale",
    "bad_timestamp": "the timestamp is empty, not a number or out of range",
    "unknown_item": "the item has no row in the item file, so no text to prompt with",
    "duplicate": "a repeated (user, item) pair; the duplicate policy keeps one copy",
    "inactive": "removed by the dataset's activity filter (minimum ratings per user, k-core)",
}
"""Why an interaction row was dropped, in the order the checks apply (a row counts once)."""

METADATA_REASONS: dict[str, str] = {
    "malformed_item_rows": "item-file rows that could not be parsed or have no usable item id",
    "duplicate_item_rows": "repeated item ids in the item file (the first row is kept)",
    "items_titled_by_id": "rated items without a title in the item file: kept, titled 'item <id>'",
    "malformed_user_rows": "user-file rows that could not be parsed or have no usable user id",
    "duplicate_user_rows": "repeated user ids in the user file (the first row is kept)",
}
"""What was skipped or repaired in the item and user files."""


@dataclass
class RowCounts:
    """What a loader read and dropped, filled in as it goes (see the module docstring).

    Attributes:
        source: the interaction file, named in errors.
        rows_read: rows of the interaction file, malformed ones included.
    """

    source: str
    rows_read: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))
    metadata_issues: dict[str, int] = field(default_factory=lambda: dict.fromkeys(METADATA_REASONS, 0))

    def drop(self, reason: str, rows: int) -> None:
        assert reason in DROP_REASONS, f"undocumented drop reason {reason!r}"
        self.dropped[reason] += int(rows)

    def note(self, reason: str, rows: int) -> None:
        assert reason in METADATA_REASONS, f"undocumented metadata reason {reason!r}"
        self.metadata_issues[reason] += int(rows)

    def keep_valid(self, checks: Sequence[tuple[str, pd.Series]]) -> pd.Series:
        """The mask of rows that fail none of ``checks`` ((reason, bad-row mask) pairs); each
        failing row is counted once, under its first failing reason."""
        ok = pd.Series(True, index=checks[0][1].index)
        for reason, bad in checks:
            bad = bad.fillna(True).astype(bool) & ok
            self.drop(reason, bad.sum())
            ok &= ~bad
        return ok


@dataclass(frozen=True)
class Dataset:
    """One dataset in canonical form (see the module docstring for the columns and counts)."""

    name: str
    interactions: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame | None
    label_rule: str
    has_timestamps: bool
    user_raw_ids: np.ndarray
    item_raw_ids: np.ndarray
    rows_read: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    """Interaction rows dropped while loading, by reason of :data:`DROP_REASONS`."""
    metadata_issues: dict[str, int] = field(default_factory=dict)
    """Item/user rows skipped and items titled by id, by reason of :data:`METADATA_REASONS`."""

    @property
    def n_users(self) -> int:
        return len(self.user_raw_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_raw_ids)

    @cached_property
    def like_threshold(self) -> float:
        """The smallest rating the dataset's label rule calls a like (every rule here is a
        threshold: ``rating > 3`` on 1-5 is 4), read off the labelled interactions."""
        liked = self.interactions["label"].to_numpy() == 1
        ratings = self.interactions["rating"].to_numpy()
        if not liked.any() or liked.all():
            raise DataError(f"{self.name}: the labels hold one class only; a like threshold is undefined")
        threshold = float(ratings[liked].min())
        if ratings[~liked].max() >= threshold:
            raise DataError(f"{self.name}: the label rule {self.label_rule!r} is not a rating threshold")
        return threshold

    def liked(self, ratings: np.ndarray) -> np.ndarray:
        """Boolean mask: which of ``ratings`` the label rule counts as a like."""
        return np.asarray(ratings, dtype=float) >= self.like_threshold

    def item_text(self, item: int) -> str:
        """A one-line description of an item: its title and, when known, its attributes."""
        row = self.items.loc[item]
        extras = [f"{col}: {row[col]}" for col in self.items.columns if col != "title" and row[col]]
        return f"{row['title']} ({'; '.join(extras)})" if extras else str(row["title"])


def drop_duplicate_pairs(raw: pd.DataFrame, *, has_timestamps: bool) -> tuple[pd.DataFrame, int]:
    """Keep one row per (user, item) pair by the duplicate policy (module docstring); the kept
    rows stay in file order. Returns the rows kept and the number dropped."""
    # A stable sort keeps file order among equal times, so "last" is the latest, then the later row.
    order = np.argsort(raw["timestamp"].to_numpy(), kind="stable") if has_timestamps else np.arange(len(raw))
    superseded = np.zeros(len(raw), dtype=bool)
    superseded[order] = raw.iloc[order].duplicated(subset=["user", "item"], keep="last").to_numpy()
    return raw[~superseded], int(superseded.sum())


def pseudo_time(raw: pd.DataFrame, seed: int) -> pd.DataFrame:
    """No timestamps: a seeded shuffle within each user becomes the pseudo-time 0, 1, 2, ..."""
    rng = np.random.default_rng(seed)
    raw = raw.iloc[rng.permutation(len(raw))].copy()
    raw["timestamp"] = raw.groupby("user").cumcount().astype("int64")
    return raw


def canonicalize(
    name: str,
    raw: pd.DataFrame,
    items: pd.DataFrame,
    users: pd.DataFrame | None,
    *,
    label: Callable[[pd.Series], pd.Series],
    label_rule: str,
    has_timestamps: bool,
    counts: RowCounts,
    activity_filter: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
    seed: int = 0,
) -> Dataset:
    """Deduplicate, filter, map raw ids to dense ints, apply the label rule and check the counts.

    Args:
        raw: columns ``user, item, rating`` (and ``timestamp`` when ``has_timestamps``) with the
            source's raw ids, in file order, every invalid row already dropped and counted.
        items: indexed by raw item id, with a ``title`` column; items that are rated but have
            no title here get the title ``"item <raw id>"`` (counted in ``counts``).
        users: indexed by raw user id, or ``None``.
        label: maps the rating column to booleans (the dataset's CTR rule).
        counts: the loader's row counts so far; duplicates and the activity filter add to them.
        activity_filter: drops inactive users/items (counted as ``inactive``); it runs after
            deduplication so that it counts distinct pairs. (default: :obj:`None`)
        seed: seeds the pseudo-time when there are no timestamps. (default: :obj:`0`)
    """
    # 1. one interaction per (user, item) pair
    raw, duplicates = drop_duplicate_pairs(raw, has_timestamps=has_timestamps)
    counts.drop("duplicate", duplicates)
    # 2. activity filters count distinct pairs, so they come after deduplication
    if activity_filter is not None:
        before = len(raw)
        raw = activity_filter(raw)
        counts.drop("inactive", before - len(raw))
    if raw.empty:
        dropped = {k: v for k, v in counts.dropped.items() if v}
        raise DataError(
            f"dataset {name!r}: none of the {counts.rows_read} rows of {counts.source} is usable (dropped: "
            f"{dropped})"
        )
    # 3. without timestamps a seeded per-user order stands in for time
    if not has_timestamps:
        raw = pseudo_time(raw, seed)
    inter, user_raw, item_raw = _dense_interactions(raw, label)
    assert counts.rows_read == len(inter) + sum(counts.dropped.values()), f"uncounted rows in {counts.source}"
    return Dataset(
        name=name,
        interactions=inter,
        items=_align_items(items, item_raw, counts),
        users=None if users is None else _align_users(users, user_raw, counts),
        label_rule=label_rule,
        has_timestamps=has_timestamps,
        user_raw_ids=user_raw,
        item_raw_ids=item_raw,
        rows_read=counts.rows_read,
        dropped=dict(counts.dropped),
        metadata_issues=dict(counts.metadata_issues),
    )


def _dense_interactions(
    raw: pd.DataFrame, label: Callable[[pd.Series], pd.Series]
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """The canonical interactions table, and the sorted raw user and item ids (dense id = position)."""
    user_raw = np.sort(raw["user"].unique())
    item_raw = np.sort(raw["item"].unique())
    uid = pd.Series(np.arange(len(user_raw), dtype=np.int64), index=user_raw)
    iid = pd.Series(np.arange(len(item_raw), dtype=np.int64), index=item_raw)
    inter = pd.DataFrame(
        {
            "user": uid.loc[raw["user"].to_numpy()].to_numpy(),
            "item": iid.loc[raw["item"].to_numpy()].to_numpy(),
            "rating": raw["rating"].to_numpy(dtype=np.float32),
            "timestamp": raw["timestamp"].to_numpy(dtype=np.int64),
            "label": label(raw["rating"]).to_numpy().astype(np.int8),
        }
    ).reset_index(drop=True)
    return inter, user_raw, item_raw


def _align_items(items: pd.DataFrame, item_raw: np.ndarray, counts: RowCounts) -> pd.DataFrame:
    """Item attributes in dense-id order, as strings; untitled items are titled by their raw id."""
    repeated = items.index.duplicated(keep="first")
    counts.note("duplicate_item_rows", repeated.sum())
    aligned = items[~repeated].reindex(item_raw)
    untitled = aligned["title"].isna().to_numpy()
    counts.note("items_titled_by_id", untitled.sum())
    fallback = pd.Series([f"item {r}" for r in item_raw], index=aligned.index)
    aligned["title"] = aligned["title"].astype(object).where(~untitled, fallback)
    aligned = aligned.astype(object).fillna("").astype(str)
    aligned.index = pd.RangeIndex(len(item_raw), name="item")
    return aligned


def _align_users(users: pd.DataFrame, user_raw: np.ndarray, counts: RowCounts) -> pd.DataFrame:
    """User attributes in dense-id order, as strings (empty where the user file has no row)."""
    repeated = users.index.duplicated(keep="first")
    counts.note("duplicate_user_rows", repeated.sum())
    aligned = users[~repeated].reindex(user_raw).astype(object).fillna("").astype(str)
    aligned.index = pd.RangeIndex(len(user_raw), name="user")
    return aligned


def shown_path(path: Path) -> str:
    """``path`` as a message shows it: relative to the working directory when inside it (no
    machine paths in published pages), absolute otherwise."""
    resolved = Path(path).resolve()
    try:
        return str(resolved.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(resolved)


def missing_files(name: str, directory: Path, expected: Sequence[str], source: str) -> DataError:
    """The error for a dataset whose raw files are absent: what, where, and where to get them."""
    return DataError(
        f"dataset {name!r}: raw files not found in {shown_path(directory)}.\n"
        f"Expected: {', '.join(expected)}.\n"
        f"They are published at {source}; put them in that directory "
        f"(or point RAGREC_DATA / data_root at a folder holding '{name}/')."
    )
