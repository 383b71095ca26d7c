"""The papermill runner: bad names, the project's notebooks, skipping, failing and resuming,
what makes results stale (code, not comments; raw data), and failing early and clearly.

The run-behaviour tests execute two tiny notebooks written here (a kernel start each, a few
seconds), not the project's notebooks: ``tests/test_book.py`` runs those end to end.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re

import nbformat
import pytest

from ragrec.errors import ConfigError, DataError
from ragrec.reproduce import digest
from ragrec.reproduce.__main__ import main
from ragrec.reproduce.runner import plan, run, status
from ragrec.reproduce.tasks import (
    MANIFEST,
    NOTEBOOK_DIR,
    NOTEBOOKS,
    PROFILE_DATASETS,
    NotebookFailed,
    NotebookSpec,
    Task,
    check_order,
)
from ragrec.reproduce.tasks import (
    SPECS as SPECS_BY_NAME,
)
from tests.data.writers import BX_RATINGS, write_bx
from tests.reproduce.edits import CODE_EDITS, MODULE, TEXT_EDITS, edit_module
from tests.reproduce.tiny_notebooks import write_notebook

PARAMETER_NAMES = ("dataset", "profile", "seed", "out_dir")


# --------------------------------------------------------------------------------------------
# the project's notebooks


@pytest.mark.parametrize("spec", NOTEBOOKS, ids=lambda s: s.name)
def test_every_notebook_is_stored_without_outputs_and_has_a_parameters_cell(spec):
    nb = nbformat.read(NOTEBOOK_DIR / f"{spec.name}.ipynb", as_version=4)
    nbformat.validate(nb)
    tagged = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters'"
    for name in PARAMETER_NAMES:
        assert f"{name} =" in tagged[0].source, f"parameters cell lacks {name}"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, "notebooks are stored without outputs"


def test_notebooks_run_after_the_notebooks_they_read():
    check_order(NOTEBOOKS)
    with pytest.raises(ConfigError, match="do not run before"):
        check_order([NotebookSpec("b", "B", after=("a",)), NotebookSpec("a", "A")])


# --------------------------------------------------------------------------------------------
# bad names


def test_unknown_profile_notebook_or_dataset_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="unknown profile"):
        plan("huge", results_root=tmp_path)
    with pytest.raises(ConfigError, match="unknown notebook"):
        plan("smoke", notebooks=["nope"], results_root=tmp_path)
    with pytest.raises(ConfigError, match="unknown dataset"):
        plan("smoke", datasets=["movielens-1b"], results_root=tmp_path)


def test_command_line_reports_a_bad_name_with_exit_code_2(tmp_path, capsys):
    assert main(["run", "--profile", "smoke", "--notebook", "nope", "--results", str(tmp_path)]) == 2
    assert "unknown notebook" in capsys.readouterr().err
    assert main(["status", "--profile", "huge"]) == 2


def test_datasets_whose_files_are_absent_are_left_out_with_what_they_need(tmp_path):
    tasks, missing = plan("cpu", results_root=tmp_path, data_root=tmp_path / "no-data")
    assert set(PROFILE_DATASETS["cpu"]) - {"ml-100k"} <= set(missing)
    assert "BX-Book-Ratings.csv" in missing["bookcrossing"]
    assert all(t.dataset not in missing for t in tasks)


def test_the_smoke_profile_plans_every_notebook_on_synthetic_data(tmp_path):
    tasks, missing = plan("smoke", results_root=tmp_path)
    assert missing == {}
    assert [t.spec.name for t in tasks] == [s.name for s in NOTEBOOKS]
    assert {t.out_dir for t in tasks} == {tmp_path / "smoke" / "synthetic"}
    assert tasks[0].parameters == {
        "dataset": "synthetic",
        "profile": "smoke",
        "seed": 0,
        "out_dir": str(tmp_path / "smoke" / "synthetic"),
    }


# --------------------------------------------------------------------------------------------
# running: skip, fail, resume (two tiny notebooks)


SPECS = (
    NotebookSpec("first", "First", outputs=("first.csv",)),
    NotebookSpec("second", "Second", outputs=("second.csv",), after=("first",)),
)


@pytest.fixture
def project(tmp_path):
    """Two notebooks: ``first`` writes first.csv; ``second`` copies it to second.csv and raises
    while a file ``boom`` exists beside the notebooks."""
    nbs = tmp_path / "notebooks"
    nbs.mkdir()
    write_notebook(nbs / "first.ipynb", '(out / "first.csv").write_text("a\\n1\\n")')
    write_notebook(
        nbs / "second.ipynb",
        (
            f'if Path({str(nbs / "boom")!r}).exists():\n    raise RuntimeError("planted failure")\n'
            '(out / "second.csv").write_text((out / "first.csv").read_text())'
        ),
    )
    return nbs, tmp_path / "results"


def _run(project, **kwargs):
    nbs, results = project
    return run("smoke", specs=SPECS, notebook_dir=nbs, results_root=results, progress_bar=False, **kwargs)


def test_a_rerun_skips_notebooks_whose_inputs_are_unchanged(project):
    first = _run(project)
    assert [r[0] for r in first.ran] == ["first", "second"]
    again = _run(project)
    assert again.ran == [] and [s[0] for s in again.skipped] == ["first", "second"]
    out = project[1] / "smoke" / "synthetic"
    assert (out / "first.ipynb").exists() and (out / "second.csv").read_text() == "a\n1\n"
    assert json.loads((out / MANIFEST).read_text())["notebooks"]["second"]["status"] == "ok"


def test_a_changed_notebook_reruns_itself_and_what_reads_it(project):
    _run(project)
    nbs, results = project
    write_notebook(nbs / "first.ipynb", '(out / "first.csv").write_text("a\\n2\\n")')
    assert [r[0] for r in _run(project).ran] == ["first", "second"]
    assert (results / "smoke" / "synthetic" / "second.csv").read_text() == "a\n2\n"


def test_a_deleted_output_makes_its_notebook_stale(project):
    _run(project)
    (project[1] / "smoke" / "synthetic" / "second.csv").unlink()
    states = dict(
        (n, s) for n, _, s in status("smoke", results_root=project[1], specs=SPECS, notebook_dir=project[0])
    )
    assert states["first"] == "up to date"
    assert states["second"].startswith("stale: second.csv is missing, written by second at "), states


def _weights(value: int) -> bytes:
    """A real (tiny) safetensors file: the runner checks the weights it will reload are whole."""
    import numpy as np
    from safetensors.numpy import save

    return save({"w": np.array([value], dtype=np.float32)})


def test_trained_weights_are_recorded_and_a_changed_one_makes_its_trainer_and_readers_stale(project):
    nbs, results = project
    specs = (dataclasses.replace(SPECS[0], artifacts=("checkpoints/*/final/*.safetensors",)), SPECS[1])
    trained = nbs / "trained"  # what "training" produces this time
    trained.write_bytes(_weights(1))
    write_notebook(
        nbs / "first.ipynb",
        (
            '(out / "first.csv").write_text("a\\n1\\n")\n'
            'w = out / "checkpoints" / "model" / "final"\nw.mkdir(parents=True, exist_ok=True)\n'
            f'(w / "heads.safetensors").write_bytes(Path({str(trained)!r}).read_bytes())'
        ),
    )
    run("smoke", specs=specs, notebook_dir=nbs, results_root=results, progress_bar=False)
    out = results / "smoke" / "synthetic"
    entry = json.loads((out / MANIFEST).read_text())["notebooks"]["first"]
    assert list(entry["artifacts"]) == ["checkpoints/model/final/heads.safetensors"]
    states = {n: s for n, _, s in status("smoke", results_root=results, specs=specs, notebook_dir=nbs)}
    assert states == {"first": "up to date", "second": "up to date"}

    (out / "checkpoints" / "model" / "final" / "heads.safetensors").write_bytes(_weights(99))  # by hand
    states = {n: s for n, _, s in status("smoke", results_root=results, specs=specs, notebook_dir=nbs)}
    assert states["first"].startswith("stale: its trained weights") and "rerun it" in states["first"]
    trained.write_bytes(_weights(2))  # retraining gives other weights
    rerun = run("smoke", specs=specs, notebook_dir=nbs, results_root=results, progress_bar=False)
    assert [r[0] for r in rerun.ran] == ["first", "second"], "new weights: what reloads them reruns too"


def test_a_run_from_before_weights_were_recorded_stays_up_to_date(project):
    nbs, results = project
    _run(project)
    specs = (dataclasses.replace(SPECS[0], artifacts=("checkpoints/*/final/*.safetensors",)), SPECS[1])
    states = {n: s for n, _, s in status("smoke", results_root=results, specs=specs, notebook_dir=nbs)}
    assert states == {"first": "up to date", "second": "up to date"}


def test_a_failing_notebook_stops_the_run_naming_the_cell_and_a_rerun_resumes(project):
    nbs, results = project
    out = results / "smoke" / "synthetic"
    (nbs / "boom").touch()
    with pytest.raises(NotebookFailed) as failure:
        _run(project)
    message = str(failure.value)
    assert "'second'" in message and "cell 2 of second.ipynb" in message and "planted failure" in message
    assert (out / "first.ipynb").exists() and (out / "first.csv").exists(), "earlier results stay intact"
    assert (out / "second.failed.ipynb").exists() and not (out / "second.ipynb").exists()
    entry = json.loads((out / MANIFEST).read_text())["notebooks"]["second"]
    assert entry["status"] == "failed" and entry["error"] == message, "the manifest keeps the whole error"

    (nbs / "boom").unlink()
    resumed = _run(project)
    assert [r[0] for r in resumed.ran] == ["second"] and [s[0] for s in resumed.skipped] == ["first"]
    assert (out / "second.ipynb").exists() and not (out / "second.failed.ipynb").exists()


def test_force_reruns_an_up_to_datewrite_notebook(project):
    _run(project)
    assert [r[0] for r in _run(project, notebooks=["first"], force=True).ran] == ["first"]


# --------------------------------------------------------------------------------------------
# the library digest reads code, not text


def _states(project, **kwargs):
    nbs, results = project
    return {
        (n, d): s
        for n, d, s in status("smoke", results_root=results, specs=SPECS, notebook_dir=nbs, **kwargs)
    }


def test_status_stays_up_to_date_after_a_comment_edit_and_goes_stale_after_a_code_edit(
    project, package_copy, monkeypatch
):
    monkeypatch.setattr(digest, "PACKAGE_DIR", package_copy)
    _run(project, notebooks=["first"])
    edit_module(package_copy, MODULE, *TEXT_EDITS["comment"])
    edit_module(package_copy, MODULE, *TEXT_EDITS["function-docstring"])
    assert _states(project)[("first", "synthetic")] == "up to date"
    edit_module(package_copy, MODULE, *CODE_EDITS["constant"])
    assert _states(project)[("first", "synthetic")] == "stale"


# --------------------------------------------------------------------------------------------
# the raw data is an input too


def test_swapping_a_raw_file_makes_status_report_the_notebook_stale(project, tmp_path):
    nbs, results = project
    data_root = tmp_path / "data"
    write_bx(data_root / "bookcrossing")
    run(
        "cpu",
        ["bookcrossing"],
        ["first"],
        specs=SPECS,
        notebook_dir=nbs,
        results_root=results,
        data_root=data_root,
        progress_bar=False,
    )

    def state():
        rows = status("cpu", results_root=results, data_root=data_root, specs=SPECS, notebook_dir=nbs)
        return {(n, d): s for n, d, s in rows}[("first", "bookcrossing")]

    assert state() == "up to date"
    duplicated = BX_RATINGS + BX_RATINGS.split("\n", 1)[1]  # every row twice: a different dataset
    (data_root / "bookcrossing" / "BX-Book-Ratings.csv").write_text(duplicated, encoding="latin-1")
    assert state() == "stale"


def test_only_notebooks_that_load_the_dataset_hash_its_raw_files(tmp_path):
    write_bx(tmp_path / "bookcrossing")
    tasks, _ = plan("cpu", ["bookcrossing"], results_root=tmp_path / "results", data_root=tmp_path)
    before = {t.spec.name: t.inputs_digest({}, "lib") for t in tasks}
    (tmp_path / "bookcrossing" / "BX-Users.csv").write_text(
        '"User-ID";"Location";"Age"\n', encoding="latin-1"
    )
    after = {t.spec.name: t.inputs_digest({}, "lib") for t in tasks}
    changed = {name for name in before if before[name] != after[name]}
    assert (
        changed == {s.name for s in NOTEBOOKS if s.reads_dataset}
        and "data" in changed
        and "claims" not in changed
    )


# --------------------------------------------------------------------------------------------
# failing early and clearly


def test_a_requested_dataset_whose_files_are_absent_is_an_error(tmp_path):
    with pytest.raises(
        DataError, match="(?s)'bookcrossing' was requested by name but cannot run.*BX-Book-Ratings.csv"
    ):
        plan("cpu", ["ml-100k", "bookcrossing"], results_root=tmp_path, data_root=tmp_path / "no-data")


def test_make_notebook_for_an_absent_dataset_exits_non_zero_saying_what_is_missing(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("RAGREC_DATA", str(tmp_path / "no-data"))
    argv = [
        "run",
        "--profile",
        "cpu",
        "--notebook",
        "data",
        "--dataset",
        "bookcrossing",
        "--force",
        "--results",
        str(tmp_path),
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "BX-Book-Ratings.csv" in err and str(tmp_path / "no-data") in err


def test_absent_datasets_of_the_profile_are_listed_not_fatal(tmp_path):
    tasks, missing = plan("cpu", results_root=tmp_path, data_root=tmp_path / "no-data")
    assert "bookcrossing" in missing and tasks


def _unwritable_by_permissions(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes through permissions")
    folder = tmp_path / "results"
    folder.mkdir()
    folder.chmod(0o555)
    return folder


def _unwritable_under_a_file(tmp_path):
    (tmp_path / "results").write_text("a file where the results folder should be")
    return tmp_path / "results"


@pytest.mark.parametrize(
    "make", [_unwritable_by_permissions, _unwritable_under_a_file], ids=["read-only", "under-a-file"]
)
def test_an_unwritable_results_folder_fails_first_with_one_line(tmp_path, capsys, make):
    results = make(tmp_path)
    assert main(["run", "--profile", "smoke", "--results", str(results)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(r"results folder .*results.* is not writable", err), err
    assert not list(tmp_path.rglob("*.ipynb")), "no notebook ran"


def test_a_read_only_folder_is_caught_before_any_work(tmp_path, monkeypatch, capsys):
    """As root (no permission check) the same path is exercised by a refused temporary file."""

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("ragrec.reproduce.tasks.tempfile.mkstemp", refuse)
    monkeypatch.setattr("ragrec.reproduce.runner.ensure_kernel", lambda: pytest.fail("a kernel started"))
    assert main(["run", "--profile", "smoke", "--results", str(tmp_path)]) == 2
    assert "is not writable (Permission denied)" in capsys.readouterr().err


def test_the_recommender_records_the_main_and_cf_weights_but_not_the_beta_study_runs(tmp_path):
    out = tmp_path / "smoke" / "synthetic"
    for run_dir in ("model_beta0.1", "model_beta0.1_cf", "model_beta0_study48x1_b16_lr0.005_seed1"):
        folder = out / "checkpoints" / run_dir / "final"
        folder.mkdir(parents=True)
        for name in ("adapter.safetensors", "heads.safetensors", "state.json"):
            (folder / name).write_text(run_dir)
    task = Task(SPECS_BY_NAME["recommender"], "smoke", "synthetic", 0, out, tmp_path / "recommender.ipynb")
    assert sorted({name.split("/")[1] for name in task.artifact_digests()}) == [
        "model_beta0.1",
        "model_beta0.1_cf",
    ]
    assert len(task.artifact_digests()) == 6


def test_the_run_record_is_not_stale_from_the_compute_step_it_writes_into_the_provenance(tmp_path):
    out = tmp_path / "smoke" / "synthetic"
    out.mkdir(parents=True)
    source = tmp_path / "run.ipynb"
    source.write_text("{}")
    task = Task(SPECS_BY_NAME["run"], "smoke", "synthetic", 0, out, source, data_root=tmp_path)

    def provenance(steps):
        (out / "provenance.json").write_text(json.dumps({"steps": steps}))
        return task.inputs_digest({}, "lib")

    before = provenance({"recommender": {"seed": 0}})
    # its own step (the compute table) leaves the digest as it was: no rerun after every run
    assert provenance({"recommender": {"seed": 0}, "compute": {"finished": "now"}}) == before
    # another notebook's step changes what the run record shows: it is stale
    assert provenance({"recommender": {"seed": 1}, "compute": {"finished": "now"}}) != before
