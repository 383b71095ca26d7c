"""One smoke reproduction and its built book per test session, for every test module that reads
them (the book's tests, the published-paths scan, the browser tests): every notebook under
papermill on the smoke profile, then the book built with ``-W``. A few minutes on 2 cores, paid
once however many modules ask.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ragrec.reproduce.book import build_book
from ragrec.reproduce.runner import RunReport, run


@dataclass(frozen=True)
class SmokeBook:
    """The run's report, its results folder (``<root>/smoke/synthetic``) and the built HTML."""

    report: RunReport
    out_dir: Path
    html: Path


_built: list[SmokeBook] = []


def smoke_book(tmp_path_factory) -> SmokeBook:
    """The session's smoke reproduction and book, made on first use."""
    if not _built:
        root = tmp_path_factory.mktemp("smoke-book")
        results = root / "results"
        report = run("smoke", results_root=results, progress_bar=False)
        html = build_book("smoke", results_root=results, output=root / "book", quiet=True)
        _built.append(SmokeBook(report, results / "smoke" / "synthetic", html))
    return _built[0]
