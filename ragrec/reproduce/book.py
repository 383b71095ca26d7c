"""Stage and build the Jupyter Book from existing results (``make book``).

The source folder ``book/`` holds the prose (``intro``, ``paper``, ``method``, ``reproduce``, one
``chapters/<name>.md`` per notebook), ``_config.yml`` and ``_toc.yml``. Building a profile's book:

1. copies ``book/`` into a staging folder (``<output>/_build/source``, recreated each time);
2. copies each dataset's executed notebooks (papermill's injected-parameters cell folded) ``results/<profile>/<dataset>/<name>.ipynb`` into
   ``results/<dataset>/`` there and adds them to the table of contents as sections of their
   chapter (``chapters/<name>``; the run record ``run`` goes under ``reproduce``);
3. appends to each chapter page its datasets: a link to each executed notebook, and for each
   dataset of the profile that was *not* run, why (data absent, with the files needed; not run
   yet; failed);
4. sets the ``profile`` substitution and runs ``jupyter-book build --all -W`` (warnings are errors)
   with the HTML in ``<output>/_build/html``.

Nothing is executed: the notebooks come with their outputs from papermill, and the book's
configuration says ``execute_notebooks: off``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ragrec.data import dataset_available
from ragrec.errors import ConfigError, RagrecError
from ragrec.reproduce.runner import (
    MANIFEST,
    NOTEBOOKS,
    PROFILE_DATASETS,
    PROJECT_DIR,
    check_profile,
)
from ragrec.results import result_dir

BOOK_SOURCE = PROJECT_DIR / "book"
RUN_RECORD_CHAPTER = "reproduce"


class BookBuildFailed(RagrecError):
    """``jupyter-book build`` exited with an error (its output says why)."""


def chapter_of(notebook: str) -> str:
    """The toc file a notebook's sections go under."""
    return RUN_RECORD_CHAPTER if notebook == "run" else f"chapters/{notebook}"


@dataclass
class StagedBook:
    """What was staged: the folder, the executed notebooks per chapter, and the datasets not run
    per chapter with the reason."""

    source: Path
    sections: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # chapter -> [(docname, dataset)]
    not_run: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # chapter -> [(dataset, reason)]


def _datasets(profile: str, results_root) -> list[str]:
    """The profile's datasets plus any other dataset that has a results folder for it."""
    names = list(PROFILE_DATASETS[profile])
    base = result_dir(profile, "x", results_root).parent
    if base.is_dir():
        names += sorted(p.name for p in base.iterdir() if p.is_dir() and p.name not in names)
    return names


def _reason(notebook: str, dataset: str, out_dir: Path, data_root) -> str:
    present, message = dataset_available(dataset, data_root=data_root)
    if not present:
        return "data absent. " + message
    manifest = out_dir / MANIFEST
    entry = json.loads(manifest.read_text()).get("notebooks", {}).get(notebook) if manifest.exists() else None
    if entry and entry.get("status") == "failed":
        return f"failed: {entry.get('error', '')}"
    return f"not run yet (make notebook NB={notebook} DATASET={dataset})"


def stage(profile: str, *, results_root=None, data_root=None, staging: Path, source: Path = BOOK_SOURCE) -> StagedBook:
    """Assemble the book's source for ``profile`` in ``staging`` (see the module docstring)."""
    check_profile(profile)
    if not (source / "_toc.yml").exists():
        raise ConfigError(f"{source} has no _toc.yml: not a book source folder")
    if staging.exists():
        shutil.rmtree(staging)
    shutil.copytree(source, staging, ignore=shutil.ignore_patterns("_build", ".ipynb_checkpoints"))
    staged = StagedBook(staging)
    for dataset in _datasets(profile, results_root):
        out_dir = result_dir(profile, dataset, results_root)
        for spec in NOTEBOOKS:
            chapter = chapter_of(spec.name)
            executed = out_dir / f"{spec.name}.ipynb"
            if executed.exists():
                target = staging / "results" / dataset / executed.name
                target.parent.mkdir(parents=True, exist_ok=True)
                _copy_notebook(executed, target)
                staged.sections.setdefault(chapter, []).append((f"results/{dataset}/{spec.name}", dataset))
            else:
                staged.not_run.setdefault(chapter, []).append((dataset, _reason(spec.name, dataset, out_dir, data_root)))
    _write_toc(staging, staged)
    _write_dataset_list(staging, staged)
    _write_config(staging, profile)
    return staged


def _copy_notebook(executed: Path, target: Path) -> None:
    """Copy an executed notebook, folding papermill's injected-parameters cell away (its source
    stays one click away: the parameters the run used)."""
    import nbformat

    nb = nbformat.read(executed, as_version=4)
    for cell in nb.cells:
        tags = cell.get("metadata", {}).get("tags", [])
        if "injected-parameters" in tags and "hide-input" not in tags:
            cell.metadata["tags"] = [*tags, "hide-input"]
    nbformat.write(nb, target)


def _write_toc(staging: Path, staged: StagedBook) -> None:
    toc = yaml.safe_load((staging / "_toc.yml").read_text())
    for part in toc.get("parts", []):
        for chapter in part.get("chapters", []):
            sections = staged.sections.get(chapter.get("file"), [])
            if sections:
                chapter["sections"] = [{"file": doc, "title": dataset} for doc, dataset in sections]
    (staging / "_toc.yml").write_text(yaml.safe_dump(toc, sort_keys=False))


def _write_dataset_list(staging: Path, staged: StagedBook) -> None:
    """Append to each chapter page a list of its datasets: a link to each executed notebook, and
    for each dataset not run, why and what it needs."""
    for chapter in sorted(set(staged.sections) | set(staged.not_run)):
        page = staging / f"{chapter}.md"
        if not page.exists():
            continue
        lines = ["", "## Datasets", ""]
        for doc, dataset in staged.sections.get(chapter, []):
            lines.append(f"- {{doc}}`{dataset} </{doc}>`")
        for dataset, reason in staged.not_run.get(chapter, []):
            lines += [f"- **{dataset}**: not run.", "", "  ```text", *[f"  {line}" for line in reason.splitlines()], "  ```"]
        page.write_text(page.read_text().rstrip("\n") + "\n" + "\n".join(lines) + "\n")


def _write_config(staging: Path, profile: str) -> None:
    path = staging / "_config.yml"
    config = yaml.safe_load(path.read_text())
    config.setdefault("parse", {}).setdefault("myst_substitutions", {})["profile"] = profile
    path.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))


MATHJAX_EXTENSION = "sphinx-mathjax-offline"


def check_offline_mathjax() -> None:
    """The book serves MathJax from its build; the files come with the sphinx-mathjax-offline
    wheel (the ``book`` extra)."""
    import importlib.util

    if importlib.util.find_spec(MATHJAX_EXTENSION) is None:
        raise ConfigError(f"{MATHJAX_EXTENSION} is not installed (the book's offline MathJax); run `make install` "
                          f"or `pip install {MATHJAX_EXTENSION}`")


def jupyter_book_command() -> list[str]:
    """``jupyter-book`` of this environment (beside the interpreter), else on PATH."""
    beside = Path(sys.executable).parent / "jupyter-book"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("jupyter-book")
    if found is None:
        raise ConfigError("jupyter-book is not installed; run `make install` (it installs the [book] extra)")
    return [found]


def build_book(profile: str = "cpu", *, results_root=None, data_root=None, output: Path | None = None,
               source: Path = BOOK_SOURCE, quiet: bool = False) -> Path:
    """Stage and build the book of ``profile``; returns the HTML folder.

    Raises:
        BookBuildFailed: the build failed (warnings count as errors).
    """
    check_offline_mathjax()
    output = Path(output) if output is not None else source
    staging = output / "_build" / "source"
    started = time.perf_counter()
    staged = stage(profile, results_root=results_root, data_root=data_root, staging=staging, source=source)
    n = sum(len(v) for v in staged.sections.values())
    print(f"book: {n} executed notebook(s) of profile {profile!r} staged in {staging}", flush=True)
    command = jupyter_book_command() + ["build", str(staging), "--path-output", str(output), "--all", "-W", "--keep-going"]
    env = dict(os.environ, PYDEVD_DISABLE_FILE_VALIDATION="1")
    result = subprocess.run(command, capture_output=quiet, text=True, env=env)
    if result.returncode != 0:
        detail = (result.stdout or "")[-4000:] + (result.stderr or "")[-4000:] if quiet else ""
        raise BookBuildFailed(f"jupyter-book build failed (exit {result.returncode}); see the output above.{detail}")
    html = output / "_build" / "html"
    print(f"book: built in {time.perf_counter() - started:.0f} s → {html / 'index.html'}", flush=True)
    return html
