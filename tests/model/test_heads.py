"""Exit heads: the last one is the plain model, the others are its logit lens plus what they learn;
every head reads out in fp32 whatever the body's dtype."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ragrec.errors import ConfigError, ModelError
from ragrec.llm.backbone import tiny_backbone as build_tiny
from ragrec.model.forward import last_token_index, plain_full_forward_p_yes, positions_from_mask
from ragrec.model.heads import ExitHeads, default_head_layers
from ragrec.model.inference import for_inference
from ragrec.model.predict import predict_heads
from tests.model.inputs import make_prompts, pad

pytestmark = pytest.mark.usefixtures("one_thread")

ATOL = 1e-5


# -- against the plain model --------------------------------------------------------------------


def test_last_head_of_forward_all_is_the_plain_model(tiny_backbone, tiny_heads, prompts, all_heads):
    for side in ("left", "right"):
        ids, mask = pad(prompts, side)
        with torch.no_grad():
            plain = plain_full_forward_p_yes(tiny_backbone, ids, mask).numpy()
        np.testing.assert_allclose(all_heads[:, -1], plain, atol=ATOL, rtol=0)
    assert all_heads.std(0).min() > 0.05  # the heads actually disagree between prompts


def test_an_untrained_readout_leaves_the_logit_lens(tiny_backbone):
    heads = ExitHeads(tiny_backbone, [2, 4, 6], readout=True)
    hidden = torch.randn(3, tiny_backbone.hidden_size, generator=torch.Generator().manual_seed(2))
    core = tiny_backbone.model
    with torch.no_grad():
        lens = core.lm_head(core.model.norm(hidden))[
            :, [tiny_backbone.no_token_id, tiny_backbone.yes_token_id]
        ]
        torch.testing.assert_close(heads.logits(hidden, 0), lens)
        # A trained readout moves only its own head.
        heads.readouts["2"].bias.copy_(torch.tensor([0.0, 1.0]))
        torch.testing.assert_close(heads.logits(hidden, 0), lens + torch.tensor([0.0, 1.0]))
        torch.testing.assert_close(heads.logits(hidden, 1), lens)


# -- the read-out is fp32 ----------------------------------------------------------------------


def answer_rows_at_smollm_scale(backbone, prompts) -> None:
    """Give the tiny model's [No, Yes] LM-head rows SmolLM2's logit scale, in place: both logits
    ~30 (a large shared part along the prompts' mean final state) and a Yes−No difference of SD
    ~0.5, which bf16 logits can only resolve to a 0.125 grid."""
    ids, mask = pad(prompts)
    core = backbone.model
    with torch.no_grad():
        out = core.model(input_ids=ids, attention_mask=mask, position_ids=positions_from_mask(mask))
        x = out.last_hidden_state[torch.arange(len(prompts)), last_token_index(mask)]  # [N, H] normed
        shared = x.mean(0) / x.mean(0).norm()  # [H]
        scale = 30.0 / float((x @ shared).mean())
        delta = torch.randn(2, x.shape[1], generator=torch.Generator().manual_seed(0))  # [2, H]
        delta = 0.5 * delta / float((x @ (delta[1] - delta[0])).std())
        rows = core.lm_head.weight
        rows[backbone.no_token_id] = scale * shared + delta[0]
        rows[backbone.yes_token_id] = scale * shared + delta[1]


def test_a_bf16_body_is_read_out_off_the_bf16_grid():
    """With a bf16 body, Hugging Face's own (bf16) read-out collapses 64 prompts' final-head
    P(Yes) to a few grid values; the fp32 read-out keeps them apart (issue #27: 32 values over
    2,000 test samples on SmolLM2)."""
    backbone = build_tiny(num_layers=4, hidden_size=32, seed=1)
    prompts = make_prompts(64, seed=3)
    answer_rows_at_smollm_scale(backbone, prompts)
    merged, heads = for_inference(backbone, ExitHeads(backbone, [2, 4]), torch.bfloat16)
    exact = predict_heads(merged, heads, prompts)[:, -1]
    ids, mask = pad(prompts)
    with torch.no_grad():
        logits = merged.model(
            input_ids=ids, attention_mask=mask, position_ids=positions_from_mask(mask)
        ).logits
    answer = logits[torch.arange(len(prompts)), last_token_index(mask)][
        :, [merged.no_token_id, merged.yes_token_id]
    ]
    assert answer.dtype == torch.bfloat16 and float(answer.float().abs().mean()) > 15  # SmolLM2's scale
    gridded = torch.softmax(answer.float(), -1)[:, 1].numpy()
    assert len(np.unique(gridded)) <= 40
    assert len(np.unique(exact)) >= 62


def test_autocast_does_not_reach_the_read_out(tiny_backbone, tiny_heads, prompts):
    """Training runs under bf16 autocast: the heads' logits must stay the fp32 ones."""
    ids, mask = pad(prompts)
    with torch.no_grad():
        states = tiny_heads.last_token_states(tiny_backbone.model, ids, mask)
        outside = [tiny_heads.logits(h, k) for k, h in enumerate(states)]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert torch.mm(states[0], states[0].T).dtype == torch.bfloat16  # autocast is on here
            inside = [tiny_heads.logits(h, k) for k, h in enumerate(states)]
            plain = plain_full_forward_p_yes(tiny_backbone, ids, mask)
            last = torch.softmax(tiny_heads.forward_all(tiny_backbone.model, ids, mask)[:, -1], -1)[:, 1]
    for k, (a, b) in enumerate(zip(outside, inside)):
        assert b.dtype == torch.float32
        torch.testing.assert_close(b, a, atol=0, rtol=0, msg=f"head {k} changed under autocast")
    # Under autocast the body runs bf16 matmuls; both read-outs of that body are still fp32 and agree.
    assert plain.dtype == last.dtype == torch.float32
    torch.testing.assert_close(last, plain, atol=1e-6, rtol=0)


def test_heads_keep_fp32_parameters_on_a_bf16_body_and_train_them(prompts):
    backbone = build_tiny(num_layers=4, hidden_size=32, seed=1)
    backbone.model.to(torch.bfloat16)
    heads = ExitHeads(backbone, [2, 4], readout=True)
    assert {p.dtype for p in heads.parameters()} == {torch.float32}
    logits = heads.forward_all(backbone.model, *pad(prompts[:4]))
    assert logits.dtype == torch.float32
    logits.sum().backward()
    for name, p in heads.named_parameters():
        assert p.grad is not None and p.grad.dtype == torch.float32 and p.grad.abs().sum() > 0, name
    _, scoring = for_inference(backbone, heads, torch.bfloat16)
    assert {p.dtype for p in scoring.parameters()} == {torch.float32}


# -- what a head is -----------------------------------------------------------------------------


def test_heads_give_probabilities(tiny_backbone, tiny_heads):
    hidden = torch.randn(5, tiny_backbone.hidden_size, generator=torch.Generator().manual_seed(1))
    for k in range(tiny_heads.num_heads):
        logits = tiny_heads.logits(hidden, k)
        assert logits.shape == (5, 2)
        probs = torch.softmax(logits, -1)
        p = tiny_heads.p_yes(hidden, k)
        assert ((p > 0) & (p < 1)).all()
        torch.testing.assert_close(p, probs[:, 1])
        torch.testing.assert_close(probs.sum(-1), torch.ones(5))


def test_only_intermediate_norms_are_parameters(tiny_backbone, tiny_heads):
    params = dict(tiny_heads.named_parameters())
    assert sorted(params) == [f"norms.{layer}.weight" for layer in (1, 2, 3, 4, 5)]
    assert tiny_heads.head_parameters(5) == []  # the full-depth head is the model's own
    final = tiny_backbone.model.model.norm.weight
    assert all(torch.equal(p, final) and p.data_ptr() != final.data_ptr() for p in params.values())
    assert set(tiny_heads.state_dict()) == set(params)
    with_readouts = dict(ExitHeads(tiny_backbone, [3, 6], readout=True).named_parameters())
    assert sorted(with_readouts) == ["norms.3.weight", "readouts.3.bias", "readouts.3.weight"]


def test_forward_all_trains_the_norms(tiny_backbone, prompts):
    heads = ExitHeads(tiny_backbone, [2, 4, 6])
    ids, mask = pad(prompts[:4])
    logits = heads.forward_all(tiny_backbone.model, ids, mask)
    assert logits.shape == (4, 3, 2)
    logits.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in heads.parameters())
    tiny_backbone.model.zero_grad(set_to_none=True)


@pytest.mark.parametrize(
    "num_layers, every, expected",
    [(30, 5, (5, 10, 15, 20, 25, 30)), (32, 5, (5, 10, 15, 20, 25, 30, 32)), (6, 2, (2, 4, 6)), (3, 5, (3,))],
    ids=["smollm2", "vicuna-adds-the-last-layer", "every-2", "fewer-layers-than-every"],
)
def test_default_head_layers(num_layers, every, expected):
    assert default_head_layers(num_layers, every) == expected


# -- bad layouts ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "layers, message",
    [
        ([0, 3], r"outside 1\.\.6"),
        ([3, 7], r"outside 1\.\.6"),
        ([4, 2, 6], "strictly increasing"),
        ([2, 2, 6], "strictly increasing"),
        ([], "empty"),
        ((2.5, 4, 6), r"\[2\.5\] are not whole layer numbers"),
        ((4, float("nan"), 6), r"\[nan\] are not whole layer numbers"),
        (("2", 4, 6), r"\['2'\] are not whole layer numbers"),
        ((True, 4, 6), r"\[True\] are not whole layer numbers"),
    ],
    ids=["layer-0", "past-the-top", "unsorted", "repeated", "empty", "fraction", "nan", "string", "bool"],
)
def test_bad_head_layouts(tiny_backbone, layers, message):
    with pytest.raises(ConfigError, match=message):
        ExitHeads(tiny_backbone, layers)


@pytest.mark.parametrize(
    "layers",
    [np.array([2, 4, 6]), (2.0, 4.0, 6.0), np.array([2.0, 4.0, 6.0])],
    ids=["numpy-ints", "whole-floats", "numpy-whole-floats"],
)
def test_whole_numbers_of_any_type_are_layer_numbers(tiny_backbone, layers):
    heads = ExitHeads(tiny_backbone, layers)
    assert heads.head_layers == (2, 4, 6)
    assert all(type(layer) is int for layer in heads.head_layers)


def test_heads_refuse_another_models_states(tiny_heads):
    other = build_tiny()
    with pytest.raises(ModelError, match="another model"):
        tiny_heads.forward_all(other.model, *pad([[10, 11]]))
