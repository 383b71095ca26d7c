"""The papermill runner behind ``make reproduce`` and ``make notebook``.

For a profile it runs every notebook of :data:`NOTEBOOKS`, in order, for every dataset of the
profile whose data is present (:func:`ragrec.data.dataset_available`), executing
``notebooks/<name>.ipynb`` with papermill into ``results/<profile>/<dataset>/<name>.ipynb``.

Up to date. After a notebook succeeds, ``reproduce.json`` in its results directory records a
digest of its inputs: the notebook source, its parameters, the ``ragrec`` library's code and the
raw files its dataset's loader reads (:mod:`ragrec.reproduce.digest`; comments, docstrings and
formatting do not count), and the files it reads — the declared outputs of the notebooks it runs
after, and its own declared extra inputs. A later run skips a notebook whose digest is unchanged
and whose outputs all exist; anything else reruns (``--force`` reruns regardless).

Selection. A dataset named with ``--dataset`` whose files are absent is an error; without it,
absent datasets of the profile are listed and skipped. An unwritable results folder fails first.

Failure and interruption. A notebook executes into ``.<name>.running.ipynb`` and is renamed into
place only on success; nothing of an earlier notebook is touched. A failing notebook is kept as
``<name>.failed.ipynb``, the run stops with a :class:`NotebookFailed` naming the notebook, the cell
and the error, and a rerun resumes: finished notebooks are skipped, the failed one starts again
(library steps resume from their own checkpoints).

Kernel. Notebooks run on a kernel spec named :data:`KERNEL_NAME` installed into this interpreter's
prefix (``--sys-prefix``) on first use, so the kernel is always this environment's Python,
whatever other ``python3`` kernels a user has.

Command line (the Makefile's entry point)::

    python -m ragrec.reproduce run  [--profile cpu] [--dataset D]... [--notebook N]... [--force | --fresh]
        [--model DIR] [--device cpu]
    python -m ragrec.reproduce book [--profile cpu]
    python -m ragrec.reproduce status [--profile cpu]
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from ragrec.config import Profile, get_profile, run_profile
from ragrec.data import dataset_available
from ragrec.reproduce.digest import (
    library_digest,
)
from ragrec.reproduce.execute import ensure_kernel, execute, stream_papermill_log
from ragrec.reproduce.tasks import (
    NOTEBOOK_DIR,
    NOTEBOOKS,
    NotebookFailed,
    NotebookSpec,
    Task,
    check_datasets,
    check_notebooks,
    check_order,
    check_profile,
    check_writable,
    read_manifest,
    record,
    require_present,
    up_to_date,
    weights_changed,
)
from ragrec.results import result_dir


def _fmt_s(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}m{s:02d}s" if m else f"{s}s"


def _say(message: str) -> None:
    print(message, flush=True)


def _say_model(profile: Profile) -> None:
    m = profile.model
    if m.source not in ("bundled", "tiny"):  # a local folder: say which, and where it runs
        _say(
            f"model {m.source} on {m.device or 'the default device'}, exit heads at layers {list(m.head_layers)}"
        )


@dataclass
class RunReport:
    """What a run did: per task ``ran`` / ``skipped``; datasets not run with their reasons."""

    ran: list[tuple[str, str, float]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    missing: dict[str, str] = field(default_factory=dict)
    wall_s: float = 0.0


def plan(
    profile: str,
    datasets: Sequence[str] | None = None,
    notebooks: Sequence[str] | None = None,
    *,
    seed: int | None = None,
    results_root: str | os.PathLike | None = None,
    data_root: str | os.PathLike | None = None,
    specs: Sequence[NotebookSpec] = NOTEBOOKS,
    notebook_dir: Path = NOTEBOOK_DIR,
) -> tuple[list[Task], dict[str, str]]:
    """The tasks to consider, in run order, and the datasets left out with the reason.

    ``specs`` and ``notebook_dir`` default to the project's notebooks (tests pass their own)."""
    check_profile(profile)
    check_order(specs)
    by_name = {s.name: s for s in specs}
    chosen_specs = check_notebooks(notebooks, specs)
    chosen = check_datasets(datasets, profile)
    prof = get_profile(profile, resolve=False)  # the seed only: no model needed to plan
    tasks, missing = [], {}
    for dataset in chosen:
        present, message = dataset_available(dataset, data_root=data_root)
        if not present:
            missing[dataset] = message
            continue
        out_dir = result_dir(profile, dataset, results_root)
        for spec in chosen_specs:
            tasks.append(
                Task(
                    spec,
                    profile,
                    dataset,
                    prof.seed if seed is None else seed,
                    out_dir,
                    Path(notebook_dir) / f"{spec.name}.ipynb",
                    tuple(by_name[a] for a in spec.after),
                    data_root=None if data_root is None else Path(data_root),
                )
            )
    require_present(datasets, missing)
    return tasks, missing


def run(
    profile: str = "cpu",
    datasets: Sequence[str] | None = None,
    notebooks: Sequence[str] | None = None,
    *,
    force: bool = False,
    seed: int | None = None,
    results_root: str | os.PathLike | None = None,
    data_root: str | os.PathLike | None = None,
    log_output: bool = False,
    progress_bar: bool = True,
    specs: Sequence[NotebookSpec] = NOTEBOOKS,
    notebook_dir: Path = NOTEBOOK_DIR,
) -> RunReport:
    """Run the notebooks (see the module docstring); raises :class:`NotebookFailed` at the first
    failing one.

    Args:
        log_output: stream every cell's output (library progress bars included) to the terminal.
        progress_bar: papermill's per-notebook cell progress bar.
    """
    started = time.perf_counter()
    _say_model(run_profile(profile))  # the gpu profile fails here without a usable model
    tasks, missing = plan(
        profile,
        datasets,
        notebooks,
        seed=seed,
        results_root=results_root,
        data_root=data_root,
        specs=specs,
        notebook_dir=notebook_dir,
    )
    if log_output:
        stream_papermill_log()
    report = RunReport(missing=missing)
    for dataset, message in missing.items():
        _say(f"· {dataset}: not run — its data is absent.\n  {message.replace(chr(10), chr(10) + '  ')}")
    if not tasks:
        _say("nothing to run: no selected dataset is present")
        return report
    check_writable(sorted({task.out_dir for task in tasks}))
    kernel = ensure_kernel()
    library = library_digest()
    for i, task in enumerate(tasks, 1):
        label = f"[{i}/{len(tasks)}] {task.spec.name:<12} {task.profile}/{task.dataset}"
        manifest = read_manifest(task.out_dir)
        if not force and up_to_date(task, manifest, library):
            entry = manifest["notebooks"][task.spec.name]
            _say(
                f"{label}  up to date: kept from its run of {str(entry.get('finished'))[:10]} ({_fmt_s(entry.get('wall_s') or 0)})"
            )
            report.skipped.append((task.spec.name, task.dataset))
            continue
        digest = task.inputs_digest(manifest, library)
        _say(f"{label}  running → {task.output}")
        when = datetime.now(UTC).isoformat()
        try:
            seconds = execute(task, kernel=kernel, log_output=log_output, progress_bar=progress_bar)
        except NotebookFailed as exc:
            record(
                task.out_dir,
                task.spec.name,
                {
                    "status": "failed",
                    "started": when,
                    "error": str(exc),
                    "inputs": digest,
                    "parameters": task.parameters,
                },
            )
            raise
        record(
            task.out_dir,
            task.spec.name,
            {
                "status": "ok",
                "inputs": digest,
                "parameters": task.parameters,
                "started": when,
                "finished": datetime.now(UTC).isoformat(),
                "wall_s": round(seconds, 2),
                **({"artifacts": task.artifact_digests()} if task.spec.artifacts else {}),
            },
        )
        report.ran.append((task.spec.name, task.dataset, seconds))
        _say(f"{label}  done in {_fmt_s(seconds)}")
    report.wall_s = time.perf_counter() - started
    _say(f"{len(report.ran)} notebook(s) run, {len(report.skipped)} up to date, in {_fmt_s(report.wall_s)}")
    if missing:
        _say(f"datasets not run (data absent): {', '.join(missing)}")
    return report


def status(
    profile: str,
    *,
    results_root=None,
    data_root=None,
    specs: Sequence[NotebookSpec] = NOTEBOOKS,
    notebook_dir: Path = NOTEBOOK_DIR,
) -> list[tuple[str, str, str]]:
    """(notebook, dataset, state) for every task of the profile: ``up to date``, ``stale``,
    ``failed``, ``not run`` or ``data absent``."""
    tasks, missing = plan(
        profile, results_root=results_root, data_root=data_root, specs=specs, notebook_dir=notebook_dir
    )
    library = library_digest()
    rows = [("*", d, "data absent") for d in missing]
    for task in tasks:
        manifest = read_manifest(task.out_dir)
        entry = manifest.get("notebooks", {}).get(task.spec.name)
        if entry is None:
            state = "not run"
        elif entry.get("status") == "failed":
            state = "failed"
        elif up_to_date(task, manifest, library):
            state = "up to date"
        elif weights_changed(task, entry):  # hashed again only to say why
            state = "stale: its trained weights are missing or differ from the run's; rerun it"
        else:
            state = "stale"
        rows.append((task.spec.name, task.dataset, state))
    return rows
