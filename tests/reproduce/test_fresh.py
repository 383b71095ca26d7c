"""``make reproduce`` tells the truth: a run that re-executed nothing says so and how to
re-execute, and a fresh run replaces a profile's results only once every notebook succeeded.

The run tests execute two tiny notebooks written here (a kernel start each, a few seconds).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ragrec.config import MODEL_ENV
from ragrec.errors import RagrecError
from ragrec.reproduce.__main__ import main
from ragrec.reproduce.fresh import run_fresh, swap_in, up_to_date_summary
from ragrec.reproduce.runner import RunReport, run, status
from ragrec.reproduce.tasks import MANIFEST, NotebookFailed, NotebookSpec
from tests.reproduce.tiny_notebooks import write_notebook

SPECS = (
    NotebookSpec("first", "First", outputs=("first.csv",)),
    NotebookSpec("second", "Second", outputs=("second.csv",), after=("first",)),
)


@pytest.fixture
def project(tmp_path):
    """``first`` writes first.csv and appends to runs.txt (so a rerun into the same folder
    shows); ``second`` copies first.csv and raises while a file ``boom`` lies beside them."""
    nbs = tmp_path / "notebooks"
    nbs.mkdir()
    write_notebook(
        nbs / "first.ipynb",
        (
            '(out / "first.csv").write_text("a\\n1\\n")\n'
            'with open(out / "runs.txt", "a") as f:\n    f.write("run\\n")'
        ),
    )
    write_notebook(
        nbs / "second.ipynb",
        (
            f'if Path({str(nbs / "boom")!r}).exists():\n    raise RuntimeError("planted failure")\n'
            '(out / "second.csv").write_text((out / "first.csv").read_text())'
        ),
    )
    return nbs, tmp_path / "results"


def _kwargs(project):
    nbs, results = project
    return {"specs": SPECS, "notebook_dir": nbs, "results_root": results, "progress_bar": False}


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


# --------------------------------------------------------------------------------------------
# fresh runs


def test_a_fresh_run_replaces_the_old_results_whole_once_every_notebook_succeeded(project):
    results = project[1]
    out = results / "smoke" / "synthetic"
    run("smoke", **_kwargs(project))
    (out / "left-by-the-old-run.txt").write_text("old")

    report = run_fresh("smoke", **_kwargs(project))

    assert [r[0] for r in report.ran] == ["first", "second"]
    assert not (out / "left-by-the-old-run.txt").exists(), "the old folder is replaced, not merged into"
    assert (out / "runs.txt").read_text() == "run\n", "executed from empty, once"
    assert (out / "second.csv").read_text() == "a\n1\n"
    assert sorted(p.name for p in results.iterdir()) == ["smoke"], (
        "no fresh or replaced folder is left behind"
    )
    states = {n: s for n, _, s in status("smoke", results_root=results, specs=SPECS, notebook_dir=project[0])}
    assert states == {"first": "up to date", "second": "up to date"}


def test_a_failed_fresh_run_leaves_the_old_results_untouched_and_keeps_its_partial_run(project):
    nbs, results = project
    out = results / "smoke" / "synthetic"
    run("smoke", **_kwargs(project))
    before = _snapshot(out)
    (nbs / "boom").touch()

    with pytest.raises(NotebookFailed, match="untouched") as failure:
        run_fresh("smoke", **_kwargs(project))

    assert _snapshot(out) == before
    [fresh] = [p for p in results.iterdir() if p.name.startswith(".fresh-smoke-")]
    assert str(fresh) in str(failure.value)
    assert (fresh / "smoke" / "synthetic" / "second.failed.ipynb").exists()
    assert (fresh / "smoke" / "synthetic" / "first.csv").exists()


def test_a_fresh_run_with_no_results_before_it_puts_them_in_place(project):
    run_fresh("smoke", **_kwargs(project))
    assert (project[1] / "smoke" / "synthetic" / "second.ipynb").exists()


def test_swap_in_replaces_the_target_and_leaves_nothing_aside(tmp_path):
    fresh, target = tmp_path / "fresh", tmp_path / "profile" / "data"
    fresh.mkdir()
    (fresh / "new.csv").write_text("new")
    target.mkdir(parents=True)
    (target / "old.csv").write_text("old")
    swap_in(fresh, target)
    assert _snapshot(target) == {"new.csv": b"new"}
    assert sorted(p.name for p in target.parent.iterdir()) == ["data"] and not fresh.exists()


def test_swap_in_without_fresh_results_keeps_the_target(tmp_path):
    target = tmp_path / "data"
    target.mkdir()
    (target / "old.csv").write_text("old")
    with pytest.raises(RagrecError, match="nothing was replaced"):
        swap_in(tmp_path / "missing", target)
    assert _snapshot(target) == {"old.csv": b"old"}


# --------------------------------------------------------------------------------------------
# saying that nothing ran


def _manifest(folder: Path, **wall_s: float) -> None:
    folder.mkdir(parents=True)
    entries = {
        name: {"status": "ok", "wall_s": s, "finished": "2026-11-29T08:20:42+00:00"}
        for name, s in wall_s.items()
    }
    (folder / MANIFEST).write_text(json.dumps({"notebooks": entries}))


def test_a_run_that_skipped_everything_names_the_results_and_the_command_that_reexecutes(tmp_path):
    _manifest(tmp_path / "cpu" / "ml-100k", data=8.0, recommender=2993.9, claims=8.1)
    report = RunReport(skipped=[("data", "ml-100k"), ("recommender", "ml-100k"), ("claims", "ml-100k")])
    said, how = up_to_date_summary(report, "cpu", tmp_path)
    assert "All 3 notebooks are up to date" in said and str(tmp_path / "cpu" / "ml-100k") in said
    assert "2026-11-29" in said
    assert "make reproduce PROFILE=cpu FRESH=1" in how and "50m10s" in how  # 8 + 2993.9 + 8.1 s


@pytest.mark.parametrize(
    "report",
    [RunReport(ran=[("data", "ml-100k", 8.0)], skipped=[("claims", "ml-100k")]), RunReport()],
    ids=["something-ran", "no-dataset-present"],
)
def test_no_up_to_date_summary_when_something_ran_or_nothing_was_there(tmp_path, report):
    assert up_to_date_summary(report, "cpu", tmp_path) == []


def test_the_command_line_prints_the_summary_when_every_notebook_was_skipped(project, capsys, monkeypatch):
    nbs, results = project
    run("smoke", **_kwargs(project))
    monkeypatch.setattr(
        "ragrec.reproduce.__main__.run", lambda *a, **k: run(*a, **k, specs=SPECS, notebook_dir=nbs)
    )
    capsys.readouterr()
    assert main(["run", "--profile", "smoke", "--results", str(results), "--quiet"]) == 0
    lines = capsys.readouterr().out.splitlines()
    kept = [line.split()[1] for line in lines if "up to date: kept from its run of" in line]
    assert kept == ["first", "second"], "one line per notebook"
    assert "make reproduce PROFILE=smoke FRESH=1" in lines[-1]


def test_fresh_with_a_notebook_subset_is_refused(tmp_path, capsys):
    assert (
        main(["run", "--profile", "smoke", "--fresh", "--notebook", "data", "--results", str(tmp_path)]) == 2
    )
    assert "drop --notebook" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_the_model_flag_reaches_the_gpu_profile_and_a_bad_folder_stops_the_run_at_once(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv(MODEL_ENV, "")  # recorded, so the value main() sets is undone after the test
    assert (
        main(["run", "--profile", "gpu", "--model", str(tmp_path / "nowhere"), "--results", str(tmp_path)])
        == 2
    )
    assert "is not a folder" in capsys.readouterr().err
    assert not any(tmp_path.iterdir()), "nothing ran"
