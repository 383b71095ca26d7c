"""Property-based fuzz of the loaders: small files of each documented raw format, corrupted at
random (bad bytes, wrong delimiters, missing or extra fields and columns, duplicates,
out-of-range or non-numeric values, truncated or empty files), must either load with every
dropped row counted or raise the project's own ``DataError`` naming one of the dataset's files;
never another exception type.

Seeded (``derandomize=True``) and bounded, so CI sees the same examples every run.
"""

from __future__ import annotations

import gzip
import json
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ragrec.data.amazon import load_amazon
from ragrec.data.bookcrossing import load_bookcrossing
from ragrec.data.movielens import load_ml100k
from ragrec.errors import DataError
from tests.data.writers import ATOMIC_HEADERS

pytestmark = pytest.mark.filterwarnings("error")  # a pandas warning would be a silent repair

FUZZ = settings(
    max_examples=50,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# Quotes, escapes and line breaks would merge or split rows, so "rows in" could no longer be
# read off the line count; every other byte is fair game.
BAD_BYTES = bytes(b for b in range(256) if b not in b'"\\\n\r')
BAD_VALUES = ("", " ", "x", "NULL", "nan", "inf", "-1", "0", "11", "99", "1e400", "2.5", "²")
FILE_CORRUPTIONS = ("none", "none", "delimiter", "drop_column", "bad_bytes", "truncate", "empty")


# --------------------------------------------------------------------------------------------
# corruptions


@st.composite
def corrupted_rows(draw, rows: list[list[str]]) -> list[list[str]]:
    """``rows`` with up to four row-level corruptions: a duplicate, a missing or extra field,
    a bad value."""
    rows = [list(r) for r in rows]
    for _ in range(draw(st.integers(0, 4))):
        if not rows:
            break
        i = draw(st.integers(0, len(rows) - 1))
        kind = draw(st.sampled_from(["duplicate", "drop_field", "extra_field", "bad_value"]))
        if kind == "duplicate":
            rows.insert(draw(st.integers(0, len(rows))), list(rows[i]))
        elif kind == "drop_field" and rows[i]:
            del rows[i][draw(st.integers(0, len(rows[i]) - 1))]
        elif kind == "extra_field":
            rows[i].append("extra")
        elif rows[i]:
            rows[i][draw(st.integers(0, len(rows[i]) - 1))] = draw(st.sampled_from(BAD_VALUES))
    return rows


@st.composite
def corrupted_bytes(draw, data: bytes) -> bytes:
    kind = draw(st.sampled_from(["bad_bytes", "truncate", "empty"]))
    if kind == "empty":
        return b""
    if kind == "truncate":
        return data[: draw(st.integers(0, len(data)))]
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        data = (
            data[:at]
            + draw(
                st.binary(min_size=1, max_size=3).map(
                    lambda b: bytes(BAD_BYTES[x % len(BAD_BYTES)] for x in b)
                )
            )
            + data[at:]
        )
    return data


@st.composite
def delimited_file(
    draw, header: list[str] | None, rows: list[list[str]], *, sep: str, quote: bool, encoding: str
) -> bytes:
    """A delimited file (header optional) after row-level and then file-level corruptions."""
    rows = draw(corrupted_rows(rows))
    kind = draw(st.sampled_from(FILE_CORRUPTIONS))
    if kind == "drop_column" and header:
        gone = draw(st.integers(0, len(header) - 1))
        header = [h for j, h in enumerate(header) if j != gone]
        rows = [[v for j, v in enumerate(r) if j != gone] for r in rows]
    if kind == "delimiter":
        sep = draw(st.sampled_from([d for d in (";", ",", "\t", "|", " ") if d != sep]))
    cell = (lambda v: f'"{v}"') if quote else str
    lines = ([header] if header is not None else []) + rows
    data = "".join(sep.join(cell(v) for v in line) + "\n" for line in lines).encode(encoding)
    if kind in ("bad_bytes", "truncate", "empty"):
        data = draw(corrupted_bytes(data)) if kind != "empty" else b""
    return data


def count_rows(data: bytes, *, encoding: str, header: bool) -> int | None:
    """Rows of a delimited file as a reader must see them; None when it cannot be decoded."""
    try:
        lines = [line for line in data.decode(encoding).split("\n") if line]
    except UnicodeDecodeError:
        return None
    return max(len(lines) - (1 if header else 0), 0)


def check_loads_or_names_a_file(load: Callable, files: list[Path], rows_in: int | None) -> None:
    """The property: a counted load, or a DataError naming one of the dataset's files."""
    try:
        ds = load()
    except DataError as exc:
        assert any(f.name in str(exc) for f in files), f"DataError names no file: {exc}"
        return
    assert ds.rows_read == len(ds.interactions) + sum(ds.dropped.values()), (
        "a row was dropped without a count"
    )
    if rows_in is not None:
        assert ds.rows_read == rows_in, "rows_read is not the number of rows in the file"


# --------------------------------------------------------------------------------------------
# one property per documented format


ids = st.integers(1, 5).map(str)
isbns = st.integers(1, 8).map(lambda i: f"{i:04d}")


@FUZZ
@given(data=st.data())
def test_bookcrossing_csvs(data):
    ratings = data.draw(
        st.lists(st.tuples(ids, isbns, st.integers(0, 10).map(str)).map(list), min_size=1, max_size=30)
    )
    books = [[f"{i:04d}", f"Book {i}", "Author", "1999", "Pub"] for i in range(1, 8)]
    users = [[u, "paris, france", "30"] for u in map(str, range(1, 5))]
    headers = {
        "BX-Book-Ratings.csv": (["User-ID", "ISBN", "Book-Rating"], ratings),
        "BX-Books.csv": (["ISBN", "Book-Title", "Book-Author", "Year-Of-Publication", "Publisher"], books),
        "BX-Users.csv": (["User-ID", "Location", "Age"], users),
    }
    target = data.draw(st.sampled_from(list(headers)))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name, (header, rows) in headers.items():
            text = (
                ";".join(f'"{v}"' for v in header)
                + "\n"
                + "".join(";".join(f'"{v}"' for v in r) + "\n" for r in rows)
            )
            raw = (
                data.draw(delimited_file(header, rows, sep=";", quote=True, encoding="latin-1"))
                if name == target
                else text.encode("latin-1")
            )
            (folder / name).write_bytes(raw)
        rows_in = count_rows((folder / "BX-Book-Ratings.csv").read_bytes(), encoding="latin-1", header=True)
        min_ratings = data.draw(st.sampled_from([1, 1, 6]))
        check_loads_or_names_a_file(
            lambda: load_bookcrossing(folder, min_user_ratings=min_ratings), list(folder.iterdir()), rows_in
        )


@FUZZ
@given(data=st.data())
def test_movielens_atomic_files(data):
    inter = data.draw(
        st.lists(
            st.tuples(
                ids, st.integers(1, 6).map(str), st.integers(1, 5).map(str), st.integers(0, 10**9).map(str)
            ).map(list),
            min_size=1,
            max_size=30,
        )
    )
    tables = {
        "ml-100k.inter": inter,
        "ml-100k.item": [[str(i), f"Movie {i}", "1995", "Comedy Drama"] for i in range(1, 6)],
        "ml-100k.user": [[str(u), "30", "F", "writer", "00000"] for u in range(1, 5)],
    }
    target = data.draw(st.sampled_from(list(tables)))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name, rows in tables.items():
            header = list(ATOMIC_HEADERS[name.split(".")[1]])
            text = "\t".join(header) + "\n" + "".join("\t".join(r) + "\n" for r in rows)
            raw = (
                data.draw(delimited_file(header, rows, sep="\t", quote=False, encoding="utf-8"))
                if name == target
                else text.encode()
            )
            (folder / name).write_bytes(raw)
        rows_in = count_rows((folder / "ml-100k.inter").read_bytes(), encoding="utf-8", header=True)
        check_loads_or_names_a_file(lambda: load_ml100k(folder), list(folder.iterdir()), rows_in)


def _meta_lines(records: list[dict], *, python_literals: bool) -> list[str]:
    return [repr(r) if python_literals else json.dumps(r) for r in records]


@st.composite
def corrupted_records(draw, records: list[dict], fields: list[str]) -> list[dict]:
    """Records with up to four corruptions: a duplicate, a missing field, a field of the wrong type."""
    records = [dict(r) for r in records]
    for _ in range(draw(st.integers(0, 4))):
        if not records:
            break
        i = draw(st.integers(0, len(records) - 1))
        kind = draw(st.sampled_from(["duplicate", "drop", "bad"]))
        field = draw(st.sampled_from(fields))
        if kind == "duplicate":
            records.insert(draw(st.integers(0, len(records))), dict(records[i]))
        elif kind == "drop":
            records[i].pop(field, None)
        else:
            records[i][field] = draw(
                st.sampled_from([None, "", "x", [1], {"a": 1}, -3, 7, 1e300, True, "5.0"])
            )
    return records


@st.composite
def json_lines_file(draw, records: list[dict], fields: list[str], *, python_literals: bool = False) -> bytes:
    lines = _meta_lines(draw(corrupted_records(records, fields)), python_literals=python_literals)
    data = "".join(line + "\n" for line in lines).encode()
    if draw(st.booleans()):
        data = draw(corrupted_bytes(data))
    return data


def _gzip(data: bytes, broken: bool) -> bytes:
    packed = gzip.compress(data, mtime=0)
    return packed[: len(packed) // 2] if broken else packed


@FUZZ
@given(data=st.data())
def test_amazon_2018_ratings_csv_and_json_metadata(data):
    ratings = data.draw(
        st.lists(
            st.tuples(
                st.integers(0, 5).map("I{}".format),
                st.integers(0, 4).map("U{}".format),
                st.integers(1, 5).map(lambda r: f"{r}.0"),
                st.integers(0, 10**9).map(str),
            ).map(list),
            min_size=1,
            max_size=30,
        )
    )
    meta = [
        {"asin": f"I{i}", "title": f"Game {i}", "brand": "B", "category": ["Games", "PC"]} for i in range(5)
    ]
    target = data.draw(st.sampled_from(["ratings", "meta"]))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        plain = "".join(",".join(r) + "\n" for r in ratings).encode()
        csv_bytes = (
            data.draw(delimited_file(None, ratings, sep=",", quote=False, encoding="utf-8"))
            if target == "ratings"
            else plain
        )
        (folder / "Video_Games.csv").write_bytes(csv_bytes)
        meta_bytes = (
            data.draw(json_lines_file(meta, ["asin", "title", "brand", "category"]))
            if target == "meta"
            else "".join(json.dumps(r) + "\n" for r in meta).encode()
        )
        (folder / "meta_Video_Games.json.gz").write_bytes(
            _gzip(meta_bytes, broken=target == "meta" and data.draw(st.booleans()))
        )
        rows_in = count_rows(csv_bytes, encoding="utf-8", header=False)
        check_loads_or_names_a_file(
            lambda: load_amazon("amazon-video-games", folder), list(folder.iterdir()), rows_in
        )


@FUZZ
@given(data=st.data())
def test_amazon_2014_json_lines_reviews_and_python_literal_metadata(data):
    reviews = data.draw(
        st.lists(
            st.fixed_dictionaries(
                {
                    "reviewerID": st.integers(0, 4).map("U{}".format),
                    "asin": st.integers(0, 5).map("B{}".format),
                    "overall": st.integers(1, 5).map(float),
                    "unixReviewTime": st.integers(0, 10**9),
                }
            ),
            min_size=1,
            max_size=30,
        )
    )
    meta = [{"asin": f"B{i}", "title": f"Cream {i}", "categories": [["Beauty", "Skin"]]} for i in range(5)]
    target = data.draw(st.sampled_from(["reviews", "meta"]))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        fields = ["reviewerID", "asin", "overall", "unixReviewTime"]
        review_bytes = (
            data.draw(json_lines_file(reviews, fields))
            if target == "reviews"
            else "".join(json.dumps(r) + "\n" for r in reviews).encode()
        )
        meta_bytes = (
            data.draw(json_lines_file(meta, ["asin", "title", "categories"], python_literals=True))
            if target == "meta"
            else "".join(repr(r) + "\n" for r in meta).encode()
        )
        broken = data.draw(st.booleans()) and data.draw(st.booleans())
        (folder / "reviews_Beauty_5.json.gz").write_bytes(_gzip(review_bytes, broken and target == "reviews"))
        (folder / "meta_Beauty.json.gz").write_bytes(_gzip(meta_bytes, broken and target == "meta"))
        try:
            rows_in = sum(1 for line in review_bytes.decode().split("\n") if line.strip())
        except UnicodeDecodeError:
            rows_in = None
        check_loads_or_names_a_file(
            lambda: load_amazon("amazon-beauty", folder), list(folder.iterdir()), None if broken else rows_in
        )


def test_the_fuzz_reaches_both_outcomes():
    """Guard against a fuzz that only ever errors (or only ever loads): both must occur."""
    outcomes = set()

    @settings(max_examples=40, derandomize=True, database=None, deadline=None)
    @given(data=st.data())
    def probe(data):
        rows = data.draw(
            st.lists(st.tuples(ids, isbns, st.integers(0, 10).map(str)).map(list), min_size=1, max_size=10)
        )
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            header = ["User-ID", "ISBN", "Book-Rating"]
            (folder / "BX-Book-Ratings.csv").write_bytes(
                data.draw(delimited_file(header, rows, sep=";", quote=True, encoding="latin-1"))
            )
            (folder / "BX-Books.csv").write_text(
                '"ISBN";"Book-Title";"Book-Author";"Year-Of-Publication";"Publisher"\n'
                + "".join(f'"{i:04d}";"B";"A";"1999";"P"\n' for i in range(1, 9))
            )
            (folder / "BX-Users.csv").write_text('"User-ID";"Location";"Age"\n')
            try:
                load_bookcrossing(folder, min_user_ratings=1)
                outcomes.add("loaded")
            except DataError:
                outcomes.add("DataError")

    probe()
    assert outcomes == {"loaded", "DataError"}
