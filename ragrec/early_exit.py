"""Multi-head early exit: exit heads on intermediate layers, exit criteria, and the engine.

The paper (Zhou et al., ACL 2025, "multi-head early exit") puts heads on intermediate layers
(5, 10, …, 30 of Vicuna-7B's 32); each head gives ``P_h(Yes)``. At inference the model stops at
head ``h`` as soon as the prediction is stable::

    D_h = |P_h(Yes) − P_{h−1}(Yes)| < τ                                          (paper, early exit)

Pieces, each usable alone:

- :class:`ExitHeads`: one trainable RMSNorm per intermediate head, followed by the model's own
  (frozen, shared) LM-head rows for [No, Yes]. The head at the last decoder layer *is* the model's
  final norm + LM head, so it reproduces the plain model. ``forward_all`` (one full forward, all
  heads; what training calls) and the engine share :meth:`ExitHeads.logits`.
- Exit criteria (:class:`StabilityExit`, :class:`NeverExit`, :class:`FixedHead`) with one
  vectorised ``decide`` used by both the engine and :func:`simulate_exits` (threshold sweeps on
  saved predictions), so the two agree exactly.
- :class:`EarlyExitEngine`: runs the Llama decoder layer by layer, evaluates the heads on the rows
  still running, and drops exited rows from the batch so they cost nothing afterwards.

Shapes: ``B`` batch rows, ``T`` padded sequence length, ``H`` hidden size, ``n`` heads, ``N``
prompts. Layers are counted 1-based: the head "at layer L" reads the hidden state after decoder
layer L (``hidden_states[L]`` in Hugging Face's numbering, where index 0 is the embeddings).

Padding: position ids come from the attention mask (``cumsum − 1``), so a row's result does not
depend on left vs right padding or on its batch mates.
"""

from __future__ import annotations

import math
import numbers
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn
from transformers import LlamaForCausalLM
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from ragrec.backbone import Backbone
from ragrec.batching import length_sorted_batches, pad_prompts
from ragrec.errors import ConfigError, ModelError

CHECKPOINT_FORMAT = "ragrec.exit_heads/2"
SUPPORTED_ATTENTION = ("eager", "sdpa")


def default_head_layers(num_layers: int, every: int = 5) -> tuple[int, ...]:
    """Heads every ``every`` layers, as in the paper (5, 10, …, 30 for SmolLM2's 30 layers), plus
    the last layer when it is not a multiple, so the deepest head is the full model."""
    if num_layers < 1 or every < 1:
        raise ConfigError(f"need num_layers >= 1 and every >= 1, got {num_layers}, {every}")
    layers = list(range(every, num_layers + 1, every))
    if not layers or layers[-1] != num_layers:
        layers.append(num_layers)
    return tuple(layers)


# --------------------------------------------------------------------------------------------
# helpers shared by training, the engine and the baseline


def unwrap_llama(model: nn.Module) -> LlamaForCausalLM:
    """The ``LlamaForCausalLM`` under an optional peft wrapper.

    peft's LoRA layers live *inside* that model, so running it still applies an unmerged adapter
    (correct, only slower); callers merge LoRA (``merge_and_unload``) before timed inference.
    """
    core = model
    if not isinstance(core, LlamaForCausalLM) and hasattr(core, "get_base_model"):  # peft PeftModel
        core = core.get_base_model()
    if not isinstance(core, LlamaForCausalLM):
        raise ModelError(
            f"expected a transformers LlamaForCausalLM (optionally peft-wrapped), got {type(core).__name__}; "
            "only Llama-family models are supported by the layer-by-layer engine"
        )
    return core


def positions_from_mask(attention_mask: Tensor) -> Tensor:
    """Position ids ``[B, T]`` (long) = number of real tokens before each position.

    ``cumsum − 1`` makes the first real token position 0 whatever the padding side; padding
    positions are clamped to 0 (they are masked out anyway).
    """
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def last_token_index(attention_mask: Tensor) -> Tensor:
    """Index ``[B]`` (long) of the last real token of every row (T−1 under left padding)."""
    positions = torch.arange(attention_mask.shape[-1], device=attention_mask.device)
    # argmax of (mask · position) picks the largest real position; rows are checked non-empty.
    return (attention_mask.long() * positions).argmax(-1)


def p_yes_from_logits(logits: Tensor) -> Tensor:
    """``P(Yes) = softmax([logit_No, logit_Yes])[1]`` in fp32; ``logits[..., 2]`` → ``[...]``."""
    return torch.softmax(logits.float(), dim=-1)[..., 1]


def _check_mask(input_ids: Tensor, attention_mask: Tensor) -> None:
    if input_ids.dim() != 2 or attention_mask.shape != input_ids.shape:
        raise ConfigError(
            f"input_ids and attention_mask must both be [batch, seq]; got {tuple(input_ids.shape)} "
            f"and {tuple(attention_mask.shape)}"
        )
    if not bool((attention_mask.sum(-1) > 0).all()):
        raise ConfigError("every row needs at least one real token (attention_mask all zero in some row)")


def plain_full_forward_p_yes(backbone: Backbone, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    """P(Yes) ``[B]`` (fp32) from the plain Hugging Face full-depth forward: the RPS baseline.

    ``model(input_ids, attention_mask, position_ids)`` with mask-derived positions; vocabulary
    logits are computed only at the last real token (``logits_to_keep``, as ``generate`` does),
    then restricted to [No, Yes].
    """
    _check_mask(input_ids, attention_mask)
    last = last_token_index(attention_mask)
    seq_len = input_ids.shape[1]
    # Left padding: the last column is every row's last token, the cheap path generate() uses.
    keep: int | Tensor = 1 if bool((last == seq_len - 1).all()) else last[:, None]
    out = backbone.model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=positions_from_mask(attention_mask),
        use_cache=False,
        logits_to_keep=keep,
    )
    logits = out.logits[:, -1]  # [B, V] at each row's last real token
    answer = logits[:, [backbone.no_token_id, backbone.yes_token_id]]
    return p_yes_from_logits(answer)


def check_prompts(backbone: Backbone, prompts: Sequence[Sequence[int]]) -> None:
    """ConfigError for an empty list, an empty prompt, one longer than the model's context or
    token ids outside its vocabulary (the engine and any baseline scored beside it)."""
    if len(prompts) == 0:
        raise ConfigError("no prompts to score; pass a non-empty list of token-id lists")
    config = unwrap_llama(backbone.model).config
    max_pos, vocab = int(config.max_position_embeddings), int(config.vocab_size)
    for i, prompt in enumerate(prompts):
        if len(prompt) == 0:
            raise ConfigError(f"prompt {i} is empty; every prompt needs at least one token")
        if len(prompt) > max_pos:
            raise ConfigError(
                f"prompt {i} has {len(prompt)} tokens but the model takes at most {max_pos} "
                "(config.max_position_embeddings); lower the prompt token budget"
            )
        if min(prompt) < 0 or max(prompt) >= vocab:
            raise ConfigError(f"prompt {i} has token ids outside the vocabulary 0..{vocab - 1}")


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
      full model (and the plain forward reproduces it to the bit).

    ``W_{No,Yes}`` are the rows of the model's LM head, used through the model's own ``lm_head``
    module at call time (see :meth:`project`): shared, frozen, and not parameters of this module.

    Why the readout: an intermediate layer's last-token state carries the answer but not along
    the direction ``W_Yes − W_No`` that the final layer writes it to. On SmolLM2 (cpu profile)
    linear probes of the states after layers 5 and 10 reach validation AUC 0.70 and 0.72, while
    heads made of a norm and the shared rows stayed near chance (0.55, 0.53) after training.
    The readout is 2·(H + 1) numbers a head (1,154 for SmolLM2). Trained by SGD with the rest
    (with the head's lr_d) it did not help there; :mod:`ragrec.readout` fits it in closed form.

    Parameters (``state_dict``): the intermediate heads' norms (and readouts), nothing else.
    """

    def __init__(self, backbone: Backbone, head_layers: Sequence[int], *, readout: bool = False):
        super().__init__()
        core = unwrap_llama(backbone.model)
        num_layers = int(core.config.num_hidden_layers)
        layers = tuple(int(x) for x in head_layers)
        if not layers:
            raise ConfigError("head_layers is empty; give at least one layer, e.g. (5, 10, 15, 20, 25, 30)")
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
        self.norms = nn.ModuleDict()
        for layer in layers:
            if layer < num_layers:
                norm = LlamaRMSNorm(self.hidden_size, eps=final.variance_epsilon)
                norm.weight.data.copy_(final.weight.detach())
                self.norms[str(layer)] = norm.to(device=final.weight.device, dtype=final.weight.dtype)
        self.readouts = nn.ModuleDict()
        for layer in layers if readout else ():
            if layer < num_layers:
                linear = nn.Linear(self.hidden_size, 2, device=final.weight.device, dtype=final.weight.dtype)
                nn.init.zeros_(linear.weight), nn.init.zeros_(linear.bias)
                self.readouts[str(layer)] = linear

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
        return [*self.norms[key].parameters(), *(self.readouts[key].parameters() if self.has_readouts else ())]

    def _norm(self, head_index: int) -> nn.Module:
        layer = self.head_layers[head_index]
        return self.norms[str(layer)] if layer < self.num_layers else self._core.model.norm

    def normed(self, hidden_last: Tensor, head_index: int) -> Tensor:
        """Head ``head_index``'s norm on raw last-token states ``[B, H]`` → ``[B, H]`` (what the
        shared rows and the readout read)."""
        return self._norm(head_index)(hidden_last)

    def project(self, normed: Tensor) -> Tensor:
        """``[B, H]`` normalised hidden → ``[B, 2]`` logits ``[No, Yes]`` of the model's LM head.

        The model's own ``lm_head`` module runs on the B last-token states and the [No, Yes]
        columns are kept. A two-row matmul would be mathematically the same but sums in another
        order than the plain forward's full-vocabulary GEMM (~1e-5 apart on SmolLM2's logits of
        ~30); the full row costs V·H multiply-adds per prompt (28 M for SmolLM2, well under 1%
        of one decoder layer over a 150-token prompt) and makes the last head reproduce the
        plain model to the bit.
        """
        return self._core.lm_head(normed)[:, [self.no_token_id, self.yes_token_id]]

    def logits(self, hidden_last: Tensor, head_index: int) -> Tensor:
        """Head ``head_index`` on raw (un-normalised) last-token states ``[B, H]`` → ``[B, 2]``."""
        if not 0 <= head_index < self.num_heads:
            raise ConfigError(f"head_index {head_index} out of range for {self.num_heads} heads")
        normed = self.normed(hidden_last, head_index)
        key = str(self.head_layers[head_index])
        if key not in self.readouts:  # the full-depth head: the model's own logits, untouched
            return self.project(normed)
        return self.project(normed) + self.readouts[key](normed)

    def p_yes(self, hidden_last: Tensor, head_index: int) -> Tensor:
        """``P(Yes)`` ``[B]`` (fp32) of head ``head_index`` on raw last-token states ``[B, H]``."""
        return p_yes_from_logits(self.logits(hidden_last, head_index))

    def last_token_states(self, backbone_model: nn.Module, input_ids: Tensor, attention_mask: Tensor) -> list[Tensor]:
        """Each head's input ``[B, H]`` from ONE full forward, at each row's last real token: the
        raw state after the head's layer, except for the full-depth head, whose state already
        has the model's final norm applied (as ``last_hidden_state`` has).

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
        _check_mask(input_ids, attention_mask)
        out = core.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=positions_from_mask(attention_mask),
            output_hidden_states=True,
            use_cache=False,
        )
        at = torch.arange(input_ids.shape[0], device=input_ids.device), last_token_index(attention_mask)
        return [
            out.last_hidden_state[at] if layer == self.num_layers else out.hidden_states[layer][at]
            for layer in self.head_layers
        ]

    def forward_all(self, backbone_model: nn.Module, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Logits ``[B, n_heads, 2]`` of every head from ONE full forward (:meth:`last_token_states`).

        Gradients flow into the heads' norms (and readouts) and into whatever in the model is
        trainable (LoRA).
        """
        states = self.last_token_states(backbone_model, input_ids, attention_mask)
        logits = [
            # The full-depth state is already normed: only the projection is left to do.
            self.project(h) if layer == self.num_layers else self.logits(h, k)
            for k, (layer, h) in enumerate(zip(self.head_layers, states))
        ]
        return torch.stack(logits, dim=1)

    forward = forward_all

    # -- checkpoints ------------------------------------------------------------------------

    def checkpoint(self) -> dict[str, object]:
        """The trainable norms and readouts (CPU tensors) plus the layout they belong to."""
        return {
            "format": CHECKPOINT_FORMAT,
            "head_layers": list(self.head_layers),
            "num_layers": self.num_layers,
            "hidden_size": self.hidden_size,
            "yes_token_id": self.yes_token_id,
            "no_token_id": self.no_token_id,
            "model_name": self.model_name,
            "readout": self.has_readouts,
            "norms": {k: v.detach().cpu() for k, v in self.norms.state_dict().items()},
            "readouts": {k: v.detach().cpu() for k, v in self.readouts.state_dict().items()},
        }

    def load_checkpoint(self, ckpt: dict[str, object]) -> None:
        """Load norms and readouts saved by :meth:`checkpoint`; ModelError if the layout or model differs."""
        if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
            raise ModelError(f"not an exit-head checkpoint (expected format {CHECKPOINT_FORMAT!r})")
        expected = {
            "head_layers": list(self.head_layers),
            "num_layers": self.num_layers,
            "hidden_size": self.hidden_size,
            "yes_token_id": self.yes_token_id,
            "no_token_id": self.no_token_id,
            "readout": self.has_readouts,
        }
        diffs = [f"{k}: checkpoint {ckpt.get(k)!r} vs heads {v!r}" for k, v in expected.items() if ckpt.get(k) != v]
        if diffs:
            raise ModelError(
                "exit-head checkpoint does not fit these heads (" + "; ".join(diffs) + "); build the heads "
                f"with the checkpoint's layout on the model it was trained on ({ckpt.get('model_name')!r})"
            )
        self.norms.load_state_dict(ckpt["norms"])
        self.readouts.load_state_dict(ckpt["readouts"])

    def save(self, path: Path) -> None:
        """Write :meth:`checkpoint` atomically (temp file + rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            torch.save(self.checkpoint(), tmp)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    @classmethod
    def load(cls, path: Path, backbone: Backbone) -> ExitHeads:
        """Heads with the layout saved at ``path``, built on ``backbone`` and loaded."""
        path = Path(path)
        if not path.is_file():
            raise ModelError(f"no exit-head checkpoint at {path}")
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(ckpt, dict) or "head_layers" not in ckpt:
            raise ModelError(f"{path} is not an exit-head checkpoint (expected format {CHECKPOINT_FORMAT!r})")
        heads = cls(backbone, ckpt["head_layers"], readout=bool(ckpt.get("readout")))
        heads.load_checkpoint(ckpt)
        return heads


# --------------------------------------------------------------------------------------------
# exit criteria
#
# Every criterion decides on float64 numpy arrays. The engine converts each head's P(Yes) to
# float64 once, stores exactly those values in per_head_p, and calls the same ``decide`` that
# simulate_exits calls on per_head_p: identical inputs through identical code, so a threshold
# sweep on saved predictions reproduces the engine bit for bit.

ArrayLike = np.ndarray | Tensor

# Probabilities are clipped into [ε, 1−ε] for the odds: P can round to exactly 0 or 1 in fp32,
# where the odds are 0 or infinite and two saturated heads would compare inf/inf = NaN.
_ODDS_EPS = 1e-12


def _as_numpy(p: ArrayLike) -> np.ndarray:
    if isinstance(p, Tensor):
        return p.detach().to("cpu", torch.float64).numpy()
    return np.asarray(p, dtype=np.float64)


def _like(mask: np.ndarray, template: ArrayLike) -> ArrayLike:
    if isinstance(template, Tensor):
        return torch.from_numpy(mask).to(template.device)
    return mask


def _odds(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _ODDS_EPS, 1.0 - _ODDS_EPS)
    return p / (1.0 - p)


@dataclass(frozen=True)
class StabilityExit:
    """Exit at head ``h`` when consecutive heads agree (the paper's criterion).

    - ``form="difference"``: ``|P_h − P_{h−1}| < τ`` (paper: ``D_h = |P_h(Yes) − P_{h−1}(Yes)|``).
    - ``form="ratio"``: on the log odds, ``|log(P_h/(1−P_h)) − log(P_{h−1}/(1−P_{h−1}))| < τ``,
      i.e. the change of the ratio of the positive and negative prediction scores (the paper's
      figure speaks of "ratio scores of positive and negative predictions"). τ is in nats here.
    - ``first_head="wait"``: the first head has no predecessor and never exits.
      ``"confident"``: the first head exits when it is already within τ of a certain answer,
      ``max(P_1, 1−P_1) > 1 − τ`` (equivalently ``|P_1 − 0.5| > 0.5 − τ``). Defined for the
      difference form only, where τ is a probability.

    The last head always exits. τ = 0 never exits early; τ = inf exits at the second head.
    """

    tau: float
    form: Literal["difference", "ratio"] = "difference"
    first_head: Literal["wait", "confident"] = "wait"

    def __post_init__(self) -> None:
        if not isinstance(self.tau, numbers.Real) or math.isnan(self.tau) or self.tau < 0:
            raise ConfigError(f"tau must be a number >= 0 (larger = earlier exit), got {self.tau!r}")
        if self.form not in ("difference", "ratio"):
            raise ConfigError(f"form must be 'difference' or 'ratio', got {self.form!r}")
        if self.first_head not in ("wait", "confident"):
            raise ConfigError(f"first_head must be 'wait' or 'confident', got {self.first_head!r}")
        if self.form == "ratio" and self.first_head == "confident":
            raise ConfigError(
                "first_head='confident' is defined on probabilities (form='difference'); with "
                "form='ratio' use first_head='wait'"
            )

    def decide(
        self,
        p_prev: ArrayLike | None,
        p_cur: ArrayLike,
        head_index: int,
        is_last: bool,
        *,
        layer: int | None = None,
    ) -> ArrayLike:
        """Exit mask ``[B]`` (bool, same kind as ``p_cur``) for rows at head ``head_index``."""
        cur = _as_numpy(p_cur)
        if is_last:
            out = np.ones(cur.shape, dtype=bool)
        elif head_index == 0 or p_prev is None:
            if self.first_head == "wait":
                out = np.zeros(cur.shape, dtype=bool)
            else:
                out = np.maximum(cur, 1.0 - cur) > 1.0 - self.tau
        else:
            prev = _as_numpy(p_prev)
            if self.form == "difference":
                out = np.abs(cur - prev) < self.tau
            else:
                # |log(odds_h) − log(odds_{h−1})| < τ  ⟺  e^−τ < odds_h / odds_{h−1} < e^τ.
                # Only ×, ÷ and comparisons act on the arrays (correctly rounded in IEEE
                # arithmetic), so SIMD or strided numpy paths cannot flip a decision between the
                # engine and simulate_exits the way a vectorised log might by one ulp.
                ratio = _odds(cur) / _odds(prev)
                bound = math.exp(min(float(self.tau), 700.0))  # capped: math.exp overflows past ~709
                out = (ratio > 1.0 / bound) & (ratio < bound)
        return _like(out, p_cur)


@dataclass(frozen=True)
class NeverExit:
    """Run every head, exit only at the last: the full-depth reference."""

    def decide(
        self,
        p_prev: ArrayLike | None,
        p_cur: ArrayLike,
        head_index: int,
        is_last: bool,
        *,
        layer: int | None = None,
    ) -> ArrayLike:
        cur = _as_numpy(p_cur)
        return _like(np.full(cur.shape, is_last, dtype=bool), p_cur)


@dataclass(frozen=True)
class FixedHead:
    """Always exit at the head on ``layer`` (a static shallower model; must be a head layer)."""

    layer: int

    def __post_init__(self) -> None:
        if not isinstance(self.layer, int) or self.layer < 1:
            raise ConfigError(f"FixedHead.layer must be a layer number >= 1, got {self.layer!r}")

    def decide(
        self,
        p_prev: ArrayLike | None,
        p_cur: ArrayLike,
        head_index: int,
        is_last: bool,
        *,
        layer: int | None = None,
    ) -> ArrayLike:
        if layer is None:
            raise ConfigError("FixedHead.decide needs the head's layer number (layer=...)")
        cur = _as_numpy(p_cur)
        return _like(np.full(cur.shape, is_last or layer == self.layer, dtype=bool), p_cur)


ExitCriterion = StabilityExit | NeverExit | FixedHead


def _check_criterion(criterion: ExitCriterion, head_layers: Sequence[int]) -> None:
    if not isinstance(criterion, (StabilityExit, NeverExit, FixedHead)):
        raise ConfigError(
            f"unknown exit criterion {criterion!r}; use StabilityExit(tau), NeverExit() or FixedHead(layer)"
        )
    if isinstance(criterion, FixedHead) and criterion.layer not in head_layers:
        raise ConfigError(
            f"FixedHead(layer={criterion.layer}) has no exit head; heads are at layers {list(head_layers)}"
        )


def simulate_exits(
    per_head_p: np.ndarray, criterion: ExitCriterion, head_layers: Sequence[int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Replay ``criterion`` on saved per-head P(Yes) ``[N, n_heads]`` → ``(p_final[N], exit_head_index[N])``.

    Agrees exactly with :class:`EarlyExitEngine` on the engine's own ``per_head_p`` (heads after a
    row's exit may be NaN). ``head_layers`` is needed only for :class:`FixedHead`; if omitted, the
    heads are taken to be at layers 1..n_heads.
    """
    p = np.asarray(per_head_p, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] == 0:
        raise ConfigError(f"per_head_p must be [N, n_heads] with n_heads >= 1, got shape {p.shape}")
    n_rows, n_heads = p.shape
    layers = tuple(range(1, n_heads + 1)) if head_layers is None else tuple(head_layers)
    if len(layers) != n_heads:
        raise ConfigError(f"head_layers has {len(layers)} entries but per_head_p has {n_heads} heads")
    _check_criterion(criterion, layers)
    exited = np.zeros(n_rows, dtype=bool)
    exit_head = np.full(n_rows, -1, dtype=np.int64)
    p_final = np.full(n_rows, np.nan)
    for k in range(n_heads):
        cur = p[:, k]
        if np.isnan(cur[~exited]).any():
            raise ConfigError(
                f"per_head_p is NaN at head {k} for rows that have not exited yet; it needs every head up to the exit"
            )
        prev = p[:, k - 1] if k else None
        with np.errstate(invalid="ignore"):  # NaNs of already-exited rows are masked below
            decision = np.asarray(criterion.decide(prev, cur, k, k == n_heads - 1, layer=layers[k]))
        new = decision & ~exited
        exit_head[new] = k
        p_final[new] = cur[new]
        exited |= new
    return p_final, exit_head


# --------------------------------------------------------------------------------------------
# the layer-by-layer engine


@dataclass(frozen=True)
class ExitResult:
    """Engine output, in the original prompt order.

    ``p_yes[N]`` P(Yes) at the exit head; ``exit_layer[N]`` its layer (1-based);
    ``per_head_p[N, n_heads]`` every head's P(Yes) up to the exit, NaN after it;
    ``layers_run``: decoder layers computed summed over rows (cost in row-layers).
    """

    p_yes: np.ndarray
    exit_layer: np.ndarray
    per_head_p: np.ndarray
    layers_run: int
    head_layers: tuple[int, ...]

    @property
    def exit_head_index(self) -> np.ndarray:
        return np.searchsorted(np.asarray(self.head_layers), self.exit_layer)


def decoder_attention_mask(valid: Tensor, dtype: torch.dtype, attn_implementation: str) -> Tensor | None:
    """The causal + padding mask a decoder layer takes, built as transformers builds it.

    ``valid`` ``[B, T]`` (bool) marks real tokens. SDPA: ``None`` when nothing is padded (SDPA's
    causal fast path), else a bool mask ``[B, 1, T, T]`` (True = may attend). Eager: an additive
    float mask ``[B, 1, T, T]`` (0 or dtype-min). Matching transformers' own choice keeps the
    engine on the same attention kernels as the plain forward, hence the same numbers.
    A padding query may see itself only, so no mask row is empty (an all-masked row gives NaN
    in SDPA); padding keys are never visible to real queries, so real tokens are unaffected.
    """
    if attn_implementation == "sdpa" and bool(valid.all()):
        return None
    seq_len = valid.shape[1]
    idx = torch.arange(seq_len, device=valid.device)
    causal = idx[None, :] <= idx[:, None]  # [T, T]: key j <= query i
    allowed = (causal[None] & valid[:, None, :]) | torch.eye(seq_len, dtype=torch.bool, device=valid.device)
    if attn_implementation == "sdpa":
        return allowed[:, None]
    mask = torch.zeros(allowed.shape, dtype=dtype, device=valid.device)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[:, None]


class EarlyExitEngine:
    """Layer-by-layer inference with exit heads (a peft-wrapped model runs its base Llama, with
    any unmerged LoRA still applied; merge it first for speed)."""

    def __init__(self, backbone: Backbone, heads: ExitHeads, criterion: ExitCriterion):
        core = unwrap_llama(backbone.model)
        if heads._core is not core:
            raise ModelError(
                "the exit heads were built on another model; build ExitHeads(backbone, layers) for this backbone"
            )
        if heads.head_layers[-1] > len(core.model.layers):
            raise ConfigError(
                f"head layer {heads.head_layers[-1]} is beyond the model's {len(core.model.layers)} layers"
            )
        attn = core.config._attn_implementation
        if attn not in SUPPORTED_ATTENTION:
            raise ModelError(
                f"the engine builds the 4-D attention masks of 'sdpa'/'eager' attention, not {attn!r}; "
                "load the model with attn_implementation='sdpa' (or 'eager')"
            )
        _check_criterion(criterion, heads.head_layers)
        self.backbone = backbone
        self.core = core
        self.heads = heads
        self.criterion = criterion

    def _validate(self, prompts: Sequence[Sequence[int]], batch_size: int, padding_side: str) -> None:
        check_prompts(self.backbone, prompts)
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be an int >= 1, got {batch_size!r}")
        if padding_side not in ("left", "right"):
            raise ConfigError(f"padding_side must be 'left' or 'right', got {padding_side!r}")

    def predict(
        self, prompts: list[list[int]], batch_size: int, padding_side: Literal["left", "right"] = "left"
    ) -> ExitResult:
        """P(Yes) and exit layer of every prompt (token ids, e.g. from ``encode_chat``).

        Prompts are sorted by length and batched with similar lengths (less padding); results come
        back in the original order. Deterministic and independent of batch mates.
        """
        self._validate(prompts, batch_size, padding_side)
        n = len(prompts)
        n_heads = self.heads.num_heads
        per_head_p = np.full((n, n_heads), np.nan)
        p_yes = np.full(n, np.nan)
        exit_layer = np.zeros(n, dtype=np.int64)
        layers_run = 0
        with torch.inference_mode():
            for idx in length_sorted_batches(prompts, batch_size):
                layers_run += self._run_batch(
                    [prompts[i] for i in idx], np.asarray(idx), padding_side, per_head_p, p_yes, exit_layer
                )
        return ExitResult(
            p_yes=p_yes,
            exit_layer=exit_layer,
            per_head_p=per_head_p,
            layers_run=layers_run,
            head_layers=self.heads.head_layers,
        )

    def _run_batch(
        self,
        batch: list[list[int]],
        rows: np.ndarray,
        padding_side: str,
        per_head_p: np.ndarray,
        p_yes: np.ndarray,
        exit_layer: np.ndarray,
    ) -> int:
        """Run one padded batch; fills the result arrays at ``rows``; returns row-layers computed."""
        core, heads, device = self.core, self.heads, self.backbone.device
        ids, valid = pad_prompts(batch, self.backbone.tokenizer.pad_token_id or 0, padding_side)
        ids, valid = ids.to(device), valid.to(device)

        pos = positions_from_mask(valid)  # [B, T]
        last = last_token_index(valid)  # [B]
        hidden = core.model.embed_tokens(ids)  # [B, T, H]
        cos, sin = core.model.rotary_emb(hidden, pos)  # each [B, T, head_dim]
        attn = core.config._attn_implementation
        mask = decoder_attention_mask(valid, hidden.dtype, attn)  # [B, 1, T, T] or None

        cost = 0
        head = 0  # index of the next head
        prev_p: np.ndarray | None = None
        n_heads = heads.num_heads
        for i, layer in enumerate(core.model.layers[: heads.head_layers[-1]]):
            out = layer(hidden, attention_mask=mask, position_ids=pos, position_embeddings=(cos, sin))
            hidden = out[0] if isinstance(out, tuple) else out  # tuple in transformers 4.x
            cost += hidden.shape[0]
            if i + 1 != heads.head_layers[head]:
                continue

            arange = torch.arange(hidden.shape[0], device=hidden.device)
            p_cur = _as_numpy(heads.p_yes(hidden[arange, last], head))  # float64, exactly what is stored
            per_head_p[rows, head] = p_cur
            is_last = head == n_heads - 1
            done = np.asarray(self.criterion.decide(prev_p, p_cur, head, is_last, layer=i + 1))
            p_yes[rows[done]] = p_cur[done]
            exit_layer[rows[done]] = i + 1
            if is_last or done.all():
                break
            if done.any():
                # Exited rows leave the batch: every per-row tensor keeps only the running rows.
                keep_np = ~done
                keep = torch.from_numpy(keep_np).to(device)
                rows, prev_p = rows[keep_np], p_cur[keep_np]
                hidden, pos, cos, sin = hidden[keep], pos[keep], cos[keep], sin[keep]
                last, valid = last[keep], valid[keep]
                # Columns that are padding in every remaining row (the longest rows may have left)
                # are dropped too; no real token attends to them, so nothing changes but the cost.
                cols = valid.any(0).nonzero().squeeze(-1)
                lo, hi = int(cols[0]), int(cols[-1]) + 1
                if (lo, hi) != (0, valid.shape[1]):
                    hidden, pos, valid = hidden[:, lo:hi], pos[:, lo:hi], valid[:, lo:hi]
                    cos, sin = cos[:, lo:hi], sin[:, lo:hi]
                    last = last - lo
                mask = decoder_attention_mask(valid, hidden.dtype, attn)
            else:
                prev_p = p_cur
            head += 1
        return cost
