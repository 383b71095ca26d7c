"""Re-executing a profile from empty (``make reproduce FRESH=1``), and saying when nothing ran.

A fresh run executes every notebook of the profile into a results root of its own,
``<results>/.fresh-<profile>-<UTC time>-<random>/<profile>/<dataset>/``, so nothing in
``<results>/<profile>/`` is read or touched while it runs: no digest can skip a notebook, no
checkpoint is reloaded. Only when every notebook of every dataset has succeeded is each
``<results>/<profile>/<dataset>/`` replaced by its fresh counterpart (the old folder is renamed
aside, the fresh one renamed into place, the old one deleted), so a dataset's folder always holds
one run, never a mix. A failed fresh run leaves the old results as they were and keeps its
partial run in the fresh folder for inspection.

The executed notebooks and ``reproduce.json`` keep the fresh folder as their ``out_dir``: it is
where they ran. Digests leave ``out_dir`` out, so the swapped-in results are up to date.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from ragrec.errors import RagrecError
from ragrec.reproduce.lock import held, run_lock
from ragrec.reproduce.runner import RunReport, _fmt_s, _say, run
from ragrec.reproduce.tasks import (
    NOTEBOOK_DIR,
    NOTEBOOKS,
    PROFILE_DATASETS,
    NotebookFailed,
    NotebookSpec,
    check_writable,
    read_manifest,
)
from ragrec.results import result_dir, results_base

FRESH_PREFIX = ".fresh-"


def run_fresh(
    profile: str,
    datasets: Sequence[str] | None = None,
    *,
    seed: int | None = None,
    results_root: str | os.PathLike | None = None,
    data_root: str | os.PathLike | None = None,
    log_output: bool = False,
    progress_bar: bool = True,
    wait: bool = False,
    specs: Sequence[NotebookSpec] = NOTEBOOKS,
    notebook_dir: Path = NOTEBOOK_DIR,
) -> RunReport:
    """Run every notebook of ``profile`` from empty, then swap the results in (module docstring).

    Args:
        profile, datasets, seed, data_root, log_output, progress_bar, specs, notebook_dir: as
            for :func:`~ragrec.reproduce.runner.run`.
        results_root: the results root whose ``<profile>/<dataset>/`` folders are replaced.
            (default: ``$RAGREC_RESULTS``, else ``results``)

    Raises:
        NotebookFailed: a notebook failed; the old results are untouched and the message says
            where the partial fresh run is.
        ConfigError: the results folders it would swap into are not writable (before any work).
        RunLocked: another run holds the profile's results folder.
    """
    run_options = {
        "seed": seed,
        "data_root": data_root,
        "log_output": log_output,
        "progress_bar": progress_bar,
        "specs": specs,
        "notebook_dir": notebook_dir,
    }
    base = results_base(results_root)
    targets = [result_dir(profile, d, base) for d in (datasets or PROFILE_DATASETS[profile])]
    check_writable([base, base / profile, *[t for t in targets if t.exists()]])  # where it will swap
    with run_lock(base / profile, wait=wait):
        fresh = _fresh_folder(base, profile)
        report = _run_into(fresh, base, profile, datasets, run_options)
        for dataset in dict.fromkeys(d for _, d, _ in report.ran):
            swap_in(result_dir(profile, dataset, fresh), result_dir(profile, dataset, base))
            _say(f"{result_dir(profile, dataset, base)}/ now holds the fresh run")
        shutil.rmtree(fresh)
    return report


def _fresh_folder(base: Path, profile: str) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    fresh = Path(tempfile.mkdtemp(prefix=f"{FRESH_PREFIX}{profile}-{stamp}-", dir=base))
    _say(
        f"fresh run: every notebook of profile {profile!r} from empty into {fresh}/; "
        f"{base / profile}/ stays as it is until all of them succeed"
    )
    return fresh


def _run_into(fresh: Path, base: Path, profile: str, datasets, options: dict) -> RunReport:
    try:
        return run(profile, datasets, force=True, results_root=fresh, **options)
    except NotebookFailed as exc:
        raise NotebookFailed(
            f"{exc}\nThe fresh run stopped: {base / profile}/ is untouched; its partial run "
            f"is in {fresh}/ (delete it when done; `make clean` does)."
        ) from None
    except BaseException:
        if not any(fresh.iterdir()):  # stopped before any notebook ran (e.g. no model set)
            fresh.rmdir()
        raise


def leftovers(results_root: str | os.PathLike | None = None) -> list[Path]:
    """Fresh-run folders left in the results root by a run that failed or was killed (those of a
    run in progress, which holds its profile's lock, are not listed)."""
    base = results_base(results_root)
    if not base.is_dir():
        return []
    found = sorted(p for p in base.iterdir() if p.is_dir() and p.name.startswith(FRESH_PREFIX))
    return [p for p in found if not held(base / p.name[len(FRESH_PREFIX) :].split("-", 1)[0])]


def swap_in(fresh: Path, target: Path) -> None:
    """Replace the folder ``target`` by ``fresh``: the old one is renamed aside, ``fresh`` renamed
    into place, and only then the old one deleted (both renames stay on one filesystem)."""
    if not fresh.is_dir():
        raise RagrecError(f"the fresh results {fresh} are missing; nothing was replaced")
    target.parent.mkdir(parents=True, exist_ok=True)
    aside = None
    if target.exists():
        aside = Path(tempfile.mkdtemp(prefix=f".{target.name}.replaced-", dir=target.parent))
        os.replace(target, aside / target.name)
    os.replace(fresh, target)
    if aside is not None:
        shutil.rmtree(aside)


# --------------------------------------------------------------------------------------------
# when every notebook was up to date


def up_to_date_summary(
    report: RunReport, profile: str, results_root: str | os.PathLike | None = None
) -> list[str]:
    """What to tell a reproducer whose run re-executed nothing: whose results they are looking
    at, and the command that re-executes everything, with the time it took last (the notebooks'
    recorded wall times). Empty when something ran or nothing was there."""
    if report.ran or not report.skipped:
        return []
    folders = [result_dir(profile, d, results_root) for d in dict.fromkeys(d for _, d in report.skipped)]
    entries = [e for folder in folders for e in _manifest_entries(folder)]
    finished = max(
        (str(e.get("finished"))[:10] for e in entries if e.get("finished")), default="an earlier run"
    )
    measured = sum(float(e.get("wall_s") or 0) for e in entries if e.get("status") == "ok")
    took = f", {_fmt_s(measured)} of notebooks last time" if measured else ""
    where = ", ".join(f"{f}/" for f in folders)
    return [
        (
            f"All {len(report.skipped)} notebooks are up to date, so none was re-executed: {where} holds the "
            f"results of the run finished {finished}."
        ),
        (
            f"To re-execute every notebook from empty{took}: make reproduce PROFILE={profile} FRESH=1 "
            f"(python -m ragrec.reproduce run --profile {profile} --fresh)"
        ),
    ]


def _manifest_entries(folder: Path) -> list[dict]:
    return list(read_manifest(folder)["notebooks"].values())
