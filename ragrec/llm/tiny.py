"""A tiny random Llama and a word-level tokenizer, so that tests run in milliseconds on a CPU.

The model has the real architecture (grouped-query attention, rotary embeddings, RMSNorm) at a
toy size; the tokenizer knows the words prompts are made of and a chat template, so "Yes" and
"No" are single answer tokens as they are for SmolLM2. Wrapped as a ``Backbone`` by
:func:`ragrec.llm.backbone.tiny_backbone`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from ragrec.errors import ConfigError

# "<cf>" marks the prompt's collaborative slots (a word-level tokenizer maps unknown words to
# [UNK], so [UNK] cannot mark them; see ragrec.model.cf_tokens.cf_marker)
_SPECIALS = ["<pad>", "<s>", "</s>", "[UNK]", "<|system|>", "<|user|>", "<|assistant|>", "<cf>"]
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


def tiny_llama(
    num_layers: int = 6,
    hidden_size: int = 64,
    seed: int = 0,
    vocab_words: Sequence[str] | None = None,
) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    """A randomly initialised Llama (fp32, CPU, eval mode) and the tiny word-level tokenizer.

    4 attention heads over 2 key/value heads (grouped-query attention, like SmolLM2), MLP width
    ``2 * hidden_size``, up to 1024 positions. Deterministic under ``seed`` and leaves the global
    torch RNG untouched. ``initializer_range`` is 0.1 (HF default 0.02) so that different prompts
    and depths give visibly different P(Yes), which the exit tests need.

    Args:
        num_layers (int, optional): decoder layers. (default: :obj:`6`)
        hidden_size (int, optional): a positive multiple of 8. (default: :obj:`64`)
        seed (int, optional): seeds the random weights. (default: :obj:`0`)
        vocab_words (Sequence[str], optional): words added to :func:`tiny_vocabulary`, e.g. the
            dataset's titles. (default: :obj:`None`)
    """
    if num_layers < 1:
        raise ConfigError(f"tiny_backbone needs num_layers ≥ 1, got {num_layers}")
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
    return model, tokenizer
