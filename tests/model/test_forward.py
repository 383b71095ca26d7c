"""The plain full-depth forward (the RPS baseline) is Hugging Face's own forward, read out in fp32;
the fp32 read-out's pieces."""

from __future__ import annotations

import pytest
import torch
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from ragrec.llm.backbone import tiny_backbone as build_tiny
from ragrec.model.forward import (
    last_token_index,
    lm_head_fp32,
    p_yes_from_logits,
    plain_full_forward_p_yes,
    positions_from_mask,
    rms_norm_fp32,
    run_decoder,
)
from tests.model.inputs import pad

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("frozen", [False, True], ids=["trainable", "frozen"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_the_plain_forward_is_llama_for_causal_lm_at_the_last_real_token(
    tiny_backbone, prompts, side, frozen
):
    ids, mask = pad(prompts, side)
    model = tiny_backbone.model
    grads = [p.requires_grad for p in model.parameters()]
    try:
        for p in model.parameters():
            p.requires_grad_(not frozen)  # a merged model is frozen: the case the baseline is timed in
        with torch.inference_mode():
            logits = model(
                input_ids=ids, attention_mask=mask, position_ids=positions_from_mask(mask)
            ).logits  # [B, T, V]
            at_last = logits[torch.arange(len(ids)), last_token_index(mask)]
            expected = p_yes_from_logits(at_last[:, [tiny_backbone.no_token_id, tiny_backbone.yes_token_id]])
            got = plain_full_forward_p_yes(tiny_backbone, ids, mask)
    finally:
        for p, g in zip(model.parameters(), grads):
            p.requires_grad_(g)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)


def test_rms_norm_fp32_is_llamas_norm_in_fp32():
    norm = LlamaRMSNorm(16, eps=1e-5)
    with torch.no_grad():
        norm.weight.copy_(torch.linspace(0.5, 2.0, 16).bfloat16())  # exact in bf16 too
    x = torch.randn(4, 16, generator=torch.Generator().manual_seed(0)) * 3
    with torch.no_grad():
        torch.testing.assert_close(rms_norm_fp32(x, norm.weight, 1e-5), norm(x), atol=0, rtol=0)
        # A bf16 state is normed in fp32, not rounded back to bf16 as the module would.
        low = x.bfloat16()
        got = rms_norm_fp32(low, norm.weight.bfloat16(), 1e-5)
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, norm(low.float()), atol=1e-6, rtol=0)
        assert not torch.equal(got, norm.bfloat16()(low).float())


def test_run_decoder_hands_back_the_final_norms_input(tiny_backbone, prompts):
    ids, mask = pad(prompts)
    core = tiny_backbone.model
    with torch.no_grad():
        out, pre_norm = run_decoder(
            core, input_ids=ids, attention_mask=mask, position_ids=positions_from_mask(mask), use_cache=False
        )
        torch.testing.assert_close(core.model.norm(pre_norm), out.last_hidden_state, atol=0, rtol=0)
    assert not core.model.norm._forward_pre_hooks  # the hook is gone afterwards


def test_the_fp32_lm_head_is_cast_once_and_follows_the_weight():
    core = build_tiny(num_layers=2, hidden_size=16, seed=0).model
    assert lm_head_fp32(core) is core.lm_head.weight  # an fp32 model needs no copy
    core.to(torch.bfloat16)
    first = lm_head_fp32(core)
    assert first.dtype == torch.float32 and lm_head_fp32(core) is first  # not re-cast per batch
    torch.testing.assert_close(first, core.lm_head.weight.float(), atol=0, rtol=0)
    with torch.no_grad():
        core.lm_head.weight.mul_(2)  # an in-place update invalidates the copy
    second = lm_head_fp32(core)
    assert second is not first
    torch.testing.assert_close(second, core.lm_head.weight.float(), atol=0, rtol=0)
