"""MovieLens-100K, read from the copy shipped inside the ``recbole==1.2.1`` wheel.

The wheel stores it in RecBole's atomic format (tab-separated, typed headers such as
``user_id:token``). We only locate the files with :func:`importlib.util.find_spec`; importing
recbole would pull its heavy dependencies. GroupLens' terms forbid redistribution, so no copy is
ever written into this repository.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd

from ragrec.data.base import Dataset, RowCounts, canonicalize
from ragrec.data.raw import (
    integer_ids,
    read_delimited,
    require_columns,
    to_number,
    valid_timestamps,
)
from ragrec.errors import DataError

LABEL_RULE = "rating > 3"
FILES = ("ml-100k.inter", "ml-100k.item", "ml-100k.user")
_WHAT = "RecBole atomic file"


def locate_ml100k(folder: Path | None = None) -> Path:
    """The folder holding ``ml-100k.{inter,item,user}``: ``folder``, else the one inside the
    installed recbole wheel."""
    if folder is None:
        spec = importlib.util.find_spec("recbole")
        if spec is None or not spec.submodule_search_locations:
            raise DataError(
                "dataset 'ml-100k': the recbole package that bundles MovieLens-100K is not installed. "
                "Install it with `pip install --no-deps recbole==1.2.1` (or run `make install`)."
            )
        folder = Path(next(iter(spec.submodule_search_locations))) / "dataset_example" / "ml-100k"
    missing = [name for name in FILES if not (folder / name).exists()]
    if missing:
        raise DataError(f"dataset 'ml-100k': {missing} not found in {folder}; reinstall recbole==1.2.1.")
    return folder


def raw_files(folder: Path | None = None) -> list[Path]:
    """The files :func:`load_ml100k` reads."""
    folder = locate_ml100k(folder)
    return [folder / name for name in FILES]


def _read_atomic(path: Path, columns: list[str]) -> tuple[pd.DataFrame, int]:
    """A RecBole atomic file (tab-separated, ``name:type`` headers, types dropped) and its
    number of malformed rows."""
    frame, bad = read_delimited(path, what=_WHAT, sep="\t")
    frame.columns = [str(c).split(":")[0] for c in frame.columns]
    require_columns(frame, columns, path=path, what=_WHAT)
    return frame, bad


def _read_interactions(path: Path, counts: RowCounts) -> pd.DataFrame:
    inter, bad = _read_atomic(path, ["user_id", "item_id", "rating", "timestamp"])
    counts.rows_read = len(inter) + bad
    counts.drop("malformed", bad)
    user, item = integer_ids(inter["user_id"]), integer_ids(inter["item_id"])
    rating, ts = to_number(inter["rating"]), to_number(inter["timestamp"])
    ok = counts.keep_valid(
        [
            ("missing_id", user.isna() | item.isna()),
            ("non_numeric_rating", rating.isna()),
            ("rating_out_of_range", ~rating.between(1, 5)),
            ("bad_timestamp", ~valid_timestamps(ts)),
        ]
    )
    return pd.DataFrame(
        {
            "user": user[ok].astype(int),
            "item": item[ok].astype(int),
            "rating": rating[ok],
            "timestamp": ts[ok].astype("int64"),
        }
    )


def _read_items(path: Path, counts: RowCounts) -> pd.DataFrame:
    item_file, bad = _read_atomic(path, ["item_id", "movie_title", "release_year", "class"])
    item = integer_ids(item_file["item_id"])
    counts.note("malformed_item_rows", bad + item.isna().sum())
    item_file = item_file[item.notna()]
    return pd.DataFrame(
        {
            "title": item_file["movie_title"],
            "year": item_file["release_year"],
            # Genres are a space-separated token sequence ("Animation Children's Comedy").
            "genres": item_file["class"].str.split().str.join(", "),
        }
    ).set_axis(item[item.notna()].astype(int), axis=0)


def _read_users(path: Path, counts: RowCounts) -> pd.DataFrame:
    user_file, bad = _read_atomic(path, ["user_id", "age", "gender", "occupation"])
    user = integer_ids(user_file["user_id"])
    counts.note("malformed_user_rows", bad + user.isna().sum())
    return user_file[user.notna()].set_index(user[user.notna()].astype(int))[["age", "gender", "occupation"]]


def load_ml100k(folder: Path | None = None) -> Dataset:
    """MovieLens-100K: 100,000 ratings (1–5) by 943 users on 1,682 movies, with titles, release
    year and genres, and user age/gender/occupation. CTR label: ``rating > 3``.

    Args:
        folder: a folder of ``ml-100k.{inter,item,user}`` atomic files (default: the wheel's).
    """
    folder = locate_ml100k(folder)
    counts = RowCounts(source=str(folder / "ml-100k.inter"))
    raw = _read_interactions(folder / "ml-100k.inter", counts)
    items = _read_items(folder / "ml-100k.item", counts)
    users = _read_users(folder / "ml-100k.user", counts)
    return canonicalize(
        "ml-100k",
        raw,
        items,
        users,
        label=lambda r: r > 3,
        label_rule=LABEL_RULE,
        has_timestamps=True,
        counts=counts,
    )
