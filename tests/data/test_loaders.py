"""Raw-format loaders: each reads small files written here in the published format, and broken
variants fail with one clear DataError naming the file."""

import gzip
import json

import numpy as np
import pytest

from ragrec.data import DATASETS, dataset_available, load_dataset
from ragrec.errors import ConfigError, DataError

BX_RATINGS = '"User-ID";"ISBN";"Book-Rating"\n' + "".join(
    f'"{u}";"{isbn}";"{r}"\n'
    for u in (11, 12)
    for isbn, r in zip(["0001", "0002", "0003", "0004", "0005", "0006", "0007"], [0, 8, 5, 3, 10, 0, 7])
) + '"13";"0001";"9"\n'  # user 13 has one rating: dropped (≤ 5 ratings)
BX_BOOKS = '"ISBN";"Book-Title";"Book-Author";"Year-Of-Publication";"Publisher";"Image-URL-S";"Image-URL-M";"Image-URL-L"\n' + "".join(
    f'"000{i}";"Book {i}";"Author {i}";"199{i}";"Pub";"s";"m";"l"\n' for i in range(1, 7)
)  # 0007 has no metadata: its ratings are dropped
BX_USERS = '"User-ID";"Location";"Age"\n"11";"paris, france";"30"\n"12";"oslo, norway";NULL\n'


def write_bx(folder, ratings=BX_RATINGS, books=BX_BOOKS, users=BX_USERS, encoding="latin-1"):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "BX-Book-Ratings.csv").write_text(ratings, encoding=encoding)
    (folder / "BX-Books.csv").write_text(books, encoding=encoding)
    (folder / "BX-Users.csv").write_text(users, encoding=encoding)


def test_bookcrossing_follows_rella_conventions(tmp_path):
    write_bx(tmp_path / "bookcrossing")
    ds = load_dataset("bookcrossing", data_root=tmp_path)
    assert ds.n_users == 2 and ds.n_items == 6
    assert len(ds.interactions) == 12
    # rating >= 5 positive; the implicit 0 is a negative.
    by_rating = ds.interactions.groupby("rating")["label"].first().to_dict()
    assert by_rating == {0.0: 0, 3.0: 0, 5.0: 1, 8.0: 1, 10.0: 1}
    assert ds.skipped["ratings of books absent from BX-Books.csv"] == 2
    assert ds.skipped["ratings of users with < 6 ratings"] == 1
    assert not ds.has_timestamps
    # Pseudo-time is a per-user order 0..n-1.
    assert sorted(ds.interactions.groupby("user")["timestamp"].max()) == [5, 5]
    assert set(ds.items.columns) >= {"title", "author", "year", "publisher"}


def test_bookcrossing_counts_malformed_rows(tmp_path):
    write_bx(tmp_path / "bookcrossing", ratings=BX_RATINGS + '"11";"0001";"3";"extra";"fields"\n')
    ds = load_dataset("bookcrossing", data_root=tmp_path)
    assert ds.skipped["malformed rows in BX-Book-Ratings.csv"] == 1


def test_bookcrossing_wrong_delimiter_is_a_clear_error(tmp_path):
    write_bx(tmp_path / "bookcrossing", ratings=BX_RATINGS.replace(";", ","))
    with pytest.raises(DataError, match="BX-Book-Ratings.csv.*(missing column|cannot parse)"):
        load_dataset("bookcrossing", data_root=tmp_path)


def test_bookcrossing_missing_files_names_directory_and_files(tmp_path):
    with pytest.raises(DataError) as err:
        load_dataset("bookcrossing", data_root=tmp_path)
    msg = str(err.value)
    assert "BX-Book-Ratings.csv" in msg and str(tmp_path) in msg and "grouplens" in msg
    ok, why = dataset_available("bookcrossing", data_root=tmp_path)
    assert not ok and "BX-Books.csv" in why


def test_data_root_from_environment(tmp_path, monkeypatch):
    write_bx(tmp_path / "bookcrossing")
    monkeypatch.setenv("RAGREC_DATA", str(tmp_path))
    assert load_dataset("bookcrossing").n_users == 2


AMAZON_ROWS = [(f"I{i % 4}", f"U{u}", 1 + (u + i) % 5, 1_400_000_000 + 1000 * i + u) for u in range(3) for i in range(6)]


def write_amazon_2018(folder, meta_lines=None):
    folder.mkdir(parents=True, exist_ok=True)
    seen = set()
    rows = []
    for item, user, rating, ts in AMAZON_ROWS:
        if (item, user) not in seen:
            seen.add((item, user))
            rows.append(f"{item},{user},{rating}.0,{ts}\n")
    (folder / "Video_Games.csv").write_text("".join(rows))
    meta = meta_lines or [json.dumps({"asin": f"I{i}", "title": f"Game {i}", "brand": "B", "category": ["Video Games", "PC"]}) for i in range(3)]
    with gzip.open(folder / "meta_Video_Games.json.gz", "wt") as f:
        f.write("\n".join(meta) + "\n")
    return len(rows)


def test_amazon_2018_ratings_csv_and_json_meta(tmp_path):
    n = write_amazon_2018(tmp_path / "amazon-video-games")
    ds = load_dataset("amazon-video-games", data_root=tmp_path)
    assert len(ds.interactions) == n
    assert ds.n_items == 4
    assert (ds.interactions["label"] == (ds.interactions["rating"] > 3)).all()
    assert ds.items.loc[0, "title"] == "Game 0" and ds.items.loc[0, "category"] == "Video Games > PC"
    assert ds.skipped["items without metadata (titled by id)"] == 1  # I3


def test_amazon_2014_reviews_and_python_literal_meta(tmp_path):
    folder = tmp_path / "amazon-beauty"
    folder.mkdir()
    reviews = [json.dumps({"reviewerID": f"U{u}", "asin": f"B{i}", "overall": float(1 + (u * i) % 5), "unixReviewTime": 1_300_000_000 + i}) for u in range(4) for i in range(5)]
    with gzip.open(folder / "reviews_Beauty_5.json.gz", "wt") as f:
        f.write("\n".join(reviews) + "\n")
    meta = [repr({"asin": f"B{i}", "title": f"Cream {i}", "categories": [["Beauty", "Skin Care"]]}) for i in range(5)]
    with gzip.open(folder / "meta_Beauty.json.gz", "wt") as f:
        f.write("\n".join(meta) + "\nthis is not a record\n")
    ds = load_dataset("amazon-beauty", data_root=tmp_path)
    assert len(ds.interactions) == 20 and ds.n_users == 4
    assert ds.items.loc[2, "title"] == "Cream 2" and ds.items.loc[2, "category"] == "Beauty > Skin Care"
    assert ds.skipped["malformed lines in meta_Beauty.json.gz"] == 1


def test_amazon_k_core_filter_removes_sparse_users_and_items(tmp_path):
    write_amazon_2018(tmp_path / "amazon-video-games")
    ds = load_dataset("amazon-video-games", data_root=tmp_path, k_core_min=3)
    inter = ds.interactions
    assert inter.groupby("user").size().min() >= 3 and inter.groupby("item").size().min() >= 3


def test_amazon_wrong_column_count_is_a_clear_error(tmp_path):
    folder = tmp_path / "amazon-video-games"
    write_amazon_2018(folder)
    (folder / "Video_Games.csv").write_text("I1;U1;5.0;1400000000\nI2;U1;4.0;1400000001\n")
    with pytest.raises(DataError, match="Video_Games.csv.*4 columns"):
        load_dataset("amazon-video-games", data_root=tmp_path)


def test_amazon_missing_files_lists_both_layouts(tmp_path):
    with pytest.raises(DataError, match=r"Beauty\.csv.*reviews_Beauty_5\.json\.gz"):
        load_dataset("amazon-beauty", data_root=tmp_path)


def test_unknown_dataset_name_lists_the_choices():
    with pytest.raises(ConfigError, match="unknown dataset 'movielens'.*ml-100k"):
        load_dataset("movielens")
    with pytest.raises(ConfigError, match="unknown dataset 'nope'"):
        dataset_available("nope")


@pytest.mark.bundled
def test_ml100k_from_the_installed_wheel_has_its_real_counts():
    pytest.importorskip("recbole", reason="recbole wheel (bundled MovieLens-100K) not installed; run make install")
    ds = load_dataset("ml-100k")
    assert len(ds.interactions) == 100_000
    assert ds.n_users == 943 and ds.n_items == 1682
    assert ds.items["title"].str.len().min() > 0
    assert ds.item_text(0).startswith("Toy Story")
    assert set(ds.users.columns) == {"age", "gender", "occupation"}
    assert ds.interactions["label"].mean() == pytest.approx(0.55375)


def test_synthetic_is_deterministic_and_sized_by_arguments():
    a = load_dataset("synthetic", n_users=30, n_items=50, min_per_user=8, max_per_user=12, seed=3)
    b = load_dataset("synthetic", n_users=30, n_items=50, min_per_user=8, max_per_user=12, seed=3)
    assert a.n_users == 30 and a.n_items <= 50
    assert a.interactions.equals(b.interactions)
    sizes = a.interactions.groupby("user").size()
    assert sizes.between(8, 12).all()
    assert 0.3 < a.interactions["label"].mean() < 0.8


def test_synthetic_bad_sizes_are_config_errors():
    with pytest.raises(ConfigError, match="min_per_user"):
        load_dataset("synthetic", n_items=5, min_per_user=10)


def test_every_listed_dataset_has_a_loader():
    for name in DATASETS:
        ok, why = dataset_available(name, data_root="/nonexistent")
        assert ok or "Expected" in why or "recbole" in why


def test_like_threshold_is_read_off_the_label_rule(tmp_path):
    write_bx(tmp_path / "bookcrossing")
    bx = load_dataset("bookcrossing", data_root=tmp_path)  # "rating >= 5" on 1-10
    assert bx.like_threshold == 5
    assert bx.liked(np.array([4, 5, 10])).tolist() == [False, True, True]
    syn = load_dataset("synthetic", n_users=30, n_items=50, seed=3)  # "rating > 3" on 1-5
    assert syn.like_threshold == 4
