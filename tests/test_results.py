"""Results are written atomically with provenance, and timing summaries are correct."""

import json
import re

import pandas as pd
import pytest

from ragrec.errors import DataError
from ragrec.experiments.timing import summarize
from ragrec.results import (
    LOCK_FILE,
    Provenance,
    atomic_path,
    canonical_name,
    lock_drift,
    pin_satisfied,
    read_csv,
    read_lock,
    result_dir,
    write_csv,
)


def test_csv_round_trip_has_a_header_and_leaves_no_temp_files(tmp_path):
    frame = pd.DataFrame({"method": ["full", "exit"], "rps": [3.5, 6.0]})
    path = write_csv(frame, tmp_path / "a" / "t.csv")
    assert path.read_text().splitlines()[0] == "method,rps"
    assert read_csv(path).equals(frame)
    assert [p.name for p in path.parent.iterdir()] == ["t.csv"]


def test_failed_write_keeps_the_previous_file(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("old\n")
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert path.read_text() == "old\n"
    assert list(tmp_path.iterdir()) == [path]


def test_provenance_records_environment_and_merges_steps(tmp_path):
    Provenance("data", "smoke", "synthetic", seed=3, parameters={"k": 5}).write(tmp_path, ["stats.csv"])
    Provenance("retrieval", "smoke", "synthetic", seed=3, parameters={"k": 5}).write(tmp_path)
    prov = json.loads((tmp_path / "provenance.json").read_text())
    step = prov["steps"]["data"]
    assert set(prov["steps"]) == {"data", "retrieval"}
    for key in (
        "git_commit",
        "git_dirty",
        "packages",
        "python",
        "cpu",
        "torch_threads",
        "seed",
        "started",
        "finished",
    ):
        assert key in step
    assert step["parameters"] == {"k": 5} and step["outputs"] == ["stats.csv"]


def test_provenance_records_every_locked_package_and_whether_it_matches_the_lock(tmp_path):
    Provenance("data", "smoke", "synthetic", seed=0, parameters={}).write(tmp_path)
    step = json.loads((tmp_path / "provenance.json").read_text())["steps"]["data"]
    assert set(read_lock(LOCK_FILE)) | {"ragrec"} == set(step["packages"])
    assert step["lock"] == "match" or all(": pinned " in line for line in step["lock"])


# --------------------------------------------------------------------------------------------
# comparing installed versions with the lock


@pytest.mark.parametrize(
    ("pinned", "installed", "same"),
    [
        ("2.4.6", "2.4.6", True),
        ("2.13.0", "2.13.0+cpu", True),  # the CPU wheel satisfies the plain pin
        ("2.13.0+cpu", "2.13.0", False),  # a pinned build label must be there
        ("2.4.6", "2.4.7", False),
        ("1.0", "1.0.0", True),  # PEP 440 spellings of one release
        ("2.4.6", "2.4.6rc1", False),
    ],
    ids=[
        "exact",
        "local-label-allowed",
        "pinned-label-required",
        "other-release",
        "zero-padding",
        "pre-release",
    ],
)
def test_a_pin_is_satisfied_only_by_its_release(pinned, installed, same):
    assert pin_satisfied(pinned, installed) is same


def test_lock_drift_names_each_package_that_differs_or_is_missing():
    pins = {"numpy": "2.4.6", "torch": "2.13.0", "pandas": "3.1.1"}
    installed = {"numpy": "2.5.0", "torch": "2.13.0+cpu", "extra-tool": "1.0"}
    assert lock_drift(pins, installed) == [
        "numpy: pinned 2.4.6, installed 2.5.0",
        "pandas: pinned 3.1.1, not installed",
    ]


def test_read_lock_keeps_pins_and_skips_comments_and_annotations(tmp_path):
    lock = tmp_path / "x.lock"
    lock.write_text(
        "# header\nScikit_Learn==1.9.1\n    # via ragrec\ntorch==2.13.0 ; sys_platform == 'linux'\n"
    )
    assert read_lock(lock) == {"scikit-learn": "1.9.1", "torch": "2.13.0"}
    assert canonical_name("Jupyter.Book") == "jupyter-book"


def test_missing_results_table_says_how_to_make_it(tmp_path):
    with pytest.raises(DataError, match="run the notebook"):
        read_csv(tmp_path / "nope.csv")


def test_result_dir_honours_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("RAGREC_RESULTS", str(tmp_path))
    assert result_dir("cpu", "ml-100k") == tmp_path / "cpu" / "ml-100k"


def test_summarize_gives_percentiles_and_throughput():
    lat = summarize([0.1, 0.2, 0.3, 0.4], items_per_call=[2, 2, 2, 2])
    assert lat.p50_ms == pytest.approx(250.0)
    assert lat.per_s == pytest.approx(8 / 1.0)
    assert lat.n == 4


def test_only_the_main_process_of_a_data_parallel_run_puts_results_in_place(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    write_csv(pd.DataFrame({"a": [1]}), tmp_path / "t.csv")
    assert list(tmp_path.iterdir()) == [], "another rank's copy is dropped, not left beside the results"
    monkeypatch.setenv("RANK", "0")
    write_csv(pd.DataFrame({"a": [1]}), tmp_path / "t.csv")
    assert (tmp_path / "t.csv").read_text() == "a\n1\n"


@pytest.mark.parametrize(
    ("content", "damage"),
    [(b"", "zero bytes"), (b'a,b\n1,"2\n', "truncated in a quoted field"), (b"\xff\xfe\x00a\x00,", "utf-16")],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_an_unreadable_results_table_is_named_with_the_fix(tmp_path, content, damage):
    path = tmp_path / "heads.csv"
    path.write_bytes(content)
    with pytest.raises(DataError, match=re.escape(str(path)) + r" is unreadable .*rerun the notebook"):
        read_csv(path)
