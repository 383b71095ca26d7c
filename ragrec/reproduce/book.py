"""Stage and build the Jupyter Book from existing results (``make book``).

The source folder ``book/`` holds the prose (``intro``, ``paper``, ``method``, ``reproduce``, one
``chapters/<name>.md`` per notebook), ``_config.yml`` and ``_toc.yml``. Building a profile's book:

1. copies ``book/`` into a staging folder;
2. copies each dataset's executed notebooks ``results/<profile>/<dataset>/<name>.ipynb`` into
   ``results/<dataset>/`` there (papermill's injected-parameters cell folded, machine paths made
   relative) with the result files each chapter offers as downloads, and adds the notebooks to
   the table of contents as sections of their chapter (``chapters/<name>``; the run record
   ``run`` goes under ``reproduce``);
3. appends to each chapter page its datasets: a link to each executed notebook and its CSV files,
   and for each dataset of the profile that was *not* run, why (data absent, with the files
   needed; not run yet; failed);
4. points the landing page's reproducibility summary at the first dataset whose claims notebook
   glued it (or says there is none yet), adds what this profile's numbers can say, and sets the
   ``profile`` substitution;
5. runs ``jupyter-book build --all -W`` (warnings are errors) in a fresh temporary folder and,
   only when it succeeds, swaps the HTML into ``<output>/_build/html``: a killed or failed build
   leaves the previous book whole, and one profile's pages never mix with another's.

Nothing is executed: the notebooks come with their outputs from papermill, and the book's
configuration says ``execute_notebooks: off``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ragrec import result_files as rf
from ragrec.data import dataset_available
from ragrec.errors import ConfigError, RagrecError
from ragrec.reproduce.environment_page import write_environment
from ragrec.reproduce.published import machine_paths, relative_paths
from ragrec.reproduce.readers import read_notebook, read_provenance
from ragrec.reproduce.stale_pages import mark_stale, refuse, stale_results
from ragrec.reproduce.tasks import (
    NOTEBOOKS,
    PROFILE_DATASETS,
    PROJECT_DIR,
    check_profile,
    read_manifest,
)
from ragrec.results import result_dir

BOOK_SOURCE = PROJECT_DIR / "book"
RUN_RECORD_CHAPTER = "reproduce"

DOWNLOADS: dict[str, tuple[str, ...]] = {
    "data": (rf.DATA,),
    "recommender": (rf.HEADS, rf.TRAINING, rf.LEARNING_CURVE, rf.BETA_RUNS),  # and every predictions file
    "retrieval": (rf.RETRIEVAL, rf.LIGHTGCN, rf.LIGHTGCN_HISTORY),
    "ablations": (rf.ABLATIONS, rf.BETA_STUDY, rf.LEARNING_CURVE_MEANS),
    "early_exit": (rf.EARLY_EXIT, rf.THRESHOLD_SWEEP, rf.EARLY_EXIT_PREDICTIONS),
    "baselines": (rf.BASELINES, rf.BASELINE_PREDICTIONS),
    "claims": (rf.CLAIMS,),
    "run": (rf.RUN_TIMES, rf.COMPUTE, rf.PROVENANCE, rf.MANIFEST),
}
"""The result files each chapter links as downloads, beside its notebook."""

SUMMARY_NOTEBOOK = "claims"
SUMMARY_KEYS = ("verdicts", "differences")
SUMMARY_FIGURE = "headline.png"
SUMMARY_PLACEHOLDER = "results/SUMMARY/"
"""The landing page's summary pastes :data:`SUMMARY_KEYS` (and glued numbers) from
``results/SUMMARY/claims.ipynb`` and shows the :data:`SUMMARY_FIGURE` the claims notebook saved
(copied beside it: myst-nb writes a glued image only for the page that shows it); staging names
the dataset there."""

PROFILE_NOTES = {
    "smoke": ":::{warning}\nThis is a **smoke** build: a tiny random model on synthetic data. Its numbers "
    "check the plumbing only (that every step runs and every table is filled); they say nothing about the "
    "paper's claims.\n:::",
    "cpu": ":::{note}\nThe **cpu** profile: SmolLM2-135M-Instruct on MovieLens-100K, trained and timed on "
    "two CPU cores. It tests the paper's claims at small scale; the table below says how it differs from the "
    "paper.\n:::",
}
NO_SUMMARY = (
    "## Reproducibility summary\n\nNo dataset of the **{profile}** profile has a claims check yet, so there "
    "is nothing to summarise: run `make reproduce PROFILE={profile}` (or `make notebook NB=claims "
    "PROFILE={profile}`) and build the book again.\n"
)


class BookBuildFailed(RagrecError):
    """``jupyter-book build`` exited with an error (its output says why)."""


def chapter_of(notebook: str) -> str:
    """The toc file a notebook's sections go under."""
    return RUN_RECORD_CHAPTER if notebook == "run" else f"chapters/{notebook}"


@dataclass
class StagedBook:
    """What was staged: the folder, the executed notebooks per chapter, the files each links as
    downloads, the datasets not run per chapter with the reason, and the dataset the landing
    page summarises (None: none has a claims check)."""

    source: Path
    sections: dict[str, list[tuple[str, str]]] = field(
        default_factory=dict
    )  # chapter -> [(docname, dataset)]
    downloads: dict[str, list[str]] = field(default_factory=dict)  # docname -> [file name]
    not_run: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # chapter -> [(dataset, reason)]
    summary: str | None = None


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
        return "data absent. " + relative_paths(message)
    entry = read_manifest(out_dir)["notebooks"].get(notebook)
    if entry and entry.get("status") == "failed":
        return relative_paths(f"failed: {entry.get('error', '')}")
    return f"not run yet (make notebook NB={notebook} DATASET={dataset})"


def published_paths(results_root) -> dict[str, str]:
    """:func:`ragrec.reproduce.published.machine_paths` plus the results root, shown as
    ``results`` (a notebook's ``out_dir`` parameter names it)."""
    root = str(result_dir("x", "x", results_root).parent.parent.resolve())
    paths = {**machine_paths(), root: "results"}
    return dict(sorted(paths.items(), key=lambda item: -len(item[0])))


def stage(
    profile: str, *, results_root=None, data_root=None, staging: Path, source: Path = BOOK_SOURCE
) -> StagedBook:
    """Assemble the book's source for ``profile`` in ``staging`` (see the module docstring)."""
    check_profile(profile)
    if not (source / "_toc.yml").exists():
        raise ConfigError(f"{source} has no _toc.yml: not a book source folder")
    if staging.exists():
        shutil.rmtree(staging)
    shutil.copytree(source, staging, ignore=shutil.ignore_patterns("_build", ".ipynb_checkpoints"))
    staged = StagedBook(staging)
    paths = published_paths(results_root)
    for dataset in _datasets(profile, results_root):
        out_dir = result_dir(profile, dataset, results_root)
        for spec in NOTEBOOKS:
            chapter = chapter_of(spec.name)
            executed = out_dir / f"{spec.name}.ipynb"
            if not executed.exists():
                staged.not_run.setdefault(chapter, []).append(
                    (dataset, _reason(spec.name, dataset, out_dir, data_root))
                )
                continue
            doc = f"results/{dataset}/{spec.name}"
            _copy_notebook(executed, staging / f"{doc}.ipynb", paths)
            staged.downloads[doc] = _copy_downloads(spec.name, out_dir, staging / "results" / dataset, paths)
            if spec.name == SUMMARY_NOTEBOOK and (out_dir / SUMMARY_FIGURE).exists():
                shutil.copyfile(out_dir / SUMMARY_FIGURE, staging / "results" / dataset / SUMMARY_FIGURE)
            staged.sections.setdefault(chapter, []).append((doc, dataset))
    staged.summary = _summary_dataset(staged)
    _write_toc(staging, staged)
    _write_dataset_list(staging, staged)
    _write_intro(staging, profile, staged.summary)
    write_environment(
        staging,
        {
            d: read_provenance(result_dir(profile, d, results_root))
            for _, d in staged.sections.get(RUN_RECORD_CHAPTER, [])
        },
    )
    _write_config(staging, profile)
    return staged


def _copy_notebook(executed: Path, target: Path, paths: dict[str, str]) -> None:
    """Copy an executed notebook with machine paths made relative, folding papermill's
    injected-parameters cell away (its source stays one click away: the parameters the run used)."""
    import nbformat

    read_notebook(executed)  # a damaged one is named, with the command that writes it again
    nb = nbformat.reads(relative_paths(executed.read_text(), paths), as_version=4)
    for cell in nb.cells:
        tags = cell.get("metadata", {}).get("tags", [])
        if "injected-parameters" in tags and "hide-input" not in tags:
            cell.metadata["tags"] = [*tags, "hide-input"]
    target.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, target)


def _copy_downloads(notebook: str, out_dir: Path, folder: Path, paths: dict[str, str]) -> list[str]:
    """Copy the result files a chapter links (:data:`DOWNLOADS`) beside its notebook; returns
    their names. Text is copied with machine paths made relative."""
    wanted = list(DOWNLOADS.get(notebook, ()))
    if notebook == "recommender":
        wanted += [found.name for found in rf.find_predictions(out_dir)]
    names = sorted({name for name in wanted if (out_dir / name).is_file()})
    for name in names:
        (folder / name).write_text(relative_paths((out_dir / name).read_text(), paths))
    return names


def glue_keys(notebook: Path) -> set[str]:
    """The keys an executed notebook glued (myst-nb's ``scrapbook`` output metadata)."""
    nb = read_notebook(notebook)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    return {o["metadata"]["scrapbook"]["name"] for o in outputs if "scrapbook" in o.get("metadata", {})}


def _summary_dataset(staged: StagedBook) -> str | None:
    """The first dataset whose claims notebook glued and saved everything the landing page shows."""
    for doc, dataset in staged.sections.get(chapter_of(SUMMARY_NOTEBOOK), []):
        figure = (staged.source / doc).parent / SUMMARY_FIGURE
        if set(SUMMARY_KEYS) <= glue_keys(staged.source / f"{doc}.ipynb") and figure.exists():
            return dataset
    return None


def _write_toc(staging: Path, staged: StagedBook) -> None:
    toc = yaml.safe_load((staging / "_toc.yml").read_text())
    for part in toc.get("parts", []):
        for chapter in part.get("chapters", []):
            sections = staged.sections.get(chapter.get("file"), [])
            if sections:
                chapter["sections"] = [{"file": doc, "title": dataset} for doc, dataset in sections]
    (staging / "_toc.yml").write_text(yaml.safe_dump(toc, sort_keys=False))


def _write_dataset_list(staging: Path, staged: StagedBook) -> None:
    """Append to each chapter page a list of its datasets: a link to each executed notebook and
    its result files, and for each dataset not run, why and what it needs."""
    for chapter in sorted(set(staged.sections) | set(staged.not_run)):
        page = staging / f"{chapter}.md"
        if not page.exists():
            continue
        lines = ["", "## Datasets", ""]
        for doc, dataset in staged.sections.get(chapter, []):
            files = ", ".join(
                f"{{download}}`{name} </{doc.rsplit('/', 1)[0]}/{name}>`"
                for name in staged.downloads.get(doc, [])
            )
            lines.append(f"- {{doc}}`{dataset} </{doc}>`" + (f"; full results: {files}" if files else ""))
        for dataset, reason in staged.not_run.get(chapter, []):
            lines += [
                f"- **{dataset}**: not run.",
                "",
                "  ```text",
                *[f"  {line}" for line in reason.splitlines()],
                "  ```",
            ]
        page.write_text(page.read_text().rstrip("\n") + "\n" + "\n".join(lines) + "\n")


def _write_intro(staging: Path, profile: str, summary: str | None) -> None:
    """Point the landing page's summary at ``summary`` (or replace it with a note saying there is
    none yet) and put in what this profile's numbers can say."""
    page = staging / "intro.md"
    if not page.exists():
        return
    text = re.sub(r"<!-- profile-note.*?-->", lambda _: PROFILE_NOTES.get(profile, ""), page.read_text())
    if summary is not None:
        text = text.replace(SUMMARY_PLACEHOLDER, f"results/{summary}/")
    else:
        text = re.sub(
            r"<!-- summary:start -->.*<!-- summary:end -->",
            lambda _: NO_SUMMARY.format(profile=profile),
            text,
            flags=re.DOTALL,
        )
    page.write_text(text)


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
        raise ConfigError(
            f"{MATHJAX_EXTENSION} is not installed (the book's offline MathJax); run `make install` "
            f"or `pip install {MATHJAX_EXTENSION}`"
        )


def jupyter_book_command() -> list[str]:
    """``jupyter-book`` of this environment (beside the interpreter), else on PATH."""
    beside = Path(sys.executable).parent / "jupyter-book"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("jupyter-book")
    if found is None:
        raise ConfigError("jupyter-book is not installed; run `make install` (it installs the [book] extra)")
    return [found]


def build_book(
    profile: str = "cpu",
    *,
    results_root=None,
    data_root=None,
    output: Path | None = None,
    source: Path = BOOK_SOURCE,
    quiet: bool = False,
    allow_stale: bool = False,
) -> Path:
    """Stage and build the book of ``profile``; returns the HTML folder ``<output>/_build/html``.

    The build runs in a fresh folder beside it and replaces it only on success (see the module
    docstring), so the HTML folder always holds one whole build of one profile.

    Raises:
        StaleResults: some results the book would show are stale or damaged (unless
            ``allow_stale``: then each affected page says so, :mod:`ragrec.reproduce.stale_pages`).
        BookBuildFailed: the build failed (warnings count as errors); the failed build is kept in
            ``<output>/_build/failed`` and the previous HTML is untouched.
    """
    check_offline_mathjax()
    stale = stale_results(profile, results_root=results_root, data_root=data_root)
    if stale and not allow_stale:
        raise refuse(profile, stale)
    build_dir = (Path(output) if output is not None else source) / "_build"
    build_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".building-", dir=build_dir))  # same file system: a rename
    started = time.perf_counter()
    try:
        staged = stage(
            profile, results_root=results_root, data_root=data_root, staging=work / "source", source=source
        )
        marked = mark_stale(staged.source, profile, stale, chapter_of)
        n = sum(len(v) for v in staged.sections.values())
        print(f"book: {n} executed notebook(s) of profile {profile!r} staged", flush=True)
        if marked:
            print(f"book: {len(marked)} page(s) marked as not up to date: {', '.join(marked)}", flush=True)
        html = _build(work, build_dir, quiet)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"book: built in {time.perf_counter() - started:.0f} s → {html / 'index.html'}", flush=True)
    return html


def _build(work: Path, build_dir: Path, quiet: bool) -> Path:
    """Run jupyter-book on the staged ``work/source`` and swap the HTML in (or keep the failure)."""
    result = _run_jupyter_book(work, quiet)
    if result.returncode != 0:
        failed = _replace_folder(work, build_dir / "failed")
        detail = (result.stdout or "")[-4000:] + (result.stderr or "")[-4000:] if quiet else ""
        raise BookBuildFailed(
            f"jupyter-book build failed (exit {result.returncode}); see the output above. The "
            f"failed build is in {failed}; the previous book is untouched.{detail}"
        )
    html = _replace_folder(work / "_build" / "html", build_dir / "html")
    shutil.rmtree(build_dir / "failed", ignore_errors=True)  # an older failure no longer describes the book
    return html


def _run_jupyter_book(work: Path, quiet: bool) -> subprocess.CompletedProcess:
    """``jupyter-book build`` of ``work/source`` into ``work/_build``."""
    command = jupyter_book_command() + [
        "build",
        str(work / "source"),
        "--path-output",
        str(work),
        "--all",
        "-W",
        "--keep-going",
    ]
    env = dict(os.environ, PYDEVD_DISABLE_FILE_VALIDATION="1")
    return subprocess.run(command, check=False, capture_output=quiet, text=True, env=env)


def _replace_folder(new: Path, target: Path) -> Path:
    """Move ``new`` to ``target``, replacing what was there: two renames, the old one deleted
    after, so ``target`` is never a mix of both."""
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    if target.exists():
        os.rename(target, old)
    os.rename(new, target)
    shutil.rmtree(old, ignore_errors=True)
    return target
