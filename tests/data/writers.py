"""Small raw files in each dataset's published format, written by the tests themselves (the
real files cannot be redistributed)."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable, Sequence
from pathlib import Path

BX_RATINGS = (
    '"User-ID";"ISBN";"Book-Rating"\n'
    + "".join(
        f'"{u}";"{isbn}";"{r}"\n'
        for u in (11, 12)
        for isbn, r in zip(["0001", "0002", "0003", "0004", "0005", "0006", "0007"], [0, 8, 5, 3, 10, 0, 7])
    )
    + '"13";"0001";"9"\n'
)  # user 13 has one rating: dropped (≤ 5 ratings)
BX_BOOKS = (
    '"ISBN";"Book-Title";"Book-Author";"Year-Of-Publication";"Publisher";"Image-URL-S";"Image-URL-M";"Image-URL-L"\n'
    + "".join(f'"000{i}";"Book {i}";"Author {i}";"199{i}";"Pub";"s";"m";"l"\n' for i in range(1, 7))
)  # 0007 has no metadata: its ratings are dropped
BX_USERS = '"User-ID";"Location";"Age"\n"11";"paris, france";"30"\n"12";"oslo, norway";NULL\n'


def bx_rows(rows: Iterable[Sequence[object]], *, header: bool = True) -> str:
    """BX-Book-Ratings.csv text with the given (user, isbn, rating) rows."""
    head = '"User-ID";"ISBN";"Book-Rating"\n' if header else ""
    return head + "".join(f'"{u}";"{isbn}";"{r}"\n' for u, isbn, r in rows)


def write_bx(
    folder: Path,
    ratings: str = BX_RATINGS,
    books: str = BX_BOOKS,
    users: str = BX_USERS,
    encoding: str = "latin-1",
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "BX-Book-Ratings.csv").write_text(ratings, encoding=encoding)
    (folder / "BX-Books.csv").write_text(books, encoding=encoding)
    (folder / "BX-Users.csv").write_text(users, encoding=encoding)
    return folder


AMAZON_ROWS = [
    (f"I{i % 4}", f"U{u}", 1 + (u + i) % 5, 1_400_000_000 + 1000 * i + u) for u in range(3) for i in range(6)
]
"""(item, user, rating, timestamp); several (user, item) pairs repeat: see :func:`amazon_csv`."""


def amazon_csv(rows: Iterable[Sequence[object]]) -> str:
    """A 2018 ``<Category>.csv``: ``item,user,rating,timestamp`` rows, no header."""
    return "".join(f"{item},{user},{float(rating)},{ts}\n" for item, user, rating, ts in rows)


def amazon_meta(n_items: int = 3) -> list[str]:
    return [
        json.dumps({"asin": f"I{i}", "title": f"Game {i}", "brand": "B", "category": ["Video Games", "PC"]})
        for i in range(n_items)
    ]


def write_amazon_2018(
    folder: Path, meta_lines: Sequence[str] | None = None, ratings: str | None = None
) -> int:
    """Video Games in the 2018 layout; returns the number of rating rows. By default the first
    copy of each (user, item) pair of :data:`AMAZON_ROWS`, so the file has no duplicates."""
    folder.mkdir(parents=True, exist_ok=True)
    if ratings is None:
        firsts = {(item, user): (item, user, r, ts) for item, user, r, ts in reversed(AMAZON_ROWS)}
        ratings = amazon_csv(row for row in AMAZON_ROWS if firsts[row[:2]] == row)
    (folder / "Video_Games.csv").write_text(ratings)
    meta = amazon_meta() if meta_lines is None else meta_lines
    with gzip.open(folder / "meta_Video_Games.json.gz", "wt") as f:
        f.write("\n".join(meta) + "\n")
    return ratings.count("\n")


def write_amazon_2014(folder: Path, reviews: Sequence[str], meta: Sequence[str]) -> None:
    """Beauty in the 2014 layout: gzipped JSON-lines reviews and metadata."""
    folder.mkdir(parents=True, exist_ok=True)
    with gzip.open(folder / "reviews_Beauty_5.json.gz", "wt") as f:
        f.write("\n".join(reviews) + "\n")
    with gzip.open(folder / "meta_Beauty.json.gz", "wt") as f:
        f.write("\n".join(meta) + "\n")


ATOMIC_HEADERS = {
    "inter": ("user_id:token", "item_id:token", "rating:float", "timestamp:float"),
    "item": ("item_id:token", "movie_title:token_seq", "release_year:token", "class:token_seq"),
    "user": ("user_id:token", "age:token", "gender:token", "occupation:token", "zip_code:token"),
}


def atomic(kind: str, rows: Iterable[Sequence[object]]) -> str:
    """A RecBole atomic file (tab-separated, typed header) of ``kind`` inter/item/user."""
    return "\t".join(ATOMIC_HEADERS[kind]) + "\n" + "".join("\t".join(map(str, row)) + "\n" for row in rows)


def write_ml(folder: Path, inter: str, item: str, user: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for kind, text in (("inter", inter), ("item", item), ("user", user)):
        (folder / f"ml-100k.{kind}").write_text(text)
    return folder
