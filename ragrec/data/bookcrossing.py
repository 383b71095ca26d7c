"""Book-Crossing (Ziegler et al., 2005), from the public BX-CSV dump.

Files in ``data/raw/bookcrossing/``: ``BX-Book-Ratings.csv`` (``User-ID;ISBN;Book-Rating``),
``BX-Books.csv`` (``ISBN;Book-Title;Book-Author;Year-Of-Publication;Publisher;Image-URL-*``) and
``BX-Users.csv`` (``User-ID;Location;Age``): ``;``-separated, ``"``-quoted, latin-1, with some
malformed lines in the public dump (counted and reported, not fatal).

Conventions follow ReLLa (Lin et al., 2024): ratings are 1–10 with implicit 0s; the label is
``rating >= 5`` and an implicit 0 counts as negative; ratings of books absent from
``BX-Books.csv`` are dropped (no text to prompt with); users with ≤ 5 ratings are dropped. The
dump has no timestamps: each user's interactions get a seeded random order as pseudo-time, so
"earlier" means earlier in that order and only the per-user split applies.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ragrec.data.base import (
    Dataset,
    canonicalize,
    missing_files,
    read_delimited,
    require_columns,
)

FILES = ("BX-Book-Ratings.csv", "BX-Books.csv", "BX-Users.csv")
SOURCE = "https://grouplens.org/datasets/book-crossing/ (BX-CSV-Dump.zip)"
LABEL_RULE = "rating >= 5 (implicit 0 = negative)"
_CSV = dict(sep=";", quotechar='"', escapechar="\\", encoding="latin-1", dtype=str, keep_default_na=False)


def locate(folder: Path) -> Path:
    if not all((folder / f).exists() for f in FILES):
        raise missing_files("bookcrossing", folder, FILES, SOURCE)
    return folder


def load_bookcrossing(folder: Path, *, min_user_ratings: int = 6, seed: int = 0) -> Dataset:
    """Load the BX dump from ``folder`` (see the module docstring for conventions).

    Args:
        min_user_ratings: users with fewer ratings are dropped (ReLLa: "≤ 5 dropped" → 6).
        seed: seeds the per-user pseudo-time order (the dump has no timestamps).
    """
    folder = locate(Path(folder))
    skipped: dict[str, int] = {}

    path = folder / "BX-Book-Ratings.csv"
    ratings, bad = read_delimited(path, what="Book-Crossing ratings", **_CSV)
    require_columns(ratings, ["User-ID", "ISBN", "Book-Rating"], path=path, what="Book-Crossing ratings")
    skipped["malformed rows in BX-Book-Ratings.csv"] = bad
    rating = pd.to_numeric(ratings["Book-Rating"], errors="coerce")
    user = pd.to_numeric(ratings["User-ID"], errors="coerce")
    ok = rating.between(0, 10) & user.notna()
    skipped["ratings with a non-numeric user or rating outside 0-10"] = int((~ok).sum())
    raw = pd.DataFrame({"user": user[ok].astype("int64"), "item": ratings["ISBN"][ok].str.strip().str.upper(), "rating": rating[ok]})

    path = folder / "BX-Books.csv"
    books, bad = read_delimited(path, what="Book-Crossing books", **_CSV)
    require_columns(books, ["ISBN", "Book-Title", "Book-Author", "Year-Of-Publication", "Publisher"], path=path, what="Book-Crossing books")
    skipped["malformed rows in BX-Books.csv"] = bad
    items = pd.DataFrame(
        {
            "title": books["Book-Title"].to_numpy(),
            "author": books["Book-Author"].to_numpy(),
            "year": books["Year-Of-Publication"].to_numpy(),
            "publisher": books["Publisher"].to_numpy(),
        },
        index=books["ISBN"].str.strip().str.upper().to_numpy(),
    )
    known = raw["item"].isin(items.index)
    skipped["ratings of books absent from BX-Books.csv"] = int((~known).sum())
    raw = raw[known]

    counts = raw.groupby("user")["item"].transform("size")
    skipped[f"ratings of users with < {min_user_ratings} ratings"] = int((counts < min_user_ratings).sum())
    raw = raw[counts >= min_user_ratings].copy()

    # No timestamps: a seeded shuffle within each user becomes the pseudo-time 0, 1, 2, ...
    rng = np.random.default_rng(seed)
    raw = raw.iloc[rng.permutation(len(raw))]
    raw["timestamp"] = raw.groupby("user").cumcount().astype("int64")

    path = folder / "BX-Users.csv"
    users_file, bad = read_delimited(path, what="Book-Crossing users", **_CSV)
    require_columns(users_file, ["User-ID", "Location", "Age"], path=path, what="Book-Crossing users")
    skipped["malformed rows in BX-Users.csv"] = bad
    uid = pd.to_numeric(users_file["User-ID"], errors="coerce")
    users = users_file[uid.notna()].set_index(uid[uid.notna()].astype("int64"))[["Location", "Age"]]
    users.columns = ["location", "age"]
    return canonicalize(
        "bookcrossing", raw, items, users,
        label=lambda r: r >= 5, label_rule=LABEL_RULE, has_timestamps=False, skipped=skipped,
    )
