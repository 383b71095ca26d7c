"""Book-Crossing: ReLLa's conventions, the duplicate policy without timestamps, every dropped row
counted, and wrong formats named."""

import re

import numpy as np
import pytest

from ragrec.data import load_dataset
from ragrec.errors import DataError
from tests.data.writers import BX_BOOKS, BX_RATINGS, bx_rows, write_bx


def test_bookcrossing_follows_rella_conventions(tmp_path):
    write_bx(tmp_path / "bookcrossing")
    ds = load_dataset("bookcrossing", data_root=tmp_path)
    assert ds.n_users == 2 and ds.n_items == 6
    assert len(ds.interactions) == 12
    # rating >= 5 positive; the implicit 0 is a negative.
    by_rating = ds.interactions.groupby("rating")["label"].first().to_dict()
    assert by_rating == {0.0: 0, 3.0: 0, 5.0: 1, 8.0: 1, 10.0: 1}
    assert ds.dropped["unknown_item"] == 2
    assert ds.dropped["inactive"] == 1
    assert ds.rows_read == 15 == len(ds.interactions) + sum(ds.dropped.values())
    assert not ds.has_timestamps
    # Pseudo-time is a per-user order 0..n-1.
    assert sorted(ds.interactions.groupby("user")["timestamp"].max()) == [5, 5]
    assert set(ds.items.columns) >= {"title", "author", "year", "publisher"}


def test_bookcrossing_counts_malformed_rows(tmp_path):
    write_bx(tmp_path / "bookcrossing", ratings=BX_RATINGS + '"11";"0001";"3";"extra";"fields"\n')
    ds = load_dataset("bookcrossing", data_root=tmp_path)
    assert ds.dropped["malformed"] == 1


@pytest.mark.parametrize(
    "row, reason",
    [
        (("11", "0001", "ten"), "non_numeric_rating"),
        (("11", "0001", ""), "non_numeric_rating"),
        (("11", "0001", "11"), "rating_out_of_range"),
        (("11", "0001", "-1"), "rating_out_of_range"),
        (("x11", "0001", "5"), "missing_id"),
        (("11", " ", "5"), "missing_id"),
    ],
    ids=["word", "empty", "above-10", "negative", "non-numeric-user", "blank-isbn"],
)
def test_unusable_rating_rows_are_counted_by_reason(tmp_path, row, reason):
    write_bx(tmp_path / "bookcrossing", ratings=BX_RATINGS + bx_rows([row], header=False))
    ds = load_dataset("bookcrossing", data_root=tmp_path)
    assert ds.dropped[reason] == 1
    assert ds.rows_read == len(ds.interactions) + sum(ds.dropped.values())


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_a_re_rating_keeps_the_last_row_of_the_file_whatever_the_seed(tmp_path, seed):
    rows = [(11, f"000{i}", 8) for i in range(1, 7)] + [(11, "0001", 2)]  # 0001 rated 8, then 2
    write_bx(tmp_path / "bookcrossing", ratings=bx_rows(rows))
    ds = load_dataset("bookcrossing", data_root=tmp_path, seed=seed)
    first_book = int(np.flatnonzero(ds.item_raw_ids == "0001")[0])
    kept = ds.interactions[ds.interactions["item"] == first_book]
    assert kept["rating"].tolist() == [2.0]
    assert ds.dropped["duplicate"] == 1


def test_every_row_duplicated_gives_the_same_dataset_with_the_copies_counted(tmp_path):
    write_bx(tmp_path / "once" / "bookcrossing")
    write_bx(tmp_path / "twice" / "bookcrossing", ratings=BX_RATINGS + BX_RATINGS.split("\n", 1)[1])
    once = load_dataset("bookcrossing", data_root=tmp_path / "once")
    twice = load_dataset("bookcrossing", data_root=tmp_path / "twice")
    unknown_book_rows = 2 * 2  # 0007 has no metadata: both copies are dropped as unknown first
    assert twice.dropped["duplicate"] == BX_RATINGS.count("\n") - 1 - unknown_book_rows // 2
    assert twice.interactions.equals(once.interactions)


def test_too_few_distinct_books_is_inactive_even_with_duplicates(tmp_path):
    rows = [(11, f"000{i}", 8) for i in range(1, 6)] + [(11, "0001", 8)]  # six rows, five books
    write_bx(
        tmp_path / "bookcrossing",
        ratings=bx_rows(rows) + bx_rows([(12, f"000{i}", 5) for i in range(1, 7)], header=False),
    )
    ds = load_dataset("bookcrossing", data_root=tmp_path)
    assert ds.n_users == 1 and ds.dropped["duplicate"] == 1 and ds.dropped["inactive"] == 5


@pytest.mark.parametrize("found", [",", "\t"], ids=["comma", "tab"])
@pytest.mark.parametrize("file", ["BX-Book-Ratings.csv", "BX-Books.csv"])
def test_a_wrong_delimiter_is_named_with_the_expected_one(tmp_path, file, found):
    write_bx(tmp_path / "bookcrossing")
    path = tmp_path / "bookcrossing" / file
    path.write_text(path.read_text(encoding="latin-1").replace(";", found), encoding="latin-1")
    with pytest.raises(
        DataError, match=re.escape(file) + ".*separated by " + re.escape(repr(found)) + ".*expects ';'"
    ):
        load_dataset("bookcrossing", data_root=tmp_path)


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le"], ids=["with BOM", "without BOM"])
def test_a_utf16_ratings_file_is_told_its_encoding_not_a_wrong_delimiter(tmp_path, encoding):
    path = write_bx(tmp_path / "bookcrossing") / "BX-Book-Ratings.csv"
    path.write_bytes(path.read_text(encoding="latin-1").encode(encoding))
    with pytest.raises(DataError, match=re.escape(path.name) + r" is not latin-1 \(looks like UTF-16\)"):
        load_dataset("bookcrossing", data_root=tmp_path)


def test_metadata_problems_are_counted_not_silent(tmp_path):
    books = (
        BX_BOOKS
        + '"0001";"Book 1 again";"A";"1990";"P";"s";"m";"l"\n'
        + '"";"No ISBN";"A";"1990";"P";"s";"m";"l"\n'
    )
    users = '"User-ID";"Location";"Age"\n"11";"paris";"30"\n"eleven";"x";"1"\n"11";"again";"31"\n'
    write_bx(tmp_path / "bookcrossing", books=books, users=users)
    ds = load_dataset("bookcrossing", data_root=tmp_path)
    assert ds.metadata_issues["duplicate_item_rows"] == 1 and ds.metadata_issues["malformed_item_rows"] == 1
    assert ds.metadata_issues["malformed_user_rows"] == 1 and ds.metadata_issues["duplicate_user_rows"] == 1
    assert ds.users.loc[0, "location"] == "paris"  # the first row of a repeated user is kept


def test_bookcrossing_missing_files_names_directory_and_files(tmp_path):
    from ragrec.data import dataset_available

    with pytest.raises(DataError) as err:
        load_dataset("bookcrossing", data_root=tmp_path)
    msg = str(err.value)
    assert "BX-Book-Ratings.csv" in msg and str(tmp_path) in msg and "grouplens" in msg
    ok, why = dataset_available("bookcrossing", data_root=tmp_path)
    assert not ok and "BX-Books.csv" in why


def test_no_usable_row_names_the_file_and_the_reasons(tmp_path):
    write_bx(tmp_path / "bookcrossing", ratings=bx_rows([(11, "0001", "x"), (11, "0002", "y")]))
    with pytest.raises(DataError, match=r"BX-Book-Ratings\.csv.*non_numeric_rating"):
        load_dataset("bookcrossing", data_root=tmp_path)
