"""Tables for people: the views each chapter shows (which columns, in which order), formatted by
:func:`ragrec.reproduce.formatting.people_table`. A view names columns, never numbers, and
survives a column that a results table lacks: its cells read "—" and the footnote says the
column is absent.
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from ragrec.reproduce.formatting import (
    MISSING,
    Column,
    PeopleTable,
    format_value,
    is_missing,
    people_table,
)

CONTEXT_LABELS = {
    "none": "no similar users",
    "random": "random users",
    "gcn": "GCN-retrieved",
    "llm": "LLM-retrieved",
}
NO_INTERVAL = "no interval for this measure"


def _auc(name: str = "auc", label: str = "AUC [95% CI]", **kwargs) -> Column:
    return Column(name, label, "auc", low=f"{name}_ci_low", high=f"{name}_ci_high", **kwargs)


def _rows(frame: pd.DataFrame, column: str, keep: Callable[[pd.Series], pd.Series]) -> pd.DataFrame:
    """The rows of ``frame`` that ``keep`` selects on ``column`` (all rows when it is absent)."""
    return frame[keep(frame[column])] if column in frame.columns else frame


def heads_table(heads: pd.DataFrame, variant: str = "main") -> PeopleTable:
    """Test AUC [95% CI] of every exit head (rows) under every prompt context (columns)."""
    rows = _rows(heads, "variant", lambda v: v == variant)
    contexts = [c for c in CONTEXT_LABELS if c in set(rows["context"])]
    contexts += sorted(set(rows["context"]) - set(contexts))
    wide = pd.DataFrame({"head_layer": sorted(rows["head_layer"].unique())})
    for context in contexts:
        one = rows[rows["context"] == context].set_index("head_layer")
        for suffix in ("", "_ci_low", "_ci_high"):
            wide[f"{context}{suffix}"] = wide["head_layer"].map(
                one.get(f"auc{suffix}", pd.Series(dtype=float))
            )
    columns = [Column("head_layer", "exit head (layer)", "int")]
    columns += [
        Column(
            c,
            CONTEXT_LABELS.get(c, c),
            "auc",
            low=f"{c}_ci_low",
            high=f"{c}_ci_high",
            missing="this context was not evaluated",
        )
        for c in contexts
    ]
    n = f" on {int(rows['n'].iloc[0]):,} test samples" if "n" in rows and len(rows) else ""
    return people_table(wide, columns, caption=f"Test AUC [95% CI] per exit head and prompt context{n}")


def retrieval_table(table: pd.DataFrame) -> PeopleTable:
    """Latency, fit time and neighbour quality of each retriever."""
    readouts = {"mean": " (mean over layers)", "last": " (last layer)"}
    combination = table.get("layer_combination", pd.Series("n/a", index=table.index)).fillna("n/a")
    named = table.assign(
        label=table["retriever"] + combination.map(lambda c: readouts.get(c, "" if c == "n/a" else f" ({c})"))
    )
    return people_table(
        named,
        [
            Column("label", "retriever"),
            Column("k", "k", "int"),
            Column("p50_ms", "query p50", "ms"),
            Column("p95_ms", "query p95", "ms"),
            Column("fit_s", "fit", "s"),
            Column("neighbour_hit_rate", "neighbour hit rate", "auc"),
            Column("n_queries", "queries", "int"),
        ],
    )


def lightgcn_table(table: pd.DataFrame) -> PeopleTable:
    """LightGCN's validation ranking quality against popularity (a sanity check)."""
    cutoff = f"@{int(table['cutoff'].iloc[0])}" if "cutoff" in table and len(table) else ""
    return people_table(
        table,
        [
            Column("model", "model"),
            Column("recall_at_k", f"Recall{cutoff}", "auc"),
            Column("ndcg_at_k", f"NDCG{cutoff}", "auc"),
            Column("best_epoch", "best epoch", "int", missing="not trained"),
            Column("fit_s", "fit", "s", missing="not trained"),
        ],
    )


def ablations_table(table: pd.DataFrame) -> PeopleTable:
    """Each ablation at the final head: the variant's AUC and the paired difference."""
    last = _rows(table, "head_layer", lambda layer: layer == layer.max())
    return people_table(
        last,
        [
            Column("ablation", "ablation"),
            Column("variant", "variant"),
            Column("reference", "against"),
            _auc(),
            Column(
                "reference_minus_variant",
                "against − variant [95% paired CI]",
                "signed",
                low="diff_ci_low",
                high="diff_ci_high",
                missing="the reference row",
            ),
            Column("n", "n", "int"),
        ],
        caption="At the final head; every head is in the figure and ablations.csv",
    )


def setting_label(row: pd.Series) -> str:
    """How a row of ``early_exit.csv`` reads: the path a request takes and its exit rule."""
    method, form, tau = str(row.get("method", "")), str(row.get("form", "none")), row.get("tau")
    rule = "" if form == "none" or is_missing(tau) else f"{form} τ = {float(tau):g}"
    role = str(row.get("role", "")).replace("_", " ")
    if method == "full":
        return "full depth"
    if method == "engine_full":
        return "full depth, early-exit engine never exiting"
    if method == "exit":
        return f"early exit, {rule}" + (f" ({role})" if role and role != "nan" else "")
    retrieval = {"e2e_llm": "LLM", "e2e_gcn": "GCN"}.get(method.rsplit("_", 1)[0], method)
    return f"{retrieval} retrieval + " + (
        f"early exit ({rule})" if method.endswith("_exit") else "full depth"
    )


def _labelled(frame: pd.DataFrame, whole_requests: bool) -> pd.DataFrame:
    e2e = frame["method"].astype(str).str.startswith("e2e_")
    chosen = frame[e2e] if whole_requests else frame[~e2e]
    return chosen.assign(setting=[setting_label(r) for _, r in chosen.iterrows()])


def early_exit_table(exits: pd.DataFrame) -> PeopleTable:
    """The engine against the plain full-depth forward (the paper's comparison) and against itself
    never exiting (early exit's own share): speed on the timed requests, accuracy where
    ``auc_over`` says (every test sample, in current results)."""
    rows = _labelled(exits, whole_requests=False)
    n = f", timed on {int(rows['n'].iloc[0]):,} requests" if "n" in rows and len(rows) else ""
    if n and "auc_over" in rows and rows["auc_over"].notna().all():
        n += f" (AUC over {rows['auc_over'].iloc[0]})"
    return people_table(
        rows,
        [
            Column("setting", "setting"),
            _auc(),
            Column("rps", "requests/s", "rate"),
            Column("p50_ms", "latency p50", "ms"),
            Column("mean_exit_layer", "mean exit layer", "layer"),
            Column("speedup_vs_full", "speed-up", "ratio"),
            Column("speedup_vs_engine_full", "vs engine at full depth", "ratio"),
            Column("compute_bound_speedup", "compute bound", "ratio"),
        ],
        caption="The early-exit engine against the plain full-depth forward and against itself never "
        f"exiting{n}",
    )


def whole_requests_table(exits: pd.DataFrame) -> PeopleTable:
    """Whole requests (retrieval → prompt → score) per second, and where their time goes."""
    return people_table(
        _labelled(exits, whole_requests=True),
        [
            Column("setting", "pipeline"),
            Column("n", "requests", "int"),
            Column("rps", "requests/s", "rate"),
            Column("speedup_vs_full", "vs LLM + full depth", "ratio"),
            Column("retrieval_ms", "retrieval", "ms"),
            Column("model_ms", "model", "ms"),
            Column("retrieval_share", "time in retrieval", "share"),
        ],
    )


def _rule_bound(rows: pd.DataFrame) -> list[Column]:
    """The operating-point rule's one-sided upper bound of the drop, when the sweep holds it."""
    if "drop_upper" not in rows.columns:
        return []
    why = "the rule's bound is computed on validation, where it chooses"
    return [Column("drop_upper", "drop bound (one-sided)", "signed", missing=why)]


def sweep_table(sweep: pd.DataFrame, form: str | None = None) -> PeopleTable:
    """The threshold sweep of one exit rule (``form``; all when None): accuracy against compute,
    on validation (where τ is chosen) and test (where it is reported, with the paired interval of
    the drop) when the sweep has both."""
    rows = sweep if form is None else _rows(sweep, "form", lambda f: f == form)
    split = [Column("split", "samples")] if "split" in rows.columns else []
    return people_table(
        rows,
        [
            *split,
            Column("form", "rule"),
            Column("tau", "τ", "tau"),
            _auc(),
            Column(
                "auc_drop",
                "AUC drop [95% paired CI]",
                "signed",
                low="drop_ci_low",
                high="drop_ci_high",
                missing="validation rows choose τ; intervals are given on test",
            )
            if "drop_ci_low" in rows.columns
            else Column("auc_drop", "AUC drop", "signed"),
            *_rule_bound(rows),
            # the compute bound is 1 / the share of layer compute: one column says both
            Column("mean_exit_layer", "mean exit layer", "layer"),
            Column("compute_bound_speedup", "compute bound", "ratio"),
        ],
    )


def baselines_table(table: pd.DataFrame) -> PeopleTable:
    """Every predictor on the same test samples, and the LLM's paired lead over each."""
    return people_table(
        table,
        [
            Column("method", "predictor"),
            Column("kind", "kind"),
            _auc(),
            Column("logloss", "LogLoss", "auc", missing="the score is not a probability"),
            Column(
                "llm_minus_baseline",
                "LLM − it [95% paired CI]",
                "signed",
                low="diff_ci_low",
                high="diff_ci_high",
                missing="the reference LLM row",
            ),
        ],
        caption="Test AUC; the last column is the LLM (GCN context, final head) minus the row",
    )


def _claim_kind(row: pd.Series) -> str:
    return "ratio" if "ratio" in str(row.get("measure", "")) else "signed"


def claims_table(claims: pd.DataFrame, *, measure: bool = True) -> PeopleTable:
    """Each claim, the paper's figure, our estimate with its 95% interval and the verdict (the
    words of ``claims.csv``); ``measure=False`` leaves out what our estimate measures."""
    columns = [Column("claim", "claim"), Column("paper", "paper")]
    columns += [Column("measure", "our measure")] if measure else []
    columns += [
        Column(
            "estimate",
            "ours [95% CI]",
            _claim_kind,
            low="ci_low",
            high="ci_high",
            missing="its results were not produced",
        ),
        Column("verdict", "verdict"),
    ]
    return people_table(claims, columns)


def run_times_table(times: pd.DataFrame) -> PeopleTable:
    """Each notebook's status and wall time (``run_times.csv``)."""
    return people_table(
        times,
        [
            Column("notebook", "notebook"),
            Column("status", "status"),
            Column("wall_s", "wall time", "s", missing="not finished"),
            Column("started", "started", "time", missing="not started"),
            Column("finished", "finished", "time", missing="not finished"),
        ],
    )


def compute_view(compute: pd.DataFrame) -> PeopleTable:
    """Each model path's tokens/s, achieved TFLOP/s and share of the measured bf16 matmul limit
    (``compute.csv``, :func:`ragrec.experiments.compute.compute_table`)."""
    return people_table(
        compute,
        [
            Column("path", "path"),
            Column("dtype", "dtype"),
            Column("batch_size", "batch", "int"),
            Column("tokens", "tokens", "int"),
            Column("tokens_per_s", "tokens/s", "rate"),
            Column("tflops", "TFLOP/s", "rate"),
            Column("fraction_of_limit", "share of the bf16 limit", "share"),
        ],
    )


def provenance_view(provenance: pd.DataFrame) -> PeopleTable:
    """Where and with what each library step ran (:func:`ragrec.reproduce.notebook.provenance_table`)."""

    def cell(row: pd.Series, column: str) -> str:
        return "" if is_missing(row.get(column)) else str(row[column])

    rows = provenance.assign(
        commit=[
            cell(r, "git_commit") + (" (uncommitted changes)" if cell(r, "git_dirty") == "True" else "")
            for _, r in provenance.iterrows()
        ],
        packages=[
            ", ".join(f"{name} {cell(r, name)}" for name in ("torch", "transformers") if cell(r, name))
            for _, r in provenance.iterrows()
        ],
    )
    return people_table(
        rows,
        [
            Column("step", "step"),
            Column("commit", "commit"),
            Column("packages", "packages"),
            Column("cpu", "CPU"),
            Column("torch_threads", "threads", "int"),
            Column("gpu", "GPU", missing="none"),
        ],
    )


def run_summary_table(summary: pd.DataFrame) -> PeopleTable:
    """The time every profile's run took wherever its results are present."""
    return people_table(
        summary,
        [
            Column("profile", "profile"),
            Column("dataset", "dataset"),
            Column("notebooks_ok", "notebooks finished"),
            Column("wall_s", "wall time", "s", missing="none finished"),
            Column("last_finished", "last finished", "time"),
        ],
    )


def checks_table(checks: pd.DataFrame) -> PeopleTable:
    """The engine's agreement checks: never-exit engine against the plain forward, and the plain
    forward against the saved predictions (largest |ΔP(Yes)| over the checked requests)."""
    return people_table(
        checks,
        [
            Column(
                "engine_never_vs_plain", "engine (never exit) vs plain forward", "sci", missing="not checked"
            ),
            Column("plain_vs_saved", "plain forward vs saved predictions", "sci", missing="not checked"),
            Column("n_check", "requests checked", "int"),
        ],
        caption="Largest |difference in P(Yes)|",
    )


DATA_ROWS: tuple[tuple[str, str, str], ...] = (
    ("dataset", "dataset", "text"),
    ("users", "users", "int"),
    ("items", "items", "int"),
    ("interactions", "interactions", "int"),
    ("density", "density", "share"),
    ("label_rule", "liked when", "text"),
    ("positive_rate", "liked share", "share"),
    ("split_method", "split", "text"),
    ("train_samples", "training samples", "int"),
    ("valid_samples", "validation samples", "int"),
    ("test_samples", "test samples", "int"),
    ("train_samples_used", "training samples used", "int"),
    ("valid_samples_used", "validation samples used", "int"),
    ("test_samples_used", "test samples used", "int"),
    ("history_scope", "history scope", "text"),
    ("mean_history_len", "mean history length", "layer"),
    ("test_cold_start_share", "test samples of cold-start users", "share"),
)


def data_table(stats: pd.DataFrame) -> PeopleTable:
    """The dataset's one-row ``data.csv`` as one line per quantity."""
    row = stats.iloc[0] if len(stats) else pd.Series(dtype=object)
    lines = pd.DataFrame(
        [
            {"quantity": label, "value": format_value(row.get(name), kind) or MISSING}
            for name, label, kind in DATA_ROWS
        ]
    )
    absent = [label for name, label, _ in DATA_ROWS if is_missing(row.get(name))]
    table = people_table(lines, [Column("quantity", "quantity"), Column("value", "value")])
    table.notes = [f"{MISSING} {', '.join(absent)}: not in this results table."] if absent else []
    return table
