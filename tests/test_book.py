"""The book: staging from results (fast), and end to end — every notebook under papermill on the
smoke profile, then the book built with ``-W``.

One module-scoped run (a few minutes on 2 cores) feeds the tests marked ``book``. Select or skip
them with ``-m book`` / ``-m "not book"``; ``make test`` and CI run them.
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import yaml

from ragrec.errors import ConfigError
from ragrec.reproduce.book import build_book, stage
from ragrec.reproduce.notebook import NOT_RUN, glue_record_name
from ragrec.reproduce.runner import NOTEBOOKS, run

# --------------------------------------------------------------------------------------------
# staging (no build)


def test_staging_adds_each_executed_notebook_under_its_chapter_and_lists_datasets_not_run(tmp_path):
    results = tmp_path / "results"
    executed = results / "cpu" / "ml-100k"
    executed.mkdir(parents=True)
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Data")]), executed / "data.ipynb")
    staged = stage("cpu", results_root=results, data_root=tmp_path / "no-data", staging=tmp_path / "stage")
    toc = yaml.safe_load((tmp_path / "stage" / "_toc.yml").read_text())
    chapters = {c["file"]: c for part in toc["parts"] for c in part["chapters"]}
    assert chapters["chapters/data"]["sections"] == [{"file": "results/ml-100k/data", "title": "ml-100k"}]
    assert "sections" not in chapters["chapters/retrieval"]
    assert (tmp_path / "stage" / "results" / "ml-100k" / "data.ipynb").exists()
    data_page = (tmp_path / "stage" / "chapters" / "data.md").read_text()
    assert "{doc}`ml-100k </results/ml-100k/data>`" in data_page
    assert "**bookcrossing**: not run" in data_page and "BX-Book-Ratings.csv" in data_page
    retrieval_page = (tmp_path / "stage" / "chapters" / "retrieval.md").read_text()
    assert "make notebook NB=retrieval DATASET=ml-100k" in retrieval_page
    assert [d for d, _ in staged.not_run["chapters/retrieval"]] == ["ml-100k", "bookcrossing", "amazon-beauty", "amazon-video-games"]
    config = yaml.safe_load((tmp_path / "stage" / "_config.yml").read_text())
    assert config["parse"]["myst_substitutions"]["profile"] == "cpu"
    assert config["execute"]["execute_notebooks"] == "off"


def test_staging_an_unknown_profile_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="unknown profile"):
        stage("huge", staging=tmp_path / "stage")


# --------------------------------------------------------------------------------------------
# end to end (marked `book`)

GLUE_ROLE = re.compile(r"\{glue:text\}`([^`]+)`")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Results of the whole smoke reproduction and its built book."""
    root = tmp_path_factory.mktemp("reproduction")
    results = root / "results"
    report = run("smoke", results_root=results, progress_bar=False)
    html = build_book("smoke", results_root=results, output=root / "book", quiet=True)
    return report, results / "smoke" / "synthetic", html


class _PastedText(HTMLParser):
    """The texts of ``<span class="pasted-text">`` elements (glue:text), in document order."""

    def __init__(self) -> None:
        super().__init__()
        self.texts: list[str] = []
        self._depth = 0

    def handle_starttag(self, tag, attrs):
        if self._depth:
            self._depth += 1
        elif tag == "span" and "pasted-text" in (dict(attrs).get("class") or "").split():
            self._depth = 1
            self.texts.append("")

    def handle_endtag(self, tag):
        if self._depth:
            self._depth -= 1

    def handle_data(self, data):
        if self._depth:
            self.texts[-1] += data


def _pasted(page: Path) -> list[str]:
    parser = _PastedText()
    parser.feed(page.read_text())
    return parser.texts


def _expected_text(out_dir: Path, record: pd.Series) -> str:
    """The glued text recomputed from the CSV cell the record names (independently of ragrec)."""
    path = out_dir / record["table"]
    if not path.exists():
        return NOT_RUN
    frame = pd.read_csv(path)
    rows = frame
    for column, wanted in json.loads(record["where"]).items():
        rows = rows[rows[column].astype(str).isin({str(wanted), f"{wanted}.0" if isinstance(wanted, int) else str(wanted)})]
    if rows.empty or pd.isna(rows[record["column"]].iloc[0]):
        return NOT_RUN
    assert len(rows) == 1, f"{record['key']}: {record['where']} selects {len(rows)} rows of {record['table']}"
    value, fmt = rows[record["column"]].iloc[0], record["fmt"] if isinstance(record["fmt"], str) else ""
    if fmt and fmt[-1] in "eEfFgGn%":
        value = float(value)
    elif fmt and fmt[-1] == "d":
        value = int(value)
    return format(value, fmt)


@pytest.mark.book
def test_every_notebook_ran_on_the_smoke_profile(built):
    report, out_dir, _ = built
    assert [name for name, _, _ in report.ran] == [s.name for s in NOTEBOOKS]
    for spec in NOTEBOOKS:
        executed = nbformat.read(out_dir / f"{spec.name}.ipynb", as_version=4)
        assert any(c.get("outputs") for c in executed.cells if c.cell_type == "code"), spec.name
        for name in spec.outputs:
            assert (out_dir / name).exists(), f"{spec.name} did not write {name}"
    assert (out_dir / "provenance.json").exists() and list(out_dir.glob("*.png"))


@pytest.mark.book
def test_a_second_run_skips_everything(built):
    _, out_dir, _ = built
    again = run("smoke", results_root=out_dir.parent.parent, progress_bar=False)
    assert again.ran == [] and len(again.skipped) == len(NOTEBOOKS)


@pytest.mark.book
def test_the_book_has_a_page_per_executed_notebook_and_the_prose_pages(built):
    _, _, html = built
    for page in ("intro", "paper", "method", "reproduce", "chapters/claims"):
        assert (html / f"{page}.html").exists(), page
    for spec in NOTEBOOKS:
        assert (html / "results" / "synthetic" / f"{spec.name}.html").exists(), spec.name


@pytest.mark.book
def test_glued_numbers_in_the_built_pages_equal_the_csv_values(built):
    _, out_dir, html = built
    checked = 0
    for spec in NOTEBOOKS:
        source = nbformat.read(out_dir / f"{spec.name}.ipynb", as_version=4)
        keys = [k for c in source.cells if c.cell_type == "markdown" for k in GLUE_ROLE.findall(c.source)]
        shown = _pasted(html / "results" / "synthetic" / f"{spec.name}.html")
        assert len(shown) == len(keys), f"{spec.name}: {len(keys)} glue references, {len(shown)} pasted texts"
        if not keys:
            continue
        records = pd.read_csv(out_dir / glue_record_name(spec.name), dtype=str, keep_default_na=False).set_index("key")
        for key, text in zip(keys, shown):
            assert text == records.loc[key, "text"], f"{spec.name}::{key}"
            assert text == _expected_text(out_dir, records.loc[key]), f"{spec.name}::{key} differs from its CSV cell"
            checked += 1
    assert checked > 50


@pytest.mark.book
def test_mathjax_is_served_from_the_build_and_no_page_loads_from_the_network(built):
    _, _, html = built
    method = (html / "method.html").read_text()
    assert 'src="_static/mathjax/tex-chtml.js"' in method
    assert (html / "_static" / "mathjax" / "tex-chtml.js").exists()
    assert "\\sigma" in method or "\\operatorname" in method, "the method page carries its equations"
    remote = re.compile(r"<(?:script|link|img)\b[^>]*(?:src|href)=\"(?:https?:)?//", re.I)
    for page in html.rglob("*.html"):
        assert not remote.search(page.read_text()), f"{page} loads a remote resource"
