"""The canonical dataset form every loader returns, and the registry that picks a loader by name.

Every dataset, whatever its raw format, becomes one :class:`Dataset`:

* ``interactions``: one row per (user, item) event, columns
  ``user`` (int64, dense 0..n_users-1), ``item`` (int64, dense 0..n_items-1),
  ``rating`` (float32, the source's scale), ``timestamp`` (int64, seconds; a seeded per-user
  pseudo-order when the source has none, see ``has_timestamps``) and ``label`` (int8, the
  dataset's CTR label rule applied to the rating);
* ``items``: indexed by dense item id, a ``title`` column (str) plus the source's attributes
  (genres, year, author, brand, category ...), all as strings;
* ``users``: indexed by dense user id, the source's user attributes, or ``None``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from ragrec.errors import DataError

INTERACTION_COLUMNS = ("user", "item", "rating", "timestamp", "label")


@dataclass(frozen=True)
class Dataset:
    """One dataset in canonical form (see the module docstring for the columns)."""

    name: str
    interactions: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame | None
    label_rule: str
    has_timestamps: bool
    user_raw_ids: np.ndarray
    item_raw_ids: np.ndarray
    skipped: dict[str, int] = field(default_factory=dict)
    """Rows dropped while loading, by reason (e.g. ``{"malformed rows in X.csv": 3}``)."""

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


def canonicalize(
    name: str,
    raw: pd.DataFrame,
    items: pd.DataFrame,
    users: pd.DataFrame | None,
    *,
    label: Callable[[pd.Series], pd.Series],
    label_rule: str,
    has_timestamps: bool,
    skipped: dict[str, int] | None = None,
) -> Dataset:
    """Map raw ids to dense ints, apply the label rule and check the result.

    Args:
        raw: columns ``user, item, rating, timestamp`` with the source's raw ids.
        items: indexed by raw item id, with a ``title`` column; items that are rated but have
            no row here get the title ``"item <raw id>"`` (counted in ``skipped`` as a note).
        users: indexed by raw user id, or ``None``.
        label: maps the rating column to booleans (the dataset's CTR rule).
    """
    skipped = dict(skipped or {})
    if raw.empty:
        raise DataError(f"dataset {name!r}: no interactions left after loading")
    raw = raw.drop_duplicates(subset=["user", "item"], keep="last")
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

    items = items[~items.index.duplicated(keep="first")]
    missing = ~pd.Index(item_raw).isin(items.index)
    if missing.any():
        skipped["items without metadata (titled by id)"] = int(missing.sum())
    aligned = items.reindex(item_raw)
    aligned["title"] = aligned["title"].where(
        aligned["title"].notna(), pd.Series([f"item {r}" for r in item_raw], index=item_raw)
    )
    aligned = aligned.fillna("").astype(str)
    aligned.index = pd.RangeIndex(len(item_raw), name="item")

    if users is not None:
        users = users[~users.index.duplicated(keep="first")].reindex(user_raw).fillna("").astype(str)
        users.index = pd.RangeIndex(len(user_raw), name="user")
    return Dataset(
        name=name,
        interactions=inter,
        items=aligned,
        users=users,
        label_rule=label_rule,
        has_timestamps=has_timestamps,
        user_raw_ids=user_raw,
        item_raw_ids=item_raw,
        skipped=skipped,
    )


def resolve_data_root(data_root: str | os.PathLike | None) -> Path:
    """The directory holding ``<dataset>/`` raw folders: the argument, else ``$RAGREC_DATA``,
    else ``data/raw`` under the current directory."""
    if data_root is not None:
        return Path(data_root)
    return Path(os.environ.get("RAGREC_DATA", "data/raw"))


def missing_files(name: str, directory: Path, expected: Sequence[str], source: str) -> DataError:
    """The error for a dataset whose raw files are absent: what, where, and where to get them."""
    return DataError(
        f"dataset {name!r}: raw files not found in {directory.resolve()}.\n"
        f"Expected: {', '.join(expected)}.\n"
        f"They are published at {source}; put them in that directory "
        f"(or point RAGREC_DATA / data_root at a folder holding '{name}/')."
    )


def read_delimited(path: Path, *, what: str, **kwargs) -> tuple[pd.DataFrame, int]:
    """``pandas.read_csv`` that counts malformed rows instead of dropping them silently and turns
    parser/encoding failures into a :class:`DataError` naming the file.

    Returns the frame and the number of malformed rows skipped. More than half the rows
    malformed means a wrong format (delimiter, encoding), which is an error, not a skip.
    """
    bad: list[list[str]] = []
    try:
        frame = pd.read_csv(path, engine="python", on_bad_lines=lambda line: bad.append(line), **kwargs)
    except UnicodeDecodeError as exc:
        raise DataError(f"{what} {path}: cannot decode ({exc.reason}); wrong encoding?") from exc
    except (pd.errors.ParserError, ValueError) as exc:
        raise DataError(f"{what} {path}: cannot parse: {exc}") from exc
    if len(bad) > max(len(frame), 0):
        raise DataError(
            f"{what} {path}: {len(bad)} of {len(bad) + len(frame)} rows are malformed; "
            "wrong delimiter or format?"
        )
    return frame, len(bad)


def require_columns(frame: pd.DataFrame, columns: Sequence[str], *, path: Path, what: str) -> None:
    """Raise a :class:`DataError` naming the file when expected columns are absent."""
    absent = [c for c in columns if c not in frame.columns]
    if absent:
        raise DataError(
            f"{what} {path}: missing column(s) {absent}; found {list(frame.columns)}. "
            "Wrong delimiter or not the published format?"
        )
