"""The plain full-depth forward the early-exit engine is measured against, and the checks that
the two agree.

:func:`plain_predict` runs the Hugging Face model's own full forward, batched and padded exactly
as :class:`~ragrec.model.engine.EarlyExitEngine` batches (DESIGN §5: RPS is measured against it
on the same prompts and batches). :func:`full_depth_checks` compares the engine told never to
exit with it, and it with the recommender's saved last head.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch

from ragrec.config import ExitBenchmarkConfig
from ragrec.errors import ConfigError
from ragrec.llm.backbone import Backbone
from ragrec.llm.batching import length_sorted_batches, pad_prompts
from ragrec.model.criteria import NeverExit
from ragrec.model.engine import EarlyExitEngine
from ragrec.model.forward import check_prompts, plain_full_forward_p_yes
from ragrec.model.heads import ExitHeads


def plain_predict(
    backbone: Backbone,
    prompts: Sequence[Sequence[int]],
    batch_size: int,
    padding_side: str = "left",
    *,
    heads: ExitHeads | None = None,
    cf_ids: np.ndarray | None = None,
) -> np.ndarray:
    """P(Yes) ``[N]`` from the plain Hugging Face full-depth forward, batched exactly as the
    engine batches (:func:`~ragrec.llm.batching.length_sorted_batches`,
    :func:`~ragrec.llm.batching.pad_prompts`).

    Args:
        backbone: the model (a plain Llama; LoRA merged or not).
        prompts: token-id prompts.
        batch_size: prompts per forward.
        padding_side: ``"left"`` or ``"right"``. (default: ``"left"``)
        heads, cf_ids: for prompts with collaborative slots, the heads that fill them
            (:meth:`~ragrec.model.heads.ExitHeads.input_embeddings`) and ``[N, 2]`` (user, item)
            per prompt; the model then reads those input embeddings, as the engine does.
    """
    check_prompts(backbone, prompts)
    if (heads is None) != (cf_ids is None):
        raise ConfigError("pass heads and cf_ids together (prompts with collaborative slots) or neither")
    if padding_side not in ("left", "right"):
        raise ConfigError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    out = np.full(len(prompts), np.nan)
    pad_id = backbone.pad_id  # as the engine pads
    device = backbone.device
    with torch.inference_mode():
        for idx in length_sorted_batches(prompts, batch_size):
            ids, valid = pad_prompts([prompts[i] for i in idx], pad_id, padding_side)  # [B, T] each
            embeds = (
                None
                if heads is None
                else heads.input_embeddings(
                    ids.to(device), torch.as_tensor(np.asarray(cf_ids)[idx], dtype=torch.long, device=device)
                )
            )
            p = plain_full_forward_p_yes(
                backbone, ids.to(device), valid.long().to(device), inputs_embeds=embeds
            )  # [B]
            out[idx] = p.to("cpu", torch.float64).numpy()
    return out


def full_depth_checks(
    backbone: Backbone, heads: ExitHeads, prompts, saved_requests: np.ndarray, config: ExitBenchmarkConfig
) -> dict:
    """Engine at "never exit" vs plain forward (merged model), and plain forward vs the saved
    last head (unmerged model), on the first ``check_requests`` prompts; warns above 1e-5 in fp32."""
    n_check = min(config.check_requests, len(prompts))
    checks = {"engine_never_vs_plain": math.nan, "plain_vs_saved": math.nan, "n_check": n_check}
    if not n_check:
        return checks
    subset = prompts[:n_check]
    never = EarlyExitEngine(backbone, heads, NeverExit()).predict(
        subset, config.batch_size, config.padding_side
    )
    plain = plain_predict(backbone, subset, config.batch_size, config.padding_side)
    checks["engine_never_vs_plain"] = float(np.max(np.abs(never.p_yes - plain)))
    checks["plain_vs_saved"] = float(np.max(np.abs(plain - saved_requests[:n_check, -1])))
    worst = max(checks["engine_never_vs_plain"], checks["plain_vs_saved"])
    if backbone.dtype == torch.float32 and worst > 1e-5:
        warnings.warn(
            f"full-depth agreement above 1e-5 in fp32: {checks}; the engine or the saved predictions do "
            "not match the merged model",
            RuntimeWarning,
            stacklevel=4,  # the caller of run_exit_benchmark
        )
    return checks
