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
    emb = CFEmbeddings(rng.normal(size=(4, 3)).astype(np.float32), rng.normal(size=(3, 3)).astype(np.float32),
                       np.ones(4, bool), np.array(known_items), source="like_mf")
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


@pytest.mark.parametrize("ids", [[[1, MARKER, 2]], [[MARKER, MARKER, MARKER]]], ids=["one slot", "three slots"])
def test_a_prompt_without_exactly_two_slots_is_a_model_error(ids):
    with pytest.raises(ModelError, match="exactly two"):
        _cf().embed(nn.Embedding(12, 8), torch.tensor(ids), torch.tensor([0]), torch.tensor([0]))


def test_a_tokenizer_that_maps_unknown_words_to_unk_cannot_mark_slots():
    # The tiny test tokenizer is word-level: unknown words become [UNK], so [UNK] is no marker.
    with pytest.raises(ConfigError, match="<cf>"):
        cf_marker(tiny_backbone(num_layers=2, hidden_size=16).tokenizer)
