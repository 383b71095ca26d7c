"""Reading raw files: delimited text, ids, numbers and timestamps, with every failure named.

Each reader turns what it cannot use into a count (a malformed line, a non-numeric rating) or a
:class:`~ragrec.errors.DataError` naming the file and what the format expects (a wrong delimiter,
an undecodable encoding, a missing column); never a bare pandas or Python exception.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ragrec.errors import DataError

DELIMITERS = (";", ",", "\t", "|")
"""The delimiters a wrong-format file is recognised by (see :func:`check_delimiter`)."""

MAX_ID = 2**53  # integer ids beyond this lose precision as floats
MAX_TIMESTAMP = 2**62  # seconds; anything larger is corruption, not a date


def resolve_data_root(data_root: str | os.PathLike | None) -> Path:
    """The directory holding ``<dataset>/`` raw folders: the argument, else ``$RAGREC_DATA``,
    else ``data/raw`` under the current directory."""
    if data_root is not None:
        return Path(data_root)
    return Path(os.environ.get("RAGREC_DATA", "data/raw"))


def sniff_encoding(raw: bytes) -> str | None:
    """What a file that should be UTF-8 text looks like instead (None: nothing seen)."""
    head = raw[:4096]
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "looks like UTF-16: it starts with a UTF-16 byte-order mark"
    if len(head) >= 4 and head.count(b"\x00") >= len(head) // 4:
        return "looks like UTF-16: every other byte is zero"
    return None


def check_raw_encoding(path: Path, encoding: str = "utf-8") -> None:
    """A raw data file saved as UTF-16 (or with a byte-order mark) is named before it is parsed."""
    if path.suffix == ".gz":
        return
    with open(path, "rb") as handle:
        head = handle.read(4096)
    utf8 = encoding.lower().replace("-", "") == "utf8"
    expected = "UTF-8" if utf8 else encoding
    seen = sniff_encoding(head)
    if seen:
        raise DataError(f"file {path} is not {expected} ({seen.split(':')[0]}): re-save it as {expected}")
    if utf8 and head.startswith(b"\xef\xbb\xbf"):
        raise DataError(
            f"file {path} starts with a UTF-8 byte-order mark, which the loader would read as part of "
            "its first column name: re-save it as UTF-8 without a BOM"
        )


def check_delimiter(path: Path, sep: str, *, what: str, encoding: str = "utf-8") -> None:
    """Raise a :class:`DataError` when the file's first line is split by another delimiter than
    ``sep`` (e.g. a ``;`` file re-saved with ``,``); a file in another encoding is named first
    (:func:`check_raw_encoding`), since its first line would only look mis-delimited."""
    check_raw_encoding(path, encoding)
    with open(path, encoding=encoding, errors="replace", newline="") as handle:
        first = handle.readline()
    found = [d for d in DELIMITERS if d != sep and d in first]
    if first.strip() and sep not in first and found:
        raise DataError(
            f"{what} {path}: the first line is separated by {found[0]!r}, but the format expects "
            f"{sep!r}; re-save the file with {sep!r} as the delimiter"
        )


def read_delimited(
    path: Path,
    *,
    what: str,
    sep: str,
    names: Sequence[str] | None = None,
    encoding: str = "utf-8",
    escapechar: str | None = None,
) -> tuple[pd.DataFrame, int]:
    """A delimited text file as a frame of strings, and the number of malformed rows.

    A row is malformed when it has another number of fields than the header (or ``names``, for a
    file without a header); it is counted, not kept. Undecodable bytes, broken quoting, a wrong
    delimiter or a majority of malformed rows raise a :class:`DataError` naming the file.

    Args:
        names: the column names of a file without a header row. (default: :obj:`None`, the
            first row is the header)
        escapechar: the character that escapes a quote or delimiter. (default: :obj:`None`)
    """
    check_delimiter(path, sep, what=what, encoding=encoding)
    rows = _read_rows(path, what=what, sep=sep, encoding=encoding, escapechar=escapechar)
    if names is None:
        if not rows:
            raise DataError(f"{what} {path}: the file is empty; expected a header row and data")
        names = rows.pop(0)
        if len(set(names)) != len(names):
            raise DataError(f"{what} {path}: repeated column names in the header {names}")
    good = [row for row in rows if len(row) == len(names)]
    bad = len(rows) - len(good)
    if bad > len(good):
        raise DataError(
            f"{what} {path}: {bad} of {len(rows)} rows do not have the {len(names)} fields "
            f"{list(names)}; wrong delimiter or format?"
        )
    return pd.DataFrame(good, columns=list(names), dtype=object), bad


def _read_rows(path: Path, *, what: str, sep: str, encoding: str, escapechar: str | None) -> list[list[str]]:
    """The non-blank rows of a delimited file, split by :mod:`csv` (``"`` quotes fields)."""
    try:
        with open(path, encoding=encoding, newline="") as handle:
            reader = csv.reader(handle, delimiter=sep, quotechar='"', escapechar=escapechar, strict=False)
            return [row for row in reader if row]
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{what} {path}: cannot decode as {encoding} ({exc.reason}); wrong encoding?"
        ) from exc
    except csv.Error as exc:
        raise DataError(f"{what} {path}: cannot parse line {reader.line_num}: {exc}") from exc


def require_columns(frame: pd.DataFrame, columns: Sequence[str], *, path: Path, what: str) -> None:
    """Raise a :class:`DataError` naming the file when expected columns are absent."""
    absent = [c for c in columns if c not in frame.columns]
    if absent:
        raise DataError(
            f"{what} {path}: missing column(s) {absent}; found {list(frame.columns)}. "
            "Wrong delimiter or not the published format?"
        )


def to_number(values: pd.Series) -> pd.Series:
    """Floats; NaN where a value is missing, not a number, or not a scalar (a JSON list, a bool)."""
    scalar = values.map(lambda v: isinstance(v, (str, int, float, np.number)) and not isinstance(v, bool))
    return pd.to_numeric(values.where(scalar.astype(bool)), errors="coerce").astype(float)


def integer_ids(values: pd.Series) -> pd.Series:
    """Integer-valued ids as floats (exact below :data:`MAX_ID`); NaN where unusable."""
    number = to_number(values)
    usable = np.isfinite(number) & (number == np.round(number)) & (number.abs() < MAX_ID)
    return number.where(usable)


def usable_id(value: object) -> bool:
    """Whether a string id is present and not blank (an integer from JSON counts too)."""
    if isinstance(value, str):
        return value.strip() != ""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def usable_ids(values: pd.Series) -> pd.Series:
    """Mask of :func:`usable_id` over a column."""
    return values.map(usable_id).astype(bool)


def valid_timestamps(values: pd.Series) -> pd.Series:
    """Mask of finite timestamps within :data:`MAX_TIMESTAMP` seconds of the epoch."""
    return np.isfinite(values) & (values.abs() < MAX_TIMESTAMP)
