"""Published outputs hold no absolute path of the machine that built them.

The committed ``results/`` and a built book are scanned for this machine's repository root, home
folder, temp folder and virtual environment (and, whatever the machine, executed notebooks must
record repository-relative papermill paths and print no ``site-packages`` path). The scrubbing
that keeps them so (:mod:`ragrec.reproduce.published`) is tested on its own first.
"""

from __future__ import annotations

import re
import sys
import sysconfig
import tempfile
from pathlib import Path

import nbformat
import pytest

from ragrec.reproduce.published import (
    REPO_DIR,
    machine_paths,
    relative_paths,
    scrub_notebook,
    scrub_results,
)
from tests.reproduce.smoke_book import smoke_book

RESULTS = REPO_DIR / "results"
ROOTS = {str(REPO_DIR), str(Path.home()), tempfile.gettempdir(), sys.prefix, sysconfig.get_paths()["purelib"]}
ROOTS = sorted({root.rstrip("/") for root in ROOTS if len(root.rstrip("/")) > 1}, key=len, reverse=True)
# a root as a path of its own: not inside a longer name, nor inside base64 data (its alphabet has "/", "+")
ROOT_PATTERN = re.compile("|".join(rf"(?<![\w.~+/-]){re.escape(root)}(?![\w.-])" for root in ROOTS))
SITE_PACKAGES = re.compile(r"(?<![\w.~+/-])/[\w./-]*site-packages/")
TEXT_SUFFIXES = {".ipynb", ".csv", ".json", ".html", ".txt", ".js", ".css", ".md", ".yml", ".yaml", ".py"}


def _shown_text(path: Path) -> str:
    """The text a published file shows; an executed notebook without its image data."""
    text = path.read_text(errors="replace")
    if path.suffix != ".ipynb":
        return text
    nb = nbformat.reads(text, as_version=4)
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            for mime in [m for m in output.get("data", {}) if m.startswith("image/")]:
                output["data"][mime] = ""
    return nbformat.writes(nb)


def machine_paths_in(folder: Path) -> list[str]:
    """``file: path`` for every machine path a text file under ``folder`` names."""
    found = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES):
        text = _shown_text(path)
        found += [f"{path.relative_to(folder)}: {m.group(0)}" for m in ROOT_PATTERN.finditer(text)]
        found += [f"{path.relative_to(folder)}: {m.group(0)}" for m in SITE_PACKAGES.finditer(text)]
    return found


# --------------------------------------------------------------------------------------------
# the scrubbing


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (
            f"raw files not found in {REPO_DIR}/data/raw/bookcrossing.",
            "raw files not found in data/raw/bookcrossing.",
        ),
        (f"cwd {REPO_DIR}.", "cwd .."),
        (f"{sysconfig.get_paths()['purelib']}/tqdm/auto.py:21", "<site-packages>/tqdm/auto.py:21"),
        (f"{tempfile.gettempdir()}/pytest-1/results", "<tmp>/pytest-1/results"),
        (f"{REPO_DIR}-backup/x", f"{REPO_DIR}-backup/x"),
    ],
    ids=["repository", "bare root", "site-packages", "temp", "longer name"],
)
def test_relative_paths_rewrites_each_machine_root(text, shown):
    if shown == f"{REPO_DIR}-backup/x":
        # The repository root must not rewrite a longer name; a checkout inside the temp folder
        # (as CI's may be) still has that folder's own root rewritten.
        others = {path: label for path, label in machine_paths().items() if path != str(REPO_DIR)}
        shown = relative_paths(shown, others)
    assert relative_paths(text) == shown


def _executed(tmp_path: Path, checkout: Path) -> nbformat.NotebookNode:
    warning = (
        f"{checkout}/.venv/lib/python3.11/site-packages/tqdm/auto.py:21: TqdmWarning: IProgress not found.\n"
    )
    cell = nbformat.v4.new_code_cell(
        "x = 1",
        outputs=[
            nbformat.v4.new_output(
                "stream", name="stderr", text=warning + "  from .autonotebook import tqdm\n"
            ),
            nbformat.v4.new_output("stream", name="stderr", text="training: 100%\n"),
            nbformat.v4.new_output("stream", name="stdout", text="done\n"),
        ],
    )
    nb = nbformat.v4.new_notebook(cells=[cell])
    nb.metadata["papermill"] = {
        "input_path": f"{checkout}/notebooks/data.ipynb",
        "output_path": "results/cpu/ml-100k/.data.running.ipynb",
        "parameters": {},
    }
    return nb


def test_scrubbing_makes_papermill_paths_relative_and_drops_path_warnings(tmp_path):
    checkout = tmp_path / "checkout"
    nb = scrub_notebook(
        _executed(tmp_path, checkout), root=checkout, output_path=checkout / "results/cpu/ml-100k/data.ipynb"
    )
    assert nb.metadata["papermill"]["input_path"] == "notebooks/data.ipynb"
    assert nb.metadata["papermill"]["output_path"] == "results/cpu/ml-100k/data.ipynb"
    assert [o.get("text") for o in nb.cells[0].outputs] == ["training: 100%\n", "done\n"], (
        "other output is kept"
    )


def test_scrub_results_rewrites_notebooks_executed_in_another_checkout(tmp_path, monkeypatch):
    from ragrec.reproduce import published

    repo = tmp_path / "repo"
    folder = repo / "results" / "cpu" / "ml-100k"
    folder.mkdir(parents=True)
    nbformat.write(_executed(tmp_path, Path("/elsewhere/checkout")), folder / "data.ipynb")
    monkeypatch.setattr(published, "REPO_DIR", repo)
    assert scrub_results(repo / "results") == [folder / "data.ipynb"]
    record = nbformat.read(folder / "data.ipynb", as_version=4).metadata["papermill"]
    assert (record["input_path"], record["output_path"]) == (
        "notebooks/data.ipynb",
        "results/cpu/ml-100k/data.ipynb",
    )
    assert scrub_results(repo / "results") == [], "a second pass changes nothing"


# --------------------------------------------------------------------------------------------
# the scans


def test_the_committed_results_name_no_path_of_this_machine():
    assert machine_paths_in(RESULTS) == []


@pytest.mark.parametrize(
    "notebook", sorted(RESULTS.rglob("*.ipynb")), ids=lambda p: str(p.relative_to(RESULTS))
)
def test_committed_notebooks_record_repository_relative_papermill_paths(notebook):
    record = nbformat.read(notebook, as_version=4).metadata.get("papermill", {})
    for key in ("input_path", "output_path"):
        assert not Path(record.get(key) or "").is_absolute(), f"{key} = {record.get(key)}"


@pytest.mark.book
def test_a_built_book_names_no_path_of_this_machine(tmp_path_factory):
    html = smoke_book(tmp_path_factory).html
    assert list(html.rglob("*.html")), "the scan needs a built book"
    assert machine_paths_in(html) == []
