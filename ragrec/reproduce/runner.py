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
from ragrec.errors import DataError
from ragrec.reproduce.digest import (
    library_digest,
)
from ragrec.reproduce.execute import ensure_kernel, execute, stream_papermill_log
from ragrec.reproduce.lock import run_lock
from ragrec.reproduce.outputs import damage_reason, damaged, reader_reason, snapshot, written
from ragrec.reproduce.readers import read_provenance, unreadable_input
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
from ragrec.results import result_dir, results_base


def _fmt_s(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}m{s:02d}s" if m else f"{s}s"


def _say(message: str) -> None:
    print(message, flush=True)


def _say_model(profile: Profile) -> None:
    m = profile.model
    if m.source not in ("bundled", "tiny"):  # a local folder: say which, and where it runs
        where = m.device or "the default device"
        _say(f"model {m.source} on {where}, exit heads at layers {list(m.head_layers)}")


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
    wait: bool = False,
    specs: Sequence[NotebookSpec] = NOTEBOOKS,
    notebook_dir: Path = NOTEBOOK_DIR,
) -> RunReport:
    """Run the notebooks (see the module docstring); raises :class:`NotebookFailed` at the first
    failing one, :class:`~ragrec.reproduce.lock.RunLocked` when another run holds the profile's
    results folder (``wait``: queue behind it instead).

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
    with run_lock(results_base(results_root) / profile, wait=wait):
        runner = _Runner(ensure_kernel(), library_digest(), force, log_output, progress_bar, report)
        for i, task in enumerate(tasks, 1):
            runner.task(task, f"[{i}/{len(tasks)}] {task.spec.name:<12} {task.profile}/{task.dataset}")
    report.wall_s = time.perf_counter() - started
    _say(f"{len(report.ran)} notebook(s) run, {len(report.skipped)} up to date, in {_fmt_s(report.wall_s)}")
    if missing:
        _say(f"datasets not run (data absent): {', '.join(missing)}")
    return report


@dataclass
class _Runner:
    """Runs one task after another under the run lock: skip it when up to date, else execute it
    and record the outcome in the manifest."""

    kernel: str
    library: str
    force: bool
    log_output: bool
    progress_bar: bool
    report: RunReport

    def task(self, task: Task, label: str) -> None:
        manifest = read_manifest(task.out_dir)
        if not self.force and up_to_date(task, manifest, self.library):
            entry = manifest["notebooks"][task.spec.name]
            kept = f"{str(entry.get('finished'))[:10]} ({_fmt_s(entry.get('wall_s') or 0)})"
            _say(f"{label}  up to date: kept from its run of {kept}")
            self.report.skipped.append((task.spec.name, task.dataset))
            return
        unreadable_input(task)  # a damaged file it reads stops the run here, named, before a kernel starts
        damage = damaged(task.spec.name, manifest, task.out_dir)
        why = f" (its output {damage[0]})" if damage else ""
        _say(f"{label}  running → {task.output}{why}")
        seconds = self.execute(task, task.inputs_digest(manifest, self.library))
        self.report.ran.append((task.spec.name, task.dataset, seconds))
        _say(f"{label}  done in {_fmt_s(seconds)}")

    def execute(self, task: Task, digest: str) -> float:
        when = datetime.now(UTC).isoformat()
        common = {"inputs": digest, "parameters": task.parameters, "started": when}
        before = snapshot(task.out_dir)
        try:
            seconds = execute(
                task, kernel=self.kernel, log_output=self.log_output, progress_bar=self.progress_bar
            )
        except NotebookFailed as exc:
            record(task.out_dir, task.spec.name, {"status": "failed", "error": str(exc), **common})
            raise
        entry = {
            "status": "ok",
            **common,
            "finished": datetime.now(UTC).isoformat(),
            "wall_s": round(seconds, 2),
            "outputs": written(before, task.out_dir, (*task.spec.outputs, task.output.name)),
            **({"artifacts": task.artifact_digests()} if task.spec.artifacts else {}),
        }
        record(task.out_dir, task.spec.name, entry)
        return seconds


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
        state = task_state(task, read_manifest(task.out_dir), library)
        if state == "up to date":
            state = _records_state(task.out_dir) or state
        rows.append((task.spec.name, task.dataset, state))
    return rows


def _records_state(out_dir: Path) -> str | None:
    """``stale: <why>`` when the run's own record ``provenance.json`` is unreadable (it has no
    output hash in runs from before they were recorded), else None."""
    try:
        read_provenance(out_dir)
    except DataError as exc:
        return f"stale: {exc}"
    return None


def task_state(task: Task, manifest: dict, library: str) -> str:
    """One task's state for :func:`status`; a stale one says why when it can (a damaged or
    missing output, changed weights, a damaged input)."""
    entry = manifest.get("notebooks", {}).get(task.spec.name)
    if entry is None:
        return "not run"
    if entry.get("status") == "failed":
        return "failed"
    if up_to_date(task, manifest, library):
        return "up to date"
    damage = damaged(task.spec.name, manifest, task.out_dir)
    if damage:
        return damage_reason(damage, task.profile, task.dataset)
    if weights_changed(task, entry):  # hashed again only to say why
        return "stale: its trained weights are missing or differ from the run's; rerun it"
    absent = [name for name in task.spec.outputs if not (task.out_dir / name).exists()]
    if absent:
        return f"stale: its output {absent[0]} is missing; rerun it"
    for upstream in task.spec.after:
        damage = damaged(upstream, manifest, task.out_dir)
        if damage:
            return reader_reason(upstream, damage)
    return "stale"
