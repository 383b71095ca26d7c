"""Multi-head instruction tuning: LoRA on the backbone, every exit head trained together.

Loss (one batch of B prompts with labels y ∈ {0, 1}):

    L = Σ_h w_h · CE(softmax([logit_No, logit_Yes]_h), y),    Σ_h w_h = 1 (uniform by default)

Optional self-distillation (``distill = α > 0``; not in the paper, off by default): every head
but the last trains on ``(1 − α) · CE(·, y) + α · CE(·, p_last)``, where ``p_last`` is the last
head's [P(No), P(Yes)] for the same prompt, detached. An intermediate head then learns to say
what the full model will say, not only the label — what the exit rule needs, since a row that
exits early keeps that head's answer instead of the last head's (the early-exit literature's
self-distillation, e.g. FastBERT). The last head's loss is unchanged.

Depth-wise learning-rate decay (the paper): the parameters of depth index d (0 = shallowest
head) train with ``lr_d = lr_0 · exp(−β · d)``, so shallow heads learn faster. "Parameters of
depth d" are head d's own (its norm, and its readout if it has one) and the LoRA adapters of
the decoder layers between head d−1 and head d — the layers whose output only head d and
deeper heads read. β = 0 is the uniform ablation. Implemented as optimizer parameter groups.

With ``readout_fit`` set, the intermediate heads' readouts are refitted in closed form after
the last step (:mod:`ragrec.model.readout`) and saved with the final checkpoint.

Checkpoints (LoRA adapters + heads as safetensors, optimizer state, progress) are written
atomically every ``checkpoint_every`` optimizer steps; a rerun after a kill resumes from the
latest one, and a finished run is reloaded by evaluation instead of retrained.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from peft import LoraConfig, PeftModel, get_peft_model, set_peft_model_state_dict
from peft.utils import get_peft_model_state_dict
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from ragrec.errors import ConfigError, ModelError
from ragrec.llm.backbone import Backbone
from ragrec.llm.batching import bucketed_batches, length_sorted_batches, pad_prompts
from ragrec.metrics import auc
from ragrec.model.heads import ExitHeads
from ragrec.model.readout import ReadoutFit, fit_readouts


@dataclass(frozen=True)
class LoraSettings:
    """LoRA on the attention projections (peft). Defaults: r=8, α=16, dropout 0.05."""

    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")


@dataclass(frozen=True)
class TrainConfig:
    """Multi-head training. ``lr`` is lr_0 of the shallowest depth; ``beta`` the decay rate."""

    lr: float = 1e-3
    beta: float = 0.1
    epochs: int = 1
    batch_size: int = 8
    grad_accum: int = 1
    max_steps: int | None = None
    # End the run after this many optimizer steps while keeping the learning-rate schedule of the
    # whole run (max_steps shortens the schedule instead). A shorter ablation run then follows the
    # main run step for step, and pairs with the main run's snapshot at that step.
    stop_at: int | None = None
    head_weights: tuple[float, ...] | None = None
    # Run each training forward and backward under torch.autocast(bfloat16): the matmuls run in
    # bf16 while the weights, LoRA adapters, optimizer state and the loss stay fp32, and
    # validation/evaluation do not use it. On a CPU with AVX512-BF16 (the 2-core EPYC) a step of
    # 4 SmolLM2 prompts of ~190 tokens takes ~1.8 s instead of ~3.1 s. A bf16 model (GPU
    # profile) gains nothing from it.
    bf16_autocast: bool = False
    distill: float = 0.0
    # Refit the intermediate heads' readouts by logistic regression after training (heads built
    # with readout=True; see ragrec.model.readout). None: no closed-form fit.
    readout_fit: ReadoutFit | None = None
    eval_every: int = 50
    checkpoint_every: int = 25
    warmup_steps: int = 10
    seed: int = 0
    lora: LoraSettings = field(default_factory=LoraSettings)

    def __post_init__(self) -> None:
        if self.lr <= 0 or self.beta < 0 or self.epochs < 1 or self.batch_size < 1 or self.grad_accum < 1:
            raise ConfigError(f"invalid training configuration {self}")
        if self.stop_at is not None and self.stop_at < 1:
            raise ConfigError(f"stop_at must be >= 1, got {self.stop_at}")
        if self.head_weights is not None and (min(self.head_weights) < 0 or sum(self.head_weights) <= 0):
            raise ConfigError(f"head_weights must be non-negative with a positive sum, got {self.head_weights}")
        if not 0.0 <= self.distill <= 1.0:
            raise ConfigError(f"distill is the weight of the last head's answer in [0, 1], got {self.distill}")


def depth_lr(lr0: float, beta: float, depth: int) -> float:
    """``lr_d = lr_0 · exp(−β · d)`` (the paper's depth-wise learning-rate decay)."""
    return lr0 * math.exp(-beta * depth)


def attach_lora(backbone: Backbone, settings: LoraSettings, seed: int = 0) -> Backbone:
    """A Backbone whose model is wrapped with fresh LoRA adapters (seeded init)."""
    torch.manual_seed(seed)
    config = LoraConfig(
        r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules), bias="none", task_type="CAUSAL_LM",
    )
    return dataclasses.replace(backbone, model=get_peft_model(backbone.model, config))


def _layer_index(name: str) -> int | None:
    """0-based decoder layer index of a parameter name like ``...layers.7.self_attn...``."""
    parts = name.split(".")
    for a, b in zip(parts, parts[1:]):
        if a == "layers" and b.isdigit():
            return int(b)
    return None


def parameter_groups(backbone: Backbone, heads: ExitHeads, lr0: float, beta: float) -> list[dict]:
    """Optimizer parameter groups, one per head depth d, each with ``lr_0 · exp(−β · d)``.

    Every trainable parameter lands in exactly one group (checked): head d's parameters and the
    trainable (LoRA) parameters of decoder layers ``(head_layers[d−1], head_layers[d]]``.
    """
    layers = list(heads.head_layers)
    groups: list[list[torch.nn.Parameter]] = [list(heads.head_parameters(d)) for d in range(len(layers))]
    for name, p in backbone.model.named_parameters():
        if not p.requires_grad:
            continue
        i = _layer_index(name)
        if i is None:
            raise ModelError(f"trainable backbone parameter {name} is not inside a decoder layer")
        d = next(d for d, L in enumerate(layers) if i + 1 <= L) if i + 1 <= layers[-1] else len(layers) - 1
        groups[d].append(p)
    seen = sum(len(g) for g in groups)
    expected = sum(1 for p in backbone.model.parameters() if p.requires_grad) + sum(1 for p in heads.parameters() if p.requires_grad)
    if seen != expected:
        raise ModelError(f"parameter groups hold {seen} tensors, but {expected} are trainable")
    return [
        {"params": g, "lr": depth_lr(lr0, beta, d), "initial_lr": depth_lr(lr0, beta, d), "depth": d, "head_layer": layers[d]}
        for d, g in enumerate(groups)
    ]


def multihead_losses(logits: torch.Tensor, y: torch.Tensor, distill: float = 0.0) -> torch.Tensor:
    """Per-head losses ``[H]`` for logits ``[B, H, 2]`` and labels ``[B]`` (module docstring):
    cross-entropy on ``y``, mixed for every head but the last with cross-entropy on the last
    head's detached probabilities when ``distill > 0``."""
    hard = torch.stack([F.cross_entropy(logits[:, h], y) for h in range(logits.shape[1])])
    if distill == 0.0:
        return hard
    teacher = torch.softmax(logits[:, -1].detach(), dim=-1)  # [B, 2]
    soft = torch.stack([F.cross_entropy(logits[:, h], teacher) for h in range(logits.shape[1] - 1)])
    return torch.cat([(1.0 - distill) * hard[:-1] + distill * soft, hard[-1:]])


@torch.inference_mode()
def predict_heads(backbone: Backbone, heads: ExitHeads, prompts: Sequence[Sequence[int]], batch_size: int = 16, progress: bool = False) -> np.ndarray:
    """P(Yes) of every head for every prompt, ``[N, n_heads]``, from full forwards (batches of
    similar length, results in the original order)."""
    out = np.empty((len(prompts), len(heads.head_layers)), dtype=np.float64)
    was_training = backbone.model.training
    backbone.model.eval(), heads.eval()
    pad = backbone.pad_id
    for rows in tqdm(length_sorted_batches(prompts, batch_size), desc="predict", disable=not progress, leave=False):
        ids, mask = pad_prompts([prompts[r] for r in rows], pad, "right")
        logits = heads.forward_all(backbone.model, ids.to(backbone.device), mask.to(backbone.device))
        out[rows] = torch.softmax(logits.float(), dim=-1)[..., 1].cpu().numpy()
    backbone.model.train(was_training)
    return out


@dataclass
class TrainResult:
    """What training produced: per-step loss, per-evaluation validation AUC of every head."""

    steps: int
    seconds: float
    loss: list[float]
    valid_auc: list[dict]
    resumed_from: int | None


_STATE = "state.json"


def _fingerprint(backbone: Backbone, heads: ExitHeads, config: TrainConfig, n_train: int) -> dict:
    """What a checkpoint must match to be resumed (JSON-normalised, as stored)."""
    return json.loads(json.dumps({
        "model": backbone.name,
        "num_layers": backbone.num_layers,
        "head_layers": list(heads.head_layers),
        "config": dataclasses.asdict(config),
        "n_train": n_train,
    }))


def _save_checkpoint(directory: Path, name: str, backbone: Backbone, heads: ExitHeads, optimizer, state: dict) -> Path:
    """Write ``directory/name`` atomically: adapters, heads, optimizer and progress."""
    directory.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=directory))
    save_file({k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(backbone.model).items()}, tmp / "adapter.safetensors")
    save_file({k: v.detach().cpu().contiguous() for k, v in heads.state_dict().items()}, tmp / "heads.safetensors")
    if optimizer is not None:
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    (tmp / _STATE).write_text(json.dumps(state, indent=2))
    final = directory / name
    if final.exists():
        shutil.rmtree(final)
    os.rename(tmp, final)
    return final


def _check_layout(path: Path, theirs: dict, ours: dict) -> None:
    for key in ("model", "num_layers", "head_layers"):
        if theirs[key] != ours[key]:
            raise ModelError(f"checkpoint {path} was made for {key}={theirs[key]}, but this run has {ours[key]}")


def _load_into(path: Path, backbone: Backbone, heads: ExitHeads, fingerprint: dict) -> dict:
    if not (path / _STATE).is_file():
        raise ModelError(f"no training checkpoint at {path} (expected {_STATE}, adapter and head safetensors)")
    state = json.loads((path / _STATE).read_text())
    _check_layout(path, state["fingerprint"], fingerprint)
    set_peft_model_state_dict(backbone.model, load_file(path / "adapter.safetensors"))
    heads.load_state_dict(load_file(path / "heads.safetensors"))
    return state


def snapshot_name(step: int) -> str:
    """The folder, inside a run's checkpoint directory, of the weights kept at ``step``."""
    return f"snapshot-{step:06d}"


def load_trained(directory: str | os.PathLike, backbone: Backbone, heads: ExitHeads, name: str = "final") -> TrainResult:
    """Load the finished run in ``directory/final`` (or a kept snapshot, ``name`` =
    :func:`snapshot_name`) into ``backbone`` (with LoRA attached) and ``heads``; ModelError when
    it is missing or was trained for another model or head layout."""
    layout = {"model": backbone.name, "num_layers": backbone.num_layers, "head_layers": list(heads.head_layers)}
    directory = Path(directory)
    if name != "final" and (directory / "final" / _STATE).is_file() and not (directory / name / _STATE).is_file():
        raise ModelError(
            f"the finished run in {directory} kept no {name} (it was trained without that snapshot); "
            f"delete {directory} to train it again with the snapshot"
        )
    state = _load_into(directory / name, backbone, heads, layout)
    r = state["result"]
    return TrainResult(r["steps"], r["seconds"], r["loss"], r["valid_auc"], resumed_from=r["steps"])


def _latest(directory: Path) -> Path | None:
    done = sorted(p for p in directory.glob("step-*") if (p / _STATE).is_file())
    return done[-1] if done else None


def train_multihead(
    backbone: Backbone,
    heads: ExitHeads,
    prompts: Sequence[Sequence[int]],
    labels: np.ndarray,
    config: TrainConfig,
    checkpoint_dir: str | os.PathLike,
    *,
    valid: tuple[Sequence[Sequence[int]], np.ndarray] | None = None,
    snapshot_at: Sequence[int] = (),
    progress: bool = True,
) -> TrainResult:
    """Train LoRA adapters and all exit heads together (see the module docstring).

    ``backbone.model`` must already carry LoRA adapters (:func:`attach_lora`). Resumes from the
    latest checkpoint in ``checkpoint_dir`` when one matches this run, and returns at once when
    ``checkpoint_dir/final`` does. The weights after each step in ``snapshot_at`` are kept in
    ``checkpoint_dir/``:func:`snapshot_name` (loadable with :func:`load_trained`): they equal a
    run with ``stop_at`` = that step.
    """
    import time

    labels = np.asarray(labels).astype(np.int64)
    if len(prompts) != len(labels) or len(prompts) == 0:
        raise ConfigError(f"need as many labels as prompts (> 0), got {len(prompts)} prompts and {len(labels)} labels")
    if not isinstance(backbone.model, PeftModel):
        raise ModelError("train_multihead expects a backbone with LoRA adapters; call attach_lora first")
    directory = Path(checkpoint_dir)
    fingerprint = _fingerprint(backbone, heads, config, len(prompts))
    weights = torch.tensor(config.head_weights or [1.0] * len(heads.head_layers), dtype=torch.float32)
    if len(weights) != len(heads.head_layers):
        raise ConfigError(f"{len(weights)} head weights for {len(heads.head_layers)} heads")
    weights = weights / weights.sum()

    if (directory / "final" / _STATE).is_file():
        state = json.loads((directory / "final" / _STATE).read_text())
        _check_layout(directory / "final", state["fingerprint"], fingerprint)
        if state["fingerprint"] != fingerprint:
            raise ModelError(f"{directory / 'final'} was trained with other settings; delete it or use another checkpoint_dir")
        return load_trained(directory, backbone, heads)

    batches_per_epoch = math.ceil(len(prompts) / config.batch_size)
    steps_per_epoch = math.ceil(batches_per_epoch / config.grad_accum)
    total = config.epochs * steps_per_epoch if config.max_steps is None else min(config.max_steps, config.epochs * steps_per_epoch)
    end = total if config.stop_at is None else min(config.stop_at, total)
    if any(not 1 <= s < end for s in snapshot_at):
        raise ConfigError(f"snapshot steps {tuple(snapshot_at)} must lie in [1, {end}) (the run ends after step {end})")
    optimizer = torch.optim.AdamW(parameter_groups(backbone, heads, config.lr, config.beta), weight_decay=0.0)
    # Linear warm-up then linear decay to 0; it multiplies every group's own lr_d.
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / max(1, config.warmup_steps)) * max(0.0, 1 - s / max(1, total))
    )
    step, history, evals, resumed, seconds = 0, [], [], None, 0.0
    latest = _latest(directory) if directory.exists() else None
    if latest is not None:
        state = _load_into(latest, backbone, heads, fingerprint)
        if state["fingerprint"] != fingerprint:
            raise ModelError(f"{latest} belongs to a run with other settings; delete {directory} to start over")
        optimizer.load_state_dict(torch.load(latest / "optimizer.pt", weights_only=True))
        step, history, evals, seconds = state["step"], state["loss"], state["valid_auc"], state["seconds"]
        schedule.last_epoch = step - 1
        schedule.step()
        resumed = step

    pad = backbone.pad_id
    device = backbone.device
    backbone.model.train(), heads.train()
    bar = tqdm(total=end, initial=step, desc="train", disable=not progress)
    lengths = [len(x) for x in prompts]
    batches: dict[int, list[np.ndarray]] = {}
    t0 = time.perf_counter()
    while step < end:
        epoch, within = divmod(step, steps_per_epoch)
        # The batches are a pure function of (seed, epoch): a resumed run sees the same data.
        if epoch not in batches:
            batches = {epoch: bucketed_batches(lengths, config.batch_size, np.random.default_rng([config.seed, epoch]))}
        torch.manual_seed(config.seed * 100_003 + step)  # LoRA dropout, reproducible per step
        optimizer.zero_grad(set_to_none=True)
        total_loss = 0.0
        for a in range(config.grad_accum):
            b = within * config.grad_accum + a
            if b >= len(batches[epoch]):
                break
            rows = batches[epoch][b]
            ids, mask = pad_prompts([prompts[r] for r in rows], pad, "right")
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.bf16_autocast):
                logits = heads.forward_all(backbone.model, ids.to(device), mask.to(device)).float()  # [B, H, 2]
            y = torch.as_tensor(labels[rows], device=device)
            per_head = multihead_losses(logits, y, config.distill)
            loss = (weights.to(device) * per_head).sum() / config.grad_accum
            loss.backward()
            total_loss += loss.item()
        optimizer.step()
        schedule.step()
        step += 1
        history.append(total_loss)
        bar.update(1)
        bar.set_postfix(loss=f"{np.mean(history[-10:]):.4f}")
        if valid is not None and (step % config.eval_every == 0 or step == end):
            p = predict_heads(backbone, heads, valid[0])
            evals.append({"step": step, **{str(L): auc(valid[1], p[:, h]) for h, L in enumerate(heads.head_layers)}})
            backbone.model.train(), heads.train()
        if step in snapshot_at:
            _save_checkpoint(directory, snapshot_name(step), backbone, heads, None,
                             _finished_state(fingerprint, step, history, evals, seconds + time.perf_counter() - t0, resumed))
        if step % config.checkpoint_every == 0 and step < end:
            state = {"fingerprint": fingerprint, "step": step, "loss": history, "valid_auc": evals, "seconds": seconds + time.perf_counter() - t0}
            _save_checkpoint(directory, f"step-{step:06d}", backbone, heads, optimizer, state)
            for old in directory.glob("step-*"):
                if old.name != f"step-{step:06d}":
                    shutil.rmtree(old, ignore_errors=True)
    bar.close()
    backbone.model.eval(), heads.eval()
    if config.readout_fit is not None:
        fit_readouts(backbone, heads, prompts, labels, config.readout_fit, progress=progress)
        if valid is not None:  # the last evaluation again, with the fitted readouts
            p = predict_heads(backbone, heads, valid[0])
            evals.append({"step": step, "readouts": "fitted", **{str(L): auc(valid[1], p[:, h]) for h, L in enumerate(heads.head_layers)}})
    state = _finished_state(fingerprint, step, history, evals, seconds + time.perf_counter() - t0, resumed)
    _save_checkpoint(directory, "final", backbone, heads, None, state)
    for old in directory.glob("step-*"):
        shutil.rmtree(old, ignore_errors=True)
    return TrainResult(**state["result"])


def _finished_state(fingerprint: dict, step: int, history: list[float], evals: list[dict], seconds: float, resumed: int | None) -> dict:
    """What ``final`` and snapshots store: progress plus the :class:`TrainResult` they load as."""
    result = TrainResult(step, seconds, list(history), list(evals), resumed)
    return {"fingerprint": fingerprint, "step": step, "loss": result.loss, "valid_auc": result.valid_auc, "seconds": seconds,
            "result": dataclasses.asdict(result)}
