"""Backbones load from every source and derive their answer tokens in context."""

from __future__ import annotations

import json

import pytest
import torch

from ragrec.errors import ModelError
from ragrec.llm.backbone import (
    answer_token_id,
    encode_chat,
    encode_chat_tokenizer,
    load_backbone,
    tiny_backbone,
    tiny_tokenizer,
)

pytestmark = pytest.mark.usefixtures("one_thread")


# -- local folders ----------------------------------------------------------------------------


def test_local_folder_round_trip(tmp_path, tiny_backbone):
    tiny_backbone.model.save_pretrained(tmp_path)
    tiny_backbone.tokenizer.save_pretrained(tmp_path)
    loaded = load_backbone(str(tmp_path), device="cpu", dtype=torch.float32)
    assert loaded.name == str(tmp_path)
    assert (loaded.yes_token_id, loaded.no_token_id) == (
        tiny_backbone.yes_token_id,
        tiny_backbone.no_token_id,
    )
    ids = torch.tensor([encode_chat(loaded, "Will the user like it?")])
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(ids).logits, tiny_backbone.model(ids).logits)


def test_load_backbone_tiny_source():
    b = load_backbone("tiny", device="cpu")
    assert b.num_layers == 6 and b.dtype == torch.float32
    reference = dict(tiny_backbone().model.named_parameters())
    assert all(torch.equal(p, reference[k]) for k, p in b.model.named_parameters())


def test_local_folder_errors(tmp_path):
    with pytest.raises(ModelError, match="neither 'bundled', 'tiny' nor an existing folder"):
        load_backbone(str(tmp_path / "nope"), device="cpu")
    with pytest.raises(ModelError, match="no config.json"):
        load_backbone(str(tmp_path), device="cpu")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ModelError, match="only Llama-family models are supported"):
        load_backbone(str(tmp_path), device="cpu")


# -- chat rendering and answer tokens -----------------------------------------------------------


def test_encode_chat_ends_with_the_assistant_prefix(tiny_backbone):
    tok = tiny_backbone.tokenizer
    ids = encode_chat(tiny_backbone, "Will the user like it?", "You are a recommender")
    tokens = tok.convert_ids_to_tokens(ids)
    assert tokens[:3] == ["<s>", "<|system|>", "You"]
    assert tokens[-1] == "<|assistant|>"
    assert "<|system|>" not in tok.convert_ids_to_tokens(encode_chat(tiny_backbone, "hi"))


def test_plain_text_without_chat_template():
    tok = tiny_tokenizer()
    tok.chat_template = None
    ids = encode_chat_tokenizer(tok, "Will the user like it? Answer:", "You are a recommender")
    assert tok.convert_ids_to_tokens(ids)[-2:] == ["Answer", ":"]
    assert tok.convert_ids_to_tokens([answer_token_id(tok, "Yes")]) == ["Yes"]


@pytest.mark.parametrize(
    "word, message",
    [("Maybe", "unknown token"), ("Yes No", "not a single token")],
    ids=["unknown-word", "two-tokens"],
)
def test_answer_word_must_be_one_known_token(word, message):
    with pytest.raises(ModelError, match=message):
        answer_token_id(tiny_tokenizer(), word)
