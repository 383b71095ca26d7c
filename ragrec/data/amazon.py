"""Amazon review data (McAuley et al.; 2014 and 2018 releases) for Beauty and Video Games.

Accepted layouts in ``data/raw/<name>/`` (first match wins):

1. 2018 ratings-only ``<Category>.csv`` (``item,user,rating,timestamp``, no header) with
   ``meta_<Category>.json[.gz]`` (strict JSON lines, fields ``asin``, ``title``, ``brand``,
   ``category`` ...);
2. 2014 5-core ``reviews_<Category>_5.json.gz`` (JSON lines with ``reviewerID``, ``asin``,
   ``overall``, ``unixReviewTime``) with ``meta_<Category>.json.gz`` (Python-literal lines, fields
   ``asin``, ``title``, ``brand``, ``categories``).

Label: ``rating > 3``. An optional k-core filter keeps users and items with ≥ k interactions.
"""

from __future__ import annotations

import ast
import gzip
import json
from pathlib import Path

import pandas as pd

from ragrec.data.base import Dataset, canonicalize, missing_files, read_delimited
from ragrec.errors import ConfigError, DataError

# Dataset name → the category names the two releases use.
CATEGORIES: dict[str, tuple[str, ...]] = {
    "amazon-beauty": ("Beauty", "All_Beauty", "Luxury_Beauty"),
    "amazon-video-games": ("Video_Games",),
}
SOURCE = "https://cseweb.ucsd.edu/~jmcauley/datasets/amazon_v2/ (2018) or https://jmcauley.ucsd.edu/data/amazon/ (2014)"
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
        name, folder,
        [f"{cat}.csv + meta_{cat}.json[.gz]", f"or reviews_{cat}_5.json.gz + meta_{cat}.json.gz"],
        SOURCE,
    )


def _read_json_lines(path: Path, *, what: str) -> tuple[list[dict], int]:
    """JSON lines, falling back to Python literals (the 2014 metadata); counts bad lines."""
    records, bad = [], 0
    try:
        with _open_text(path) as handle:
            for line in handle:
                if not line.strip():
                    continue
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    try:
                        records.append(ast.literal_eval(line))
                    except (ValueError, SyntaxError):
                        bad += 1
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{what} {path}: cannot read ({exc})") from exc
    if bad > len(records):
        raise DataError(f"{what} {path}: {bad} of {bad + len(records)} lines are not JSON records")
    return records, bad


def _category_text(record: dict) -> str:
    cats = record.get("category") or record.get("categories") or []
    if cats and isinstance(cats[0], list):  # 2014: a list of category paths
        cats = cats[0]
    return " > ".join(str(c) for c in cats)


def k_core(raw: pd.DataFrame, k: int) -> pd.DataFrame:
    """Repeatedly drop users and items with fewer than ``k`` interactions until none remain."""
    while True:
        users = raw.groupby("user")["item"].transform("size")
        items = raw.groupby("item")["user"].transform("size")
        keep = (users >= k) & (items >= k)
        if keep.all():
            return raw
        raw = raw[keep]


def load_amazon(name: str, folder: Path, *, k_core_min: int | None = None) -> Dataset:
    """Load an Amazon category (see the module docstring for layouts); label ``rating > 3``."""
    ratings_path, meta_path, layout = locate(name, Path(folder))
    skipped: dict[str, int] = {}
    if layout == "ratings-csv":
        frame, bad = read_delimited(ratings_path, what="Amazon ratings", sep=",", header=None, dtype=str)
        if frame.shape[1] != 4:
            raise DataError(f"Amazon ratings {ratings_path}: expected 4 columns item,user,rating,timestamp; found {frame.shape[1]}")
        frame.columns = ["item", "user", "rating", "timestamp"]
    else:
        records, bad = _read_json_lines(ratings_path, what="Amazon reviews")
        frame = pd.DataFrame.from_records(records)
        needed = ["reviewerID", "asin", "overall", "unixReviewTime"]
        if any(c not in frame.columns for c in needed):
            raise DataError(f"Amazon reviews {ratings_path}: records lack fields {needed}")
        frame = frame.rename(columns={"reviewerID": "user", "asin": "item", "overall": "rating", "unixReviewTime": "timestamp"})
    skipped[f"malformed rows in {ratings_path.name}"] = bad
    rating = pd.to_numeric(frame["rating"], errors="coerce")
    ts = pd.to_numeric(frame["timestamp"], errors="coerce")
    ok = rating.between(1, 5) & ts.notna()
    skipped["rows with a rating outside 1-5 or no timestamp"] = int((~ok).sum())
    raw = pd.DataFrame({"user": frame["user"][ok], "item": frame["item"][ok], "rating": rating[ok], "timestamp": ts[ok].astype("int64")})
    if k_core_min is not None:
        if k_core_min < 1:
            raise ConfigError(f"k_core_min must be ≥ 1, got {k_core_min}")
        before = len(raw)
        raw = k_core(raw, k_core_min)
        skipped[f"rows removed by the {k_core_min}-core filter"] = before - len(raw)

    records, bad = _read_json_lines(meta_path, what="Amazon metadata")
    skipped[f"malformed lines in {meta_path.name}"] = bad
    items = pd.DataFrame(
        {
            "title": [r.get("title") or None for r in records],
            "brand": [r.get("brand", "") for r in records],
            "category": [_category_text(r) for r in records],
        },
        index=[r.get("asin") for r in records],
    )
    return canonicalize(
        name, raw, items, None,
        label=lambda r: r > 3, label_rule=LABEL_RULE, has_timestamps=True, skipped=skipped,
    )
