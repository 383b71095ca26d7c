"""The plain full-depth forward (the RPS baseline) is Hugging Face's own forward."""

from __future__ import annotations

import pytest
import torch

from ragrec.model.forward import (
    last_token_index,
    p_yes_from_logits,
    plain_full_forward_p_yes,
    positions_from_mask,
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
