"""Exit heads, exit criteria and the layer-by-layer engine agree with the plain model and each other."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ragrec import backbone as bb
from ragrec.errors import ConfigError, ModelError
from ragrec.model.criteria import FixedHead, NeverExit, StabilityExit, simulate_exits
from ragrec.model.engine import EarlyExitEngine
from ragrec.model.forward import p_yes_from_logits, plain_full_forward_p_yes
from ragrec.model.heads import ExitHeads, default_head_layers

pytestmark = pytest.mark.usefixtures("one_thread")

ATOL = 1e-5


def make_prompts(n: int, seed: int, lo: int = 3, hi: int = 40) -> list[list[int]]:
    """Random token-id prompts of mixed lengths (ids past the special tokens)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(lo, hi, (n,), generator=g)
    return [torch.randint(7, 700, (int(k),), generator=g).tolist() for k in lengths]


def pad(prompts: list[list[int]], side: str = "right") -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, prompts))
    ids = torch.zeros(len(prompts), width, dtype=torch.long)
    mask = torch.zeros(len(prompts), width, dtype=torch.long)
    for r, p in enumerate(prompts):
        span = slice(width - len(p), width) if side == "left" else slice(0, len(p))
        ids[r, span] = torch.tensor(p)
        mask[r, span] = 1
    return ids, mask


@pytest.fixture(scope="module")
def prompts() -> list[list[int]]:
    return make_prompts(16, seed=0)


@pytest.fixture(scope="module")
def all_heads(tiny_backbone, tiny_heads, prompts) -> np.ndarray:
    """P(Yes) ``[16, 6]`` of every head from forward_all."""
    ids, mask = pad(prompts)
    with torch.no_grad():
        return p_yes_from_logits(tiny_heads.forward_all(tiny_backbone.model, ids, mask)).double().numpy()


# -- heads ------------------------------------------------------------------------------------


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


def test_an_untrained_readout_leaves_the_logit_lens(tiny_backbone):
    heads = ExitHeads(tiny_backbone, [2, 4, 6], readout=True)
    hidden = torch.randn(3, tiny_backbone.hidden_size, generator=torch.Generator().manual_seed(2))
    core = tiny_backbone.model
    with torch.no_grad():
        lens = core.lm_head(core.model.norm(hidden))[:, [tiny_backbone.no_token_id, tiny_backbone.yes_token_id]]
        torch.testing.assert_close(heads.logits(hidden, 0), lens)
        # A trained readout moves only its own head.
        heads.readouts["2"].bias.copy_(torch.tensor([0.0, 1.0]))
        torch.testing.assert_close(heads.logits(hidden, 0), lens + torch.tensor([0.0, 1.0]))
        torch.testing.assert_close(heads.logits(hidden, 1), lens)


def test_last_head_of_forward_all_is_the_plain_model(tiny_backbone, tiny_heads, prompts, all_heads):
    for side in ("left", "right"):
        ids, mask = pad(prompts, side)
        with torch.no_grad():
            plain = plain_full_forward_p_yes(tiny_backbone, ids, mask).numpy()
        np.testing.assert_allclose(all_heads[:, -1], plain, atol=ATOL, rtol=0)
    assert all_heads.std(0).min() > 0.05  # the heads actually disagree between prompts


def test_forward_all_trains_the_norms(tiny_backbone, prompts):
    heads = ExitHeads(tiny_backbone, [2, 4, 6])
    ids, mask = pad(prompts[:4])
    logits = heads.forward_all(tiny_backbone.model, ids, mask)
    assert logits.shape == (4, 3, 2)
    logits.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in heads.parameters())
    tiny_backbone.model.zero_grad(set_to_none=True)


# -- engine vs plain forward ------------------------------------------------------------------


@pytest.mark.parametrize("side", ["left", "right"])
def test_never_exit_reproduces_the_plain_forward(tiny_backbone, tiny_heads, prompts, all_heads, side):
    result = EarlyExitEngine(tiny_backbone, tiny_heads, NeverExit()).predict(prompts, batch_size=5, padding_side=side)
    ids, mask = pad(prompts, side)
    with torch.no_grad():
        plain = plain_full_forward_p_yes(tiny_backbone, ids, mask).numpy()
    np.testing.assert_allclose(result.p_yes, plain, atol=ATOL, rtol=0)
    np.testing.assert_allclose(result.per_head_p, all_heads, atol=ATOL, rtol=0)
    assert (result.exit_layer == 6).all()
    assert result.layers_run == 6 * len(prompts)


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
    b = bb.tiny_backbone()
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
    b = bb.tiny_backbone()
    heads = ExitHeads(b, [2, 4, 6])
    wrapped = peft.get_peft_model(b.model, peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
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


# -- independence from batch mates and padding ----------------------------------------------


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
        result = EarlyExitEngine(tiny_backbone, tiny_heads, StabilityExit(0.1)).predict(prompts[:3], batch_size=2)
    assert result.p_yes.shape == (3,)


# -- exit criteria ----------------------------------------------------------------------------

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


def test_criteria_by_hand():
    prev = np.array([0.50, 0.50, 0.90, 0.999999])
    cur = np.array([0.52, 0.70, 0.91, 1.0])
    diff = StabilityExit(0.05)
    np.testing.assert_array_equal(diff.decide(prev, cur, 1, False), [True, False, True, True])
    np.testing.assert_array_equal(diff.decide(None, cur, 0, False), [False] * 4)  # first head waits
    np.testing.assert_array_equal(diff.decide(prev, cur, 3, True), [True] * 4)  # last head always exits
    confident = StabilityExit(0.1, first_head="confident")  # exit if max(P, 1-P) > 0.9
    np.testing.assert_array_equal(confident.decide(None, cur, 0, False), [False, False, True, True])
    # Ratio form: log-odds change; 0.5 -> 0.52 is 0.080 nats, 0.9 -> 0.91 is 0.117 nats.
    ratio = StabilityExit(0.1, form="ratio")
    np.testing.assert_array_equal(ratio.decide(prev, cur, 1, False)[:3], [True, False, False])
    # Torch in, torch out.
    out = diff.decide(torch.tensor(prev), torch.tensor(cur), 1, False)
    assert out.dtype == torch.bool and out.tolist() == [True, False, True, True]
    assert NeverExit().decide(prev, cur, 2, False).tolist() == [False] * 4
    assert FixedHead(10).decide(prev, cur, 1, False, layer=10).all()


def test_default_head_layers():
    assert default_head_layers(30) == (5, 10, 15, 20, 25, 30)
    assert default_head_layers(32) == (5, 10, 15, 20, 25, 30, 32)
    assert default_head_layers(6, every=2) == (2, 4, 6)
    assert default_head_layers(3) == (3,)


# -- bad input --------------------------------------------------------------------------------


def test_bad_criteria():
    for tau in (-0.1, float("nan"), "0.1"):
        with pytest.raises(ConfigError, match="tau"):
            StabilityExit(tau)
    with pytest.raises(ConfigError, match="form"):
        StabilityExit(0.1, form="odds")
    with pytest.raises(ConfigError, match="first_head"):
        StabilityExit(0.1, first_head="never")
    with pytest.raises(ConfigError, match="form='difference'"):
        StabilityExit(0.1, form="ratio", first_head="confident")
    with pytest.raises(ConfigError, match="layer"):
        FixedHead(0)


def test_bad_head_layouts(tiny_backbone):
    for layers, message in [
        ([0, 3], "outside 1..6"),
        ([3, 7], "outside 1..6"),
        ([4, 2, 6], "strictly increasing"),
        ([2, 2, 6], "strictly increasing"),
        ([], "empty"),
    ]:
        with pytest.raises(ConfigError, match=message):
            ExitHeads(tiny_backbone, layers)


def test_bad_engine_input(tiny_backbone, tiny_heads):
    engine = EarlyExitEngine(tiny_backbone, tiny_heads, NeverExit())
    max_len = tiny_backbone.model.config.max_position_embeddings
    with pytest.raises(ConfigError, match="no prompts"):
        engine.predict([], batch_size=4)
    with pytest.raises(ConfigError, match="prompt 1 is empty"):
        engine.predict([[10, 11], []], batch_size=4)
    with pytest.raises(ConfigError, match=f"prompt 0 has {max_len + 1} tokens.*at most {max_len}"):
        engine.predict([[10] * (max_len + 1)], batch_size=4)
    with pytest.raises(ConfigError, match="outside the vocabulary"):
        engine.predict([[10, 10_000]], batch_size=4)
    with pytest.raises(ConfigError, match="batch_size"):
        engine.predict([[10, 11]], batch_size=0)
    with pytest.raises(ConfigError, match="padding_side"):
        engine.predict([[10, 11]], batch_size=1, padding_side="middle")
    with pytest.raises(ConfigError, match="FixedHead"):
        EarlyExitEngine(tiny_backbone, ExitHeads(tiny_backbone, [2, 4, 6]), FixedHead(3))
    with pytest.raises(ConfigError, match="per_head_p is NaN"):
        simulate_exits(np.array([[0.5, np.nan]]), NeverExit())
    other = bb.tiny_backbone()
    with pytest.raises(ModelError, match="another model"):
        EarlyExitEngine(other, tiny_heads, NeverExit())
    with pytest.raises(ModelError, match="another model"):
        tiny_heads.forward_all(other.model, *pad([[10, 11]]))


# -- checkpoints ------------------------------------------------------------------------------


def test_checkpoint_round_trip_and_layout_checks(tmp_path, tiny_backbone, prompts):
    heads = ExitHeads(tiny_backbone, [2, 4, 6], readout=True)
    with torch.no_grad():
        for p in heads.parameters():
            p.add_(torch.linspace(0.5, 1.5, p.numel()).view_as(p))  # readouts start at zero
    path = tmp_path / "heads.pt"
    heads.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["heads.pt"]
    loaded = ExitHeads.load(path, tiny_backbone)
    assert loaded.head_layers == (2, 4, 6)
    for a, b in zip(heads.parameters(), loaded.parameters()):
        assert torch.equal(a, b)
    engine_a = EarlyExitEngine(tiny_backbone, heads, NeverExit()).predict(prompts[:4], batch_size=4)
    engine_b = EarlyExitEngine(tiny_backbone, loaded, NeverExit()).predict(prompts[:4], batch_size=4)
    np.testing.assert_array_equal(engine_a.per_head_p, engine_b.per_head_p)

    with pytest.raises(ModelError, match="head_layers"):
        ExitHeads(tiny_backbone, [3, 6], readout=True).load_checkpoint(heads.checkpoint())
    with pytest.raises(ModelError, match="readout"):
        ExitHeads(tiny_backbone, [2, 4, 6]).load_checkpoint(heads.checkpoint())
    with pytest.raises(ModelError, match="num_layers"):
        ExitHeads(bb.tiny_backbone(num_layers=8), [2, 4, 6]).load_checkpoint(heads.checkpoint())
    with pytest.raises(ModelError, match="hidden_size"):
        ExitHeads(bb.tiny_backbone(hidden_size=32), [2, 4, 6]).load_checkpoint(heads.checkpoint())
    with pytest.raises(ModelError, match="not an exit-head checkpoint"):
        heads.load_checkpoint({"norms": {}})
    with pytest.raises(ModelError, match="no exit-head checkpoint"):
        ExitHeads.load(tmp_path / "missing.pt", tiny_backbone)
