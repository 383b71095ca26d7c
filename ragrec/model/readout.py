"""Closed-form readouts for the intermediate exit heads: a logistic regression on each head's
normalised last-token states, folded into the head's readout after training.

Why: the states after an early layer carry the answer, but not along the direction
``W_Yes − W_No`` that the LM head reads, and a zero-initialised readout trained by SGD with the
rest (small batches, LLM activations whose few "massive" dimensions dwarf the others) does not
find it, while a linear probe on standardised states does (the book's method chapter, *Readouts*).

Head ``k`` (layer ``L < num_layers``, built with ``readout=True``) computes, with ``x`` its
normalised state ``[H]``:

    z_Yes − z_No = (W_Yes − W_No + R_Yes − R_No) · x + (b_Yes − b_No).

A logistic regression on standardised states, ``logit = β · (x − μ) / σ + c``, is the same
function when ``R_Yes = β / σ − (W_Yes − W_No)``, ``b_Yes = c − Σ β μ / σ`` and ``R_No = b_No = 0``;
:func:`fit_readouts` sets exactly that, so the fitted head is still "norm → shared rows +
readout" and the engine, checkpoints and sweeps need nothing new. The last head is never
touched: it stays the model's own answer. The readouts are fp32 parameters read out in fp32
(:mod:`ragrec.model.heads`), so the fold holds on a bf16 body too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from tqdm.auto import tqdm

from ragrec.errors import ConfigError
from ragrec.llm.backbone import Backbone
from ragrec.llm.batching import length_sorted_batches, pad_prompts
from ragrec.model.heads import ExitHeads


@dataclass(frozen=True)
class ReadoutFit:
    """How :func:`fit_readouts` fits the intermediate heads' readouts.

    Attributes:
        c: inverse L2 strength of the logistic regression on standardised states (scikit-learn's
            ``C``); the states have hundreds of dimensions for ~10³ prompts, so it is small.
        max_iter: solver iterations.
    """

    c: float = 0.003
    max_iter: int = 3000

    def __post_init__(self) -> None:
        if not self.c > 0 or self.max_iter < 1:
            raise ConfigError(f"readout fit needs c > 0 and max_iter ≥ 1, got {self}")


@torch.inference_mode()
def head_states(
    backbone: Backbone,
    heads: ExitHeads,
    prompts: Sequence[Sequence[int]],
    batch_size: int = 16,
    progress: bool = False,
) -> np.ndarray:
    """Normalised last-token states ``[N, n_heads − 1, H]`` (float64) of every intermediate head,
    i.e. what its readout reads, from full forwards in batches of similar length."""
    inner = [k for k, layer in enumerate(heads.head_layers) if layer < heads.num_layers]
    out = np.empty((len(prompts), len(inner), heads.hidden_size), dtype=np.float64)
    for rows in tqdm(
        length_sorted_batches(prompts, batch_size), desc="head states", disable=not progress, leave=False
    ):
        ids, mask = pad_prompts([prompts[r] for r in rows], backbone.pad_id, "right")
        states = heads.last_token_states(backbone.model, ids.to(backbone.device), mask.to(backbone.device))
        for j, k in enumerate(inner):
            out[rows, j] = heads.normed(states[k], k).double().cpu().numpy()
    return out


def fit_readouts(
    backbone: Backbone,
    heads: ExitHeads,
    prompts: Sequence[Sequence[int]],
    labels: np.ndarray,
    fit: ReadoutFit = ReadoutFit(),
    *,
    batch_size: int = 16,
    progress: bool = False,
) -> None:
    """Fit every intermediate head's readout in place (module docstring) on ``prompts`` (the
    training prompts) with 0/1 ``labels``; the heads must have been built with ``readout=True``."""
    if not heads.has_readouts:
        raise ConfigError("fit_readouts needs heads built with readout=True (ExitHeads(..., readout=True))")
    labels = np.asarray(labels).astype(int).ravel()
    if len(labels) != len(prompts) or len(set(labels.tolist())) != 2:
        raise ConfigError(
            f"need one 0/1 label per prompt with both classes present, got {len(labels)} labels "
            f"for {len(prompts)} prompts"
        )
    states = head_states(backbone, heads, prompts, batch_size, progress)
    lm = heads._core.lm_head.weight
    w_diff = (lm[heads.yes_token_id] - lm[heads.no_token_id]).detach().double().cpu().numpy()  # [H]
    inner = [layer for layer in heads.head_layers if layer < heads.num_layers]
    for j, layer in enumerate(inner):
        scaler = StandardScaler().fit(states[:, j])
        model = LogisticRegression(C=fit.c, max_iter=fit.max_iter).fit(scaler.transform(states[:, j]), labels)
        beta, c = model.coef_[0], float(model.intercept_[0])
        sigma = scaler.scale_  # StandardScaler sets constant dimensions' scale to 1
        readout = heads.readouts[str(layer)]
        weight = np.zeros((2, heads.hidden_size))
        weight[1] = beta / sigma - w_diff
        bias = np.array([0.0, c - float(np.sum(beta * scaler.mean_ / sigma))])
        with torch.no_grad():
            readout.weight.copy_(torch.as_tensor(weight, dtype=readout.weight.dtype))
            readout.bias.copy_(torch.as_tensor(bias, dtype=readout.bias.dtype))
