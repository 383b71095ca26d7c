"""P(Yes) of every exit head for every prompt: full forwards in batches of similar length, the
results in the prompts' order; split over the processes of a data-parallel run
(:mod:`ragrec.model.distributed`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ragrec.llm.backbone import Backbone
from ragrec.llm.batching import length_sorted_batches, pad_prompts
from ragrec.model.distributed import Shard, current_shard
from ragrec.model.heads import ExitHeads


@torch.inference_mode()
def predict_heads(
    backbone: Backbone,
    heads: ExitHeads,
    prompts: Sequence[Sequence[int]],
    batch_size: int = 16,
    progress: bool = False,
    cf_ids: np.ndarray | None = None,
    shard: Shard | None = None,
) -> np.ndarray:
    """P(Yes) of every head for every prompt, ``[N, n_heads]``, from full forwards (batches of
    similar length, results in the original order). ``cf_ids`` ``[N, 2]``: (user, item) per
    prompt, for heads with collaborative tokens. Launched data-parallel (``shard``, default
    :func:`current_shard`), each process scores its batches and every process gets all rows.
    Every head reads out in fp32 (:meth:`ExitHeads.logits`) whatever the body's dtype."""
    shard = current_shard() if shard is None else shard
    out = np.zeros((len(prompts), len(heads.head_layers)), dtype=np.float64)
    was_training = backbone.model.training
    backbone.model.eval()
    heads.eval()
    pad = backbone.pad_id
    batches = shard.batches(length_sorted_batches(prompts, batch_size))
    for rows in tqdm(batches, desc="predict", disable=not (progress and shard.is_main), leave=False):
        ids, mask = pad_prompts([prompts[r] for r in rows], pad, "right")
        logits = heads.forward_all(
            backbone.model,
            ids.to(backbone.device),
            mask.to(backbone.device),
            rows_of(cf_ids, rows, backbone.device),
        )
        out[rows] = torch.softmax(logits.float(), dim=-1)[..., 1].cpu().numpy()
    backbone.model.train(was_training)
    return shard.gather(out)


def rows_of(cf_ids: np.ndarray | None, rows: np.ndarray, device) -> torch.Tensor | None:
    """The (user, item) ids ``[len(rows), 2]`` of a batch's prompts, for collaborative tokens."""
    return (
        None if cf_ids is None else torch.as_tensor(np.asarray(cf_ids)[rows], dtype=torch.long, device=device)
    )
