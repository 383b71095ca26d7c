"""The papermill runner behind ``make reproduce`` and ``make notebook``.

For a profile it runs every notebook of :data:`NOTEBOOKS`, in order, for every dataset of the
profile whose data is present (:func:`ragrec.data.dataset_available`), executing
``notebooks/<name>.ipynb`` with papermill into ``results/<profile>/<dataset>/<name>.ipynb``.

Up to date. After a notebook succeeds, ``reproduce.json`` in its results directory records a
digest of its inputs: the notebook source, its parameters, the ``ragrec`` library source (every
module but the runner's own), and the files it reads — the declared outputs of the notebooks it runs
after, and its own declared extra inputs. A later run skips a notebook whose digest is unchanged
and whose outputs all exist; anything else reruns (``--force`` reruns regardless). Digests use
file *contents*, not modification times, so results committed to git stay up to date in a fresh
clone.

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

import hashlib
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ragrec.config import Profile, get_profile, run_profile
from ragrec.data import DATASETS, dataset_available
from ragrec.errors import ConfigError, RagrecError
from ragrec.results import result_dir, write_json

PACKAGE_DIR = Path(__file__).resolve().parent.parent
PROJECT_DIR = PACKAGE_DIR.parent
NOTEBOOK_DIR = PROJECT_DIR / "notebooks"
MANIFEST = "reproduce.json"
KERNEL_NAME = "ragrec"

PAPER_DATASETS = ("bookcrossing", "amazon-beauty", "amazon-video-games")
PROFILE_DATASETS: dict[str, tuple[str, ...]] = {
    "smoke": ("synthetic",),
    "cpu": ("ml-100k", *PAPER_DATASETS),
    "gpu": ("ml-100k", *PAPER_DATASETS),
}
"""The datasets ``make reproduce`` tries for each profile; those whose files are absent are
listed as not run, with what they need."""


@dataclass(frozen=True)
class NotebookSpec:
    """One parameterized notebook.

    Attributes:
        name: the file ``notebooks/<name>.ipynb`` and the executed ``<name>.ipynb`` in results.
        title: what the book calls its chapter.
        outputs: files the notebook must leave in its results directory.
        after: notebooks whose outputs it reads (they run first).
        reads: further files of the results directory it reads when present (part of its
            inputs' digest; e.g. tables another step produces).
    """

    name: str
    title: str
    outputs: tuple[str, ...] = ()
    after: tuple[str, ...] = ()
    reads: tuple[str, ...] = ()


NOTEBOOKS: tuple[NotebookSpec, ...] = (
    NotebookSpec("data", "Data", outputs=("data.csv",)),
    NotebookSpec("recommender", "The LLM recommender: per-head AUC", outputs=("heads.csv", "training.csv", "predictions_gcn.csv")),
    NotebookSpec("retrieval", "GCN-Retriever vs LLM retriever", outputs=("retrieval.csv",), after=("recommender",)),
    NotebookSpec("ablations", "Ablations: prompt context and depth-wise LR decay", outputs=("ablations.csv",), after=("recommender",)),
    NotebookSpec("early_exit", "Early exit: accuracy vs requests per second",
                 outputs=("early_exit.csv", "threshold_sweep.csv", "early_exit_predictions.csv"), after=("recommender",)),
    NotebookSpec("baselines", "Baselines: where the LLM stands", outputs=("baselines.csv", "predictions_baselines.csv"),
                 after=("recommender",)),
    NotebookSpec("claims", "Claims check", outputs=("claims.csv",),
                 after=("recommender", "retrieval", "ablations", "early_exit", "baselines")),
    NotebookSpec("run", "Run record", outputs=("run_times.csv",), reads=(MANIFEST, "provenance.json")),
)
SPECS: dict[str, NotebookSpec] = {s.name: s for s in NOTEBOOKS}


class NotebookFailed(RagrecError):
    """A notebook raised while executing; names the notebook, the cell and the error."""


def check_order(specs: Sequence[NotebookSpec]) -> None:
    """Every notebook must come after the notebooks it reads."""
    seen: set[str] = set()
    for spec in specs:
        late = [a for a in spec.after if a not in seen]
        if late:
            raise ConfigError(f"notebook {spec.name!r} reads {late}, which do not run before it")
        seen.add(spec.name)


def check_profile(name: str) -> str:
    get_profile(name, resolve=False)  # ConfigError listing the profiles
    return name


def check_notebooks(names: Sequence[str] | None, specs: Sequence[NotebookSpec] = NOTEBOOKS) -> list[NotebookSpec]:
    """The specs for ``names`` in run order (all notebooks when None)."""
    if not names:
        return list(specs)
    known = [s.name for s in specs]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"unknown notebook(s) {unknown}; choose from {', '.join(known)}")
    return [s for s in specs if s.name in names]


def check_datasets(names: Sequence[str] | None, profile: str) -> list[str]:
    """``names`` (validated), or the profile's datasets when None."""
    if not names:
        return list(PROFILE_DATASETS[profile])
    unknown = [n for n in names if n not in DATASETS]
    if unknown:
        raise ConfigError(f"unknown dataset(s) {unknown}; choose from {', '.join(DATASETS)}")
    return list(dict.fromkeys(names))


# --------------------------------------------------------------------------------------------
# digests and the manifest


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "absent"


RUNNER_MODULES = ("reproduce/runner.py", "reproduce/fresh.py", "reproduce/book.py", "reproduce/__main__.py")
"""Modules that run notebooks or build the book: they do not change what a notebook computes."""


def library_digest() -> str:
    """Digest of the ragrec source every notebook runs on (:data:`RUNNER_MODULES` excluded)."""
    h = hashlib.sha256()
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        if path.relative_to(PACKAGE_DIR).as_posix() in RUNNER_MODULES:
            continue
        h.update(str(path.relative_to(PACKAGE_DIR)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


@dataclass(frozen=True)
class Task:
    """One notebook for one profile and dataset."""

    spec: NotebookSpec
    profile: str
    dataset: str
    seed: int
    out_dir: Path
    source: Path
    upstream: tuple[NotebookSpec, ...] = ()
    """The specs of ``spec.after`` (their outputs are this notebook's inputs)."""

    @property
    def output(self) -> Path:
        return self.out_dir / f"{self.spec.name}.ipynb"

    @property
    def parameters(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "profile": self.profile, "seed": self.seed, "out_dir": str(self.out_dir)}

    def inputs_digest(self, manifest: dict[str, Any], library: str) -> str:
        """Digest of everything the notebook's results depend on (see the module docstring)."""
        h = hashlib.sha256()
        h.update(_file_digest(self.source).encode())
        h.update(json.dumps({k: v for k, v in self.parameters.items() if k != "out_dir"}, sort_keys=True).encode())
        h.update(library.encode())
        read = [f for up in self.upstream for f in up.outputs] + list(self.spec.reads)
        for name in read:
            if name == MANIFEST:  # the run record reads the other notebooks' entries, not its own
                others = {k: v for k, v in manifest.get("notebooks", {}).items() if k != self.spec.name}
                h.update(json.dumps(others, sort_keys=True).encode())
            else:
                h.update(f"{name}:{_file_digest(self.out_dir / name)}".encode())
        for up in self.spec.after:  # an upstream rerun changes what we read even without outputs
            h.update(str(manifest.get("notebooks", {}).get(up, {}).get("inputs")).encode())
        return h.hexdigest()


def read_manifest(out_dir: Path) -> dict[str, Any]:
    path = out_dir / MANIFEST
    return json.loads(path.read_text()) if path.exists() else {"notebooks": {}}


def _record(out_dir: Path, name: str, entry: dict[str, Any]) -> None:
    manifest = read_manifest(out_dir)
    manifest.setdefault("notebooks", {})[name] = entry
    write_json(manifest, out_dir / MANIFEST)


def up_to_date(task: Task, manifest: dict[str, Any], library: str) -> bool:
    """Whether the executed notebook and its outputs exist and its inputs are unchanged."""
    entry = manifest.get("notebooks", {}).get(task.spec.name)
    if not entry or entry.get("status") != "ok" or not task.output.exists():
        return False
    if any(not (task.out_dir / f).exists() for f in task.spec.outputs):
        return False
    return entry.get("inputs") == task.inputs_digest(manifest, library)


# --------------------------------------------------------------------------------------------
# execution


def ensure_kernel() -> str:
    """Install the :data:`KERNEL_NAME` kernel spec for this interpreter into ``sys.prefix``
    unless one pointing at this interpreter is already there; returns its name."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec(KERNEL_NAME)
        if spec.argv and Path(spec.argv[0]) == Path(sys.executable):
            return KERNEL_NAME
    except NoSuchKernel:
        pass
    from ipykernel.kernelspec import install

    install(kernel_name=KERNEL_NAME, display_name=f"Python (ragrec, {Path(sys.prefix).name})", prefix=sys.prefix)
    return KERNEL_NAME


_PAPERMILL_TAGS = {"injected-parameters", "papermill-error-cell-tag"}


def _failing_cell(path: Path, exec_count: int | None) -> tuple[int | None, str]:
    """(index in the *source* notebook, first line) of the cell that ran as ``In [exec_count]``
    in a failed papermill output (papermill's injected and error cells do not count)."""
    try:
        import nbformat

        index = 0
        for cell in nbformat.read(path, as_version=4).cells:
            if _PAPERMILL_TAGS & set(cell.get("metadata", {}).get("tags", [])):
                continue
            if cell.cell_type == "code" and cell.get("execution_count") == exec_count:
                lines = cell.source.strip().splitlines()
                return index, lines[0][:100] if lines else ""
            index += 1
    except Exception:  # the summary is a courtesy; never mask the real failure
        pass
    return None, ""


def execute(task: Task, *, kernel: str, log_output: bool = False, progress_bar: bool = True) -> float:
    """Run one notebook with papermill; returns its wall seconds.

    Raises:
        NotebookFailed: the notebook raised; the partial execution is kept as
            ``<name>.failed.ipynb`` and the previous ``<name>.ipynb`` (if any) is untouched.
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    task.out_dir.mkdir(parents=True, exist_ok=True)
    running = task.out_dir / f".{task.spec.name}.running.ipynb"
    failed = task.out_dir / f"{task.spec.name}.failed.ipynb"
    started = time.perf_counter()
    try:
        papermill.execute_notebook(
            str(task.source), str(running), parameters=task.parameters, kernel_name=kernel,
            progress_bar=progress_bar, log_output=log_output, cwd=str(Path.cwd()),
        )
    except PapermillExecutionError as exc:
        os.replace(running, failed)
        index, first_line = _failing_cell(failed, exc.exec_count)
        where = f"cell {index} of {task.source.name}" if index is not None else f"cell In [{exc.exec_count}]"
        raise NotebookFailed(
            f"notebook {task.spec.name!r} ({task.profile}/{task.dataset}) failed in {where} "
            f"(In [{exc.exec_count}]{': ' + first_line if first_line else ''}):\n"
            f"  {exc.ename}: {exc.evalue}\n"
            f"The partial run is {failed}; earlier results in {task.out_dir} are intact. "
            "Fix the cause and rerun: finished notebooks are skipped."
        ) from None
    os.replace(running, task.output)
    if failed.exists():
        failed.unlink()
    return time.perf_counter() - started


def _stream_papermill_log() -> None:
    """Show papermill's cell output log on stderr, and slow the kernels' tqdm bars down to one
    line every 10 s so a long training step reads as a log, not a flood."""
    import logging

    log = logging.getLogger("papermill")
    if not any(getattr(h, "_ragrec", False) for h in log.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("    %(message)s"))
        handler._ragrec = True  # type: ignore[attr-defined]
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
    os.environ.setdefault("TQDM_MININTERVAL", "10")


def _fmt_s(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}m{s:02d}s" if m else f"{s}s"


def _say(message: str) -> None:
    print(message, flush=True)


def _say_model(profile: Profile) -> None:
    m = profile.model
    if m.source not in ("bundled", "tiny"):  # a local folder: say which, and where it runs
        _say(f"model {m.source} on {m.device or 'the default device'}, exit heads at layers {list(m.head_layers)}")


@dataclass
class RunReport:
    """What a run did: per task ``ran`` / ``skipped``; datasets not run with their reasons."""

    ran: list[tuple[str, str, float]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    missing: dict[str, str] = field(default_factory=dict)
    wall_s: float = 0.0


def plan(profile: str, datasets: Sequence[str] | None = None, notebooks: Sequence[str] | None = None,
         *, seed: int | None = None, results_root: str | os.PathLike | None = None,
         data_root: str | os.PathLike | None = None, specs: Sequence[NotebookSpec] = NOTEBOOKS,
         notebook_dir: Path = NOTEBOOK_DIR) -> tuple[list[Task], dict[str, str]]:
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
            tasks.append(Task(spec, profile, dataset, prof.seed if seed is None else seed, out_dir,
                              Path(notebook_dir) / f"{spec.name}.ipynb", tuple(by_name[a] for a in spec.after)))
    return tasks, missing


def run(profile: str = "cpu", datasets: Sequence[str] | None = None, notebooks: Sequence[str] | None = None, *,
        force: bool = False, seed: int | None = None, results_root: str | os.PathLike | None = None,
        data_root: str | os.PathLike | None = None, log_output: bool = False, progress_bar: bool = True,
        specs: Sequence[NotebookSpec] = NOTEBOOKS, notebook_dir: Path = NOTEBOOK_DIR) -> RunReport:
    """Run the notebooks (see the module docstring); raises :class:`NotebookFailed` at the first
    failing one.

    Args:
        log_output: stream every cell's output (library progress bars included) to the terminal.
        progress_bar: papermill's per-notebook cell progress bar.
    """
    started = time.perf_counter()
    _say_model(run_profile(profile))  # the gpu profile fails here without a usable model
    tasks, missing = plan(profile, datasets, notebooks, seed=seed, results_root=results_root, data_root=data_root,
                          specs=specs, notebook_dir=notebook_dir)
    if log_output:
        _stream_papermill_log()
    report = RunReport(missing=missing)
    for dataset, message in missing.items():
        _say(f"· {dataset}: not run — its data is absent.\n  {message.replace(chr(10), chr(10) + '  ')}")
    if not tasks:
        _say("nothing to run: no selected dataset is present")
        return report
    kernel = ensure_kernel()
    library = library_digest()
    for i, task in enumerate(tasks, 1):
        label = f"[{i}/{len(tasks)}] {task.spec.name:<12} {task.profile}/{task.dataset}"
        manifest = read_manifest(task.out_dir)
        if not force and up_to_date(task, manifest, library):
            entry = manifest["notebooks"][task.spec.name]
            _say(f"{label}  up to date: kept from its run of {str(entry.get('finished'))[:10]} ({_fmt_s(entry.get('wall_s') or 0)})")
            report.skipped.append((task.spec.name, task.dataset))
            continue
        digest = task.inputs_digest(manifest, library)
        _say(f"{label}  running → {task.output}")
        when = datetime.now(timezone.utc).isoformat()
        try:
            seconds = execute(task, kernel=kernel, log_output=log_output, progress_bar=progress_bar)
        except NotebookFailed as exc:
            _record(task.out_dir, task.spec.name, {"status": "failed", "started": when, "error": str(exc).splitlines()[0],
                                                    "inputs": digest, "parameters": task.parameters})
            raise
        _record(task.out_dir, task.spec.name, {
            "status": "ok", "inputs": digest, "parameters": task.parameters, "started": when,
            "finished": datetime.now(timezone.utc).isoformat(), "wall_s": round(seconds, 2),
        })
        report.ran.append((task.spec.name, task.dataset, seconds))
        _say(f"{label}  done in {_fmt_s(seconds)}")
    report.wall_s = time.perf_counter() - started
    _say(f"{len(report.ran)} notebook(s) run, {len(report.skipped)} up to date, in {_fmt_s(report.wall_s)}")
    if missing:
        _say(f"datasets not run (data absent): {', '.join(missing)}")
    return report


def status(profile: str, *, results_root=None, data_root=None, specs: Sequence[NotebookSpec] = NOTEBOOKS,
           notebook_dir: Path = NOTEBOOK_DIR) -> list[tuple[str, str, str]]:
    """(notebook, dataset, state) for every task of the profile: ``up to date``, ``stale``,
    ``failed``, ``not run`` or ``data absent``."""
    tasks, missing = plan(profile, results_root=results_root, data_root=data_root, specs=specs, notebook_dir=notebook_dir)
    library = library_digest()
    rows = [("*", d, "data absent") for d in missing]
    for task in tasks:
        manifest = read_manifest(task.out_dir)
        entry = manifest.get("notebooks", {}).get(task.spec.name)
        if entry is None:
            state = "not run"
        elif entry.get("status") == "failed":
            state = "failed"
        else:
            state = "up to date" if up_to_date(task, manifest, library) else "stale"
        rows.append((task.spec.name, task.dataset, state))
    return rows
