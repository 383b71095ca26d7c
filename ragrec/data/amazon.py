"""Amazon review data (McAuley et al.; 2014 and 2018 releases) for Beauty and Video Games.

Accepted layouts in ``data/raw/<name>/`` (first match wins):

1. 2018 ratings-only ``<Category>.csv`` (``item,user,rating,timestamp``, no header) with
   ``meta_<Category>.json[.gz]`` (strict JSON lines, fields ``asin``, ``title``, ``brand``,
   ``category`` ...);
2. 2014 5-core ``reviews_<Category>_5.json.gz`` (JSON lines with ``reviewerID``, ``asin``,
   ``overall``, ``unixReviewTime``) with ``meta_<Category>.json.gz`` (Python-literal lines, fields
   ``asin``, ``title``, ``brand``, ``categories``).

Label: ``rating > 3``. An optional k-core filter keeps users and items with ≥ k interactions
(after duplicates are dropped). A re-rating of an item keeps the latest review (see
:mod:`ragrec.data.base`).
"""

from __future__ import annotations

import ast
import gzip
import json
import zlib
from functools import partial
from pathlib import Path

import pandas as pd

from ragrec.data.base import Dataset, RowCounts, canonicalize, missing_files
from ragrec.data.raw import (
    read_delimited,
    to_number,
    usable_id,
    usable_ids,
    valid_timestamps,
)
from ragrec.errors import ConfigError, DataError

# Dataset name → the category names the two releases use.
CATEGORIES: dict[str, tuple[str, ...]] = {
    "amazon-beauty": ("Beauty", "All_Beauty", "Luxury_Beauty"),
    "amazon-video-games": ("Video_Games",),
}
SOURCE = (
    "https://cseweb.ucsd.edu/~jmcauley/datasets/amazon_v2/ (2018) or "
    "https://jmcauley.ucsd.edu/data/amazon/ (2014)"
)
LABEL_RULE = "rating > 3"


def _open_text(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")


def _first(folder: Path, names: list[str]) -> Path | None:
    return next((folder / n for n in names if (folder / n).exists()), None)


def locate(name: str, folder: Path) -> tuple[Path, Path, str]:
    """The (ratings file, metadata file, layout) present for dataset ``name`` in ``folder``."""
    if name not in CATEGORIES:
        raise ConfigError(f"unknown Amazon dataset {name!r}; choose one of {sorted(CATEGORIES)}")
    for cat in CATEGORIES[name]:
        meta = _first(folder, [f"meta_{cat}.json", f"meta_{cat}.json.gz"])
        if meta is None:
            continue
        if (folder / f"{cat}.csv").exists():
            return folder / f"{cat}.csv", meta, "ratings-csv"
        if (folder / f"reviews_{cat}_5.json.gz").exists():
            return folder / f"reviews_{cat}_5.json.gz", meta, "reviews-5core"
    cat = CATEGORIES[name][0]
    raise missing_files(
        name,
        folder,
        [f"{cat}.csv + meta_{cat}.json[.gz]", f"or reviews_{cat}_5.json.gz + meta_{cat}.json.gz"],
        SOURCE,
    )


def raw_files(name: str, folder: Path) -> list[Path]:
    """The files :func:`load_amazon` reads for dataset ``name``."""
    ratings, meta, _ = locate(name, Path(folder))
    return [ratings, meta]


_NOT_A_RECORD = object()
_KINDS = {
    list: "an array",
    tuple: "an array",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "a boolean",
}


def _parse_line(line: str) -> object:
    """One JSON-lines record: strict JSON, else a Python literal (the 2014 metadata)."""
    try:
        return json.loads(line)
    except (json.JSONDecodeError, RecursionError):
        pass
    try:
        return ast.literal_eval(line)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return _NOT_A_RECORD


def _not_an_object(path: Path, number: int, record: object, *, what: str) -> DataError:
    kind = "null" if record is None else _KINDS.get(type(record), type(record).__name__)
    return DataError(
        f"{what} {path}, line {number}: {kind}, not an object. The format is JSON lines: one "
        'object per line, e.g. {"asin": "B0001", "title": "..."}; a file holding one JSON array '
        "must be rewritten one element per line"
    )


def _read_json_lines(path: Path, *, what: str) -> tuple[list[dict], int]:
    """The records of a JSON-lines file and the number of lines that are not records."""
    records, bad = [], 0
    try:
        with _open_text(path) as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                if not records and not bad and line.lstrip().startswith("["):
                    raise _not_an_object(path, number, [], what=what)  # a whole-file JSON array
                record = _parse_line(line)
                if record is _NOT_A_RECORD:
                    bad += 1
                elif not isinstance(record, dict):
                    raise _not_an_object(path, number, record, what=what)
                else:
                    records.append(record)
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as exc:
        raise DataError(f"{what} {path}: cannot read ({exc})") from exc
    if bad > len(records):
        raise DataError(f"{what} {path}: {bad} of {bad + len(records)} lines are not JSON records")
    return records, bad


def _category_text(record: dict) -> str:
    cats = record.get("category") or record.get("categories") or []
    if isinstance(cats, list) and cats and isinstance(cats[0], list):  # 2014: a list of category paths
        cats = cats[0]
    return " > ".join(str(c) for c in cats) if isinstance(cats, list) else str(cats)


def k_core(raw: pd.DataFrame, k: int) -> pd.DataFrame:
    """Repeatedly drop users and items with fewer than ``k`` interactions until none remain."""
    while True:
        users = raw.groupby("user")["item"].transform("size")
        items = raw.groupby("item")["user"].transform("size")
        keep = (users >= k) & (items >= k)
        if keep.all():
            return raw
        raw = raw[keep]


def _read_ratings(path: Path, layout: str, counts: RowCounts) -> pd.DataFrame:
    """The raw ratings of either layout as columns ``user, item, rating, timestamp``."""
    if layout == "ratings-csv":
        frame, bad = read_delimited(
            path, what="Amazon ratings", sep=",", names=["item", "user", "rating", "timestamp"]
        )
    else:
        records, bad = _read_json_lines(path, what="Amazon reviews")
        frame = pd.DataFrame.from_records(records)
        needed = ["reviewerID", "asin", "overall", "unixReviewTime"]
        if any(c not in frame.columns for c in needed):
            raise DataError(f"Amazon reviews {path}: records lack fields {needed}")
        frame = frame.rename(
            columns={"reviewerID": "user", "asin": "item", "overall": "rating", "unixReviewTime": "timestamp"}
        )
    counts.rows_read = len(frame) + bad
    counts.drop("malformed", bad)
    return frame


def _valid_rows(frame: pd.DataFrame, counts: RowCounts) -> pd.DataFrame:
    rating, ts = to_number(frame["rating"]), to_number(frame["timestamp"])
    ok = counts.keep_valid(
        [
            ("missing_id", ~(usable_ids(frame["user"]) & usable_ids(frame["item"]))),
            ("non_numeric_rating", rating.isna()),
            ("rating_out_of_range", ~rating.between(1, 5)),
            ("bad_timestamp", ~valid_timestamps(ts)),
        ]
    )
    return pd.DataFrame(
        {
            "user": frame["user"][ok].astype(str),
            "item": frame["item"][ok].astype(str),
            "rating": rating[ok],
            "timestamp": ts[ok].astype("int64"),
        }
    )


def _read_metadata(path: Path, counts: RowCounts) -> pd.DataFrame:
    records, bad = _read_json_lines(path, what="Amazon metadata")
    usable = [r for r in records if usable_id(r.get("asin"))]
    counts.note("malformed_item_rows", bad + len(records) - len(usable))
    return pd.DataFrame(
        {
            "title": [r.get("title") or None for r in usable],
            "brand": [r.get("brand", "") for r in usable],
            "category": [_category_text(r) for r in usable],
        },
        index=pd.Index([str(r["asin"]) for r in usable], dtype=object),
    )


def load_amazon(name: str, folder: Path, *, k_core_min: int | None = None) -> Dataset:
    """Load an Amazon category (see the module docstring for layouts); label ``rating > 3``.

    Args:
        k_core_min: keep only users and items with at least this many interactions, repeatedly.
            (default: :obj:`None`, no filter)
    """
    if k_core_min is not None and k_core_min < 1:
        raise ConfigError(f"k_core_min must be ≥ 1, got {k_core_min}")
    ratings_path, meta_path, layout = locate(name, Path(folder))
    counts = RowCounts(source=str(ratings_path))
    raw = _valid_rows(_read_ratings(ratings_path, layout, counts), counts)
    items = _read_metadata(meta_path, counts)
    return canonicalize(
        name,
        raw,
        items,
        None,
        label=lambda r: r > 3,
        label_rule=LABEL_RULE,
        has_timestamps=True,
        counts=counts,
        activity_filter=None if k_core_min is None else partial(k_core, k=k_core_min),
    )
