"""Collaborative soft tokens: the two slots are replaced, nothing else, and unknown ids fall back."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from ragrec.errors import ConfigError, ModelError
from ragrec.llm.backbone import tiny_backbone
from ragrec.model.cf_tokens import CFTokens, cf_marker
from ragrec.retrieval.collaborative import CFEmbeddings

MARKER = 9


def _cf(known_items=(True, True, False), hidden=8) -> CFTokens:
    rng = np.random.default_rng(0)
    emb = CFEmbeddings(
        rng.normal(size=(4, 3)).astype(np.float32),
        rng.normal(size=(3, 3)).astype(np.float32),
        np.ones(4, bool),
        np.array(known_items),
        source="like_mf",
    )
    return CFTokens(emb, hidden, MARKER, expansion=2)


def test_only_the_two_marker_positions_change_user_slot_first():
    cf, table = _cf(), nn.Embedding(12, 8)
    ids = torch.tensor([[1, MARKER, 2, MARKER, 3], [0, 4, MARKER, MARKER, 5]])
    users, items = torch.tensor([0, 3]), torch.tensor([1, 0])
    out = cf.embed(table, ids, users, items)
    plain = table(ids)
    slots = ids == MARKER
    torch.testing.assert_close(out[~slots], plain[~slots])
    u, i = cf.slot_vectors(users, items)
    torch.testing.assert_close(out[0, 1], u[0])
    torch.testing.assert_close(out[0, 3], i[0])
    torch.testing.assert_close(out[1, 2], u[1])
    torch.testing.assert_close(out[1, 3], i[1])


def test_an_item_without_training_interactions_gets_the_learned_unknown_vector():
    cf = _cf()
    with torch.no_grad():
        cf.unknown_item.fill_(0.5)
    _, items = cf.slot_vectors(torch.tensor([0, 0]), torch.tensor([2, 1]))
    assert torch.equal(items[0], torch.full((8,), 0.5))
    assert not torch.equal(items[1], torch.full((8,), 0.5))


def test_gradients_reach_the_projection_and_unknown_vectors_not_the_frozen_vectors():
    cf, table = _cf(), nn.Embedding(12, 8)
    ids = torch.tensor([[MARKER, 1, MARKER]])
    cf.embed(table, ids, torch.tensor([1]), torch.tensor([2])).sum().backward()
    assert cf.project[0].weight.grad is not None and cf.unknown_item.grad is not None
    assert not cf.users.requires_grad and not cf.items.requires_grad


@pytest.mark.parametrize(
    "ids", [[[1, MARKER, 2]], [[MARKER, MARKER, MARKER]]], ids=["one slot", "three slots"]
)
def test_a_prompt_without_exactly_two_slots_is_a_model_error(ids):
    with pytest.raises(ModelError, match="exactly two"):
        _cf().embed(nn.Embedding(12, 8), torch.tensor(ids), torch.tensor([0]), torch.tensor([0]))


class _WordTokenizer:
    """A word-level tokenizer without a <cf> token: unknown words become its unk token."""

    unk_token, unk_token_id, pad_token_id, bos_token_id, eos_token_id = "[UNK]", 3, 0, 1, 2

    def get_vocab(self):
        return {"<pad>": 0, "<s>": 1, "</s>": 2, "[UNK]": 3, "hello": 4}

    def __call__(self, text, add_special_tokens=False):
        vocab = self.get_vocab()
        return {"input_ids": [vocab.get(word, 3) for word in text.split()]}


def test_a_tokenizer_that_maps_unknown_words_to_unk_cannot_mark_slots():
    with pytest.raises(ConfigError, match="<cf>"):
        cf_marker(_WordTokenizer())


def test_the_tiny_tokenizer_marks_slots_with_its_dedicated_token():
    tokenizer = tiny_backbone(num_layers=2, hidden_size=16).tokenizer
    text, marker_id = cf_marker(tokenizer)
    assert (
        text == "<cf>"
        and tokenizer("User <cf> rated", add_special_tokens=False)["input_ids"].count(marker_id) == 1
    )


# -- every scoring path fills the slots the same way ---------------------------------------------


def _cf_model(seed=0, lora=False):
    from ragrec.model.heads import ExitHeads
    from ragrec.model.lora import LoraSettings, attach_lora

    backbone = tiny_backbone(num_layers=4, hidden_size=32, seed=seed)
    if lora:
        backbone = attach_lora(backbone, LoraSettings(r=2, alpha=4, dropout=0.0))
    heads = ExitHeads(backbone, [2, 4])
    rng = np.random.default_rng(seed)
    emb = CFEmbeddings(
        rng.normal(size=(5, 3)).astype(np.float32),
        rng.normal(size=(6, 3)).astype(np.float32),
        np.ones(5, bool),
        np.r_[np.ones(5, bool), False],
        source="like_mf",
    )
    marker = cf_marker(backbone.tokenizer)[1]
    heads.attach_cf(CFTokens(emb, 32, marker, expansion=2, seed=seed))
    g = torch.Generator().manual_seed(seed)
    prompts = []
    for n in (9, 14, 6, 11):
        body = torch.randint(8, 300, (n,), generator=g).tolist()
        prompts.append(body[:2] + [marker] + body[2:-2] + [marker] + body[-2:])
    cf_ids = np.array([[0, 1], [4, 5], [2, 2], [1, 0]])
    return backbone, heads, prompts, cf_ids


@pytest.mark.parametrize("side", ["left", "right"])
def test_never_exit_reproduces_the_plain_forward_with_the_same_filled_slots(side):
    from ragrec.llm.batching import pad_prompts
    from ragrec.model.criteria import NeverExit
    from ragrec.model.engine import EarlyExitEngine
    from ragrec.model.forward import plain_full_forward_p_yes
    from ragrec.model.predict import predict_heads

    backbone, heads, prompts, cf_ids = _cf_model()
    result = EarlyExitEngine(backbone, heads, NeverExit()).predict(
        prompts, batch_size=3, padding_side=side, cf_ids=cf_ids
    )
    ids, mask = pad_prompts(prompts, backbone.pad_id, side)
    with torch.no_grad():
        embeds = heads.input_embeddings(ids, torch.as_tensor(cf_ids))
        plain = plain_full_forward_p_yes(backbone, ids, mask, inputs_embeds=embeds).numpy()
        without = plain_full_forward_p_yes(backbone, ids, mask).numpy()
    np.testing.assert_allclose(result.p_yes, plain, atol=1e-5, rtol=0)
    np.testing.assert_allclose(
        predict_heads(backbone, heads, prompts, cf_ids=cf_ids)[:, -1], plain, atol=1e-5, rtol=0
    )
    assert np.abs(plain - without).max() > 1e-4, "the slots must change the prediction"


def test_heads_with_cf_tokens_refuse_prompts_without_ids():
    from ragrec.model.predict import predict_heads

    backbone, heads, prompts, _ = _cf_model()
    with pytest.raises(ConfigError, match="cf_ids"):
        predict_heads(backbone, heads, prompts)


def test_training_with_frozen_lora_and_heads_moves_only_the_projection(tmp_path):
    from ragrec.model.train import TrainConfig, train_multihead

    backbone, heads, prompts, cf_ids = _cf_model(lora=True)
    for p in [*backbone.model.parameters(), *heads.norms.parameters()]:
        p.requires_grad_(False)
    norms = {k: v.clone() for k, v in heads.norms.state_dict().items()}
    lora = {n: p.detach().clone() for n, p in backbone.model.named_parameters() if "lora_" in n}
    projection = heads.cf.project[0].weight.detach().clone()
    train_multihead(
        backbone,
        heads,
        prompts,
        np.array([1, 0, 1, 0]),
        TrainConfig(lr=1e-2, epochs=2, batch_size=2),
        tmp_path / "run",
        progress=False,
        cf_ids=cf_ids,
    )
    assert all(torch.equal(v, heads.norms.state_dict()[k]) for k, v in norms.items())
    assert all(torch.equal(p, dict(backbone.model.named_parameters())[n]) for n, p in lora.items())
    assert not torch.equal(projection, heads.cf.project[0].weight)


def test_for_inference_merges_lora_and_keeps_the_collaborative_slots():
    from ragrec.model.inference import for_inference
    from ragrec.model.predict import predict_heads

    backbone, heads, prompts, cf_ids = _cf_model(lora=True)
    with torch.no_grad():  # a non-zero adapter, so merging has something to fold in
        for name, p in backbone.model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.1)
    before = predict_heads(backbone, heads, prompts, cf_ids=cf_ids)
    merged, merged_heads = for_inference(backbone, heads)
    assert not hasattr(merged.model, "merge_and_unload")
    np.testing.assert_allclose(predict_heads(merged, merged_heads, prompts, cf_ids=cf_ids), before, atol=1e-5)
    _, bf16_heads = for_inference(merged, heads, torch.bfloat16)
    assert bf16_heads.cf.project[0].weight.dtype == torch.bfloat16
    np.testing.assert_allclose(predict_heads(_, bf16_heads, prompts, cf_ids=cf_ids), before, atol=0.05)


def test_for_inference_refuses_a_model_whose_adapters_it_cannot_merge():
    import dataclasses

    from ragrec.errors import ModelError
    from ragrec.model.inference import for_inference

    backbone, heads, _, _ = _cf_model(lora=True)
    unwrapped = dataclasses.replace(
        backbone, model=backbone.model.get_base_model()
    )  # LoRA layers, no wrapper
    with pytest.raises(ModelError, match="peft wrapper"):
        for_inference(unwrapped, heads)
