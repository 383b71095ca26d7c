"""The LightGCN architecture sweep (issue #28; the paper summary's check 3): no LLM, validation only.

One factor at a time around the profile's LightGCN — layers K, embedding size d, the layer
combination (mean over the K+1 layer outputs, the paper's read-out, or the last layer only) —
each a GCN-Retriever trained on the training interactions with the sweep's epoch cap and early
stopping on validation Recall@20. Per setting: validation Recall@20 and NDCG@20 (LightGCN's own
ranking of the held-out items), and the neighbour-vote AUC on the validation samples: a logistic
regression on the prompt's numbers with the vote polled from that GCN's neighbours
(:func:`~ragrec.experiments.retrieval.density.vote_baseline`), with its bootstrap interval. Test
samples are never scored here; ``chosen`` marks the setting with the best validation Recall@20.

PyG's ``LightGCN`` takes α as a fixed buffer (uniform ``1/(K+1)`` by default), not a parameter,
so a *learned* layer combination is not part of this sweep.

Output: ``architecture.csv``.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pandas as pd

from ragrec import result_files
from ragrec.config import Profile
from ragrec.config.sweeps import ArchitectureSweepConfig
from ragrec.experiments.retrieval.density import vote_baseline
from ragrec.metrics import auc, auc_ci
from ragrec.results import Provenance, result_dir, write_csv
from ragrec.retrieval.lightgcn import LightGCNConfig

COLUMNS = (
    "factor",
    "num_layers",
    "dim",
    "layer_combination",
    "recall_at_k",
    "ndcg_at_k",
    "cutoff",
    "vote_auc",
    "vote_auc_ci_low",
    "vote_auc_ci_high",
    "n_valid",
    "best_epoch",
    "fit_s",
    "chosen",
)


def sweep_settings(base: LightGCNConfig, config: ArchitectureSweepConfig) -> list[tuple[str, LightGCNConfig]]:
    """(factor varied, LightGCN config) per setting, one factor at a time around ``base``; the
    base setting once, under ``"base"``."""
    base = dataclasses.replace(base, max_epochs=config.max_epochs or base.max_epochs, progress=False)
    settings = [("base", base)]
    for factor, field, values in (
        ("num_layers", "num_layers", config.layers),
        ("dim", "dim", config.dims),
        ("layer_combination", "layer_combination", config.combinations),
    ):
        for value in values:
            candidate = dataclasses.replace(base, **{field: value})
            if all(candidate != seen for _, seen in settings):
                settings.append((factor, candidate))
    return settings


def run_architecture_sweep(profile: Profile, *, data_root=None, results_root=None) -> pd.DataFrame:
    """Fit and judge every setting of ``profile.sweeps.architecture`` on validation; write
    ``architecture.csv`` and provenance."""
    from ragrec.experiments.recommender.prepare import checkpoint_dir, prepare_data

    started = time.perf_counter()
    config = profile.sweeps.architecture or ArchitectureSweepConfig()
    prepared = prepare_data(profile, data_root=data_root)
    y = prepared.valid.frame["label"].to_numpy(int)
    rows = []
    for factor, lightgcn in sweep_settings(profile.lightgcn, config):
        gcn = dataclasses.replace(profile.retriever_config("gcn"), lightgcn=lightgcn)
        retriever = gcn.build(prepared.dataset)
        retriever.use_cache(prepared.split.train, checkpoint_dir(profile, results_root))
        retriever.fit(prepared.split.train, prepared.split.valid)
        vote = vote_baseline(prepared, retriever, prepared.valid)
        lo, hi = auc_ci(y, vote, seed=profile.seed)
        valid = retriever.result.valid
        rows.append(
            (factor, lightgcn.num_layers, lightgcn.dim, lightgcn.layer_combination)
            + ((valid.recall, valid.ndcg, valid.k) if valid else (np.nan, np.nan, np.nan))
            + (auc(y, vote), lo, hi, len(y), retriever.result.best_epoch, retriever.result.fit_s, False)
        )
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    # validation chooses: the best validation Recall@20 (LightGCN's own early-stopping criterion)
    if table["recall_at_k"].notna().any():
        table.loc[table["recall_at_k"].idxmax(), "chosen"] = True
    out_dir = result_dir(profile.name, profile.data.dataset, results_root)
    write_csv(table, out_dir / result_files.ARCHITECTURE)
    provenance = Provenance(
        "architecture", profile.name, profile.data.dataset, profile.seed, {"config": config}
    )
    provenance.parameters = {"config": config, "seconds": time.perf_counter() - started}
    provenance.write(out_dir, [result_files.ARCHITECTURE])
    return table
