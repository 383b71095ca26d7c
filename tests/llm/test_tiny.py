"""The tiny test model: the real Llama architecture at toy size, seeded, with a word-level tokenizer."""

from __future__ import annotations

import time

import pytest
import torch

from ragrec.errors import ConfigError
from ragrec.llm.backbone import encode_chat, tiny_backbone
from ragrec.llm.tiny import tiny_llama, tiny_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")


def test_tiny_is_deterministic_fast_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    t0 = time.perf_counter()
    a = tiny_backbone(seed=3)
    seconds = time.perf_counter() - t0
    after = torch.rand(1)
    assert torch.equal(before, after)
    b = tiny_backbone(seed=3)
    c = tiny_backbone(seed=4)
    pa, pb, pc = (dict(x.model.named_parameters()) for x in (a, b, c))
    assert all(torch.equal(pa[k], pb[k]) for k in pa)
    assert not all(torch.equal(pa[k], pc[k]) for k in pa)
    assert seconds < 2.0  # ~10 ms; generous for a loaded CI machine


def test_tiny_backbone_wraps_tiny_llama():
    model, tokenizer = tiny_llama(num_layers=3, hidden_size=16, seed=5)
    wrapped = tiny_backbone(num_layers=3, hidden_size=16, seed=5)
    expected = dict(model.named_parameters())
    assert all(torch.equal(p, expected[k]) for k, p in wrapped.model.named_parameters())
    assert wrapped.tokenizer.get_vocab() == tokenizer.get_vocab()
    assert wrapped.name == "tiny(layers=3,hidden=16,seed=5)"


def test_tiny_shape_and_mode(tiny_backbone):
    assert tiny_backbone.num_layers == 6
    assert tiny_backbone.hidden_size == 64
    assert tiny_backbone.device == torch.device("cpu")
    assert tiny_backbone.dtype == torch.float32
    assert not tiny_backbone.model.training
    assert tiny_backbone.model.config.vocab_size == len(tiny_backbone.tokenizer)


def test_tiny_yes_no_are_single_tokens_derived_in_context(tiny_backbone):
    tok = tiny_backbone.tokenizer
    yes, no = tiny_backbone.yes_token_id, tiny_backbone.no_token_id
    assert yes != no
    assert tok.convert_ids_to_tokens([yes, no]) == ["Yes", "No"]
    # The answer follows the assistant prefix as exactly one more token.
    prompt = encode_chat(tiny_backbone, "Will the user like it?")
    text = tok.decode(prompt, skip_special_tokens=False)
    assert tok(text + "Yes", add_special_tokens=False)["input_ids"] == prompt + [yes]


def test_tiny_tokenizer_splits_words_digits_and_punctuation():
    tok = tiny_tokenizer(vocab_words=["Toy", "Story"])
    ids = tok("Will user 12 like Toy Story (1995)? Zyzzyva", add_special_tokens=False)["input_ids"]
    tokens = tok.convert_ids_to_tokens(ids)
    assert tokens == [
        "Will",
        "user",
        "1",
        "2",
        "like",
        "Toy",
        "Story",
        "(",
        "1",
        "9",
        "9",
        "5",
        ")",
        "?",
        "[UNK]",
    ]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(hidden_size=60), "hidden_size"),
        (dict(hidden_size=0), "hidden_size"),
        (dict(num_layers=0), "num_layers ≥ 1"),
    ],
    ids=["hidden-not-a-multiple-of-8", "hidden-zero", "no-layers"],
)
def test_tiny_rejects_bad_sizes(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        tiny_backbone(**kwargs)
