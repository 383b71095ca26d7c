"""What makes a notebook's results stale: digests of the library's code and of raw data files.

Both are content digests, never modification times or absolute paths, so results committed to
git stay up to date in a fresh clone (see :mod:`ragrec.reproduce.runner` for how a notebook's
inputs digest combines them).
"""

from __future__ import annotations

import ast
import hashlib
import os
from pathlib import Path

from ragrec.data import raw_files

PACKAGE_DIR = Path(__file__).resolve().parent.parent


def file_digest(path: Path) -> str:
    """A results file's content hash, or ``"absent"``."""
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "absent"


RUNNER_MODULES = (
    "reproduce/runner.py",
    "reproduce/tasks.py",
    "reproduce/execute.py",
    "reproduce/digest.py",
    "reproduce/book.py",
    "reproduce/published.py",
    "reproduce/fresh.py",
    "reproduce/__main__.py",
    "reproduce/lock.py",
    "reproduce/outputs.py",
    "reproduce/readers.py",
    "reproduce/stale_pages.py",
    "reproduce/environment_page.py",
    "reproduce/publish.py",
)
"""Modules that run notebooks or build the book: they do not change what a notebook computes."""


def code_digest(source: str) -> str:
    """A module's code as text: its syntax tree without docstrings, so comments, docstrings and
    formatting leave it unchanged while any change to executable code changes it."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list):
            # bare string statements: module/class/function docstrings and attribute docstrings
            node.body = [n for n in body if not _is_string_statement(n)]
    return _canonical(tree)


def _is_string_statement(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    )


def _canonical(node: object) -> str:
    """``ast.dump`` without empty fields, so the text does not depend on the Python version
    (3.12 added empty ``type_params`` everywhere; 3.13's ``ast.dump`` hides empty fields)."""
    if isinstance(node, ast.AST):
        fields = ((name, getattr(node, name, None)) for name in node._fields)
        return (
            f"{type(node).__name__}("
            + ", ".join(
                f"{name}={_canonical(value)}" for name, value in fields if value is not None and value != []
            )
            + ")"
        )
    if isinstance(node, list):
        return "[" + ", ".join(_canonical(item) for item in node) + "]"
    return repr(node)


def library_digest(package_dir: Path | None = None) -> str:
    """Digest of the code of every ragrec module a notebook runs on (:data:`RUNNER_MODULES`
    excluded), keyed by the module's path in the package."""
    package_dir = PACKAGE_DIR if package_dir is None else Path(package_dir)
    h = hashlib.sha256()
    for path in sorted(package_dir.rglob("*.py")):
        relative = path.relative_to(package_dir).as_posix()
        if relative in RUNNER_MODULES:
            continue
        h.update(relative.encode())
        h.update(code_digest(path.read_text(encoding="utf-8")).encode())
    return h.hexdigest()


_RAW_HASHES: dict[tuple[str, int, int], str] = {}
"""Content hashes of raw data files by (path, size, mtime): one read per file per run, however
many notebooks read it (the paper's datasets are hundreds of MB)."""


def _raw_file_digest(path: Path) -> str:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _RAW_HASHES:
        h = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                h.update(block)
        _RAW_HASHES[key] = h.hexdigest()
    return _RAW_HASHES[key]


def raw_data_digest(dataset: str, data_root: str | os.PathLike | None = None) -> str:
    """Digest of the raw files ``dataset``'s loader reads, by file name and content (not by
    path: the bundled ML-100K lies in a different virtual environment on every machine)."""
    h = hashlib.sha256()
    for path in raw_files(dataset, data_root=data_root):
        h.update(f"{path.name}:{_raw_file_digest(path)}".encode())
    return h.hexdigest()
