"""Book-Crossing (Ziegler et al., 2005), from the public BX-CSV dump.

Files in ``data/raw/bookcrossing/``: ``BX-Book-Ratings.csv`` (``User-ID;ISBN;Book-Rating``),
``BX-Books.csv`` (``ISBN;Book-Title;Book-Author;Year-Of-Publication;Publisher;Image-URL-*``) and
``BX-Users.csv`` (``User-ID;Location;Age``): ``;``-separated, ``"``-quoted, latin-1, with some
malformed lines in the public dump (counted and reported, not fatal).

Conventions follow ReLLa (Lin et al., 2024): ratings are 1–10 with implicit 0s; the label is
``rating >= 5`` and an implicit 0 counts as negative; ratings of books absent from
``BX-Books.csv`` are dropped (no text to prompt with); users with ≤ 5 ratings are dropped. The
dump has no timestamps: a user rating the same book twice keeps the later row of the file (see
:mod:`ragrec.data.base`), and each user's interactions get a seeded random order as pseudo-time,
so "earlier" means earlier in that order and only the per-user split applies.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ragrec.data.base import Dataset, RowCounts, canonicalize, missing_files
from ragrec.data.raw import integer_ids, read_delimited, require_columns, to_number

FILES = ("BX-Book-Ratings.csv", "BX-Books.csv", "BX-Users.csv")
SOURCE = "https://grouplens.org/datasets/book-crossing/ (BX-CSV-Dump.zip)"
LABEL_RULE = "rating >= 5 (implicit 0 = negative)"
_CSV = {"sep": ";", "escapechar": "\\", "encoding": "latin-1"}


def locate(folder: Path) -> Path:
    if not all((folder / f).exists() for f in FILES):
        raise missing_files("bookcrossing", folder, FILES, SOURCE)
    return folder


def raw_files(folder: Path) -> list[Path]:
    """The files :func:`load_bookcrossing` reads."""
    folder = locate(Path(folder))
    return [folder / name for name in FILES]


def _isbn(values: pd.Series) -> pd.Series:
    return values.str.strip().str.upper()


def _read_ratings(path: Path, counts: RowCounts) -> pd.DataFrame:
    what = "Book-Crossing ratings"
    ratings, bad = read_delimited(path, what=what, **_CSV)
    require_columns(ratings, ["User-ID", "ISBN", "Book-Rating"], path=path, what=what)
    counts.rows_read = len(ratings) + bad
    counts.drop("malformed", bad)
    user, item, rating = (
        integer_ids(ratings["User-ID"]),
        _isbn(ratings["ISBN"]),
        to_number(ratings["Book-Rating"]),
    )
    ok = counts.keep_valid(
        [
            ("missing_id", user.isna() | item.isna() | (item == "")),
            ("non_numeric_rating", rating.isna()),
            ("rating_out_of_range", ~rating.between(0, 10)),
        ]
    )
    return pd.DataFrame({"user": user[ok].astype("int64"), "item": item[ok], "rating": rating[ok]})


def _read_books(path: Path, counts: RowCounts) -> pd.DataFrame:
    what = "Book-Crossing books"
    books, bad = read_delimited(path, what=what, **_CSV)
    require_columns(
        books, ["ISBN", "Book-Title", "Book-Author", "Year-Of-Publication", "Publisher"], path=path, what=what
    )
    isbn = _isbn(books["ISBN"])
    usable = isbn.notna() & (isbn != "")
    counts.note("malformed_item_rows", bad + (~usable).sum())
    books = books[usable]
    return pd.DataFrame(
        {
            "title": books["Book-Title"].to_numpy(),
            "author": books["Book-Author"].to_numpy(),
            "year": books["Year-Of-Publication"].to_numpy(),
            "publisher": books["Publisher"].to_numpy(),
        },
        index=isbn[usable].to_numpy(),
    )


def _read_users(path: Path, counts: RowCounts) -> pd.DataFrame:
    what = "Book-Crossing users"
    users, bad = read_delimited(path, what=what, **_CSV)
    require_columns(users, ["User-ID", "Location", "Age"], path=path, what=what)
    uid = integer_ids(users["User-ID"])
    counts.note("malformed_user_rows", bad + uid.isna().sum())
    users = users[uid.notna()].set_index(uid[uid.notna()].astype("int64"))[["Location", "Age"]]
    users.columns = ["location", "age"]
    return users


def load_bookcrossing(folder: Path, *, min_user_ratings: int = 6, seed: int = 0) -> Dataset:
    """Load the BX dump from ``folder`` (see the module docstring for conventions).

    Args:
        min_user_ratings: users with fewer distinct rated books are dropped (ReLLa: "≤ 5
            dropped" → 6). (default: :obj:`6`)
        seed: seeds the per-user pseudo-time order (the dump has no timestamps). (default: :obj:`0`)
    """
    folder = locate(Path(folder))
    counts = RowCounts(source=str(folder / "BX-Book-Ratings.csv"))
    raw = _read_ratings(folder / "BX-Book-Ratings.csv", counts)
    items = _read_books(folder / "BX-Books.csv", counts)
    known = raw["item"].isin(items.index)
    counts.drop("unknown_item", (~known).sum())
    users = _read_users(folder / "BX-Users.csv", counts)

    def active(raw: pd.DataFrame) -> pd.DataFrame:
        return raw[raw.groupby("user")["item"].transform("size") >= min_user_ratings]

    return canonicalize(
        "bookcrossing",
        raw[known],
        items,
        users,
        label=lambda r: r >= 5,
        label_rule=LABEL_RULE,
        has_timestamps=False,
        counts=counts,
        activity_filter=active,
        seed=seed,
    )
