"""The layer-by-layer engine reproduces the plain model, drops exited rows, and agrees with the sweep."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ragrec.errors import ConfigError, ModelError
from ragrec.llm.backbone import tiny_backbone as build_tiny
from ragrec.model.criteria import FixedHead, NeverExit, StabilityExit, simulate_exits
from ragrec.model.engine import EarlyExitEngine
from ragrec.model.forward import p_yes_from_logits, plain_full_forward_p_yes
from ragrec.model.heads import ExitHeads
from ragrec.model.inference import for_inference
from ragrec.model.predict import predict_heads
from tests.model.inputs import make_prompts, pad

pytestmark = pytest.mark.usefixtures("one_thread")

ATOL = 1e-5


# -- engine vs plain forward ------------------------------------------------------------------


@pytest.mark.parametrize("side", ["left", "right"])
def test_never_exit_reproduces_the_plain_forward(tiny_backbone, tiny_heads, prompts, all_heads, side):
    result = EarlyExitEngine(tiny_backbone, tiny_heads, NeverExit()).predict(
        prompts, batch_size=5, padding_side=side
    )
    ids, mask = pad(prompts, side)
    with torch.no_grad():
        plain = plain_full_forward_p_yes(tiny_backbone, ids, mask).numpy()
    np.testing.assert_allclose(result.p_yes, plain, atol=ATOL, rtol=0)
    np.testing.assert_allclose(result.per_head_p, all_heads, atol=ATOL, rtol=0)
    assert (result.exit_layer == 6).all()
    assert result.layers_run == 6 * len(prompts)


@pytest.mark.parametrize(
    "dtype, across_batchings",
    [(torch.float32, ATOL), (torch.bfloat16, 2e-2)],
    ids=["fp32", "bf16-body"],
)
def test_training_scoring_the_engine_and_the_plain_forward_read_out_alike(dtype, across_batchings):
    """forward_all (training), predict_heads (scoring), the engine never exiting and the plain
    forward share one fp32 read-out. On the same padded batch they agree to the read-out's fp32
    rounding in either body dtype. Across batchings (sizes, padding side) an fp32 body agrees
    within 1e-5; a bf16 body itself rounds other batch shapes differently (up to ~8e-3 in P(Yes)
    measured on this tiny model), hence the stated 2e-2."""
    backbone = build_tiny(seed=2)
    merged, heads = for_inference(backbone, ExitHeads(backbone, [2, 4, 6]), dtype)
    prompts = make_prompts(12, seed=5)
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))  # length_sorted_batches'
    ids, mask = pad([prompts[i] for i in order], "right")
    scored = predict_heads(merged, heads, prompts, batch_size=len(prompts))[order]  # one batch
    engine = EarlyExitEngine(merged, heads, NeverExit())
    same = engine.predict(prompts, batch_size=len(prompts), padding_side="right").per_head_p[order]
    with torch.no_grad():
        trained = p_yes_from_logits(heads.forward_all(merged.model, ids, mask)).double().numpy()
        plain = plain_full_forward_p_yes(merged, ids, mask).numpy()
    for name, got in (("predict_heads", scored), ("engine", same)):
        np.testing.assert_allclose(got, trained, atol=1e-6, rtol=0, err_msg=name)
    np.testing.assert_allclose(plain, trained[:, -1], atol=1e-6, rtol=0, err_msg="plain forward")
    other = engine.predict(prompts, batch_size=5, padding_side="left").per_head_p[order]
    np.testing.assert_allclose(other, scored, atol=across_batchings, rtol=0)
    assert len(np.unique(scored[:, -1])) == len(prompts)


def test_a_bf16_body_with_eager_attention_gives_the_engine_the_scored_exits():
    """With eager attention and right padding a bf16 body is batch-invariant: the engine, in
    batches of 5 that shrink as rows exit, sees what predict_heads scored in one batch of 16, so
    its exits are the replay's. (SDPA's CPU kernel rounds differently with the padded length:
    ~5e-3 in P(Yes) here, and 92% exit agreement with the saved scores on SmolLM2, issue #27.)"""
    backbone = build_tiny(seed=2)
    merged, heads = for_inference(backbone, ExitHeads(backbone, range(1, 7)), torch.bfloat16)
    merged.model.set_attn_implementation("eager")
    prompts = make_prompts(16, seed=2)
    scored = predict_heads(merged, heads, prompts, batch_size=16)
    criterion = StabilityExit(0.05)
    result = EarlyExitEngine(merged, heads, criterion).predict(prompts, batch_size=5, padding_side="right")
    reached = ~np.isnan(result.per_head_p)
    np.testing.assert_allclose(result.per_head_p[reached], scored[reached], atol=1e-6, rtol=0)
    _, replayed = simulate_exits(scored, criterion, heads.head_layers)
    np.testing.assert_array_equal(replayed, result.exit_head_index)
    assert len(set(result.exit_layer.tolist())) > 2  # rows really left their batches


def test_fixed_head_reproduces_each_head_of_forward_all(tiny_backbone, tiny_heads, prompts, all_heads):
    for k, layer in enumerate(tiny_heads.head_layers):
        result = EarlyExitEngine(tiny_backbone, tiny_heads, FixedHead(layer)).predict(prompts, batch_size=4)
        np.testing.assert_allclose(result.p_yes, all_heads[:, k], atol=ATOL, rtol=0)
        assert (result.exit_layer == layer).all()
        assert result.layers_run == layer * len(prompts)
        assert np.isnan(result.per_head_p[:, k + 1 :]).all()


def test_sparse_heads_and_a_last_head_below_the_top(tiny_backbone, prompts, all_heads):
    heads = ExitHeads(tiny_backbone, [2, 5])  # layer 6 never runs
    result = EarlyExitEngine(tiny_backbone, heads, NeverExit()).predict(prompts, batch_size=8)
    np.testing.assert_allclose(result.per_head_p, all_heads[:, [1, 4]], atol=ATOL, rtol=0)
    assert result.layers_run == 5 * len(prompts)


def test_eager_attention_gives_the_same_answers(prompts):
    b = build_tiny()
    b.model.set_attn_implementation("eager")
    assert b.model.config._attn_implementation == "eager"
    heads = ExitHeads(b, [3, 6])
    result = EarlyExitEngine(b, heads, NeverExit()).predict(prompts, batch_size=6)
    ids, mask = pad(prompts, "left")
    with torch.no_grad():
        plain = plain_full_forward_p_yes(b, ids, mask).numpy()
    np.testing.assert_allclose(result.p_yes, plain, atol=ATOL, rtol=0)


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")  # raised inside peft
def test_peft_wrapped_model(prompts):
    peft = pytest.importorskip("peft")
    b = build_tiny()
    heads = ExitHeads(b, [2, 4, 6])
    wrapped = peft.get_peft_model(
        b.model, peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )
    b.model = wrapped
    ids, mask = pad(prompts[:6], "left")
    with torch.no_grad():
        all_logits = heads.forward_all(wrapped, ids, mask)
        plain = plain_full_forward_p_yes(b, ids, mask).numpy()
    np.testing.assert_allclose(p_yes_from_logits(all_logits)[:, -1].numpy(), plain, atol=ATOL, rtol=0)
    unmerged = EarlyExitEngine(b, heads, NeverExit()).predict(prompts[:6], batch_size=3)
    np.testing.assert_allclose(unmerged.p_yes, plain, atol=ATOL, rtol=0)
    b.model = wrapped.merge_and_unload()
    merged = EarlyExitEngine(b, heads, NeverExit()).predict(prompts[:6], batch_size=3)
    np.testing.assert_allclose(merged.p_yes, plain, atol=ATOL, rtol=0)


def test_rows_do_not_depend_on_batch_mates_or_padding(tiny_backbone, tiny_heads, prompts):
    engine = EarlyExitEngine(tiny_backbone, tiny_heads, StabilityExit(0.05))
    batched = {side: engine.predict(prompts, batch_size=16, padding_side=side) for side in ("left", "right")}
    assert len(set(batched["left"].exit_layer.tolist())) > 2  # a real mix of exits
    for i in (0, 5, 11):
        alone = engine.predict([prompts[i]], batch_size=1)
        for result in batched.values():
            assert result.exit_layer[i] == alone.exit_layer[0]
            assert abs(result.p_yes[i] - alone.p_yes[0]) < ATOL
    np.testing.assert_array_equal(batched["left"].exit_layer, batched["right"].exit_layer)
    np.testing.assert_allclose(batched["left"].p_yes, batched["right"].p_yes, atol=ATOL, rtol=0)


def test_predict_works_inside_inference_mode(tiny_backbone, tiny_heads, prompts):
    with torch.inference_mode():
        result = EarlyExitEngine(tiny_backbone, tiny_heads, StabilityExit(0.1)).predict(
            prompts[:3], batch_size=2
        )
    assert result.p_yes.shape == (3,)


# -- one batch ------------------------------------------------------------------------------


def test_a_batch_returns_its_rows_in_its_own_order_with_their_cost(tiny_backbone, tiny_heads, prompts):
    engine = EarlyExitEngine(tiny_backbone, tiny_heads, StabilityExit(0.05))
    batch = prompts[:7]  # mixed lengths, not sorted
    with torch.inference_mode():
        record = engine._run_batch(batch, "left")
    whole = engine.predict(batch, batch_size=7)
    np.testing.assert_array_equal(record.exit_layer, whole.exit_layer)
    np.testing.assert_allclose(record.p_yes, whole.p_yes, atol=ATOL, rtol=0)
    np.testing.assert_allclose(record.per_head_p, whole.per_head_p, atol=ATOL, rtol=0)
    assert record.layers_run == int(record.exit_layer.sum())
    assert len(set(record.exit_layer.tolist())) > 1  # rows really left the batch at different layers


# -- exit criteria, replayed ------------------------------------------------------------------

CRITERIA = [
    StabilityExit(0.0),
    StabilityExit(0.02),
    StabilityExit(0.05),
    StabilityExit(0.1),
    StabilityExit(0.2, first_head="confident"),
    StabilityExit(0.4, first_head="confident"),
    StabilityExit(0.1, form="ratio"),
    StabilityExit(0.3, form="ratio"),
    StabilityExit(1.0, form="ratio"),
    NeverExit(),
    FixedHead(3),
]


@pytest.mark.parametrize("criterion", CRITERIA, ids=repr)
def test_simulate_exits_matches_the_engine_exactly(tiny_backbone, tiny_heads, prompts, all_heads, criterion):
    result = EarlyExitEngine(tiny_backbone, tiny_heads, criterion).predict(prompts, batch_size=5)
    p_final, exit_head = simulate_exits(result.per_head_p, criterion, tiny_heads.head_layers)
    np.testing.assert_array_equal(p_final, result.p_yes)
    np.testing.assert_array_equal(exit_head, result.exit_head_index)
    np.testing.assert_array_equal(np.asarray(tiny_heads.head_layers)[exit_head], result.exit_layer)
    # Exited rows leave the batch: the cost is exactly the layers each row needed.
    assert result.layers_run == int(result.exit_layer.sum())
    reached = ~np.isnan(result.per_head_p)
    assert (reached.sum(1) == result.exit_head_index + 1).all()
    # The sweep on full-depth predictions (what the book saves) gives the same exits.
    p_sweep, head_sweep = simulate_exits(all_heads, criterion, tiny_heads.head_layers)
    np.testing.assert_array_equal(head_sweep, exit_head)
    np.testing.assert_allclose(p_sweep, p_final, atol=ATOL, rtol=0)


def test_huge_tau_exits_every_row_at_the_second_head(tiny_backbone, tiny_heads, prompts):
    for criterion in (StabilityExit(1e9), StabilityExit(float("inf"), form="ratio")):
        result = EarlyExitEngine(tiny_backbone, tiny_heads, criterion).predict(prompts, batch_size=4)
        assert (result.exit_layer == tiny_heads.head_layers[1]).all()
        assert result.layers_run == tiny_heads.head_layers[1] * len(prompts)


# -- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad, kwargs, message",
    [
        ([], {}, "no prompts"),
        ([[10, 11], []], {}, "prompt 1 is empty"),
        ([[10] * 1025], {}, "prompt 0 has 1025 tokens.*at most 1024"),
        ([[10, 10_000]], {}, "outside the vocabulary"),
        ([[10, -1]], {}, "outside the vocabulary"),
        ("hello", {}, "prompts must be a list of token-id lists, got a str"),
        (["hello", "world"], {}, "prompt 0 is a str, not a list of token ids.*list of token-id lists"),
        ([[10, 11.5]], {}, "prompt 0 is not a flat list of integer token ids.*float64"),
        ([[10, "11"]], {}, "prompt 0 is not a flat list of integer token ids"),
        ([10, 11], {}, "prompt 0 is not a flat list of integer token ids"),
        ([[[10, 11]]], {}, "prompt 0 is not a flat list of integer token ids"),
        ([[10, 11]], {"batch_size": 0}, "batch_size must be an int ≥ 1"),
        ([[10, 11]], {"batch_size": 2.0}, "batch_size must be an int ≥ 1"),
        ([[10, 11]], {"padding_side": "middle"}, "padding_side"),
    ],
    ids=[
        "no-prompts",
        "empty-prompt",
        "past-the-context",
        "past-the-vocabulary",
        "negative-id",
        "a-string",
        "a-list-of-strings",
        "fractional-id",
        "string-id",
        "flat-token-list",
        "nested-too-deep",
        "batch-size-0",
        "float-batch-size",
        "unknown-padding-side",
    ],
)
def test_bad_engine_input(tiny_backbone, tiny_heads, bad, kwargs, message):
    assert tiny_backbone.model.config.max_position_embeddings == 1024  # what "past-the-context" exceeds
    engine = EarlyExitEngine(tiny_backbone, tiny_heads, NeverExit())
    with pytest.raises(ConfigError, match=message):
        engine.predict(bad, **{"batch_size": 4, **kwargs})


def test_numpy_token_ids_are_token_ids(tiny_backbone, tiny_heads, prompts):
    engine = EarlyExitEngine(tiny_backbone, tiny_heads, NeverExit())
    as_arrays = engine.predict([np.asarray(p, dtype=np.int32) for p in prompts[:3]], batch_size=3)
    np.testing.assert_array_equal(as_arrays.p_yes, engine.predict(prompts[:3], batch_size=3).p_yes)


def test_engine_refuses_heads_that_do_not_fit(tiny_backbone, tiny_heads):
    with pytest.raises(ConfigError, match="FixedHead"):
        EarlyExitEngine(tiny_backbone, ExitHeads(tiny_backbone, [2, 4, 6]), FixedHead(3))
    with pytest.raises(ModelError, match="another model"):
        EarlyExitEngine(build_tiny(), tiny_heads, NeverExit())


def test_never_exit_reproduces_the_plain_forward_in_bf16_on_the_same_batches():
    """In the scoring dtype the engine still equals the plain forward batch for batch (the same
    bf16 kernels on the same shapes); only other batchings differ, by bf16 rounding."""
    from ragrec.llm.backbone import tiny_backbone
    from ragrec.model.inference import for_inference

    backbone = tiny_backbone(num_layers=4, hidden_size=32, seed=1)
    merged, heads = for_inference(backbone, ExitHeads(backbone, [2, 4]), torch.bfloat16)
    prompts = make_prompts(12, seed=5)
    result = EarlyExitEngine(merged, heads, NeverExit()).predict(prompts, batch_size=12, padding_side="left")
    ids, mask = pad(sorted(prompts, key=len, reverse=True), "left")
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    with torch.no_grad():
        plain = plain_full_forward_p_yes(merged, ids, mask).numpy()
    np.testing.assert_allclose(result.p_yes[order], plain, atol=1e-6, rtol=0)
