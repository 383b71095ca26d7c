"""MovieLens-100K: the bundled wheel's real counts, and the atomic-file reader on files written here."""

import pytest

from ragrec.data import load_dataset, raw_files
from ragrec.data.movielens import load_ml100k
from ragrec.errors import DataError
from tests.data.writers import atomic, write_ml

ITEMS = atomic("item", [(i, f"Movie {i}", 1990 + i, "Comedy Drama") for i in range(1, 4)])
USERS = atomic("user", [(u, 20 + u, "F", "writer", "00000") for u in range(1, 3)])


@pytest.mark.bundled
def test_ml100k_from_the_installed_wheel_has_its_real_counts():
    pytest.importorskip(
        "recbole", reason="recbole wheel (bundled MovieLens-100K) not installed; run make install"
    )
    ds = load_dataset("ml-100k")
    assert len(ds.interactions) == 100_000 == ds.rows_read
    assert ds.n_users == 943 and ds.n_items == 1682
    assert ds.items["title"].str.len().min() > 0
    assert ds.item_text(0).startswith("Toy Story")
    assert set(ds.users.columns) == {"age", "gender", "occupation"}
    assert ds.interactions["label"].mean() == pytest.approx(0.55375)


@pytest.mark.bundled
def test_the_bundled_file_has_no_duplicate_pairs_and_drops_nothing():
    """The cpu reference results rest on this: the duplicate policy changes nothing on ML-100K."""
    pytest.importorskip(
        "recbole", reason="recbole wheel (bundled MovieLens-100K) not installed; run make install"
    )
    ds = load_dataset("ml-100k")
    assert not any(ds.dropped.values()) and not any(ds.metadata_issues.values())
    assert [p.name for p in raw_files("ml-100k")] == ["ml-100k.inter", "ml-100k.item", "ml-100k.user"]


def test_atomic_files_load_with_genres_and_user_attributes(tmp_path):
    inter = atomic("inter", [(1, 1, 5, 100), (1, 2, 3, 200), (2, 3, 4, 300)])
    ds = load_ml100k(write_ml(tmp_path, inter, ITEMS, USERS))
    assert len(ds.interactions) == 3 and ds.item_text(0) == "Movie 1 (year: 1991; genres: Comedy, Drama)"
    assert ds.users.loc[1, "age"] == "22"


@pytest.mark.parametrize(
    "row, reason",
    [
        ((1, 1, "x", 100), "non_numeric_rating"),
        ((1, 1, 9, 100), "rating_out_of_range"),
        (("u", 1, 5, 100), "missing_id"),
        ((1, 1, 5, "never"), "bad_timestamp"),
        ((1, 1, 5), "malformed"),
    ],
    ids=["word-rating", "rating-9", "word-user", "word-time", "short-row"],
)
def test_unusable_rows_are_counted_by_reason(tmp_path, row, reason):
    inter = atomic("inter", [(1, 2, 3, 200), (2, 3, 4, 300), row])
    ds = load_ml100k(write_ml(tmp_path, inter, ITEMS, USERS))
    assert ds.dropped[reason] == 1 and ds.rows_read == 3 == len(ds.interactions) + 1


def test_a_comma_separated_atomic_file_is_named_with_the_expected_tab(tmp_path):
    inter = atomic("inter", [(1, 2, 3, 200)]).replace("\t", ",")
    with pytest.raises(DataError, match=r"ml-100k\.inter.*separated by ','.*expects '\\t'"):
        load_ml100k(write_ml(tmp_path, inter, ITEMS, USERS))
