"""Llama helpers shared by training, the engine and the plain-forward baseline: positions,
last tokens, P(Yes) from the [No, Yes] logits, the fp32 read-out's pieces (RMSNorm in fp32, the
final norm's input, an fp32 LM head), and the plain Hugging Face full-depth forward.

Why read out in fp32: a bf16 state normed and multiplied by bf16 LM-head rows rounds the
Yes−No logit to bf16, which at SmolLM2's logit scale is a 0.125 grid: 32 distinct final-head
values over 2,000 test samples and 3.6% of positive–negative pairs tied (issue #27). The body
may run in bf16; every read-out upcasts its last-token state and computes in fp32.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F
from transformers import LlamaForCausalLM
from transformers.modeling_outputs import BaseModelOutputWithPast

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


def rms_norm_fp32(hidden: Tensor, weight: Tensor, eps: float) -> Tensor:
    """``LlamaRMSNorm`` in fp32 whatever the dtypes: ``[..., H]`` → ``[..., H]`` (fp32).

    ``w ⊙ x / sqrt(mean(x²) + eps)`` with the same operations in the same order as
    ``LlamaRMSNorm.forward``, so on fp32 inputs it is that module to the bit. The module itself
    casts back to the input's dtype before the weight (a bf16 state would be rounded again).
    """
    x = hidden.float()
    variance = x.pow(2).mean(-1, keepdim=True)  # [..., 1]
    return weight.float() * (x * torch.rsqrt(variance + eps))


def run_decoder(core: LlamaForCausalLM, **kwargs) -> tuple[BaseModelOutputWithPast, Tensor]:
    """``core.model(**kwargs)`` and its final norm's input ``[B, T, H]``: the last decoder
    layer's raw output, which the fp32 read-out norms itself (``hidden_states[-1]`` and
    ``last_hidden_state`` are already normed, in the body's dtype)."""
    captured: list[Tensor] = []
    handle = core.model.norm.register_forward_pre_hook(lambda _module, args: captured.append(args[0]))
    try:
        out = core.model(**kwargs)
    finally:
        handle.remove()
    if len(captured) != 1:
        raise ModelError(f"the final norm ran {len(captured)} times in one decoder forward, expected once")
    return out, captured[0]


# One fp32 copy of each bf16 LM head, kept while that weight is unchanged (module → (key, copy)).
_FP32_LM_HEADS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def lm_head_fp32(core: LlamaForCausalLM) -> Tensor:
    """The LM head's weight ``[V, H]`` in fp32, not re-cast per batch: the weight itself when it
    is fp32, else a copy cast once and cached until the weight is replaced, cast, moved or
    updated in place (its storage, dtype, device and version counter form the key)."""
    weight = core.lm_head.weight
    if weight.dtype == torch.float32:
        return weight
    key = (weight.data_ptr(), weight._version, weight.dtype, weight.device)
    cached = _FP32_LM_HEADS.get(core.lm_head)
    if cached is None or cached[0] != key:
        # a normal tensor even under inference_mode, so a later grad-mode caller may use it too
        with torch.inference_mode(False), torch.no_grad():
            cached = (key, weight.detach().float())
        _FP32_LM_HEADS[core.lm_head] = cached
    return cached[1]


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

    The model's own decoder (``LlamaModel.forward``, all layers) with mask-derived positions; at
    each row's last real token only (as ``generate`` does) the final norm's input is upcast and
    read out in fp32: the final norm (:func:`rms_norm_fp32`) and the LM head over the whole
    vocabulary (:func:`lm_head_fp32`), restricted to [No, Yes]. In an fp32 model these are the
    numbers of ``LlamaForCausalLM.forward`` there; in a bf16 model they are its numbers without
    the bf16 rounding of the read-out (module docstring), as every exit head reads out. With
    ``inputs_embeds`` ``[B, T, H]`` (prompts whose collaborative slots are filled,
    :meth:`ragrec.model.heads.ExitHeads.input_embeddings`) the model reads those instead of
    embedding ``input_ids``.

    Why not ``LlamaForCausalLM.forward(logits_to_keep=1)``: besides its bf16 read-out, it hands
    ``lm_head`` the slice ``hidden[:, -1:]``, a ``[B, 1, H]`` view whose batch stride is ``T·H``.
    With frozen weights (as in a merged model) ``torch.matmul`` takes its batched path on such a
    view, which on CPU copies the LM head once per row (``[B, H, V]``). Gathering the last states
    into a ``[B, H]`` matrix first is the same product without that copy, so the baseline is
    timed as a careful user would run it.
    """
    check_mask(input_ids, attention_mask)
    core = unwrap_llama(backbone.model)  # LoRA layers of a peft wrapper sit inside it and still apply
    _, pre_norm = run_decoder(
        core,
        input_ids=None if inputs_embeds is not None else input_ids,
        inputs_embeds=inputs_embeds,
        attention_mask=attention_mask,
        position_ids=positions_from_mask(attention_mask),
        use_cache=False,
    )  # [B, T, H] in the body's dtype, before the final norm
    rows = torch.arange(pre_norm.shape[0], device=pre_norm.device)
    last = pre_norm[rows, last_token_index(attention_mask)]  # [B, H], a new contiguous matrix
    final = core.model.norm
    with torch.autocast(last.device.type, enabled=False):  # a caller's autocast must not round it
        normed = rms_norm_fp32(last, final.weight, final.variance_epsilon)  # [B, H] fp32
        logits = F.linear(normed, lm_head_fp32(core))  # [B, V] fp32
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
