"""The book: staging from results and the atomic build (fast, with a stand-in for jupyter-book),
and end to end: every notebook under papermill on the smoke profile, then the book built with
``-W``.

One session-wide run (:mod:`tests.reproduce.smoke_book`, a few minutes on 2 cores) feeds the tests
marked ``book``. Select or skip them with ``-m book`` / ``-m "not book"``; ``make test`` and CI
run them.
"""

from __future__ import annotations

import json
import re
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import yaml

from ragrec.errors import ConfigError
from ragrec.reproduce import book, environment_page
from ragrec.reproduce.book import (
    BOOK_SOURCE,
    SUMMARY_FIGURE,
    SUMMARY_KEYS,
    BookBuildFailed,
    build_book,
    stage,
)
from ragrec.reproduce.notebook import NOT_RUN, glue_record_name
from ragrec.reproduce.runner import run
from ragrec.reproduce.tasks import NOTEBOOKS
from ragrec.results import LOCK_FILE, read_lock
from tests.reproduce.smoke_book import smoke_book

# --------------------------------------------------------------------------------------------
# staging (no build)


def test_staging_adds_each_executed_notebook_under_its_chapter_and_lists_datasets_not_run(tmp_path):
    results = tmp_path / "results"
    executed = results / "cpu" / "ml-100k"
    executed.mkdir(parents=True)
    nbformat.write(
        nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Data")]), executed / "data.ipynb"
    )
    staged = stage("cpu", results_root=results, data_root=tmp_path / "no-data", staging=tmp_path / "stage")
    toc = yaml.safe_load((tmp_path / "stage" / "_toc.yml").read_text())
    chapters = {c["file"]: c for part in toc["parts"] for c in part["chapters"]}
    assert chapters["chapters/data"]["sections"] == [{"file": "results/ml-100k/data", "title": "ml-100k"}]
    assert "sections" not in chapters["chapters/retrieval"]
    assert (tmp_path / "stage" / "results" / "ml-100k" / "data.ipynb").exists()
    data_page = (tmp_path / "stage" / "chapters" / "data.md").read_text()
    assert "{doc}`ml-100k </results/ml-100k/data>`" in data_page
    assert "**bookcrossing**: not run" in data_page and "BX-Book-Ratings.csv" in data_page
    assert str(tmp_path) not in data_page, "the data-absent message names no machine path"
    retrieval_page = (tmp_path / "stage" / "chapters" / "retrieval.md").read_text()
    assert "make notebook NB=retrieval DATASET=ml-100k" in retrieval_page
    assert [d for d, _ in staged.not_run["chapters/retrieval"]] == [
        "ml-100k",
        "bookcrossing",
        "amazon-beauty",
        "amazon-video-games",
    ]
    config = yaml.safe_load((tmp_path / "stage" / "_config.yml").read_text())
    assert config["parse"]["myst_substitutions"]["profile"] == "cpu"
    assert config["execute"]["execute_notebooks"] == "off"


def _executed(folder: Path, name: str, glued: tuple[str, ...] = ()) -> Path:
    """An executed notebook that glued ``glued`` (myst-nb's output metadata) into ``folder``."""
    outputs = [
        nbformat.v4.new_output(
            "display_data", data={"text/plain": key}, metadata={"scrapbook": {"name": key}}
        )
        for key in glued
    ]
    nb = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_markdown_cell(f"# {name}"), nbformat.v4.new_code_cell("x", outputs=outputs)]
    )
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, folder / f"{name}.ipynb")
    return folder / f"{name}.ipynb"


def test_each_chapter_links_its_result_files_as_downloads(tmp_path):
    executed = tmp_path / "results" / "cpu" / "ml-100k"
    _executed(executed, "early_exit")
    for name in ("early_exit.csv", "threshold_sweep.csv", "heads.csv"):
        (executed / name).write_text("a,b\n1,2\n")
    staged = stage(
        "cpu", results_root=tmp_path / "results", data_root=tmp_path / "no-data", staging=tmp_path / "stage"
    )
    assert staged.downloads["results/ml-100k/early_exit"] == ["early_exit.csv", "threshold_sweep.csv"]
    assert (tmp_path / "stage" / "results" / "ml-100k" / "threshold_sweep.csv").exists()
    page = (tmp_path / "stage" / "chapters" / "early_exit.md").read_text()
    assert "{download}`threshold_sweep.csv </results/ml-100k/threshold_sweep.csv>`" in page
    assert "heads.csv" not in page, "each file is linked from the chapter that shows it"


def test_staged_notebooks_name_the_results_root_not_its_machine_path(tmp_path):
    executed = tmp_path / "results" / "smoke" / "synthetic"
    path = _executed(executed, "data")
    nb = nbformat.read(path, as_version=4)
    nb.cells.insert(
        0, nbformat.v4.new_code_cell(f'out_dir = "{executed}"', metadata={"tags": ["injected-parameters"]})
    )
    nbformat.write(nb, path)
    stage("smoke", results_root=tmp_path / "results", staging=tmp_path / "stage")
    staged = nbformat.read(tmp_path / "stage" / "results" / "synthetic" / "data.ipynb", as_version=4)
    assert staged.cells[0].source == 'out_dir = "results/smoke/synthetic"'
    assert "hide-input" in staged.cells[0].metadata["tags"]


def test_the_landing_page_summarises_the_first_dataset_whose_claims_notebook_glued_it(tmp_path):
    results = tmp_path / "results" / "cpu"
    _executed(results / "ml-100k", "claims", glued=SUMMARY_KEYS[:1])  # an older claims notebook
    _executed(results / "amazon-beauty", "claims", glued=SUMMARY_KEYS)  # its figure is missing
    _executed(results / "bookcrossing", "claims", glued=SUMMARY_KEYS)
    (results / "bookcrossing" / SUMMARY_FIGURE).write_bytes(b"\x89PNG")
    staged = stage(
        "cpu", results_root=tmp_path / "results", data_root=tmp_path / "no-data", staging=tmp_path / "stage"
    )
    intro = (tmp_path / "stage" / "intro.md").read_text()
    assert staged.summary == "bookcrossing"
    assert "results/bookcrossing/claims.ipynb::summary_auc" in intro and "SUMMARY" not in intro
    assert (tmp_path / "stage" / "results" / "bookcrossing" / SUMMARY_FIGURE).exists(), (
        "the figure the page shows"
    )
    assert "cpu** profile" in intro


@pytest.mark.parametrize("profile", ["smoke", "cpu"])
def test_without_a_claims_check_the_landing_page_says_there_is_no_summary_yet(tmp_path, profile):
    staged = stage(
        profile, results_root=tmp_path / "results", data_root=tmp_path / "no-data", staging=tmp_path / "stage"
    )
    intro = (tmp_path / "stage" / "intro.md").read_text()
    assert staged.summary is None
    assert "has a claims check yet" in intro and f"make reproduce PROFILE={profile}" in intro
    assert "{glue" not in intro, "no reference to a notebook that is not there"


def test_a_smoke_landing_page_says_its_numbers_check_plumbing_only(tmp_path):
    stage("smoke", results_root=tmp_path / "results", staging=tmp_path / "stage")
    assert "check the plumbing only" in (tmp_path / "stage" / "intro.md").read_text()


def test_the_reproduce_page_shows_the_locked_versions_beside_what_each_run_had_installed(tmp_path):
    executed = tmp_path / "results" / "cpu" / "ml-100k"
    _executed(executed, "run")
    steps = {
        "data": {"step": "data", "packages": {"torch": "2.13.0+cpu"}, "lock": "match"},
        "recommender": {"step": "recommender", "packages": {"torch": "2.13.0+cpu"}, "lock": "match"},
    }
    (executed / "provenance.json").write_text(json.dumps({"steps": steps}))
    stage(
        "cpu", results_root=tmp_path / "results", data_root=tmp_path / "no-data", staging=tmp_path / "stage"
    )
    page = (tmp_path / "stage" / "reproduce.md").read_text()
    torch_pin = read_lock(LOCK_FILE)["torch"]
    assert f"| torch | {torch_pin} | 2.13.0+cpu |" in page
    assert (
        ":::{note} ml-100k: matches the lock" in page
        and "all 2 steps ran with exactly the locked versions" in page
    )
    assert ":::{dropdown} Every locked package" in page


def test_a_run_that_drifted_from_the_lock_is_flagged_with_each_steps_difference():
    steps = {
        "data": {"lock": "match"},
        "recommender": {"lock": ["peft: pinned 0.21.2, installed 0.22.0"]},
        "baselines": {},
    }
    ok, verdict = environment_page.lock_verdict(steps)
    assert not ok
    assert (
        "2 of 3 steps differ" in verdict and "recommender: peft: pinned 0.21.2, installed 0.22.0" in verdict
    )
    assert "baselines: not recorded" in verdict
    section = environment_page.environment_section({"peft": "0.21.2"}, {"ml-100k": steps})
    assert ":::{warning} ml-100k: differs from the lock" in section


# --------------------------------------------------------------------------------------------
# the atomic build (jupyter-book replaced by a stand-in that writes one page per staged notebook)


@pytest.fixture
def fake_jupyter_book(monkeypatch):
    """``_run_jupyter_book`` that "builds" a page per staged document and fails when told to."""
    calls = {"fail": False}

    def run(work: Path, quiet: bool) -> subprocess.CompletedProcess:
        html = work / "_build" / "html"
        for doc in (work / "source").rglob("*.ipynb"):
            page = html / doc.relative_to(work / "source").with_suffix(".html")
            page.parent.mkdir(parents=True, exist_ok=True)
            page.write_text(doc.read_text())
        (html / "index.html").parent.mkdir(parents=True, exist_ok=True)
        (html / "index.html").write_text("book")
        return subprocess.CompletedProcess([], 1 if calls["fail"] else 0, "", "a warning")

    monkeypatch.setattr(book, "_run_jupyter_book", run)
    return calls


def _pages(html: Path) -> list[str]:
    return sorted(str(p.relative_to(html)) for p in html.rglob("*.html"))


def test_a_build_replaces_the_previous_one_whole(tmp_path, fake_jupyter_book):
    _executed(tmp_path / "results" / "cpu" / "ml-100k", "data")
    _executed(tmp_path / "results" / "smoke" / "synthetic", "data")
    html = build_book(
        "cpu",
        results_root=tmp_path / "results",
        data_root=tmp_path / "no-data",
        output=tmp_path / "book",
        quiet=True,
    )
    assert _pages(html) == ["index.html", "results/ml-100k/data.html"]
    again = build_book("smoke", results_root=tmp_path / "results", output=tmp_path / "book", quiet=True)
    assert again == html and _pages(html) == ["index.html", "results/synthetic/data.html"], (
        "no page of the cpu build is left"
    )
    assert sorted(p.name for p in (tmp_path / "book" / "_build").iterdir()) == ["html"], (
        "no staging folder is left"
    )


def test_a_failed_build_keeps_the_previous_book_and_the_failed_one_apart(tmp_path, fake_jupyter_book):
    _executed(tmp_path / "results" / "cpu" / "ml-100k", "data")
    _executed(tmp_path / "results" / "smoke" / "synthetic", "data")
    html = build_book(
        "cpu",
        results_root=tmp_path / "results",
        data_root=tmp_path / "no-data",
        output=tmp_path / "book",
        quiet=True,
    )
    fake_jupyter_book["fail"] = True
    with pytest.raises(BookBuildFailed, match="previous book is untouched"):
        build_book("smoke", results_root=tmp_path / "results", output=tmp_path / "book", quiet=True)
    assert _pages(html) == ["index.html", "results/ml-100k/data.html"]
    failed = tmp_path / "book" / "_build" / "failed"
    assert _pages(failed / "_build" / "html") == ["index.html", "results/synthetic/data.html"]
    fake_jupyter_book["fail"] = False
    build_book("smoke", results_root=tmp_path / "results", output=tmp_path / "book", quiet=True)
    assert not failed.exists(), "a success clears the record of an older failure"


def test_staging_an_unknown_profile_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="unknown profile"):
        stage("huge", staging=tmp_path / "stage")


# --------------------------------------------------------------------------------------------
# end to end (marked `book`)

GLUE_ROLE = re.compile(r"\{glue:text\}`([^`]+)`")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Results of the whole smoke reproduction and its built book (shared by the session)."""
    smoke = smoke_book(tmp_path_factory)
    return smoke.report, smoke.out_dir, smoke.html


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
        rows = rows[
            rows[column]
            .astype(str)
            .isin({str(wanted), f"{wanted}.0" if isinstance(wanted, int) else str(wanted)})
        ]
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
        records = pd.read_csv(
            out_dir / glue_record_name(spec.name), dtype=str, keep_default_na=False
        ).set_index("key")
        for key, text in zip(keys, shown):
            assert text == records.loc[key, "text"], f"{spec.name}::{key}"
            assert text == _expected_text(out_dir, records.loc[key]), (
                f"{spec.name}::{key} differs from its CSV cell"
            )
            checked += 1
    assert checked > 50


@pytest.mark.book
def test_mathjax_is_served_from_the_build_and_no_page_loads_from_the_network(built):
    _, _, html = built
    method = (html / "method.html").read_text()
    assert 'src="_static/mathjax/tex-chtml.js"' in method
    assert (html / "_static" / "mathjax" / "tex-chtml.js").exists()
    assert "\\sigma" in method or "\\operatorname" in method, "the method page carries its equations"
    remote = re.compile(r"<(?:script|link|img)\b[^>]*(?:src|href)=\"(?:https?:)?//", re.IGNORECASE)
    for page in html.rglob("*.html"):
        assert not remote.search(page.read_text()), f"{page} loads a remote resource"


INTRO_GLUE = re.compile(r"\{glue:text\}`results/SUMMARY/claims\.ipynb::(\w+):s`")


@pytest.mark.book
def test_the_landing_pages_glued_numbers_equal_the_claims_notebooks_csv_values(built):
    _, out_dir, html = built
    keys = INTRO_GLUE.findall((BOOK_SOURCE / "intro.md").read_text())
    records = pd.read_csv(out_dir / glue_record_name("claims"), dtype=str, keep_default_na=False).set_index(
        "key"
    )
    shown = _pasted(html / "intro.html")
    assert len(keys) > 5 and len(shown) == len(keys), (
        f"{len(keys)} glue references, {len(shown)} pasted texts"
    )
    for key, text in zip(keys, shown):
        assert text == _expected_text(out_dir, records.loc[key]), f"intro::{key} differs from its CSV cell"


@pytest.mark.book
def test_the_landing_page_shows_the_verdicts_the_headline_figure_and_the_differences(built):
    _, out_dir, html = built
    page = (html / "intro.html").read_text()
    claims = pd.read_csv(out_dir / "claims.csv")
    assert page.count('class="ragrec-table"') == 2, "the verdict table and the differences table"
    for verdict in claims["verdict"]:
        assert f"<td>{verdict}</td>" in page, f"verdict {verdict!r} of claims.csv is not on the landing page"
    images = re.findall(r'<img[^>]+src="([^"]+)"', page)
    assert images and all((html / src).exists() for src in images), images
    assert "check the plumbing only" in page


@pytest.mark.book
@pytest.mark.parametrize("spec", [s for s in NOTEBOOKS if s.name != "data"], ids=lambda s: s.name)
def test_results_pages_show_tables_for_people_not_raw_dataframes(built, spec):
    page = (built[2] / "results" / "synthetic" / f"{spec.name}.html").read_text()
    assert 'class="dataframe' not in page, "a raw DataFrame"
    assert 'class="ragrec-table"' in page
    assert not re.search(r"<td[^>]*>\s*(NaN|nan|None)\s*</td>", page)


@pytest.mark.book
def test_every_chapter_links_the_csv_files_behind_it(built):
    _, _, html = built
    for spec in NOTEBOOKS:
        chapter = html / f"{book.chapter_of(spec.name)}.html"
        links = re.findall(r'href="([^"]*_downloads/[^"]+)"', chapter.read_text())
        assert links, f"{chapter.name} links no result file"
        assert all((chapter.parent / link).resolve().exists() for link in links), links
