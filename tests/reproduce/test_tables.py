"""Tables for people: every kind of value reads as a person expects, absent values say why, and
each chapter's view survives a results table that lacks a column."""

from __future__ import annotations

import math
import re

import pandas as pd
import pytest

from ragrec.config import get_profile
from ragrec.reproduce import tables
from ragrec.reproduce.summary import differences_table
from ragrec.reproduce.tables import MISSING, Column, people_table


@pytest.mark.parametrize(
    ("value", "kind", "shown"),
    [
        (0.74072, "auc", "0.741"),
        (0.0059899, "signed", "+0.006"),
        (-0.105363, "signed", "-0.105"),
        (-0.0000249, "signed", "0.000"),
        (1.8554, "ratio", "1.86×"),
        (15.23, "ratio", "15.2×"),
        (15231.7, "ratio", "15,232×"),
        (3.68958, "rate", "3.69"),
        (0.0320629, "ms", "0.032 ms"),
        (2146.54, "ms", "2,147 ms"),
        (0.0106, "s", "10.6 ms"),
        (8.06, "s", "8.1 s"),
        (2993.9, "s", "49 min 54 s"),
        (7000.0, "s", "1 h 56 min"),
        (0.5976, "share", "59.8%"),
        (1600.0, "int", "1,600"),
        (0.1, "tau", "0.1"),
        (1.19e-07, "sci", "1.2e-07"),
        ("2026-11-29T07:23:44.496774+00:00", "time", "2026-11-29 07:23 UTC"),
        ("consistent", "text", "consistent"),
    ],
    ids=lambda v: str(v),
)
def test_each_kind_of_value_reads_as_a_person_expects(value, kind, shown):
    assert tables.format_value(value, kind) == shown


@pytest.mark.parametrize(
    "value", [None, math.nan, pd.NA, "", math.inf], ids=["None", "nan", "NA", "empty", "inf"]
)
def test_absent_values_format_as_nothing(value):
    assert tables.format_value(value, "auc") is None


def test_two_columns_under_one_header_is_a_clear_error():
    with pytest.raises(ValueError, match="column labels must differ"):
        people_table(pd.DataFrame({"a": [1], "b": [2]}), [Column("a", "x"), Column("b", "x")])


def test_the_data_table_reads_one_quantity_a_line_and_says_which_are_absent():
    table = tables.data_table(pd.DataFrame([{"dataset": "ml-100k", "users": 943, "density": 0.063}]))
    lines = dict(zip(table.frame["quantity"], table.frame["value"], strict=True))
    assert (lines["dataset"], lines["users"], lines["density"], lines["split"]) == (
        "ml-100k",
        "943",
        "6.3%",
        MISSING,
    )
    assert table.notes and table.notes[0].endswith("not in this results table.") and "split" in table.notes[0]


def test_an_unknown_kind_is_a_clear_error():
    with pytest.raises(KeyError, match="unknown column kind 'percent'"):
        tables.format_value(0.5, "percent")


def test_an_interval_follows_its_estimate_and_is_left_out_when_a_bound_is_missing():
    frame = pd.DataFrame({"auc": [0.741, 0.5], "lo": [0.69, None], "hi": [0.789, 0.6]})
    table = people_table(frame, [Column("auc", "AUC", "auc", low="lo", high="hi")])
    assert table.frame["AUC"].tolist() == ["0.741 [0.690, 0.789]", "0.500"]
    assert table.notes == [], "an estimate without its interval is not a missing value"


def test_a_missing_value_shows_a_dash_and_a_footnote_saying_why():
    frame = pd.DataFrame({"method": ["a", "b"], "logloss": [0.6, None]})
    table = people_table(
        frame, [Column("method", "method"), Column("logloss", "LogLoss", "auc", missing="not a probability")]
    )
    assert table.frame["LogLoss"].tolist() == ["0.600", MISSING]
    assert table.notes == [f"{MISSING} LogLoss: not a probability."]


def test_a_column_the_results_table_lacks_is_dashes_with_a_footnote():
    table = people_table(
        pd.DataFrame({"method": ["a"]}), [Column("method", "method"), Column("rps", "requests/s", "rate")]
    )
    assert table.frame["requests/s"].tolist() == [MISSING]
    assert table.notes == [f"{MISSING} requests/s: not in this results table."]


def test_the_html_has_no_index_column_and_keeps_numbers_with_their_units():
    frame = pd.DataFrame({"setting": ["full <depth>"], "p50_ms": [2146.54]})
    html = people_table(
        frame, [Column("setting", "setting"), Column("p50_ms", "latency", "ms")]
    )._repr_html_()
    assert len(re.findall(r"<th[ >]", html)) == 2, "one header per chosen column, no index"
    assert "full &lt;depth&gt;" in html, "text is escaped"
    assert '<td class="num">2,147&nbsp;ms</td>' in html, (
        "a number and its unit stay on one line, aligned right"
    )


def test_an_interval_may_wrap_below_its_estimate_but_stays_whole():
    frame = pd.DataFrame({"auc": [0.741], "auc_ci_low": [0.69], "auc_ci_high": [0.789]})
    html = people_table(frame, [tables._auc()])._repr_html_()
    assert '0.741 <span class="ci">[0.690,&nbsp;0.789]</span>' in html


def _heads() -> pd.DataFrame:
    rows = [
        {
            "context": c,
            "variant": "main",
            "head_layer": layer,
            "auc": 0.6 + 0.01 * layer,
            "auc_ci_low": 0.5,
            "auc_ci_high": 0.7,
            "n": 400,
        }
        for c in ("llm", "gcn", "none")
        for layer in (5, 10)
    ]
    return pd.DataFrame(
        rows + [{"context": "gcn", "variant": "beta0", "head_layer": 5, "auc": 0.1, "n": 400}]
    )


def test_the_heads_table_has_a_row_per_head_and_a_column_per_context_in_reading_order():
    table = tables.heads_table(_heads())
    assert table.frame.columns.tolist() == [
        "exit head (layer)",
        "no similar users",
        "GCN-retrieved",
        "LLM-retrieved",
    ]
    assert table.frame["exit head (layer)"].tolist() == ["5", "10"]
    assert table.frame.loc[1, "GCN-retrieved"] == "0.700 [0.500, 0.700]", "only the main variant is shown"
    assert "400 test samples" in table.caption


@pytest.mark.parametrize(
    ("row", "label"),
    [
        ({"method": "full", "form": "none", "tau": None, "role": "full_depth"}, "full depth"),
        (
            {"method": "engine_full", "form": "none", "tau": None, "role": "engine_full_depth"},
            "full depth, early-exit engine never exiting",
        ),
        (
            {"method": "exit", "form": "difference", "tau": 0.1, "role": "operating_point"},
            "early exit, difference τ = 0.1 (operating point)",
        ),
        ({"method": "e2e_llm_full", "form": "none", "tau": None}, "LLM retrieval + full depth"),
        (
            {"method": "e2e_gcn_exit", "form": "ratio", "tau": 0.3},
            "GCN retrieval + early exit (ratio τ = 0.3)",
        ),
    ],
    ids=["full", "engine-full", "exit", "e2e-full", "e2e-exit"],
)
def test_each_early_exit_setting_reads_as_the_path_a_request_takes(row, label):
    assert tables.setting_label(pd.Series(row)) == label


def test_the_engine_and_whole_request_tables_split_early_exit_csv():
    exits = pd.DataFrame(
        [
            {
                "method": "full",
                "form": "none",
                "role": "full_depth",
                "n": 64,
                "rps": 3.7,
                "speedup_vs_full": 1.0,
                "speedup_vs_engine_full": 0.8,
            },
            {
                "method": "engine_full",
                "form": "none",
                "role": "engine_full_depth",
                "n": 64,
                "rps": 4.6,
                "speedup_vs_full": 1.25,
                "speedup_vs_engine_full": 1.0,
            },
            {
                "method": "exit",
                "form": "difference",
                "tau": 0.1,
                "role": "operating_point",
                "n": 64,
                "rps": 6.8,
                "speedup_vs_full": 1.86,
                "speedup_vs_engine_full": 1.48,
            },
            {
                "method": "e2e_gcn_full",
                "form": "none",
                "n": 32,
                "rps": 3.5,
                "speedup_vs_full": 2.42,
                "retrieval_share": 0.0006,
            },
        ]
    )
    engine, whole = tables.early_exit_table(exits), tables.whole_requests_table(exits)
    assert engine.frame["setting"].tolist() == [
        "full depth",
        "full depth, early-exit engine never exiting",
        "early exit, difference τ = 0.1 (operating point)",
    ]
    assert engine.frame["speed-up"].tolist() == ["1.00×", "1.25×", "1.86×"]
    assert engine.frame["vs engine at full depth"].tolist() == ["0.80×", "1.00×", "1.48×"], (
        "early exit's own share"
    )
    assert "timed on 64 requests" in engine.caption and "AUC over" not in engine.caption
    labelled = tables.early_exit_table(exits.assign(auc_over="every test sample"))
    assert labelled.caption.endswith("timed on 64 requests (AUC over every test sample)")
    assert whole.frame["pipeline"].tolist() == ["GCN retrieval + full depth"]
    assert whole.frame["time in retrieval"].tolist() == ["0.1%"]


CLAIMS = pd.DataFrame(
    [
        {
            "claim_id": "faster_retrieval",
            "claim": "GCN is faster.",
            "paper": "up to 4.72×",
            "measure": "p50 latency ratio LLM / GCN (×)",
            "estimate": 15231.7,
            "ci_low": None,
            "ci_high": None,
            "verdict": "supported (no interval)",
        },
        {
            "claim_id": "gcn_auc_vs_llm",
            "claim": "GCN is as good.",
            "paper": "72.51 vs 69.05",
            "measure": "AUC(GCN) − AUC(LLM)",
            "estimate": 0.006,
            "ci_low": -0.0062,
            "ci_high": 0.0185,
            "verdict": "consistent",
        },
        {
            "claim_id": "pipeline_rps",
            "claim": "More requests.",
            "paper": "3.83 → 4.57",
            "measure": "requests/s ratio",
            "estimate": None,
            "ci_low": None,
            "ci_high": None,
            "verdict": "not run",
        },
    ]
)


def test_the_claims_table_keeps_the_verdict_words_and_reads_ratios_and_differences():
    table = tables.claims_table(CLAIMS)
    assert table.frame["verdict"].tolist() == CLAIMS["verdict"].tolist()
    assert table.frame["ours [95% CI]"].tolist() == ["15,232×", "+0.006 [-0.006, +0.018]", MISSING]
    assert table.notes == [f"{MISSING} ours [95% CI]: its results were not produced."]


def test_the_landing_pages_verdict_table_has_four_columns():
    assert tables.claims_table(CLAIMS, measure=False).frame.columns.tolist() == [
        "claim",
        "paper",
        "ours [95% CI]",
        "verdict",
    ]


VIEWS = {
    "retrieval": (
        tables.retrieval_table,
        {"retriever": ["gcn"], "layer_combination": ["mean"], "k": [2], "p50_ms": [0.03]},
    ),
    "lightgcn": (tables.lightgcn_table, {"model": ["popularity"], "recall_at_k": [0.1], "cutoff": [20]}),
    "ablations": (
        tables.ablations_table,
        {"ablation": ["context"], "variant": ["none"], "head_layer": [30], "auc": [0.7]},
    ),
    "sweep": (tables.sweep_table, {"form": ["difference"], "tau": [0.1], "auc": [0.74]}),
    "baselines": (tables.baselines_table, {"method": ["popularity"], "kind": ["baseline"], "auc": [0.57]}),
    "checks": (tables.checks_table, {"n_check": [8]}),
    "run times": (tables.run_times_table, {"notebook": ["data"], "status": ["ok"], "wall_s": [8.06]}),
    "provenance": (tables.provenance_view, {"step": ["data"], "git_commit": ["abc"]}),
    "run summary": (
        tables.run_summary_table,
        {"profile": ["cpu"], "dataset": ["ml-100k"], "wall_s": [3600.0]},
    ),
}


@pytest.mark.parametrize("view", list(VIEWS))
def test_every_view_shows_a_results_table_that_lacks_columns_with_dashes(view):
    make, columns = VIEWS[view]
    table = make(pd.DataFrame(columns))
    assert len(table.frame) == 1 and MISSING in table.frame.iloc[0].tolist()
    assert any("not in this results table" in note for note in table.notes)
    assert "NaN" not in table._repr_html_() and "nan" not in table._repr_html_()


@pytest.mark.parametrize(
    ("profile", "model"), [("smoke", "a tiny random Llama"), ("cpu", "SmolLM2-135M-Instruct")]
)
def test_the_differences_table_describes_the_profile_that_ran(profile, model):
    data = pd.DataFrame(
        [
            {
                "dataset": "ml-100k",
                "users": 943,
                "items": 1682,
                "interactions": 100000,
                "label_rule": "rating > 3",
                "split_method": "per_user",
                "train_samples_used": 1600,
                "valid_samples_used": 150,
                "test_samples_used": 400,
            }
        ]
    )
    table = differences_table(get_profile(profile), data).frame.set_index("")
    assert table.loc["model", "this build"].startswith(model)
    assert (
        "943 users" in table.loc["data", "this build"]
        and "400 test" in table.loc["split and samples", "this build"]
    )
    assert table.loc["model", "paper"].startswith("Vicuna-7B")


def test_the_differences_table_names_a_local_model_folder_without_its_path():
    profile = get_profile("gpu", resolve=False)
    local = type(profile)(
        **{**profile.__dict__, "model": type(profile.model)(source="/home/someone/models/vicuna-7b")}
    )
    table = differences_table(local, None).frame.set_index("")
    assert (
        table.loc["model", "this build"].startswith("vicuna-7b")
        and "/home" not in table.loc["model", "this build"]
    )


def test_the_sweep_table_shows_the_rules_upper_bound_where_it_was_computed():
    sweep = pd.DataFrame(
        {
            "split": ["valid", "test"],
            "form": ["static", "static"],
            "tau": [15.0, 15.0],
            "auc": [0.74, 0.75],
            "auc_drop": [0.001, 0.002],
            "drop_ci_low": [math.nan, -0.003],
            "drop_ci_high": [math.nan, 0.006],
            "drop_upper": [0.0042, math.nan],
        }
    )
    table = tables.sweep_table(sweep)
    column = table.frame["drop bound (one-sided)"].tolist()
    assert column[0] == "+0.004" and column[1] == MISSING
    assert any("computed on validation" in note for note in table.notes)
    assert "drop bound (one-sided)" not in tables.sweep_table(sweep.drop(columns="drop_upper")).frame
