"""Publishing the book: ``make publish`` (ghp-import to a gh-pages branch, here of a local bare
repository), the one-file archive, the Pages workflow (its commands are the Makefile's), and
``make book`` refusing stale results unless asked."""

from __future__ import annotations

import re
import shlex
import subprocess
import zipfile
from pathlib import Path

import pytest
import yaml

from ragrec.errors import ConfigError
from ragrec.reproduce import book
from ragrec.reproduce.publish import archive, publish
from ragrec.reproduce.published import names_machine_path
from ragrec.reproduce.stale_pages import StaleResults, mark_stale
from ragrec.reproduce.tasks import PROJECT_DIR
from tests.reproduce.smoke_book import smoke_book

MAKEFILE = (PROJECT_DIR / "Makefile").read_text()
WORKFLOW = PROJECT_DIR / ".github" / "workflows" / "book.yml"
GIT_ENV = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.org",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.org",
}


def chapters() -> list[str]:
    """Every page of the book's table of contents (the root, the chapters)."""
    toc = yaml.safe_load((PROJECT_DIR / "book" / "_toc.yml").read_text())
    return [toc["root"], *(c["file"] for part in toc.get("parts", []) for c in part.get("chapters", []))]


def _site(folder: Path) -> Path:
    for doc in chapters():
        page = folder / f"{doc}.html"
        page.parent.mkdir(parents=True, exist_ok=True)
        page.write_text(f"<html>{doc}</html>")
    (folder / "index.html").write_text("<html>index</html>")
    return folder


def _repos(tmp_path, monkeypatch) -> tuple[Path, Path]:
    for name, value in GIT_ENV.items():
        monkeypatch.setenv(name, value)
    bare, work = tmp_path / "pages.git", tmp_path / "checkout"
    subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True)
    subprocess.run(["git", "init", "-q", str(work)], check=True)
    return bare, work


def _branch_files(bare: Path) -> list[str]:
    listed = subprocess.run(
        ["git", "--git-dir", str(bare), "ls-tree", "-r", "--name-only", "gh-pages"],
        capture_output=True,
        text=True,
        check=True,
    )
    return listed.stdout.split()


def _check_published(bare: Path, html: Path) -> None:
    files = _branch_files(bare)
    assert "index.html" in files and ".nojekyll" in files
    missing = [doc for doc in chapters() if f"{doc}.html" not in files]
    assert not missing, f"chapters not published: {missing}"
    for name in files:
        if name.endswith((".html", ".js", ".txt")):
            text = subprocess.run(
                ["git", "--git-dir", str(bare), "show", f"gh-pages:{name}"], capture_output=True, text=True
            ).stdout
            assert not names_machine_path(text), f"{name} names a machine path"


def test_publish_pushes_index_and_every_chapter_to_gh_pages_of_a_bare_repository(tmp_path, monkeypatch):
    bare, work = _repos(tmp_path, monkeypatch)
    html = _site(tmp_path / "html")
    publish(html, remote=str(bare), repo=work)
    _check_published(bare, html)


def test_publish_refuses_a_site_that_names_a_machine_path_or_is_not_built(tmp_path, monkeypatch):
    bare, work = _repos(tmp_path, monkeypatch)
    with pytest.raises(ConfigError, match="no built book .*make book"):
        publish(tmp_path / "nothing", remote=str(bare), repo=work)
    html = _site(tmp_path / "html")
    (html / "intro.html").write_text(f"<html>{PROJECT_DIR}/results</html>")
    with pytest.raises(ConfigError, match="names a path of this machine"):
        publish(html, remote=str(bare), repo=work)


def test_the_archive_is_one_zip_beside_the_build_with_index_and_every_chapter(tmp_path):
    html = _site(tmp_path / "_build" / "html")
    target = archive(html, name="ragrec-book-smoke")
    assert target == tmp_path / "_build" / "ragrec-book-smoke.zip"
    names = zipfile.ZipFile(target).namelist()
    assert "ragrec-book-smoke/index.html" in names
    assert all(f"ragrec-book-smoke/{doc}.html" in names for doc in chapters())


@pytest.mark.book
def test_the_built_smoke_book_publishes_whole_and_names_no_machine_path(
    tmp_path_factory, tmp_path, monkeypatch
):
    html = smoke_book(tmp_path_factory).html
    bare, work = _repos(tmp_path, monkeypatch)
    publish(html, remote=str(bare), repo=work)
    _check_published(bare, html)


# --------------------------------------------------------------------------------------------
# the Makefile and the Pages workflow


def makefile_targets() -> set[str]:
    return set(re.findall(r"^([a-z][a-z-]*):", MAKEFILE, flags=re.MULTILINE))


def makefile_variable(name: str) -> str:
    return re.search(rf"^{name} [:?]?= ?(.*)$", MAKEFILE, flags=re.MULTILINE).group(1).strip()


def test_make_publish_and_book_archive_are_targets_that_run_the_cli(tmp_path):
    dry = subprocess.run(
        [
            "make",
            "-n",
            "-C",
            str(PROJECT_DIR),
            "publish",
            "book-archive",
            "REMOTE=upstream",
            "ALLOW_STALE=1",
            f"VENV={tmp_path / 'venv'}",
        ],
        capture_output=True,
        text=True,
    )
    assert dry.returncode == 0, dry.stderr
    assert "-m ragrec.reproduce publish --remote upstream --html book/_build/html" in dry.stdout
    assert "-m ragrec.reproduce archive --profile cpu --html book/_build/html" in dry.stdout
    assert "--allow-stale" in dry.stdout


def test_the_pages_workflow_runs_exactly_the_makefiles_commands_and_deploys_its_build():
    workflow = yaml.safe_load(WORKFLOW.read_text())
    steps = [step for job in workflow["jobs"].values() for step in job["steps"]]
    commands = [line for step in steps if "run" in step for line in step["run"].strip().splitlines()]
    assert commands, "the workflow runs something"
    variables = set(re.findall(r"^([A-Z_]+) [:?]?=", MAKEFILE, flags=re.MULTILINE))
    for command in commands:
        words = shlex.split(command)
        assert words[0] == "make", f"{command!r} is not a make command"
        targets = [w for w in words[1:] if "=" not in w]
        assert targets and set(targets) <= makefile_targets(), command
        assert {w.split("=")[0] for w in words[1:] if "=" in w} <= variables, command
    assert any("book" in shlex.split(c)[1] for c in commands), "the workflow builds the book"
    uses = {step.get("uses", "").split("@")[0]: step for step in steps}
    assert uses["actions/upload-pages-artifact"]["with"]["path"] == makefile_variable("BOOK_HTML")
    assert "actions/deploy-pages" in uses
    assert uses["actions/upload-artifact"]["with"]["path"].startswith(
        makefile_variable("BOOK_HTML").rsplit("/", 1)[0]
    )


# --------------------------------------------------------------------------------------------
# a book of stale results


def test_make_book_refuses_stale_results_naming_them_unless_allowed(tmp_path, monkeypatch):
    stale = {("recommender", "synthetic"): "stale: heads.csv differs from what recommender wrote at 2026"}
    monkeypatch.setattr(book, "stale_results", lambda *a, **k: stale)
    monkeypatch.setattr(book, "check_offline_mathjax", lambda: None)
    with pytest.raises(StaleResults) as refusal:
        book.build_book("smoke", results_root=tmp_path / "results", output=tmp_path / "book", quiet=True)
    message = str(refusal.value)
    assert "recommender/synthetic (stale: heads.csv differs" in message and "\n" not in message
    assert "make reproduce PROFILE=smoke" in message and "ALLOW_STALE=1" in message
    assert not (tmp_path / "book" / "_build" / "html").exists()


def test_an_allowed_stale_build_marks_the_notebook_its_chapter_and_the_landing_page(tmp_path):
    import nbformat

    staging = tmp_path / "stage"
    (staging / "results" / "synthetic").mkdir(parents=True)
    (staging / "chapters").mkdir()
    nb = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_markdown_cell("# Recommender"), nbformat.v4.new_code_cell("1")]
    )
    nbformat.write(nb, staging / "results" / "synthetic" / "recommender.ipynb")
    (staging / "chapters" / "recommender.md").write_text("# The recommender\n\ntext\n")
    (staging / "intro.md").write_text("# Intro\n\ntext\n")
    marked = mark_stale(
        staging, "smoke", {("recommender", "synthetic"): "stale: heads.csv differs"}, book.chapter_of
    )
    assert marked == ["results/synthetic/recommender"]
    cells = nbformat.read(staging / "results" / "synthetic" / "recommender.ipynb", as_version=4).cells
    assert cells[0].source == "# Recommender" and cells[1].source.startswith("```{warning}")
    assert "stale: heads.csv differs" in cells[1].source
    chapter = (staging / "chapters" / "recommender.md").read_text()
    assert chapter.startswith("# The recommender\n\n```{warning}") and "synthetic: stale" in chapter
    assert "```{warning}" in (staging / "intro.md").read_text()
