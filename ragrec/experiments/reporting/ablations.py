"""The recommender's ablations, recomputed from its saved per-sample predictions.

* **Context** — the same trained model evaluated with each prompt context (``none``, ``random``,
  ``gcn``, ``llm``): every head's AUC with its bootstrap interval and the paired-bootstrap
  difference AUC(reference) − AUC(context) on the same test samples (reference: ``gcn``).
* **β** — depth-wise learning-rate decay (β > 0) against uniform learning rates (β = 0) has its
  own table, with seeds: :mod:`ragrec.experiments.reporting.beta_study` (``beta_study.csv``).

A variant may score a subset of the reference's test samples (the profile scores some contexts
on a reduced subset): its difference is then paired on that subset.

Both read the recommender's predictions files (:class:`ragrec.result_files.Predictions`: columns
``sample_id``, ``label``, ``p_head_<layer>``) written by
:func:`ragrec.experiments.recommender.pipeline.run_recommender`, so every number here can be recomputed
from those files. The result is one long table, ``ablations.csv``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ragrec.errors import DataError
from ragrec.metrics import auc, auc_ci, paired_auc_difference
from ragrec.result_files import predictions
from ragrec.results import read_csv

ABLATION_COLUMNS = (
    "ablation",
    "variant",
    "reference",
    "head_layer",
    "auc",
    "auc_ci_low",
    "auc_ci_high",
    "reference_minus_variant",
    "diff_ci_low",
    "diff_ci_high",
    "n",
)


def head_columns(frame: pd.DataFrame) -> list[str]:
    """The ``p_head_<layer>`` columns, shallowest first."""
    return sorted(
        (c for c in frame.columns if c.startswith("p_head_")), key=lambda c: int(c.rsplit("_", 1)[1])
    )


def _load(directory: Path, name: str) -> pd.DataFrame | None:
    path = directory / name
    return read_csv(path).sort_values("sample_id").reset_index(drop=True) if path.exists() else None


def compare(
    ablation: str,
    reference_name: str,
    reference: pd.DataFrame,
    variants: dict[str, pd.DataFrame],
    *,
    n_boot: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """Per variant and head: AUC with interval, and AUC(reference) − AUC(variant) paired on the
    same samples (the reference's own rows carry no difference)."""
    rows = []
    heads = head_columns(reference)
    for name, frame in {reference_name: reference, **variants}.items():
        paired = reference[reference["sample_id"].isin(frame["sample_id"])].reset_index(drop=True)
        if not frame["sample_id"].equals(paired["sample_id"]):
            raise DataError(f"{ablation} ablation: {name!r} scores samples that {reference_name!r} does not")
        if head_columns(frame) != heads:
            raise DataError(
                f"{ablation} ablation: {name!r} has heads {head_columns(frame)}, expected {heads}"
            )
        labels = frame["label"].to_numpy()
        for col in heads:
            lo, hi = auc_ci(labels, frame[col], n_boot=n_boot, seed=seed)
            row = {
                "ablation": ablation,
                "variant": name,
                "reference": reference_name,
                "head_layer": int(col.rsplit("_", 1)[1]),
                "auc": auc(labels, frame[col]),
                "auc_ci_low": lo,
                "auc_ci_high": hi,
                "reference_minus_variant": float("nan"),
                "diff_ci_low": float("nan"),
                "diff_ci_high": float("nan"),
                "n": len(frame),
            }
            if name != reference_name:
                d = paired_auc_difference(labels, paired[col], frame[col], n_boot=n_boot, seed=seed)
                row.update(reference_minus_variant=d.diff, diff_ci_low=d.ci_low, diff_ci_high=d.ci_high)
            rows.append(row)
    return pd.DataFrame(rows, columns=list(ABLATION_COLUMNS))


def context_ablation(
    directory: str | Path,
    contexts: tuple[str, ...],
    *,
    reference: str = "gcn",
    n_boot: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """The context ablation from each context's test predictions (contexts without a file are
    skipped; empty table when the reference's file is absent)."""
    d = Path(directory)
    ref = _load(d, predictions(reference))
    if ref is None:
        return pd.DataFrame(columns=list(ABLATION_COLUMNS))
    variants = {c: f for c in contexts if c != reference and (f := _load(d, predictions(c))) is not None}
    return compare("context", reference, ref, variants, n_boot=n_boot, seed=seed)


def cf_ablation(
    directory: str | Path, contexts: tuple[str, ...], *, n_boot: int = 1000, seed: int = 0
) -> pd.DataFrame:
    """Beyond the paper: the main model against its ``cf`` variant (collaborative tokens) under each
    context both were scored in, on the same samples (variants ``main`` and ``cf``)."""
    d = Path(directory)
    parts = []
    for ctx in contexts:
        main, cf = _load(d, predictions(ctx)), _load(d, predictions(ctx, "cf"))
        if main is not None and cf is not None:
            parts.append(compare("cf_tokens", ctx, main, {f"{ctx}+cf": cf}, n_boot=n_boot, seed=seed))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=list(ABLATION_COLUMNS))


def dtype_ablation(directory: str | Path, dtype: str, *, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """What scoring in ``dtype`` costs: the GCN-context predictions against the fp32 check on its
    subset of the same samples (variant ``fp32``)."""
    d = Path(directory)
    main, fp32 = _load(d, predictions("gcn")), _load(d, predictions("gcn", "fp32"))
    if main is None or fp32 is None:
        return pd.DataFrame(columns=list(ABLATION_COLUMNS))
    return compare("dtype", dtype, main, {"float32": fp32}, n_boot=n_boot, seed=seed)


def run_ablations(
    directory: str | Path,
    contexts: tuple[str, ...],
    *,
    n_boot: int = 1000,
    seed: int = 0,
    dtype: str = "float32",
) -> pd.DataFrame:
    """Every ablation as one table (the ``ablations.csv`` of a results directory): contexts, and
    beyond the paper the collaborative tokens and the scoring dtype (β: ``beta_study.csv``)."""
    parts = [
        context_ablation(directory, contexts, n_boot=n_boot, seed=seed),
        cf_ablation(directory, contexts, n_boot=n_boot, seed=seed),
        dtype_ablation(directory, dtype, n_boot=n_boot, seed=seed),
    ]
    parts = [p for p in parts if not p.empty]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=list(ABLATION_COLUMNS))
