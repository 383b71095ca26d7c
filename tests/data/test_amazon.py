"""Amazon: both release layouts, the latest review of a re-rated item wins, every dropped row is
counted, and metadata that is not JSON lines is a clear error naming the file and line."""

import gzip
import json

import numpy as np
import pytest

from ragrec.data import load_dataset
from ragrec.errors import ConfigError, DataError
from tests.data.writers import (
    amazon_csv,
    amazon_meta,
    write_amazon_2014,
    write_amazon_2018,
)


def test_amazon_2018_ratings_csv_and_json_meta(tmp_path):
    n = write_amazon_2018(tmp_path / "amazon-video-games")
    ds = load_dataset("amazon-video-games", data_root=tmp_path)
    assert len(ds.interactions) == n == ds.rows_read
    assert ds.n_items == 4
    assert (ds.interactions["label"] == (ds.interactions["rating"] > 3)).all()
    assert ds.items.loc[0, "title"] == "Game 0" and ds.items.loc[0, "category"] == "Video Games > PC"
    assert ds.metadata_issues["items_titled_by_id"] == 1  # I3


def test_amazon_2014_reviews_and_python_literal_meta(tmp_path):
    reviews = [
        json.dumps(
            {
                "reviewerID": f"U{u}",
                "asin": f"B{i}",
                "overall": float(1 + (u * i) % 5),
                "unixReviewTime": 1_300_000_000 + i,
            }
        )
        for u in range(4)
        for i in range(5)
    ]
    meta = [
        repr({"asin": f"B{i}", "title": f"Cream {i}", "categories": [["Beauty", "Skin Care"]]})
        for i in range(5)
    ]
    write_amazon_2014(tmp_path / "amazon-beauty", reviews, [*meta, "this is not a record"])
    ds = load_dataset("amazon-beauty", data_root=tmp_path)
    assert len(ds.interactions) == 20 and ds.n_users == 4
    assert ds.items.loc[2, "title"] == "Cream 2" and ds.items.loc[2, "category"] == "Beauty > Skin Care"
    assert ds.metadata_issues["malformed_item_rows"] == 1


def _kept_rating(ds, user: str, item: str) -> list[float]:
    u = int(np.flatnonzero(ds.user_raw_ids == user)[0])
    i = int(np.flatnonzero(ds.item_raw_ids == item)[0])
    inter = ds.interactions
    return inter[(inter["user"] == u) & (inter["item"] == i)]["rating"].tolist()


BASE = [("I1", "U1", 4, 1_400_000_000), ("I2", "U1", 2, 1_400_000_100), ("I3", "U2", 5, 1_400_000_200)]


@pytest.mark.parametrize(
    "copies, kept",
    [
        ([("I1", "U1", 5, 1_500_000_000)], 5.0),  # a later re-rating listed after the rating
        ([("I1", "U1", 1, 1_300_000_000)], 4.0),  # an earlier rating listed after the later one
        ([("I1", "U1", 3, 1_400_000_000)], 3.0),  # same time: the later row of the file wins
    ],
    ids=["later-review-last", "later-review-first", "tie-later-row"],
)
def test_a_re_rated_item_keeps_the_latest_review(tmp_path, copies, kept):
    write_amazon_2018(tmp_path / "amazon-video-games", ratings=amazon_csv(BASE + copies))
    ds = load_dataset("amazon-video-games", data_root=tmp_path)
    assert _kept_rating(ds, "U1", "I1") == [kept]
    assert ds.dropped["duplicate"] == 1 and len(ds.interactions) == len(BASE)


def test_the_latest_review_wins_in_the_2014_layout_too(tmp_path):
    later = {"reviewerID": "U1", "asin": "B1", "overall": 5.0, "unixReviewTime": 1_500_000_000}
    earlier = {"reviewerID": "U1", "asin": "B1", "overall": 1.0, "unixReviewTime": 1_300_000_000}
    other = {"reviewerID": "U2", "asin": "B2", "overall": 4.0, "unixReviewTime": 1_400_000_000}
    write_amazon_2014(
        tmp_path / "amazon-beauty",
        [json.dumps(r) for r in (later, earlier, other)],
        [json.dumps({"asin": "B1", "title": "Cream"})],
    )
    ds = load_dataset("amazon-beauty", data_root=tmp_path)
    assert _kept_rating(ds, "U1", "B1") == [5.0] and ds.dropped["duplicate"] == 1


@pytest.mark.parametrize(
    "row, reason",
    [
        ("I1,U9,five,1400000000", "non_numeric_rating"),
        ("I1,U9,0.0,1400000000", "rating_out_of_range"),
        ("I1,U9,6.0,1400000000", "rating_out_of_range"),
        ("I1,U9,4.0,", "bad_timestamp"),
        ("I1,U9,4.0,1e300", "bad_timestamp"),
        (",U9,4.0,1400000000", "missing_id"),
        ("I1,U9,4.0,1400000000,extra", "malformed"),
        ("I1,U9,4.0", "malformed"),
    ],
    ids=["word", "zero", "six", "no-time", "huge-time", "no-item", "extra-field", "short-row"],
)
def test_unusable_rating_rows_are_counted_by_reason(tmp_path, row, reason):
    write_amazon_2018(tmp_path / "amazon-video-games", ratings=amazon_csv(BASE) + row + "\n")
    ds = load_dataset("amazon-video-games", data_root=tmp_path)
    assert ds.dropped[reason] == 1 and sum(ds.dropped.values()) == 1
    assert ds.rows_read == len(BASE) + 1


def test_amazon_k_core_filter_removes_sparse_users_and_items(tmp_path):
    write_amazon_2018(tmp_path / "amazon-video-games")
    ds = load_dataset("amazon-video-games", data_root=tmp_path, k_core_min=3)
    inter = ds.interactions
    assert inter.groupby("user").size().min() >= 3 and inter.groupby("item").size().min() >= 3
    assert ds.rows_read == len(inter) + ds.dropped["inactive"]


def test_the_k_core_counts_distinct_pairs_not_duplicates(tmp_path):
    # UA rated X twice: one distinct item, so a 2-core drops UA even though UA has two rows.
    rows = [
        ("X", "UA", 4, 1),
        ("X", "UA", 5, 2),
        ("X", "UB", 4, 3),
        ("Y", "UB", 2, 4),
        ("X", "UC", 5, 5),
        ("Y", "UC", 1, 6),
    ]
    write_amazon_2018(tmp_path / "amazon-video-games", ratings=amazon_csv(rows))
    ds = load_dataset("amazon-video-games", data_root=tmp_path, k_core_min=2)
    assert sorted(ds.user_raw_ids) == ["UB", "UC"]
    assert ds.dropped["duplicate"] == 1 and ds.dropped["inactive"] == 1


def test_a_bad_k_core_is_a_config_error(tmp_path):
    write_amazon_2018(tmp_path / "amazon-video-games")
    with pytest.raises(ConfigError, match="k_core_min"):
        load_dataset("amazon-video-games", data_root=tmp_path, k_core_min=0)


@pytest.mark.parametrize(
    "meta, line, kind",
    [
        ([json.dumps([json.loads(m) for m in amazon_meta()])], 1, "an array"),
        (["[", *[m + "," for m in amazon_meta()], "]"], 1, "an array"),
        ([*amazon_meta(), json.dumps("just a title")], 4, "a string"),
        ([*amazon_meta(), "42"], 4, "a number"),
        ([*amazon_meta(), "null"], 4, "null"),
    ],
    ids=["one-line-array", "pretty-array", "string-line", "number-line", "null-line"],
)
def test_metadata_that_is_not_json_lines_names_the_file_and_line(tmp_path, meta, line, kind):
    write_amazon_2018(tmp_path / "amazon-video-games", meta_lines=meta)
    with pytest.raises(
        DataError, match=rf"meta_Video_Games\.json\.gz, line {line}: {kind}, not an object.*JSON lines"
    ):
        load_dataset("amazon-video-games", data_root=tmp_path)


def test_a_wrong_delimiter_in_the_ratings_is_named(tmp_path):
    write_amazon_2018(tmp_path / "amazon-video-games", ratings="I1;U1;5.0;1400000000\nI2;U1;4.0;1400000001\n")
    with pytest.raises(DataError, match=r"Video_Games\.csv.*separated by ';'.*expects ','"):
        load_dataset("amazon-video-games", data_root=tmp_path)


def test_an_undecodable_or_truncated_file_names_it(tmp_path):
    folder = tmp_path / "amazon-video-games"
    write_amazon_2018(folder)
    data = (folder / "meta_Video_Games.json.gz").read_bytes()
    (folder / "meta_Video_Games.json.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"meta_Video_Games\.json\.gz.*cannot read"):
        load_dataset("amazon-video-games", data_root=tmp_path)
    with gzip.open(folder / "meta_Video_Games.json.gz", "wb") as f:
        f.write(b'{"asin": "I1", "title": "\xff\xfe"}\n')
    with pytest.raises(DataError, match=r"meta_Video_Games\.json\.gz.*cannot read"):
        load_dataset("amazon-video-games", data_root=tmp_path)


def test_amazon_missing_files_lists_both_layouts(tmp_path):
    with pytest.raises(DataError, match=r"Beauty\.csv.*reviews_Beauty_5\.json\.gz"):
        load_dataset("amazon-beauty", data_root=tmp_path)
