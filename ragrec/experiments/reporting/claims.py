"""The paper's claims checked against one results directory.

Each claim gets the paper's figure (as reported; text), our estimate with its 95% interval where
the results allow one, and a verdict:

* ``supported`` — the interval lies on the claimed side (or, for measures without an interval,
  the point estimate does; the verdict then says ``no interval``);
* ``consistent`` — for an "at least as good" claim, the interval contains 0;
* ``inconclusive`` — for a "better" claim, the interval contains 0;
* ``contradicted`` — the estimate lies on the other side (beyond the interval when there is one);
* ``not run`` — the results the claim needs are absent (a step not built or not run).

Claims and measures:

1. ``faster_retrieval`` — p50 per-query latency ratio LLM retriever / GCN-Retriever (mean read-out)
   from ``retrieval.csv``; latency percentiles come without an interval.
2. ``gcn_auc_vs_llm`` — AUC(GCN context) − AUC(LLM context), final head, paired bootstrap on the
   same test samples (the ``gcn`` and ``llm`` contexts' predictions).
3. ``early_exit_rps`` — measured requests/s of the early-exit engine over the same engine never
   exiting (``speedup_vs_engine_full``: the forward path fixed, the exits alone changed; tables
   without that row fall back to the plain full-depth forward, and the evidence says which), at
   the benchmark's operating point (the cheapest candidate whose one-sided upper bound of the
   AUC drop stays within the margin *on the validation predictions*, any candidate family,
   :mod:`ragrec.experiments.early_exit.noninferiority`; ``early_exit.csv`` row
   ``role=operating_point``), same prompts, batches and threads; supported when it is faster *and*
   its test AUC stays within ``max_auc_drop`` of full depth. That AUC is the test sweep's at the
   point's (form, τ), over every test sample, when the engine's exits matched the sweep's on the
   timed requests (``exit_agreement`` 1); otherwise the row's own AUC. A table that names no
   operating point leaves the claim not run: the check never picks a point by its test AUC.
4. ``lr_decay_helps`` — AUC(β > 0) − AUC(β = 0), final head, GCN context: the β study's mean
   over seeds with its t-interval over seeds
   (:func:`ragrec.experiments.reporting.beta_study.beta_study_table`: per seed, two runs identical
   but for β, on the same test samples), so the interval holds the run-to-run noise.
5. ``layer_mean_beats_last`` — neighbour hit rate of the GCN-Retriever with the mean over layers
   minus with the last layer (``retrieval.csv``), no interval.
6. ``pipeline_rps`` — whole requests (retrieval → prompt → score) per second of GCN retrieval +
   early exit over LLM retrieval + full depth (``early_exit.csv`` rows ``e2e_gcn_exit`` and
   ``e2e_llm_full``), the comparison behind the paper's throughput headline.
7. ``cf_tokens_help`` — beyond the paper: AUC with collaborative soft tokens minus without, final
   head, GCN context, paired bootstrap (variant ``cf`` against ``main``).
8. ``dynamic_beats_static`` — beyond the paper: the paper's rule chosen on validation against the
   static exit of equal or less compute, AUC difference on test, paired bootstrap
   (:mod:`ragrec.experiments.reporting.static_claim`).
9. ``context_helps`` — the paper's premise: AUC(GCN context) − AUC(no similar users), final head,
   paired bootstrap on the samples both scored (``context_effect.csv``, row gcn − none).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ragrec.errors import DataError
from ragrec.experiments.reporting.beta_study import beta_study_table, study_summary
from ragrec.experiments.reporting.static_claim import CLAIM as STATIC_CLAIM
from ragrec.experiments.reporting.static_claim import dynamic_vs_static
from ragrec.metrics import paired_auc_difference
from ragrec.result_files import (
    BETA_STUDY,
    CONTEXT_EFFECT,
    EARLY_EXIT,
    RETRIEVAL,
    THRESHOLD_SWEEP,
    predictions,
)
from ragrec.results import read_csv

NOT_RUN = "not run"
CLAIM_COLUMNS = (
    "claim_id",
    "claim",
    "paper",
    "measure",
    "estimate",
    "ci_low",
    "ci_high",
    "verdict",
    "evidence",
)


@dataclass(frozen=True)
class ClaimCheck:
    """One row of ``claims.csv``."""

    claim_id: str
    claim: str
    paper: str
    measure: str
    estimate: float = math.nan
    ci_low: float = math.nan
    ci_high: float = math.nan
    verdict: str = NOT_RUN
    evidence: str = ""


@dataclass(frozen=True)
class ClaimSettings:
    """Choices the checks need: neighbour count ``k`` of the retrieval rows, the largest AUC drop
    an early-exit operating point may have, and the bootstrap."""

    k: int | None = None
    max_auc_drop: float = 0.005
    n_boot: int = 1000
    seed: int = 0


def interval_verdict(low: float, high: float, *, at_least: bool) -> str:
    """Verdict of a difference claimed > 0 (``at_least``: ≥ 0) from its interval."""
    if low > 0:
        return "supported"
    if high < 0:
        return "contradicted"
    return "consistent" if at_least else "inconclusive"


def point_verdict(estimate: float, threshold: float = 0.0) -> str:
    """Verdict of a measure without interval claimed to exceed ``threshold``."""
    return ("supported" if estimate > threshold else "contradicted") + " (no interval)"


def _read(directory: Path, name: str) -> pd.DataFrame | None:
    path = directory / name
    return read_csv(path) if path.exists() else None


def final_head_column(frame: pd.DataFrame) -> str:
    heads = sorted(
        (c for c in frame.columns if c.startswith("p_head_")), key=lambda c: int(c.rsplit("_", 1)[1])
    )
    if not heads:
        raise DataError("a predictions table has no p_head_<layer> column")
    return heads[-1]


def paired_final_head(
    a: pd.DataFrame, b: pd.DataFrame, settings: ClaimSettings
) -> tuple[float, float, float]:
    """AUC(a) − AUC(b) of the final heads on the samples both scored, with a paired bootstrap."""
    merged = a.merge(b, on="sample_id", suffixes=("_a", "_b"))
    if len(merged) != len(a) or len(merged) != len(b):
        raise DataError("the two predictions tables score different samples")
    col_a, col_b = final_head_column(a), final_head_column(b)
    d = paired_auc_difference(
        merged["label_a"],
        merged[f"{col_a}_a"],
        merged[f"{col_b}_b"],
        n_boot=settings.n_boot,
        seed=settings.seed,
    )
    return d.diff, d.ci_low, d.ci_high


def _retrieval_rows(d: Path, k: int | None) -> pd.DataFrame | None:
    """``retrieval.csv``'s rows for ``k`` (the smallest k measured when k was not), or None when
    the retrieval benchmark has not run."""
    frame = _read(d, RETRIEVAL)
    if frame is None:
        return None
    ks = sorted(frame["k"].unique())
    chosen = k if k in ks else ks[0]
    return frame[frame["k"] == chosen]


def check_faster_retrieval(d: Path, s: ClaimSettings) -> ClaimCheck:
    base = ClaimCheck(
        "faster_retrieval",
        "The GCN-Retriever retrieves similar users faster than the LLM-based retriever.",
        "up to 4.72× faster retrieval",
        "p50 latency ratio LLM / GCN (×)",
    )
    rows = _retrieval_rows(d, s.k)
    if rows is None:
        return base
    gcn = rows[(rows["retriever"] == "gcn") & (rows["layer_combination"] == "mean")]
    llm = rows[rows["retriever"] == "llm"]
    if gcn.empty or llm.empty:
        return base
    ratio = float(llm["p50_ms"].iloc[0] / gcn["p50_ms"].iloc[0])
    return _with(
        base, ratio, verdict=point_verdict(ratio, 1.0), evidence=f"{RETRIEVAL}, k={int(rows['k'].iloc[0])}"
    )


def check_gcn_auc_vs_llm(d: Path, s: ClaimSettings) -> ClaimCheck:
    base = ClaimCheck(
        "gcn_auc_vs_llm",
        "Prompts with GCN-retrieved users score an AUC at least as high as with LLM-retrieved users.",
        "AUC 72.51 vs 69.05 (BookCrossing)",
        "AUC(GCN context) − AUC(LLM context), final head",
    )
    return _paired_check(base, d, s, predictions("gcn"), predictions("llm"), at_least=True)


def _paired_check(
    base: ClaimCheck, d: Path, s: ClaimSettings, a_name: str, b_name: str, *, at_least: bool
) -> ClaimCheck:
    """The claim judged on the paired-bootstrap final-head AUC difference of two prediction files."""
    a, b = _read(d, a_name), _read(d, b_name)
    if a is None or b is None:
        return base
    diff, lo, hi = paired_final_head(a, b, s)
    return _with(base, diff, lo, hi, interval_verdict(lo, hi, at_least=at_least), f"{a_name} − {b_name}")


def early_exit_operating_point(frame: pd.DataFrame) -> pd.Series | None:
    """The benchmark's operating point: the row with ``role == "operating_point"`` (not an
    ``e2e_*`` pipeline row), chosen by the benchmark on validation predictions; None when the
    table names none. The claim never picks a row itself: picking the fastest row whose AUC holds
    would choose τ on the test samples the claim is judged on."""
    if frame[frame["method"] == "full"].empty:
        raise DataError("early_exit.csv has no method=full row")
    if "role" not in frame.columns:
        return None
    named = frame[(frame["role"] == "operating_point") & ~frame["method"].astype(str).str.startswith("e2e_")]
    return named.iloc[0] if len(named) else None


def check_early_exit_rps(d: Path, s: ClaimSettings) -> ClaimCheck:
    base = ClaimCheck(
        "early_exit_rps",
        "Early exit raises requests per second while keeping AUC.",
        "higher RPS at kept AUC (main table)",
        "RPS ratio early exit / the same engine at full depth, at the operating point",
    )
    frame = _main_variant(_read(d, EARLY_EXIT))
    if frame is None:
        return base
    point = early_exit_operating_point(frame)
    if point is None:
        return _with(base, math.nan, evidence="early_exit.csv names no operating point chosen on validation")
    speedup, against = _early_exit_speedup(point)
    sweep = _main_variant(_read(d, THRESHOLD_SWEEP))
    if sweep is not None and "split" in sweep.columns:
        sweep = sweep[sweep["split"] == "test"]
    auc, full_auc, source = operating_point_auc(frame, point, sweep)
    kept = auc >= full_auc - s.max_auc_drop
    verdict = (
        point_verdict(speedup, 1.0) if kept or speedup <= 1.0 else "contradicted (AUC not kept; no interval)"
    )
    form = f" {point['form']}" if "form" in point.index else ""
    chosen = f", τ chosen on {point['chosen_on']}" if isinstance(point.get("chosen_on"), str) else ""
    return _with(
        base,
        speedup,
        verdict=verdict,
        evidence=f"{EARLY_EXIT},{form} τ={point['tau']:g}{chosen}; {against}; "
        f"AUC {auc:.4f} vs full {full_auc:.4f} ({source})",
    )


def _early_exit_speedup(point: pd.Series) -> tuple[float, str]:
    """(speed-up, what it is against) at the operating point: against the engine never exiting
    when the table timed it, which changes the exits alone; else against the plain forward."""
    plain = float(point["speedup_vs_full"])
    own = float(point.get("speedup_vs_engine_full", math.nan))
    if math.isnan(own):
        return plain, "against the plain forward (this table did not time the engine never exiting)"
    return own, f"against the engine never exiting; {plain:.2f}× against the plain Hugging Face forward"


def _main_variant(frame: pd.DataFrame | None) -> pd.DataFrame | None:
    """The main model's rows of a table that also holds the ``cf`` variant's."""
    if frame is None or "variant" not in frame.columns:
        return frame
    return frame[frame["variant"] == "main"].reset_index(drop=True)


def operating_point_auc(
    frame: pd.DataFrame, point: pd.Series, sweep: pd.DataFrame | None
) -> tuple[float, float, str]:
    """(AUC at the operating point, AUC at full depth, where both come from). The sweep's row for
    the point's form and τ scores every test sample, and stands for the engine when the engine's
    exit layers matched the simulated ones on every timed request (``exit_agreement`` = 1); else
    the point's own row of ``early_exit.csv``, labelled by its ``auc_over`` column, with the
    agreement."""
    if (
        sweep is not None
        and {"form", "exit_agreement"} <= set(point.index)
        and float(point["exit_agreement"]) == 1.0
    ):
        rows = sweep[(sweep["form"] == point["form"]) & np.isclose(sweep["tau"], float(point["tau"]))]
        if "split" in rows.columns:  # the sweep also holds the validation rows that chose τ
            rows = rows[rows["split"] == "test"]
        if "first_head" in rows.columns and "first_head" in point.index:
            rows = rows[rows["first_head"] == point["first_head"]]
        if len(rows) == 1:
            row = rows.iloc[0]
            source = f"threshold sweep, {int(row['n'])} test samples"
            if not math.isnan(float(row.get("drop_ci_low", math.nan))):
                source += (
                    f"; paired 95% interval of the drop [{row['drop_ci_low']:+.4f}, "
                    f"{row['drop_ci_high']:+.4f}]"
                )
            return float(row["auc"]), float(row["auc_full"]), source
    # the row's own AUC: over what its auc_over column says (the engine's exits replayed on every
    # test sample in current tables; the timed requests alone in older ones)
    full = float(frame.loc[frame["method"] == "full", "auc"].iloc[0])
    over = point.get("auc_over")
    over = over if isinstance(over, str) and over else "the timed requests"
    agreement = float(point.get("exit_agreement", math.nan))
    matched = (
        "" if math.isnan(agreement) else f"; engine exits = the sweep's on {agreement:.1%} of timed requests"
    )
    return float(point["auc"]), full, f"{EARLY_EXIT} row, AUC over {over}{matched}"


def check_pipeline_rps(d: Path, s: ClaimSettings) -> ClaimCheck:
    base = ClaimCheck(
        "pipeline_rps",
        "GCN retrieval with early exit serves more whole requests per second than LLM retrieval at full "
        "depth.",
        "RPS 3.83 → 4.57 (Video Games)",
        "requests/s ratio e2e GCN + exit / e2e LLM + full",
    )
    frame = _main_variant(_read(d, EARLY_EXIT))
    if frame is None:
        return base
    rows = frame.set_index("method")
    if not {"e2e_gcn_exit", "e2e_llm_full"} <= set(rows.index):
        return base
    ratio = float(rows.loc["e2e_gcn_exit", "rps"] / rows.loc["e2e_llm_full", "rps"])
    return _with(
        base, ratio, verdict=point_verdict(ratio, 1.0), evidence="early_exit.csv, e2e_gcn_exit / e2e_llm_full"
    )


def check_lr_decay(d: Path, s: ClaimSettings) -> ClaimCheck:
    base = ClaimCheck(
        "lr_decay_helps",
        "Depth-wise learning-rate decay of the exit heads improves accuracy.",
        "reported as an improvement (no figure available here)",
        "AUC(β > 0) − AUC(β = 0), final head, GCN context, mean over seeds",
    )
    table = beta_study_table(d, n_boot=s.n_boot, seed=s.seed)
    if table.empty:
        return base
    final = study_summary(table, "head", table.loc[table["measure"] == "head", "layers"].max())
    lo, hi = float(final["diff_ci_low"]), float(final["diff_ci_high"])
    evidence = (
        f"{BETA_STUDY}: {int(final['n_seeds'])} seeds per arm on {int(final['n'])} test samples, "
        "t-interval over the per-seed differences"
    )
    return _with(base, float(final["diff"]), lo, hi, interval_verdict(lo, hi, at_least=False), evidence)


def check_cf_tokens(d: Path, s: ClaimSettings) -> ClaimCheck:
    base = ClaimCheck(
        "cf_tokens_help",
        "Beyond the paper: collaborative soft tokens in the prompt raise the AUC.",
        "beyond the paper (CoLLM, Vicuna-7B on ML-1M: 0.7097 → 0.7295)",
        "AUC(with CF tokens) − AUC(without), final head, GCN context",
    )
    return _paired_check(base, d, s, predictions("gcn", "cf"), predictions("gcn"), at_least=True)


def check_layer_mean(d: Path, s: ClaimSettings) -> ClaimCheck:
    base = ClaimCheck(
        "layer_mean_beats_last",
        "Averaging the GCN's layer outputs retrieves better neighbours than the last layer.",
        "reported as better (ablation; figure not available here)",
        "neighbour hit rate, mean − last layer",
    )
    rows = _retrieval_rows(d, s.k)
    if rows is None:
        return base
    gcn = rows[rows["retriever"] == "gcn"].set_index("layer_combination")
    if not {"mean", "last"} <= set(gcn.index):
        return base
    diff = float(gcn.loc["mean", "neighbour_hit_rate"] - gcn.loc["last", "neighbour_hit_rate"])
    return _with(base, diff, verdict=point_verdict(diff), evidence=f"{RETRIEVAL}, k={int(rows['k'].iloc[0])}")


def check_dynamic_vs_static(d: Path, s: ClaimSettings) -> ClaimCheck:
    base = ClaimCheck(*STATIC_CLAIM)
    measured = dynamic_vs_static(d, n_boot=s.n_boot, seed=s.seed)
    if measured is None:
        return base
    lo, hi = measured["ci_low"], measured["ci_high"]
    verdict = interval_verdict(lo, hi, at_least=False)
    return _with(base, measured["estimate"], lo, hi, verdict, measured["evidence"])


def check_context_helps(d: Path, s: ClaimSettings) -> ClaimCheck:
    base = ClaimCheck(
        "context_helps",
        "Retrieved similar users in the prompt make the LLM more accurate than no similar users.",
        "the premise of RAG-enhanced recommendation (no ablation number reported)",
        "AUC(GCN context) − AUC(no similar users), final head",
    )
    table = _read(d, CONTEXT_EFFECT)
    row = None if table is None else table[(table["a"] == "gcn") & (table["b"] == "none")]
    if row is None or row.empty:
        return base
    r = row.iloc[0]
    lo, hi = float(r["diff_ci_low"]), float(r["diff_ci_high"])
    verdict = interval_verdict(lo, hi, at_least=False)
    return _with(base, float(r["diff"]), lo, hi, verdict, f"{CONTEXT_EFFECT}, gcn − none, n={int(r['n'])}")


def _with(
    base: ClaimCheck,
    estimate: float,
    lo: float = math.nan,
    hi: float = math.nan,
    verdict: str = NOT_RUN,
    evidence: str = "",
) -> ClaimCheck:
    return ClaimCheck(
        base.claim_id, base.claim, base.paper, base.measure, estimate, lo, hi, verdict, evidence
    )


CHECKS: tuple[Callable[[Path, ClaimSettings], ClaimCheck], ...] = (
    check_faster_retrieval,
    check_gcn_auc_vs_llm,
    check_early_exit_rps,
    check_lr_decay,
    check_layer_mean,
    check_pipeline_rps,
    check_cf_tokens,
    check_dynamic_vs_static,
    check_context_helps,
)


def check_claims(directory: str | Path, settings: ClaimSettings = ClaimSettings()) -> pd.DataFrame:
    """Every claim checked against the results in ``directory``, as the ``claims.csv`` table."""
    d = Path(directory)
    rows = [asdict(check(d, settings)) for check in CHECKS]
    return pd.DataFrame(rows, columns=list(CLAIM_COLUMNS))
