"""The papermill runner: bad names, the project's notebooks, skipping, failing and resuming.

The run-behaviour tests execute two tiny notebooks written here (a kernel start each, a few
seconds), not the project's notebooks: ``tests/test_book.py`` runs those end to end.
"""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from ragrec.errors import ConfigError
from ragrec.reproduce.__main__ import main
from ragrec.reproduce.runner import (
    MANIFEST,
    NOTEBOOK_DIR,
    NOTEBOOKS,
    PROFILE_DATASETS,
    NotebookFailed,
    NotebookSpec,
    check_order,
    plan,
    run,
    status,
)

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
    assert tasks[0].parameters == {"dataset": "synthetic", "profile": "smoke", "seed": 0, "out_dir": str(tmp_path / "smoke" / "synthetic")}


# --------------------------------------------------------------------------------------------
# running: skip, fail, resume (two tiny notebooks)


def _notebook(path: Path, body: str) -> None:
    params = new_code_cell('dataset = "x"\nprofile = "x"\nseed = 0\nout_dir = "."')
    params.metadata["tags"] = ["parameters"]
    nb = new_notebook(cells=[params, new_code_cell("from pathlib import Path\nout = Path(out_dir)"), new_code_cell(body)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


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
    _notebook(nbs / "first.ipynb", '(out / "first.csv").write_text("a\\n1\\n")')
    _notebook(nbs / "second.ipynb", (
        f'if Path({str(nbs / "boom")!r}).exists():\n    raise RuntimeError("planted failure")\n'
        '(out / "second.csv").write_text((out / "first.csv").read_text())'
    ))
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
    _notebook(nbs / "first.ipynb", '(out / "first.csv").write_text("a\\n2\\n")')
    assert [r[0] for r in _run(project).ran] == ["first", "second"]
    assert (results / "smoke" / "synthetic" / "second.csv").read_text() == "a\n2\n"


def test_a_deleted_output_makes_its_notebook_stale(project):
    _run(project)
    (project[1] / "smoke" / "synthetic" / "second.csv").unlink()
    states = dict((n, s) for n, _, s in status("smoke", results_root=project[1], specs=SPECS, notebook_dir=project[0]))
    assert states == {"first": "up to date", "second": "stale"}


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
    assert json.loads((out / MANIFEST).read_text())["notebooks"]["second"]["status"] == "failed"

    (nbs / "boom").unlink()
    resumed = _run(project)
    assert [r[0] for r in resumed.ran] == ["second"] and [s[0] for s in resumed.skipped] == ["first"]
    assert (out / "second.ipynb").exists() and not (out / "second.failed.ipynb").exists()


def test_force_reruns_an_up_to_date_notebook(project):
    _run(project)
    assert [r[0] for r in _run(project, notebooks=["first"], force=True).ran] == ["first"]
