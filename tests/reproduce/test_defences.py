"""Runs that defend themselves: one run per results folder, a damaged output blamed on its
writer and repaired by rerunning it, unreadable records named, and refusals before any work
(flags a profile ignores, a fresh run that could not swap in, leftovers of killed fresh runs).

The run tests execute two tiny notebooks (a kernel start each, a few seconds); the lock test
starts real processes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from ragrec.errors import ConfigError, DataError
from ragrec.reproduce.__main__ import main
from ragrec.reproduce.fresh import run_fresh
from ragrec.reproduce.lock import RunLocked, run_lock
from ragrec.reproduce.runner import run, status
from ragrec.reproduce.tasks import MANIFEST, PROJECT_DIR, NotebookSpec
from tests.reproduce.tiny_notebooks import write_notebook

SPECS = (
    NotebookSpec("first", "First", outputs=("first.csv",)),
    NotebookSpec("second", "Second", outputs=("second.csv",), after=("first",)),
)
ENV = {**os.environ, "PYTHONPATH": str(PROJECT_DIR)}


@pytest.fixture
def project(tmp_path):
    """``first`` writes first.csv (a, b columns) and counts its runs; ``second`` copies it."""
    nbs = tmp_path / "notebooks"
    nbs.mkdir()
    write_notebook(
        nbs / "first.ipynb",
        (
            '(out / "first.csv").write_text("a,b\\n1,2\\n3,4\\n")\n'
            'with open(out / "runs.txt", "a") as f:\n    f.write("r")'
        ),
    )
    write_notebook(nbs / "second.ipynb", '(out / "second.csv").write_text((out / "first.csv").read_text())')
    return nbs, tmp_path / "results"


def _kwargs(project):
    nbs, results = project
    return {"specs": SPECS, "notebook_dir": nbs, "results_root": results, "progress_bar": False}


def _states(project):
    nbs, results = project
    return {n: s for n, _, s in status("smoke", results_root=results, specs=SPECS, notebook_dir=nbs)}


# --------------------------------------------------------------------------------------------
# one run at a time

HOLD = (
    "import sys, time\nfrom pathlib import Path\nfrom ragrec.reproduce.lock import run_lock\n"
    "with run_lock(Path(sys.argv[1])):\n    print('held', flush=True)\n    time.sleep(120)\n"
)


def test_a_second_run_on_the_same_results_folder_exits_within_seconds_naming_the_holder(tmp_path):
    results = tmp_path / "results"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(results / "smoke")], stdout=subprocess.PIPE, text=True, env=ENV
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        second = subprocess.run(
            [
                sys.executable,
                "-m",
                "ragrec.reproduce",
                "run",
                "--profile",
                "smoke",
                "--results",
                str(results),
            ],
            capture_output=True,
            text=True,
            env=ENV,
            cwd=PROJECT_DIR,
            timeout=120,
        )
        took = time.monotonic() - started
        assert second.returncode == 2 and took < 30, (second.returncode, took, second.stderr)
        err = second.stderr.strip()
        assert len(err.splitlines()) == 1, err
        assert f"pid {holder.pid}" in err and "started 20" in err and "command `python -c" in err, err
        assert "--wait" in err and f"kill {holder.pid}" in err, err
        assert not list(results.rglob("*.ipynb")), "the second run executed nothing"
        looked = subprocess.run(
            [
                sys.executable,
                "-m",
                "ragrec.reproduce",
                "status",
                "--profile",
                "smoke",
                "--results",
                str(results),
            ],
            capture_output=True,
            text=True,
            env=ENV,
            cwd=PROJECT_DIR,
            timeout=120,
        )
        assert looked.returncode == 0 and f"a run is in progress (pid {holder.pid}" in looked.stdout
    finally:
        holder.kill()
        holder.wait()
    with run_lock(results / "smoke"):  # the kernel released the killed holder's lock
        pass


def test_a_run_in_the_same_process_tree_is_refused_while_the_lock_is_held(project):
    with run_lock(project[1] / "smoke"):
        child = subprocess.run(
            [sys.executable, "-c", HOLD, str(project[1] / "smoke")], capture_output=True, text=True, env=ENV
        )
    assert child.returncode != 0 and "RunLocked" in child.stderr and f"pid {os.getpid()}" in child.stderr


# --------------------------------------------------------------------------------------------
# a damaged output blames its writer, and a run repairs it


def _truncate(path):
    path.write_bytes(path.read_bytes()[:-3])


def _drop_column(path):
    path.write_text("a\n1\n3\n")


def _delete(path):
    path.unlink()


@pytest.mark.parametrize(
    "damage", [_truncate, _drop_column, _delete], ids=["truncated", "column deleted", "deleted"]
)
def test_a_damaged_output_makes_its_writer_stale_naming_the_file_and_a_run_reruns_the_writer(project, damage):
    run("smoke", **_kwargs(project))
    out = project[1] / "smoke" / "synthetic"
    damage(out / "first.csv")
    states = _states(project)
    assert (
        states["first"].startswith("stale: first.csv ")
        and " first wrote at " in states["first"]
        or ("is missing, written by first" in states["first"])
    ), states
    assert "rerun first" in states["first"], states
    assert states["second"].startswith("stale"), states
    rerun = run("smoke", **_kwargs(project))
    assert [r[0] for r in rerun.ran][:1] == ["first"], "the writer reruns first"
    assert (out / "first.csv").read_text() == "a,b\n1,2\n3,4\n"
    assert set(_states(project).values()) == {"up to date"}


def test_a_damaged_output_that_only_a_reader_reads_names_the_writer_for_the_reader(project):
    run("smoke", **_kwargs(project))
    (project[1] / "smoke" / "synthetic" / "first.csv").write_text("garbage\n")
    assert _states(project)["second"].startswith("stale") and "first" in _states(project)["second"]


def test_a_run_from_before_output_hashes_reads_as_it_did(project):
    run("smoke", **_kwargs(project))
    out = project[1] / "smoke" / "synthetic"
    manifest = json.loads((out / MANIFEST).read_text())
    for entry in manifest["notebooks"].values():
        del entry["outputs"]
    (out / MANIFEST).write_text(json.dumps(manifest))
    assert set(_states(project).values()) == {"up to date"}


def test_the_committed_cpu_manifest_has_no_output_hashes_so_nothing_there_is_judged_by_them():
    manifest = json.loads((PROJECT_DIR / "results" / "cpu" / "ml-100k" / MANIFEST).read_text())
    assert all("outputs" not in e for e in manifest["notebooks"].values())


# --------------------------------------------------------------------------------------------
# unreadable records


def test_garbage_in_provenance_json_makes_status_stale_and_stops_a_run_before_a_kernel_starts(
    project, monkeypatch
):
    run("smoke", **_kwargs(project))
    out = project[1] / "smoke" / "synthetic"
    (out / "provenance.json").write_text("{not json")
    states = _states(project)
    assert all("provenance.json is not valid JSON" in s and "FRESH=1" in s for s in states.values()), states
    monkeypatch.setattr("ragrec.reproduce.runner.ensure_kernel", lambda: "python3")
    with pytest.raises(
        DataError, match=r"provenance.json is not valid JSON .*make reproduce PROFILE=smoke FRESH=1"
    ):
        run("smoke", force=True, **_kwargs(project))
    assert (out / "runs.txt").read_text() == "r", "no notebook ran"


def test_garbage_in_reproduce_json_is_one_line_naming_it(project, capsys):
    run("smoke", **_kwargs(project))
    (project[1] / "smoke" / "synthetic" / MANIFEST).write_bytes(b"\x00\x01garbage")
    capsys.readouterr()  # what the run printed (an earlier test's log handler may add to it)
    assert main(["status", "--profile", "smoke", "--results", str(project[1])]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "reproduce.json is not valid JSON" in err and "FRESH=1" in err, err


def test_a_zero_byte_checkpoint_stops_the_run_naming_it_before_a_kernel_starts(project):
    nbs, results = project
    specs = (NotebookSpec("first", "First", outputs=("first.csv",), artifacts=("checkpoints/*/final/*",)),)
    weights = results / "smoke" / "synthetic" / "checkpoints" / "model" / "final" / "heads.safetensors"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"")
    with pytest.raises(DataError) as error:
        run("smoke", specs=specs, notebook_dir=nbs, results_root=results, progress_bar=False)
    message = str(error.value)
    assert str(weights) in message and "too short for a safetensors file (0 bytes)" in message
    assert f"delete {weights.parent}/" in message and "\n" not in message


# --------------------------------------------------------------------------------------------
# refusals before any work


@pytest.mark.parametrize(
    "flags", [["--device", "cuda"], ["--model", "/models/vicuna"], ["--model", "/m", "--device", "cpu"]]
)
def test_flags_the_profile_ignores_are_refused(tmp_path, capsys, flags):
    assert main(["run", "--profile", "smoke", "--results", str(tmp_path), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "only the gpu profile takes a model and device" in err, err
    assert flags[0] in err and "--profile gpu" in err
    assert not list(tmp_path.rglob("*.ipynb"))


def test_a_fresh_run_that_could_not_swap_in_is_refused_before_any_notebook(project, monkeypatch):
    nbs, results = project
    target = results / "smoke"
    target.mkdir(parents=True)
    real = __import__("tempfile").mkstemp

    def refuse_in_target(*args, dir=None, **kwargs):
        if dir is not None and os.path.samefile(dir, target):
            raise PermissionError(13, "Permission denied")
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr("ragrec.reproduce.tasks.tempfile.mkstemp", refuse_in_target)
    monkeypatch.setattr("ragrec.reproduce.runner.ensure_kernel", lambda: pytest.fail("a kernel started"))
    with pytest.raises(ConfigError, match=r"results folder .*smoke is not writable \(Permission denied\)"):
        run_fresh("smoke", **_kwargs(project))
    assert not [p for p in results.iterdir() if p.name.startswith(".fresh-")], "no fresh folder was made"


def test_status_lists_the_folders_killed_fresh_runs_left_with_the_make_clean_hint(tmp_path, capsys):
    left = tmp_path / ".fresh-smoke-20261201T000000Z-abc123"
    (left / "smoke" / "synthetic").mkdir(parents=True)
    assert main(["status", "--profile", "smoke", "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"left behind by a failed or killed FRESH=1 run: {left}/" in out and "make clean" in out


def test_a_second_run_in_process_is_refused_while_a_run_holds_the_folder(project):
    with run_lock(project[1] / "smoke"):
        with pytest.raises(RunLocked, match=rf"pid {os.getpid()}"):
            run("smoke", **_kwargs(project))
