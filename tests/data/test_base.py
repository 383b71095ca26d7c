"""The canonical form: one duplicate policy for every loader, counted drops, the like threshold."""

import numpy as np
import pandas as pd
import pytest

from ragrec.data import load_dataset
from ragrec.data.base import RowCounts, canonicalize, drop_duplicate_pairs
from ragrec.errors import DataError
from tests.data.writers import write_bx


def _raw(rows, timestamps=True):
    columns = ["user", "item", "rating", "timestamp"] if timestamps else ["user", "item", "rating"]
    return pd.DataFrame(rows, columns=columns)


@pytest.mark.parametrize(
    "rows, timestamps, kept",
    [
        ([(1, "a", 2, 10), (1, "b", 3, 5), (1, "a", 5, 20)], True, [(1, "b", 3, 5), (1, "a", 5, 20)]),
        ([(1, "a", 5, 20), (1, "b", 3, 5), (1, "a", 2, 10)], True, [(1, "a", 5, 20), (1, "b", 3, 5)]),
        ([(1, "a", 2, 10), (1, "a", 5, 10), (2, "a", 1, 10)], True, [(1, "a", 5, 10), (2, "a", 1, 10)]),
        ([(1, "a", 2), (1, "b", 3), (1, "a", 5)], False, [(1, "b", 3), (1, "a", 5)]),
    ],
    ids=["latest-last-in-file", "latest-first-in-file", "tie-later-row", "no-time-last-row"],
)
def test_the_duplicate_policy_keeps_the_latest_then_the_later_row_in_file_order(rows, timestamps, kept):
    out, dropped = drop_duplicate_pairs(_raw(rows, timestamps), has_timestamps=timestamps)
    assert [tuple(r) for r in out.itertuples(index=False)] == kept
    assert dropped == len(rows) - len(kept)


def test_canonicalize_counts_duplicates_and_checks_every_row_is_accounted_for():
    raw = _raw([(1, "a", 4, 1), (1, "a", 5, 2), (2, "b", 1, 3)])
    items = pd.DataFrame({"title": ["A"]}, index=["a"])
    ds = canonicalize(
        "t",
        raw,
        items,
        None,
        label=lambda r: r > 3,
        label_rule="rating > 3",
        has_timestamps=True,
        counts=RowCounts(source="t.csv", rows_read=3),
    )
    assert ds.dropped["duplicate"] == 1 and len(ds.interactions) == 2
    assert ds.metadata_issues["items_titled_by_id"] == 1 and ds.items["title"].tolist() == ["A", "item b"]
    with pytest.raises(AssertionError, match="uncounted rows in t.csv"):
        canonicalize(
            "t",
            raw,
            items,
            None,
            label=lambda r: r > 3,
            label_rule="rating > 3",
            has_timestamps=True,
            counts=RowCounts(source="t.csv", rows_read=4),
        )


def test_nothing_usable_names_the_source_and_the_reasons():
    counts = RowCounts(source="/data/x.csv", rows_read=2)
    counts.drop("rating_out_of_range", 2)
    with pytest.raises(
        DataError, match=r"none of the 2 rows of /data/x.csv is usable.*rating_out_of_range': 2"
    ):
        canonicalize(
            "t",
            _raw([]),
            pd.DataFrame({"title": []}),
            None,
            label=lambda r: r > 3,
            label_rule="",
            has_timestamps=True,
            counts=counts,
        )


def test_an_undocumented_reason_is_refused():
    with pytest.raises(AssertionError, match="undocumented"):
        RowCounts(source="x").drop("because", 1)


def test_like_threshold_is_read_off_the_label_rule(tmp_path):
    write_bx(tmp_path / "bookcrossing")
    bx = load_dataset("bookcrossing", data_root=tmp_path)  # "rating >= 5" on 1-10
    assert bx.like_threshold == 5
    assert bx.liked(np.array([4, 5, 10])).tolist() == [False, True, True]
    syn = load_dataset("synthetic", n_users=30, n_items=50, seed=3)  # "rating > 3" on 1-5
    assert syn.like_threshold == 4
