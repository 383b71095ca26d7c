"""Notebook helpers: parameter checks, glue read back from CSV cells, figures and tables shown or glued,
the run record."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from ragrec.errors import ConfigError, DataError
from ragrec.reproduce.notebook import (
    NOT_RUN,
    format_value,
    glue_record_name,
    provenance_table,
    run_summary,
    run_times,
    select_cell,
    setup_notebook,
)
from ragrec.reproduce.tables import Column, people_table


def test_setup_checks_names_and_the_results_layout(tmp_path):
    ctx = setup_notebook("data", "smoke", "synthetic", 3, tmp_path / "smoke" / "synthetic")
    assert ctx.dataset == "synthetic" and ctx.seed == 3 and ctx.results_root == tmp_path
    assert ctx.out_dir.is_dir()
    with pytest.raises(ConfigError, match="unknown profile"):
        setup_notebook("data", "huge", "synthetic", 0, tmp_path / "huge" / "synthetic")
    with pytest.raises(ConfigError, match="unknown dataset"):
        setup_notebook("data", "smoke", "netflix", 0, tmp_path / "smoke" / "netflix")
    with pytest.raises(ConfigError, match="must end in smoke/synthetic"):
        setup_notebook("data", "smoke", "synthetic", 0, tmp_path / "elsewhere")


def test_select_cell_matches_rows_across_csv_round_trips():
    frame = pd.DataFrame({"context": ["gcn", "gcn", "llm"], "head_layer": [2, 6, 6], "auc": [0.6, 0.7, None]})
    assert select_cell(frame, "auc", {"context": "gcn", "head_layer": 6.0}) == 0.7
    assert select_cell(frame, "auc", {"context": "llm", "head_layer": 6}) is None  # missing value
    assert select_cell(frame, "auc", {"context": "none"}) is None
    with pytest.raises(DataError, match="selects 2 rows"):
        select_cell(frame, "auc", {"context": "gcn"})
    with pytest.raises(DataError, match="no column"):
        select_cell(frame, "rps", None)


def test_format_value_shows_not_run_for_missing_values():
    assert format_value(0.12345, ".3f") == "0.123"
    assert format_value("7", "d") == "7"
    assert format_value(float("nan"), ".3f") == NOT_RUN
    assert format_value(None, "") == NOT_RUN


def test_glue_reads_the_csv_cell_and_records_where_it_came_from(tmp_path):
    ctx = setup_notebook("claims", "smoke", "synthetic", None, tmp_path / "smoke" / "synthetic")
    ctx.write(pd.DataFrame({"claim_id": ["a", "b"], "estimate": [0.5, None]}), "claims.csv")
    ctx.glue("a", "claims.csv", "estimate", {"claim_id": "a"}, fmt="+.2f")
    ctx.glue("b", "claims.csv", "estimate", {"claim_id": "b"})
    ctx.glue("c", "absent.csv", "estimate")
    record = pd.read_csv(ctx.path(glue_record_name("claims")), dtype=str, keep_default_na=False)
    assert record["key"].tolist() == ["a", "b", "c"]
    assert record["text"].tolist() == ["+0.50", NOT_RUN, NOT_RUN]
    assert json.loads(record.loc[0, "where"]) == {"claim_id": "a"} and record.loc[0, "text"] == "+0.50"


def test_run_times_sums_finished_notebooks_and_provenance_lists_steps(tmp_path):
    (tmp_path / "reproduce.json").write_text(
        json.dumps(
            {
                "notebooks": {
                    "data": {"status": "ok", "wall_s": 2.0, "started": "t0", "finished": "t1"},
                    "ablations": {"status": "ok", "wall_s": 1.0, "started": "t5", "finished": "t6"},
                    "recommender": {"status": "ok", "wall_s": 5.5, "started": "t1", "finished": "t2"},
                    "claims": {"status": "failed", "started": "t2"},
                    "run": {"status": "ok", "wall_s": 1.0, "started": "t3", "finished": "t4"},
                }
            }
        )
    )
    times = run_times(tmp_path, exclude=("run",)).set_index("notebook")
    assert list(times.index) == ["data", "recommender", "claims", "ablations", "total"], (
        "in the order they started"
    )
    assert times.loc["total", "wall_s"] == 8.5 and times.loc["total", "status"] == "3 ok"
    assert "run" not in times.index
    (tmp_path / "provenance.json").write_text(
        json.dumps(
            {
                "steps": {
                    "data": {
                        "seed": 0,
                        "git_commit": "abcdef1234567890",
                        "packages": {"torch": "2.13.0"},
                        "cpu": "x",
                    }
                }
            }
        )
    )
    prov = provenance_table(tmp_path)
    assert (
        prov.loc[0, "step"] == "data"
        and prov.loc[0, "git_commit"] == "abcdef123456"
        and prov.loc[0, "torch"] == "2.13.0"
    )


def test_run_summary_gives_one_row_per_profile_and_dataset_with_a_manifest(tmp_path):
    for profile, seconds in (("smoke", 3.0), ("cpu", 1200.0)):
        folder = tmp_path / profile / "ds"
        folder.mkdir(parents=True)
        (folder / "reproduce.json").write_text(
            json.dumps(
                {
                    "notebooks": {
                        "data": {"status": "ok", "wall_s": seconds, "started": "t0", "finished": "t1"}
                    }
                }
            )
        )
    (tmp_path / "gpu" / "ds").mkdir(parents=True)
    summary = run_summary(tmp_path).set_index("profile")
    assert sorted(summary.index) == ["cpu", "smoke"]
    assert summary.loc["cpu", "wall_s"] == 1200.0 and summary.loc["smoke", "notebooks_ok"] == "1 ok"


def _figure():
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2, 1))
    fig.add_subplot().plot([0, 1], [0, 1])
    return fig


def test_show_figure_shows_exactly_the_png_it_saved(tmp_path):
    ctx = setup_notebook("early_exit", "smoke", "synthetic", None, tmp_path / "smoke" / "synthetic")
    shown = ctx.show_figure(_figure(), "curve.png")
    assert shown.data == ctx.path("curve.png").read_bytes() and shown.data[:8] == b"\x89PNG\r\n\x1a\n"


def test_glued_tables_are_hidden_outputs_named_by_key(tmp_path, monkeypatch):
    import myst_nb

    glued = []
    monkeypatch.setattr(myst_nb, "glue", lambda key, value, display=True: glued.append((key, value, display)))
    ctx = setup_notebook("claims", "smoke", "synthetic", None, tmp_path / "smoke" / "synthetic")
    table = people_table(pd.DataFrame({"a": [1.0]}), [Column("a", "a", "auc")])
    ctx.glue_table("verdicts", table)
    assert glued == [("verdicts", table, False)]
