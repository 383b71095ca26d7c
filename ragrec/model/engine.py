"""The early-exit engine: runs the Llama decoder layer by layer, evaluates the exit heads on the rows
still running, and drops exited rows from the batch so they cost nothing afterwards.

Each head reads out in fp32 (:meth:`ragrec.model.heads.ExitHeads.logits`), as scoring and the
plain forward do, so the engine's P(Yes) equals theirs wherever the body gives the same states.
A bf16 body does so across batchings only with eager attention and right padding: SDPA's CPU
kernel rounds a row differently when its batch's padded length changes, which moves P(Yes) by
~1e-2 and the exits off the replay on saved scores (issue #27).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from ragrec.errors import ConfigError, ModelError
from ragrec.llm.backbone import Backbone
from ragrec.llm.batching import length_sorted_batches, pad_prompts
from ragrec.model.criteria import ExitCriterion, HeadState, as_numpy, check_criterion, exit_mask
from ragrec.model.forward import (
    check_prompts,
    last_token_index,
    positions_from_mask,
    unwrap_llama,
)
from ragrec.model.heads import ExitHeads

SUPPORTED_ATTENTION = ("eager", "sdpa")


# --------------------------------------------------------------------------------------------
# the layer-by-layer engine


@dataclass(frozen=True)
class ExitResult:
    """Engine output, in the original prompt order.

    ``p_yes[N]`` P(Yes) at the exit head; ``exit_layer[N]`` its layer (1-based);
    ``per_head_p[N, n_heads]`` every head's P(Yes) up to the exit, NaN after it;
    ``layers_run``: decoder layers computed summed over rows (cost in row-layers).
    """

    p_yes: np.ndarray
    exit_layer: np.ndarray
    per_head_p: np.ndarray
    layers_run: int
    head_layers: tuple[int, ...]

    @property
    def exit_head_index(self) -> np.ndarray:
        return np.searchsorted(np.asarray(self.head_layers), self.exit_layer)


def decoder_attention_mask(valid: Tensor, dtype: torch.dtype, attn_implementation: str) -> Tensor | None:
    """The causal + padding mask a decoder layer takes, built as transformers builds it.

    ``valid`` ``[B, T]`` (bool) marks real tokens. SDPA: ``None`` when nothing is padded (SDPA's
    causal fast path), else a bool mask ``[B, 1, T, T]`` (True = may attend). Eager: an additive
    float mask ``[B, 1, T, T]`` (0 or dtype-min). Matching transformers' own choice keeps the
    engine on the same attention kernels as the plain forward, hence the same numbers.
    A padding query may see itself only, so no mask row is empty (an all-masked row gives NaN
    in SDPA); padding keys are never visible to real queries, so real tokens are unaffected.
    """
    if attn_implementation == "sdpa" and bool(valid.all()):
        return None
    seq_len = valid.shape[1]
    idx = torch.arange(seq_len, device=valid.device)
    causal = idx[None, :] <= idx[:, None]  # [T, T]: key j <= query i
    allowed = (causal[None] & valid[:, None, :]) | torch.eye(seq_len, dtype=torch.bool, device=valid.device)
    if attn_implementation == "sdpa":
        return allowed[:, None]
    mask = torch.zeros(allowed.shape, dtype=dtype, device=valid.device)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[:, None]


class EarlyExitEngine:
    """Layer-by-layer inference with exit heads (a peft-wrapped model runs its base Llama, with
    any unmerged LoRA still applied; merge it first for speed)."""

    def __init__(self, backbone: Backbone, heads: ExitHeads, criterion: ExitCriterion):
        core = unwrap_llama(backbone.model)
        if heads._core is not core:
            raise ModelError(
                "the exit heads were built on another model; build ExitHeads(backbone, layers) for this "
                "backbone"
            )
        if heads.head_layers[-1] > len(core.model.layers):
            raise ConfigError(
                f"head layer {heads.head_layers[-1]} is beyond the model's {len(core.model.layers)} layers"
            )
        attn = core.config._attn_implementation
        if attn not in SUPPORTED_ATTENTION:
            raise ModelError(
                f"the engine builds the 4-D attention masks of 'sdpa'/'eager' attention, not {attn!r}; "
                "load the model with attn_implementation='sdpa' (or 'eager')"
            )
        check_criterion(criterion, heads.head_layers)
        self.backbone = backbone
        self.core = core
        self.heads = heads
        self.criterion = criterion

    def _validate(self, prompts: Sequence[Sequence[int]], batch_size: int, padding_side: str) -> None:
        check_prompts(self.backbone, prompts)
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be an int ≥ 1, got {batch_size!r}")
        if padding_side not in ("left", "right"):
            raise ConfigError(f"padding_side must be 'left' or 'right', got {padding_side!r}")

    def predict(
        self,
        prompts: list[list[int]],
        batch_size: int,
        padding_side: Literal["left", "right"] = "left",
        cf_ids: np.ndarray | None = None,
    ) -> ExitResult:
        """P(Yes) and exit layer of every prompt.

        Prompts are sorted by length and batched with similar lengths (less padding); results come
        back in the original order. Deterministic and independent of batch mates.

        Args:
            prompts (list[list[int]]): token-id lists, e.g. from
                :meth:`ragrec.model.prompts.PromptBuilder.encode_all` or
                :func:`ragrec.llm.backbone.encode_chat`; each non-empty and within the model's
                context.
            batch_size (int): rows per batch (≥ 1); a batch shrinks as its rows exit.
            padding_side (str, optional): ``"left"`` or ``"right"``; the results do not depend
                on it. (default: :obj:`"left"`)
            cf_ids (np.ndarray, optional): ``[N, 2]`` (user, item) per prompt, required when the
                heads carry collaborative tokens. (default: :obj:`None`)

        Returns:
            :class:`ExitResult`, in the order of ``prompts``.
        """
        self._validate(prompts, batch_size, padding_side)
        n = len(prompts)
        per_head_p = np.full((n, self.heads.num_heads), np.nan)
        p_yes = np.full(n, np.nan)
        exit_layer = np.zeros(n, dtype=np.int64)
        layers_run = 0
        with torch.inference_mode():
            for idx in length_sorted_batches(prompts, batch_size):
                rows_cf = (
                    None if cf_ids is None else torch.as_tensor(np.asarray(cf_ids)[idx], dtype=torch.long)
                )
                batch = self._run_batch([prompts[i] for i in idx], padding_side, rows_cf)
                per_head_p[idx] = batch.per_head_p
                p_yes[idx] = batch.p_yes
                exit_layer[idx] = batch.exit_layer
                layers_run += batch.layers_run
        return ExitResult(
            p_yes=p_yes,
            exit_layer=exit_layer,
            per_head_p=per_head_p,
            layers_run=layers_run,
            head_layers=self.heads.head_layers,
        )

    def _start(self, batch: list[list[int]], padding_side: str, cf_ids: Tensor | None = None) -> _Running:
        """Pad ``batch`` and embed it: the running state before the first decoder layer."""
        core, device = self.core, self.backbone.device
        ids, valid = pad_prompts(batch, self.backbone.pad_id, padding_side)
        ids, valid = ids.to(device), valid.to(device)
        pos = positions_from_mask(valid)  # [B, T]
        hidden = self.heads.input_embeddings(ids, None if cf_ids is None else cf_ids.to(device))  # [B, T, H]
        cos, sin = core.model.rotary_emb(hidden, pos)  # each [B, T, head_dim]
        return _Running(
            rows=np.arange(len(batch)),
            hidden=hidden,
            pos=pos,
            cos=cos,
            sin=sin,
            last=last_token_index(valid),  # [B]
            valid=valid,
            mask=decoder_attention_mask(valid, hidden.dtype, self.core.config._attn_implementation),
        )

    def _run_batch(
        self, batch: list[list[int]], padding_side: str, cf_ids: Tensor | None = None
    ) -> ExitResult:
        """Run one padded batch layer by layer, dropping rows as they exit; the result is in the
        order of ``batch``."""
        heads = self.heads
        n_rows, n_heads = len(batch), heads.num_heads
        per_head_p = np.full((n_rows, n_heads), np.nan)
        p_yes = np.full(n_rows, np.nan)
        exit_layer = np.zeros(n_rows, dtype=np.int64)
        run = self._start(batch, padding_side, cf_ids)
        cost = 0
        head = 0  # index of the next head
        prev_p: np.ndarray | None = None
        for i, layer in enumerate(self.core.model.layers[: heads.head_layers[-1]]):
            # decoder layer on the running rows
            out = layer(
                run.hidden,
                attention_mask=run.mask,
                position_ids=run.pos,
                position_embeddings=(run.cos, run.sin),
            )
            run.hidden = out[0] if isinstance(out, tuple) else out  # tuple in transformers 4.x
            cost += run.hidden.shape[0]
            if i + 1 != heads.head_layers[head]:
                continue
            # exit head: store its P(Yes), then ask the criterion which rows stop here
            arange = torch.arange(run.hidden.shape[0], device=run.hidden.device)
            p_cur = as_numpy(
                heads.p_yes(run.hidden[arange, run.last], head)
            )  # float64, exactly what is stored
            per_head_p[run.rows, head] = p_cur
            is_last = head == n_heads - 1
            done = exit_mask(self.criterion, HeadState(p_cur, prev_p, head, i + 1), is_last)
            p_yes[run.rows[done]] = p_cur[done]
            exit_layer[run.rows[done]] = i + 1
            if is_last or done.all():
                break
            if done.any():
                # exited rows leave the batch: every per-row tensor keeps only the running rows
                run = run.keep(~done, self.core.config._attn_implementation)
                prev_p = p_cur[~done]
            else:
                prev_p = p_cur
            head += 1
        return ExitResult(
            p_yes=p_yes,
            exit_layer=exit_layer,
            per_head_p=per_head_p,
            layers_run=cost,
            head_layers=heads.head_layers,
        )


@dataclass
class _Running:
    """The rows of one batch still running, and every per-row tensor the next layer needs.

    ``rows`` are their indices in the batch as it started; the tensors hold only these rows.
    """

    rows: np.ndarray  # [B]
    hidden: Tensor  # [B, T, H]
    pos: Tensor  # [B, T]
    cos: Tensor  # [B, T, head_dim]
    sin: Tensor  # [B, T, head_dim]
    last: Tensor  # [B]: each row's last real token
    valid: Tensor  # [B, T]: real tokens
    mask: Tensor | None  # [B, 1, T, T], or None (SDPA, nothing padded)

    def keep(self, keep_np: np.ndarray, attn_implementation: str) -> _Running:
        """Only the rows where ``keep_np`` is True, and only the columns some of them still use."""
        keep = torch.from_numpy(keep_np).to(self.hidden.device)
        hidden, pos, cos, sin = self.hidden[keep], self.pos[keep], self.cos[keep], self.sin[keep]
        last, valid = self.last[keep], self.valid[keep]
        # Columns that are padding in every remaining row (the longest rows may have left) are
        # dropped too; no real token attends to them, so nothing changes but the cost.
        cols = valid.any(0).nonzero().squeeze(-1)
        lo, hi = int(cols[0]), int(cols[-1]) + 1
        if (lo, hi) != (0, valid.shape[1]):
            hidden, pos, valid = hidden[:, lo:hi], pos[:, lo:hi], valid[:, lo:hi]
            cos, sin = cos[:, lo:hi], sin[:, lo:hi]
            last = last - lo
        mask = decoder_attention_mask(valid, hidden.dtype, attn_implementation)
        return _Running(
            rows=self.rows[keep_np],
            hidden=hidden,
            pos=pos,
            cos=cos,
            sin=sin,
            last=last,
            valid=valid,
            mask=mask,
        )
