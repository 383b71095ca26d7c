"""The digests behind "up to date": the library's code, not its text, and raw data by content."""

from __future__ import annotations

import os

import pytest

from ragrec.reproduce.digest import library_digest, raw_data_digest
from tests.data.writers import write_bx
from tests.reproduce.edits import CODE_EDITS, MODULE, TEXT_EDITS, edit_module


@pytest.mark.parametrize("edit", list(TEXT_EDITS), ids=list(TEXT_EDITS))
def test_a_comment_docstring_or_formatting_edit_leaves_the_library_digest(package_copy, edit):
    before = library_digest(package_copy)
    edit_module(package_copy, MODULE, *TEXT_EDITS[edit])
    assert library_digest(package_copy) == before


@pytest.mark.parametrize("edit", list(CODE_EDITS), ids=list(CODE_EDITS))
def test_an_edit_to_executable_code_changes_the_library_digest(package_copy, edit):
    before = library_digest(package_copy)
    edit_module(package_copy, MODULE, *CODE_EDITS[edit])
    assert library_digest(package_copy) != before


def test_moving_code_to_another_module_changes_the_digest(package_copy):
    before = library_digest(package_copy)
    (package_copy / "data" / "raw.py").rename(package_copy / "data" / "raw_files.py")
    assert library_digest(package_copy) != before


def test_raw_hashes_are_cached_per_path_size_and_mtime(tmp_path):
    folder = write_bx(tmp_path / "bookcrossing")
    path = folder / "BX-Users.csv"
    first = raw_data_digest("bookcrossing", tmp_path)
    stat = path.stat()
    path.write_text(path.read_text(encoding="latin-1").replace("paris", "PARIS"), encoding="latin-1")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size and mtime: the cached hash
    assert raw_data_digest("bookcrossing", tmp_path) == first
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    assert raw_data_digest("bookcrossing", tmp_path) != first


def test_the_raw_digest_does_not_depend_on_where_the_data_lies(tmp_path):
    write_bx(tmp_path / "a" / "bookcrossing")
    write_bx(tmp_path / "b" / "bookcrossing")
    assert raw_data_digest("bookcrossing", tmp_path / "a") == raw_data_digest("bookcrossing", tmp_path / "b")
    assert raw_data_digest("synthetic") == raw_data_digest("synthetic", tmp_path)
