"""Reading the files a run depends on, with every failure a one-line error naming the file and
the command that writes it again.

The runner reads ``reproduce.json``, the book reads ``provenance.json`` and the executed
notebooks, and before a notebook executes the runner checks what it will read (:func:`unreadable_input`):
its upstream's tables, the trained weights it reloads, the run's ``provenance.json`` every step
merges into, the raw data's encoding. A damaged file then stops the run before a kernel starts,
with ``<file> <what is wrong>: <command>`` instead of a traceback naming no file.

This module is part of the runner (:data:`ragrec.reproduce.digest.RUNNER_MODULES`): it decides
only whether a file can be used, never what a notebook computes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ragrec.data.raw import check_raw_encoding, sniff_encoding
from ragrec.errors import DataError
from ragrec.reproduce.outputs import writer_of
from ragrec.result_files import MANIFEST, PROVENANCE

CSV, JSON, SAFETENSORS, NOTEBOOK = ".csv", ".json", ".safetensors", ".ipynb"
MAX_SAFETENSORS_HEADER = 100 * 2**20


def regenerate_command(path: str | os.PathLike) -> str:
    """The command that writes a file of ``results/<profile>/<dataset>/`` again: ``make notebook
    NB=<writer>`` when the folder's manifest records which notebook wrote it, a fresh run for the
    run's own records (``reproduce.json``, ``provenance.json``) or when no writer is recorded."""
    path = Path(path)
    parts = path.parts
    in_checkpoints = "checkpoints" in parts
    folder = Path(*parts[: parts.index("checkpoints")]) if in_checkpoints else path.parent
    profile, dataset = folder.parent.name, folder.name
    if in_checkpoints:  # a reloaded checkpoint would fail again: retrain without it
        return (
            f"delete {path.parent}/ and rerun the notebook that trains it: make reproduce PROFILE={profile} "
            f"(or make notebook NB=recommender PROFILE={profile} DATASET={dataset})"
        )
    if path.name in (MANIFEST, PROVENANCE):  # every notebook of the run writes them
        return f"rerun every notebook: make reproduce PROFILE={profile} FRESH=1"
    writer = _writer(folder, path.name)
    if writer is not None:
        return f"regenerate it: make notebook NB={writer} PROFILE={profile} DATASET={dataset}"
    return f"regenerate it: make reproduce PROFILE={profile} FRESH=1"


def _writer(folder: Path, name: str) -> str | None:
    try:
        return writer_of(name, json.loads((folder / MANIFEST).read_text()))
    except (OSError, ValueError, AttributeError):
        return None


def unreadable(path: Path, what: str, fix: str | None = None) -> DataError:
    """The one-line error for a file that cannot be used: the file, what is wrong, the fix."""
    return DataError(f"{path} {what}: {fix or regenerate_command(path)}")


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _text(path: Path) -> str:
    if not path.is_file():
        raise unreadable(path, "does not exist")
    raw = path.read_bytes()
    if not raw:
        raise unreadable(path, "is empty (zero bytes)")
    encoding = sniff_encoding(raw)
    if encoding:
        raise unreadable(path, f"is not UTF-8 ({encoding})")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise unreadable(path, f"is not UTF-8 text (undecodable byte at offset {exc.start})") from None


def read_table(path: str | os.PathLike, *, columns: Sequence[str] = ()):
    """A results table: missing, empty, truncated (no final newline), undecodable or lacking the
    ``columns`` a caller needs is a one-line :class:`DataError`."""
    import pandas as pd

    path = Path(path)
    text = _text(path)
    if not text.strip():
        raise unreadable(path, "is blank")
    if not text.endswith("\n"):  # every table is written whole, ending with a newline
        raise unreadable(path, "ends in the middle of a row (truncated)")
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise unreadable(path, f"cannot be parsed as CSV ({_first_line(exc)})") from None
    absent = [c for c in columns if c not in frame.columns]
    if absent:
        has = ", ".join(map(str, frame.columns))
        raise unreadable(path, f"lacks the column(s) {', '.join(absent)} (it has {has})")
    return frame


def read_json(path: str | os.PathLike, *, keys: Sequence[str] = ()) -> dict[str, Any]:
    """A JSON object: a file that is not one, or lacks the record ``keys``, is a one-line error."""
    path = Path(path)
    text = _text(path)
    try:
        obj = json.loads(text)
    except ValueError as exc:
        raise unreadable(path, f"is not valid JSON ({_first_line(exc)})") from None
    if not isinstance(obj, dict):
        raise unreadable(path, f"holds a JSON {type(obj).__name__}, not an object")
    absent = [k for k in keys if not isinstance(obj.get(k), dict)]
    if absent:
        raise unreadable(path, f"lacks its {', '.join(repr(k) for k in absent)} record")
    return obj


def read_provenance(directory: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """``{step: entry}`` of a results folder's ``provenance.json`` (empty when absent)."""
    path = Path(directory) / PROVENANCE
    return read_json(path, keys=("steps",))["steps"] if path.exists() else {}


def read_notebook(path: str | os.PathLike, fix: str | None = None):
    """An ``nbformat`` notebook; one that is not one is a one-line error."""
    import nbformat

    path = Path(path)
    text = _text(path)
    try:
        nb = nbformat.reads(text, as_version=4)
    except Exception as exc:  # nbformat raises JSON, validation and key errors alike
        raise unreadable(path, f"is not a notebook ({_first_line(exc)})", fix) from None
    if not isinstance(nb.get("cells"), list):
        raise unreadable(path, "is not a notebook (it has no cells)", fix)
    return nb


def check_safetensors(path: str | os.PathLike, *, keys: Sequence[str] = ()) -> None:
    """Raise a one-line error unless ``path`` is a whole safetensors file (with ``keys``)."""
    path = Path(path)
    raw = path.read_bytes() if path.is_file() else None
    if raw is None:
        raise unreadable(path, "does not exist")
    if len(raw) < 8:
        raise unreadable(path, f"is too short for a safetensors file ({len(raw)} bytes)")
    size = int.from_bytes(raw[:8], "little")
    if size > min(len(raw) - 8, MAX_SAFETENSORS_HEADER):
        raise unreadable(path, "is not a whole safetensors file (its header runs past the end: truncated?)")
    try:
        header = json.loads(raw[8 : 8 + size])
    except ValueError:
        raise unreadable(path, "is not a safetensors file (its header is not JSON)") from None
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    end = max((v["data_offsets"][1] for v in tensors.values()), default=0)
    if 8 + size + end > len(raw):
        raise unreadable(path, f"is truncated ({len(raw)} bytes of {8 + size + end})")
    absent = [k for k in keys if k not in tensors]
    if absent:
        raise unreadable(path, f"lacks the tensor(s) {', '.join(absent)}")


def check_readable(path: Path) -> None:
    """Whichever check fits the file's kind (nothing for other kinds)."""
    path = Path(path)
    check = {CSV: read_table, JSON: read_json, SAFETENSORS: check_safetensors, NOTEBOOK: read_notebook}
    if path.suffix in check:
        check[path.suffix](path)


def unreadable_input(task) -> None:
    """Preflight of one task: every file it will read that is already there must be usable (its
    upstream's tables and weights, its own weights it may resume from, the run's records, the
    notebook itself, the raw data's encoding); a one-line :class:`DataError` otherwise."""
    from ragrec.data import raw_files

    out = task.out_dir
    name = task.source.name
    read_notebook(task.source, fix=f"restore it from git: git checkout -- notebooks/{name}")
    files = [out / f for up in task.upstream for f in up.outputs] + [out / f for f in task.spec.reads]
    files.append(out / PROVENANCE)  # every step merges its record into it
    for spec in (*task.upstream, task.spec):
        files += [f for pattern in spec.artifacts for f in out.glob(pattern) if f.suffix == SAFETENSORS]
    for path in dict.fromkeys(files):
        if path.is_file():
            check_readable(path)
    if task.spec.reads_dataset:
        for path in raw_files(task.dataset, data_root=task.data_root):
            check_raw_encoding(path)
