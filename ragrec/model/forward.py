"""Llama helpers shared by training, the engine and the plain-forward baseline: positions,
last tokens, P(Yes) from the [No, Yes] logits, and the plain Hugging Face full-depth forward."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn
from transformers import LlamaForCausalLM

from ragrec.errors import ConfigError, ModelError
from ragrec.llm.backbone import Backbone

# --------------------------------------------------------------------------------------------
# helpers shared by training, the engine and the baseline


def unwrap_llama(model: nn.Module) -> LlamaForCausalLM:
    """The ``LlamaForCausalLM`` under an optional peft wrapper.

    peft's LoRA layers live *inside* that model, so running it still applies an unmerged adapter
    (correct, only slower); callers merge LoRA (``merge_and_unload``) before timed inference.
    """
    core = model
    if not isinstance(core, LlamaForCausalLM) and hasattr(core, "get_base_model"):  # peft PeftModel
        core = core.get_base_model()
    if not isinstance(core, LlamaForCausalLM):
        raise ModelError(
            f"expected a transformers LlamaForCausalLM (optionally peft-wrapped), got {type(core).__name__}; "
            "only Llama-family models are supported by the layer-by-layer engine"
        )
    return core


def positions_from_mask(attention_mask: Tensor) -> Tensor:
    """Position ids ``[B, T]`` (long) = number of real tokens before each position.

    ``cumsum − 1`` makes the first real token position 0 whatever the padding side; padding
    positions are clamped to 0 (they are masked out anyway).
    """
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def last_token_index(attention_mask: Tensor) -> Tensor:
    """Index ``[B]`` (long) of the last real token of every row (T−1 under left padding)."""
    positions = torch.arange(attention_mask.shape[-1], device=attention_mask.device)
    # argmax of (mask · position) picks the largest real position; rows are checked non-empty.
    return (attention_mask.long() * positions).argmax(-1)


def p_yes_from_logits(logits: Tensor) -> Tensor:
    """``P(Yes) = softmax([logit_No, logit_Yes])[1]`` in fp32; ``logits[..., 2]`` → ``[...]``."""
    return torch.softmax(logits.float(), dim=-1)[..., 1]


def check_mask(input_ids: Tensor, attention_mask: Tensor) -> None:
    if input_ids.dim() != 2 or attention_mask.shape != input_ids.shape:
        raise ConfigError(
            f"input_ids and attention_mask must both be [batch, seq]; got {tuple(input_ids.shape)} "
            f"and {tuple(attention_mask.shape)}"
        )
    if not bool((attention_mask.sum(-1) > 0).all()):
        raise ConfigError("every row needs at least one real token (attention_mask all zero in some row)")


def plain_full_forward_p_yes(
    backbone: Backbone, input_ids: Tensor, attention_mask: Tensor, inputs_embeds: Tensor | None = None
) -> Tensor:
    """P(Yes) ``[B]`` (fp32) from the plain Hugging Face full-depth forward: the RPS baseline.

    The model's own decoder (``LlamaModel.forward``, all layers and the final norm) with
    mask-derived positions, then its own ``lm_head`` over the whole vocabulary at each row's last
    real token only (as ``generate`` does), restricted to [No, Yes]: the same numbers as
    ``LlamaForCausalLM.forward`` there. With ``inputs_embeds`` ``[B, T, H]`` (prompts whose
    collaborative slots are filled, :meth:`ragrec.model.heads.ExitHeads.input_embeddings`) the
    model reads those instead of embedding ``input_ids``.

    Why not ``LlamaForCausalLM.forward(logits_to_keep=1)``: it hands ``lm_head`` the slice
    ``hidden[:, -1:]``, a ``[B, 1, H]`` view whose batch stride is ``T·H``. With frozen weights
    (``requires_grad`` False, as in a merged model) ``torch.matmul`` will not fold such a view into
    a matrix and takes its batched path instead, which on CPU copies the LM head once per row
    (``[B, H, V]``; 3 of the 4 seconds of a batch of 8 in bf16). Gathering the last states into a
    ``[B, H]`` matrix first is the same product without that copy, so the baseline is timed as a
    careful user would run it.
    """
    check_mask(input_ids, attention_mask)
    core = unwrap_llama(backbone.model)  # LoRA layers of a peft wrapper sit inside it and still apply
    hidden = core.model(
        input_ids=None if inputs_embeds is not None else input_ids,
        inputs_embeds=inputs_embeds,
        attention_mask=attention_mask,
        position_ids=positions_from_mask(attention_mask),
        use_cache=False,
    ).last_hidden_state  # [B, T, H], final norm applied
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    last = hidden[rows, last_token_index(attention_mask)]  # [B, H], a new contiguous matrix
    logits = core.lm_head(last)  # [B, V]
    answer = logits[:, [backbone.no_token_id, backbone.yes_token_id]]
    return p_yes_from_logits(answer)


def check_prompts(backbone: Backbone, prompts: Sequence[Sequence[int]]) -> None:
    """ConfigError for anything but a non-empty list of token-id lists that fit the model: a
    string, an empty prompt, one longer than the model's context, or ids that are not integers
    or lie outside its vocabulary (the engine and any baseline scored beside it)."""
    if isinstance(prompts, (str, bytes)):
        raise ConfigError(
            f"prompts must be a list of token-id lists, got a {type(prompts).__name__}; {_ENCODE_HINT}"
        )
    if len(prompts) == 0:
        raise ConfigError("no prompts to score; pass a non-empty list of token-id lists")
    config = unwrap_llama(backbone.model).config
    max_pos, vocab = int(config.max_position_embeddings), int(config.vocab_size)
    for i, prompt in enumerate(prompts):
        ids = _token_ids(prompt, i)
        if len(ids) == 0:
            raise ConfigError(f"prompt {i} is empty; every prompt needs at least one token")
        if len(ids) > max_pos:
            raise ConfigError(
                f"prompt {i} has {len(ids)} tokens but the model takes at most {max_pos} "
                "(config.max_position_embeddings); lower the prompt token budget"
            )
        if ids.min() < 0 or ids.max() >= vocab:
            raise ConfigError(f"prompt {i} has token ids outside the vocabulary 0..{vocab - 1}")


_ENCODE_HINT = "encode text first (PromptBuilder.encode_all, or encode_chat for one prompt)"


def _token_ids(prompt: Sequence[int], i: int) -> np.ndarray:
    """Prompt ``i`` as a 1-D integer array; ConfigError when it is text or holds anything else."""
    if isinstance(prompt, (str, bytes)):
        raise ConfigError(
            f"prompt {i} is a {type(prompt).__name__}, not a list of token ids: prompts must be a list "
            f"of token-id lists; {_ENCODE_HINT}"
        )
    try:
        ids = np.asarray(prompt)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"prompt {i} is not a list of token ids ({err}); {_ENCODE_HINT}") from err
    if ids.ndim != 1 or (ids.size and ids.dtype.kind not in "iu"):
        raise ConfigError(
            f"prompt {i} is not a flat list of integer token ids (got {type(prompt).__name__} of dtype "
            f"{ids.dtype}, shape {ids.shape}): prompts must be a list of token-id lists; {_ENCODE_HINT}"
        )
    return ids
