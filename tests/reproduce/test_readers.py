"""Every kind of file a run reads, damaged every way: a one-line error naming the file and the
command that writes it again, never a traceback naming no file."""

from __future__ import annotations

import json
import re

import nbformat
import numpy as np
import pytest
from safetensors.numpy import save

from ragrec.errors import DataError
from ragrec.reproduce.readers import (
    check_raw_encoding,
    check_safetensors,
    read_json,
    read_notebook,
    read_table,
)

GOOD_CSV = b"head,auc\n5,0.61\n10,0.64\n15,0.66\n"
GOOD_JSON = json.dumps({"notebooks": {"data": {"status": "ok"}}}, indent=2).encode()
GOOD_NOTEBOOK = nbformat.writes(
    nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# A")])
).encode()
GOOD_WEIGHTS = save({"w": np.arange(64, dtype=np.float32)})

KINDS = {
    # kind: (file under results/smoke/synthetic/, good bytes, bytes lacking a needed part, reader)
    "csv": ("heads.csv", GOOD_CSV, b"head\n5\n10\n", lambda p: read_table(p, columns=("auc",))),
    "json": ("reproduce.json", GOOD_JSON, b'{"other": {}}\n', lambda p: read_json(p, keys=("notebooks",))),
    "safetensors": (
        "checkpoints/model/final/heads.safetensors",
        GOOD_WEIGHTS,
        save({"v": np.zeros(2, dtype=np.float32)}),
        lambda p: check_safetensors(p, keys=("w",)),
    ),
    "notebook": (
        "data.ipynb",
        GOOD_NOTEBOOK,
        b'{"nbformat": 4, "nbformat_minor": 5, "metadata": {}}',
        read_notebook,
    ),
}
DAMAGE = {
    "truncated": lambda good, lacking: good[: len(good) // 2 + 1],
    "garbage": lambda good, lacking: b"\x89PNG\xfe\xff garbage \x00\xc3(" * 20,
    "zero bytes": lambda good, lacking: b"",
    "missing column": lambda good, lacking: lacking,
}
SAYS = {
    "truncated": r"truncated|not valid JSON|not a notebook|not a whole",
    "garbage": r"not UTF-8|not a whole safetensors",
    "zero bytes": r"is empty \(zero bytes\)|too short for a safetensors file \(0 bytes\)",
    "missing column": r"lacks the column\(s\) auc|lacks its 'notebooks' record|lacks the tensor\(s\) w|cells",
}


@pytest.mark.parametrize("kind", KINDS)
def test_a_whole_file_of_each_kind_reads(tmp_path, kind):
    name, good, _, reader = KINDS[kind]
    path = tmp_path / "results" / "smoke" / "synthetic" / name
    path.parent.mkdir(parents=True)
    path.write_bytes(good)
    reader(path)


@pytest.mark.parametrize("damage", DAMAGE)
@pytest.mark.parametrize("kind", KINDS)
def test_a_damaged_file_is_one_line_naming_it_and_the_command_that_writes_it_again(tmp_path, kind, damage):
    name, good, lacking, reader = KINDS[kind]
    path = tmp_path / "results" / "smoke" / "synthetic" / name
    path.parent.mkdir(parents=True)
    path.write_bytes(DAMAGE[damage](good, lacking))
    with pytest.raises(DataError) as error:
        reader(path)
    message = str(error.value)
    assert "\n" not in message and str(path) in message, message
    assert "make reproduce PROFILE=smoke" in message or "make notebook" in message, message
    assert re.search(SAYS[damage], message), message


def test_a_results_file_whose_writer_is_recorded_names_make_notebook_for_it(tmp_path):
    folder = tmp_path / "results" / "smoke" / "synthetic"
    folder.mkdir(parents=True)
    manifest = {
        "notebooks": {"recommender": {"status": "ok", "finished": "t", "outputs": {"heads.csv": "h"}}}
    }
    (folder / "reproduce.json").write_text(json.dumps(manifest))
    (folder / "heads.csv").write_bytes(b"")
    with pytest.raises(DataError, match="make notebook NB=recommender PROFILE=smoke DATASET=synthetic"):
        read_table(folder / "heads.csv")


@pytest.mark.parametrize(
    "raw, says",
    [
        ("user;item\n1;2\n".encode("utf-16"), "is not UTF-8 (looks like UTF-16): re-save it as UTF-8"),
        ("user;item\n1;2\n".encode("utf-16-le"), "is not UTF-8 (looks like UTF-16): re-save it as UTF-8"),
        (b"\xef\xbb\xbfuser;item\n1;2\n", "byte-order mark"),
    ],
    ids=["utf-16 with BOM", "utf-16 without BOM", "utf-8 BOM"],
)
def test_a_raw_file_in_another_encoding_is_named_with_its_encoding(tmp_path, raw, says):
    path = tmp_path / "BX-Book-Ratings.csv"
    path.write_bytes(raw)
    with pytest.raises(DataError) as error:
        check_raw_encoding(path)
    assert str(error.value).startswith(f"file {path} ") and says in str(error.value)


def test_a_plain_latin1_raw_file_passes_the_encoding_check(tmp_path):
    path = tmp_path / "BX-Books.csv"
    path.write_bytes("ISBN;Title\n1;Café\n".encode("latin-1"))
    check_raw_encoding(path)
