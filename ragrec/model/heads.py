"""Exit heads on intermediate layers: what each head reads and how it scores Yes/No.

The paper (Zhou et al., ACL 2025, "multi-head early exit") puts heads on intermediate layers
(5, 10, …, 30 of Vicuna-7B's 32); each head gives ``P_h(Yes)``. At inference the model stops at
head ``h`` as soon as the prediction is stable::

    D_h = |P_h(Yes) − P_{h−1}(Yes)| < τ                                          (paper, early exit)

:class:`ExitHeads` holds one trainable RMSNorm per intermediate head, followed by the model's own
(frozen, shared) LM-head rows for [No, Yes]. The head at the last decoder layer *is* the model's
final norm + LM head, so it reproduces the plain model. ``forward_all`` (one full forward, all
heads; what training and scoring call) and the engine (:mod:`ragrec.model.engine`) share
:meth:`ExitHeads.logits`; when to stop is the exit criteria's job (:mod:`ragrec.model.criteria`).

Every head reads out in fp32, whatever the body's dtype: the last-token state is upcast, then
the head's norm, the two answer rows and the readout run in fp32 (autocast off). A bf16
read-out puts the Yes−No logit on a 0.125 grid at SmolLM2's logit scale: 32 distinct
final-head values over 2,000 test samples, 3.6% of positive–negative pairs tied, and an engine
one grid step (Δp ≈ 0.03) off the saved predictions on a quarter of the requests (issue #27).
The heads' own parameters are fp32 too, so a bf16 body trains fp32 heads.

Shapes: ``B`` batch rows, ``T`` padded sequence length, ``H`` hidden size, ``n`` heads, ``N``
prompts. Layers are counted 1-based: the head "at layer L" reads the hidden state after decoder
layer L (``hidden_states[L]`` in Hugging Face's numbering, where index 0 is the embeddings).

Padding: position ids come from the attention mask (``cumsum − 1``), so a row's result does not
depend on left vs right padding or on its batch mates.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from ragrec.errors import ConfigError, ModelError
from ragrec.llm.backbone import Backbone
from ragrec.model.cf_tokens import CFTokens
from ragrec.model.forward import (
    check_mask,
    last_token_index,
    p_yes_from_logits,
    positions_from_mask,
    rms_norm_fp32,
    run_decoder,
    unwrap_llama,
)


def default_head_layers(num_layers: int, every: int = 5) -> tuple[int, ...]:
    """Heads every ``every`` layers, as in the paper (5, 10, …, 30 for SmolLM2's 30 layers), plus
    the last layer when it is not a multiple, so the deepest head is the full model."""
    if num_layers < 1 or every < 1:
        raise ConfigError(f"need num_layers ≥ 1 and every ≥ 1, got {num_layers}, {every}")
    layers = list(range(every, num_layers + 1, every))
    if not layers or layers[-1] != num_layers:
        layers.append(num_layers)
    return tuple(layers)


def _is_whole(x: object) -> bool:
    if isinstance(x, bool):
        return False
    return isinstance(x, numbers.Integral) or (isinstance(x, numbers.Real) and float(x).is_integer())


def _check_head_layers(head_layers: Sequence[int], num_layers: int) -> tuple[int, ...]:
    """``head_layers`` as a tuple of ints: non-empty, whole numbers, in 1..num_layers, increasing."""
    layers = tuple(head_layers)
    if not layers:
        raise ConfigError("head_layers is empty; give at least one layer, e.g. (5, 10, 15, 20, 25, 30)")
    # int(2.5) would silently put a head at layer 2; True is an int, but not a layer number.
    fractional = [x for x in layers if not _is_whole(x)]
    if fractional:
        raise ConfigError(
            f"head layers {fractional} are not whole layer numbers (head_layers={list(layers)}); "
            "a head at layer L reads the output of decoder layer L, e.g. (5, 10, 15, 20, 25, 30)"
        )
    layers = tuple(int(x) for x in layers)
    bad = [x for x in layers if not 1 <= x <= num_layers]
    if bad:
        raise ConfigError(
            f"head layers {bad} are outside 1..{num_layers}: a head at layer L reads the output of "
            f"decoder layer L of this {num_layers}-layer model"
        )
    if any(b <= a for a, b in zip(layers, layers[1:])):
        raise ConfigError(
            f"head_layers must be strictly increasing, got {list(layers)}; sort them and drop repeats"
        )
    return layers


# --------------------------------------------------------------------------------------------
# exit heads


class ExitHeads(nn.Module):
    """Exit heads at ``head_layers`` (1-based, strictly increasing, within the model).

    Head ``k`` at layer ``L`` maps the last-token hidden state after decoder layer ``L`` to two
    logits ``[logit_No, logit_Yes] = W_{No,Yes} · RMSNorm_k(h_L)``:

    - ``L < num_layers``: its own trainable RMSNorm, initialised as a copy of the model's final
      norm, so an untrained head is the "logit lens" of that layer. With ``readout=True`` also a
      small trainable readout ``R_k · x + b_k`` (``R_k`` is ``[2, H]``) added to the two logits,
      initialised to zero (an untrained head is still the logit lens).
    - ``L == num_layers``: the model's own final norm and nothing else, so this head equals the
      full model (the plain forward agrees within ~1e-6 in P(Yes), see :meth:`project`).

    ``W_{No,Yes}`` are the rows of the model's LM head, read from its ``lm_head`` weight at call
    time (see :meth:`project`): shared, frozen, and not parameters of this module. All of it
    runs in fp32 (module docstring); the norms and readouts are fp32 parameters.

    Why the readout: an intermediate layer's last-token state carries the answer but not along
    the direction ``W_Yes − W_No`` that the final layer writes it to, so a norm and the shared
    rows alone read it poorly. The readout is 2·(H + 1) numbers a head (1,154 for SmolLM2),
    fitted in closed form after training (:mod:`ragrec.model.readout`, which says why not by SGD).

    Collaborative tokens (beyond the paper): :meth:`attach_cf` adds a
    :class:`~ragrec.model.cf_tokens.CFTokens` whose projection fills the prompt's two slots
    before layer 1; every forward then needs ``cf_ids`` ``[B, 2]`` (user, target item) per row.

    Parameters (``state_dict``): the intermediate heads' norms (and readouts), and the
    collaborative tokens' projection and frozen vectors when attached.
    """

    def __init__(self, backbone: Backbone, head_layers: Sequence[int], *, readout: bool = False):
        super().__init__()
        core = unwrap_llama(backbone.model)
        num_layers = int(core.config.num_hidden_layers)
        layers = _check_head_layers(head_layers, num_layers)
        self.head_layers: tuple[int, ...] = layers
        self.num_layers = num_layers
        self.hidden_size = int(core.config.hidden_size)
        self.yes_token_id = int(backbone.yes_token_id)
        self.no_token_id = int(backbone.no_token_id)
        self.model_name = backbone.name
        # Stored without registering: the frozen model must not become part of the heads'
        # parameters, state_dict or .to(); only its final norm and LM-head rows are read.
        object.__setattr__(self, "_core", core)
        final = core.model.norm
        device = final.weight.device
        # The heads' own parameters stay fp32 whatever the body's dtype: they are read out in fp32.
        self.norms = nn.ModuleDict()
        for layer in layers:
            if layer < num_layers:
                norm = LlamaRMSNorm(self.hidden_size, eps=final.variance_epsilon).to(device)
                norm.weight.data.copy_(final.weight.detach().float())
                self.norms[str(layer)] = norm
        self.readouts = nn.ModuleDict()
        for layer in layers if readout else ():
            if layer < num_layers:
                linear = nn.Linear(self.hidden_size, 2, device=device, dtype=torch.float32)
                nn.init.zeros_(linear.weight)
                nn.init.zeros_(linear.bias)
                self.readouts[str(layer)] = linear
        self.cf: CFTokens | None = None

    def attach_cf(self, cf: CFTokens) -> None:
        """Fill the prompts' collaborative slots with ``cf`` from now on (its parameters join the
        heads' state dict and train at the first head's rate)."""
        final = self._core.model.norm.weight
        self.cf = cf.to(device=final.device, dtype=final.dtype)

    def input_embeddings(self, input_ids: Tensor, cf_ids: Tensor | None = None) -> Tensor:
        """What decoder layer 1 reads ``[B, T, H]``: the token embeddings, with the collaborative
        slots filled when :meth:`attach_cf` was called (then ``cf_ids`` ``[B, 2]`` is required)."""
        embed = self._core.model.embed_tokens
        if self.cf is None:
            return embed(input_ids)
        if cf_ids is None:
            raise ConfigError(
                "these heads carry collaborative tokens: pass cf_ids, one (user, item) pair per prompt"
            )
        return self.cf.embed(embed, input_ids, cf_ids[:, 0], cf_ids[:, 1])

    @property
    def has_readouts(self) -> bool:
        return len(self.readouts) > 0

    @property
    def num_heads(self) -> int:
        return len(self.head_layers)

    def head_parameters(self, head_index: int) -> list[nn.Parameter]:
        """Trainable parameters of one head (empty for the full-depth head), for per-head LRs."""
        key = str(self.head_layers[head_index])
        if key not in self.norms:
            return []
        return [
            *self.norms[key].parameters(),
            *(self.readouts[key].parameters() if self.has_readouts else ()),
        ]

    def _norm(self, head_index: int) -> nn.Module:
        layer = self.head_layers[head_index]
        return self.norms[str(layer)] if layer < self.num_layers else self._core.model.norm

    def normed(self, hidden_last: Tensor, head_index: int) -> Tensor:
        """Head ``head_index``'s norm on raw last-token states ``[B, H]`` (any dtype) → ``[B, H]``
        fp32 (what the shared rows and the readout read), computed in fp32 (module docstring)."""
        norm = self._norm(head_index)
        return rms_norm_fp32(hidden_last, norm.weight, norm.variance_epsilon)

    def project(self, normed: Tensor) -> Tensor:
        """``[B, H]`` normalised hidden → ``[B, 2]`` fp32 logits ``[No, Yes]`` of the model's LM
        head: its two answer rows, upcast, times the fp32 state (``z = W_{No,Yes} · x``).

        Why fp32: bf16 rows and states put ``z_Yes − z_No`` on a 0.125 grid (module docstring).
        Why two rows and not the full vocabulary, as the plain forward computes it: the two
        differ only in summation order (≤ 1e-6 in P(Yes) in the tests, within the engine's 1e-5
        contract), while the full row costs V·H fp32 multiply-adds per prompt and head: 28 M for
        SmolLM2, about a quarter of one bf16 decoder layer at batch 8 × 194 tokens (measured for
        issue #27), so ~5% of a full forward over six heads and more at an early exit; the two
        rows cost 2·H. Engine, scoring and training share this function, so they agree to the bit
        on the same states whichever is chosen.
        """
        rows = self._core.lm_head.weight[[self.no_token_id, self.yes_token_id]]  # [2, H], body dtype
        return F.linear(normed.float(), rows.float())

    def logits(self, hidden_last: Tensor, head_index: int) -> Tensor:
        """Head ``head_index`` on raw (un-normalised) last-token states ``[B, H]`` → ``[B, 2]``
        fp32: ``W_{No,Yes} · x + R_k · x + b_k`` with ``x = RMSNorm_k(h)``, all in fp32.

        Autocast is switched off here: training runs the body under ``torch.autocast(bfloat16)``,
        which would otherwise run the two matmuls in bf16 and bring the grid back.
        """
        if not 0 <= head_index < self.num_heads:
            raise ConfigError(f"head_index {head_index} out of range for {self.num_heads} heads")
        with torch.autocast(hidden_last.device.type, enabled=False):
            normed = self.normed(hidden_last, head_index)  # [B, H] fp32
            key = str(self.head_layers[head_index])
            if key not in self.readouts:  # the full-depth head: the model's own logits
                return self.project(normed)
            return self.project(normed) + self.readouts[key](normed)

    def p_yes(self, hidden_last: Tensor, head_index: int) -> Tensor:
        """``P(Yes)`` ``[B]`` (fp32) of head ``head_index`` on raw last-token states ``[B, H]``."""
        return p_yes_from_logits(self.logits(hidden_last, head_index))

    def last_token_states(
        self,
        backbone_model: nn.Module,
        input_ids: Tensor,
        attention_mask: Tensor,
        cf_ids: Tensor | None = None,
    ) -> list[Tensor]:
        """Each head's input ``[B, H]`` (body dtype) from ONE full forward, at each row's last real
        token: the raw state after the head's layer. For the full-depth head that is the final
        norm's input (:func:`~ragrec.model.forward.run_decoder`), not the normed
        ``last_hidden_state``, so that its norm too runs in fp32 in :meth:`logits`.

        ``backbone_model`` may be peft-wrapped; it must be the model these heads were built on.
        The decoder (``model.model``) is called directly so that no vocabulary logits are computed
        for all T positions (``[B, T, V]`` would dominate memory).
        """
        core = unwrap_llama(backbone_model)
        if core is not self._core:
            raise ModelError(
                "these exit heads were built on another model instance; build ExitHeads(backbone, layers) "
                "for this model and load the head checkpoint into it"
            )
        check_mask(input_ids, attention_mask)
        out, pre_norm = run_decoder(
            core,
            inputs_embeds=self.input_embeddings(input_ids, cf_ids),  # the same as input_ids without CF tokens
            attention_mask=attention_mask,
            position_ids=positions_from_mask(attention_mask),
            output_hidden_states=True,
            use_cache=False,
        )
        at = torch.arange(input_ids.shape[0], device=input_ids.device), last_token_index(attention_mask)
        # hidden_states[num_layers] is the normed state: the last layer's raw one is pre_norm
        return [
            pre_norm[at] if layer == self.num_layers else out.hidden_states[layer][at]
            for layer in self.head_layers
        ]

    def forward_all(
        self,
        backbone_model: nn.Module,
        input_ids: Tensor,
        attention_mask: Tensor,
        cf_ids: Tensor | None = None,
    ) -> Tensor:
        """Logits ``[B, n_heads, 2]`` (fp32) of every head from ONE full forward
        (:meth:`last_token_states`), each read out by :meth:`logits` as the engine reads it.

        Gradients flow into the heads' norms (and readouts) and into whatever in the model is
        trainable (LoRA).
        """
        states = self.last_token_states(backbone_model, input_ids, attention_mask, cf_ids)
        return torch.stack([self.logits(h, k) for k, h in enumerate(states)], dim=1)
