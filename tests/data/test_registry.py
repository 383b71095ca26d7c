"""The registry: a loader and a raw-file list for every dataset name, the data root, clear
errors for unknown names."""

import pytest

from ragrec.data import DATASETS, dataset_available, load_dataset, raw_files
from ragrec.errors import ConfigError, DataError
from tests.data.writers import write_amazon_2018, write_bx


def test_unknown_dataset_name_lists_the_choices():
    with pytest.raises(ConfigError, match="unknown dataset 'movielens'.*ml-100k"):
        load_dataset("movielens")
    with pytest.raises(ConfigError, match="unknown dataset 'nope'"):
        dataset_available("nope")


@pytest.mark.parametrize("name", DATASETS)
def test_every_listed_dataset_has_a_loader(name):
    ok, why = dataset_available(name, data_root="/nonexistent")
    assert ok or "Expected" in why or "recbole" in why


def test_data_root_from_environment(tmp_path, monkeypatch):
    write_bx(tmp_path / "bookcrossing")
    monkeypatch.setenv("RAGREC_DATA", str(tmp_path))
    assert load_dataset("bookcrossing").n_users == 2


@pytest.mark.parametrize(
    "name, write, files",
    [
        ("bookcrossing", write_bx, ["BX-Book-Ratings.csv", "BX-Books.csv", "BX-Users.csv"]),
        ("amazon-video-games", write_amazon_2018, ["Video_Games.csv", "meta_Video_Games.json.gz"]),
        ("synthetic", None, []),
    ],
    ids=["bookcrossing", "amazon", "synthetic"],
)
def test_raw_files_lists_what_the_loader_reads(tmp_path, name, write, files):
    if write is not None:
        write(tmp_path / name)
    assert [p.name for p in raw_files(name, data_root=tmp_path)] == files
    assert all(p.is_file() for p in raw_files(name, data_root=tmp_path))


def test_raw_files_of_an_absent_dataset_say_what_is_missing(tmp_path):
    with pytest.raises(DataError, match="BX-Book-Ratings.csv"):
        raw_files("bookcrossing", data_root=tmp_path)
