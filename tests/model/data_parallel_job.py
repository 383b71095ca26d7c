"""One training run of the data-parallel test (:mod:`tests.model.test_distributed`), launched as
``accelerate launch --multi_gpu --num_processes N -m tests.model.data_parallel_job OUT`` or as
one plain process: trains the tiny model on the learnable task and writes, from the main
process, the per-step losses, the validation AUCs and the test predictions to ``OUT`` (JSON)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from ragrec.metrics import auc
from ragrec.model.distributed import current_shard
from ragrec.model.predict import predict_heads
from ragrec.model.train import TrainConfig, train_multihead
from tests.model.test_train import fresh, learnable_task

# global batch 8 with 2 batches per step; 36 prompts: the last batch of an epoch has 4 rows
CONFIG = TrainConfig(
    lr=1e-2, epochs=2, batch_size=8, grad_accum=2, warmup_steps=1, eval_every=2, checkpoint_every=3
)


def main(out: Path) -> None:
    torch.set_num_threads(1)
    shard = current_shard()
    bb, heads = fresh()
    prompts, labels = learnable_task(bb, n=36, seed=0)
    valid = learnable_task(bb, n=20, seed=1)
    test_prompts, test_labels = learnable_task(bb, n=30, seed=2)
    result = train_multihead(
        bb,
        heads,
        prompts,
        labels,
        CONFIG,
        out.parent / f"{out.stem}-checkpoints",
        valid=valid,
        progress=False,
    )
    p = predict_heads(bb, heads, test_prompts)
    if shard.is_main:
        out.write_text(
            json.dumps(
                {
                    "world": shard.world,
                    "loss": result.loss,
                    "valid_auc": result.valid_auc,
                    "predictions": p.tolist(),
                    "test_auc": [auc(np.asarray(test_labels), p[:, h]) for h in range(p.shape[1])],
                }
            )
        )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
