"""Collaborative soft tokens in the prompt (after CoLLM; beyond the paper).

The prompt carries two slots, one in the user line and one in the target line, each a single
marker token. Before decoder layer 1 their input embeddings are replaced by a trainable
projection of frozen collaborative vectors (:mod:`ragrec.retrieval.collaborative`)::

    e_slot(u) = W_2 · ReLU(W_1 · c_u + b_1) + b_2        c_u ∈ R^d, W_1: d → 10·d, W_2: 10·d → H

CoLLM's shape (Zhang et al., 2023, ``zyang1580/CoLLM``). Users or items without a training
interaction have no collaborative vector worth projecting: they get a learned "unknown" vector
instead. Every path that scores prompts (training, per-head evaluation, the engine, the plain
forward it is timed against) builds its input embeddings with :meth:`CFTokens.embed`, so the
slots mean the same thing everywhere.

Shapes: ``B`` rows, ``T`` padded length, ``H`` hidden size, ``d`` collaborative dimension.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from ragrec.errors import ConfigError, ModelError
from ragrec.retrieval.collaborative import CFEmbeddings

DEDICATED_MARKER = "<cf>"
"""A token a tokenizer may reserve for the slots (the tiny test tokenizer does)."""

_PROBE = "Zyxqv wombat 1999 (Qqq) — déjà vu"


def cf_marker(tokenizer) -> tuple[str, int]:
    """The marker text and its token id: a dedicated ``<cf>`` token if the vocabulary has one,
    else the unknown token, provided ordinary text never encodes to it (byte-level BPE and
    byte-fallback SentencePiece never emit it).

    Raises:
        ConfigError: no such token; the tokenizer cannot mark the slots.
    """
    vocab = tokenizer.get_vocab()
    if DEDICATED_MARKER in vocab:
        return DEDICATED_MARKER, int(vocab[DEDICATED_MARKER])
    unk, unk_id = tokenizer.unk_token, tokenizer.unk_token_id
    reserved = {tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id}
    if (
        unk is None
        or unk_id in reserved
        or unk_id in tokenizer(_PROBE, add_special_tokens=False)["input_ids"]
    ):
        raise ConfigError(
            "this tokenizer has no token that can mark the collaborative slots: add a special token "
            f"{DEDICATED_MARKER!r} to it, or turn cf_tokens off"
        )
    return unk, int(unk_id)


class CFTokens(nn.Module):
    """Projects frozen collaborative user/item vectors into the two prompt slots.

    Args:
        embeddings: the frozen vectors and which ids are known.
        hidden_size: the backbone's hidden size ``H``.
        marker_id: the slot token's id (:func:`cf_marker`).
        expansion: width of the projection's hidden layer as a multiple of ``d`` (CoLLM: 10).
        seed: initialisation seed.
    """

    def __init__(
        self,
        embeddings: CFEmbeddings,
        hidden_size: int,
        marker_id: int,
        *,
        expansion: int = 10,
        seed: int = 0,
    ):
        super().__init__()
        if expansion < 1 or hidden_size < 1:
            raise ConfigError(f"expansion and hidden_size must be ≥ 1, got {expansion}, {hidden_size}")
        d = embeddings.dim
        self.marker_id = int(marker_id)
        self.source = embeddings.source
        # frozen: buffers travel with .to() and the state dict but get no gradient
        self.register_buffer("users", torch.from_numpy(np.ascontiguousarray(embeddings.users, np.float32)))
        self.register_buffer("items", torch.from_numpy(np.ascontiguousarray(embeddings.items, np.float32)))
        self.register_buffer("known_users", torch.from_numpy(np.asarray(embeddings.known_users, bool)))
        self.register_buffer("known_items", torch.from_numpy(np.asarray(embeddings.known_items, bool)))
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.project = nn.Sequential(
                nn.Linear(d, expansion * d), nn.ReLU(), nn.Linear(expansion * d, hidden_size)
            )
        self.unknown_user = nn.Parameter(torch.zeros(hidden_size))
        self.unknown_item = nn.Parameter(torch.zeros(hidden_size))

    def slot_vectors(self, users: Tensor, items: Tensor) -> tuple[Tensor, Tensor]:
        """Slot embeddings ``([B, H], [B, H])`` for the users and the target items."""
        u = self.project(self.users[users])  # [B, H]
        i = self.project(self.items[items])  # [B, H]
        u = torch.where(self.known_users[users, None], u, self.unknown_user)
        i = torch.where(self.known_items[items, None], i, self.unknown_item)
        return u, i

    def embed(self, embed_tokens: nn.Module, input_ids: Tensor, users: Tensor, items: Tensor) -> Tensor:
        """Input embeddings ``[B, T, H]`` with each row's two marker positions replaced.

        The first marker of a row is the user slot, the second the target-item slot.

        Raises:
            ModelError: a row holds other than exactly two markers.
        """
        hidden = embed_tokens(input_ids)  # [B, T, H]
        slots = input_ids == self.marker_id  # [B, T]
        counts = slots.sum(-1)
        if not bool((counts == 2).all()):
            raise ModelError(
                f"every prompt needs exactly two collaborative slots (marker id {self.marker_id}); "
                f"got {counts.tolist()} — build the prompts with PromptConfig(cf_tokens=True)"
            )
        cols = slots.nonzero()[:, 1].view(-1, 2)  # [B, 2]: user slot, item slot
        rows = torch.arange(len(input_ids), device=input_ids.device)
        u, i = self.slot_vectors(users.to(input_ids.device), items.to(input_ids.device))
        hidden = hidden.index_put((rows, cols[:, 0]), u.to(hidden.dtype))  # out of place: autograd-safe
        return hidden.index_put((rows, cols[:, 1]), i.to(hidden.dtype))
