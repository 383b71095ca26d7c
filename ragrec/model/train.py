"""Multi-head instruction tuning: LoRA on the backbone, every exit head trained together.

The loss (every head's cross-entropy, optional self-distillation) is in :mod:`ragrec.model.loss`.
The paper's depth-wise learning-rate decay ``lr_d = lr_0 · exp(−β · d)`` lives in
:mod:`ragrec.model.lora` (optimizer parameter groups), the checkpoints in
:mod:`ragrec.model.checkpoints`: a rerun after a kill resumes from the latest one, and a
finished run is reloaded instead of retrained. With ``readout_fit`` set, the intermediate
heads' readouts are refitted in closed form after the last step (:mod:`ragrec.model.readout`)
and saved with the final checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from peft import PeftModel
from peft.helpers import disable_input_dtype_casting
from tqdm.auto import tqdm

from ragrec.errors import ConfigError, ModelError
from ragrec.llm.backbone import Backbone
from ragrec.llm.batching import bucketed_batches, pad_prompts
from ragrec.metrics import auc
from ragrec.model.checkpoints import (
    STATE,
    TrainResult,
    check_layout,
    finished_state,
    latest_step,
    load_into,
    load_trained,
    read_state,
    remove_steps,
    save_checkpoint,
    snapshot_name,
    step_name,
)
from ragrec.model.distributed import Shard, current_shard
from ragrec.model.heads import ExitHeads
from ragrec.model.lora import LoraSettings, parameter_groups
from ragrec.model.loss import head_weights, multihead_losses
from ragrec.model.predict import predict_heads, rows_of
from ragrec.model.readout import ReadoutFit, fit_readouts


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
    # validation/evaluation do not use it. Worth it on a CPU with native bf16 (AVX512-BF16; the
    # README's timing table has the step times); a bf16 model (GPU profile) gains nothing.
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
            raise ConfigError(f"stop_at must be ≥ 1, got {self.stop_at}")
        if self.head_weights is not None and (min(self.head_weights) < 0 or sum(self.head_weights) <= 0):
            raise ConfigError(
                f"head_weights must be non-negative with a positive sum, got {self.head_weights}"
            )
        if not 0.0 <= self.distill <= 1.0:
            raise ConfigError(
                f"distill is the weight of the last head's answer in [0, 1], got {self.distill}"
            )
        if self.lora.base_dtype == "bfloat16" and not self.bf16_autocast:
            # the fp32 adapters and heads meet the bf16 base only under autocast
            raise ConfigError("a bf16 LoRA base (lora.base_dtype='bfloat16') needs bf16_autocast=True")


# --------------------------------------------------------------------------------------------
# the steps of a training run


@dataclass
class _Run:
    """A training run: what stays fixed (model, optimizer, schedule, length) and where it stands."""

    backbone: Backbone
    heads: ExitHeads
    config: TrainConfig
    directory: Path
    fingerprint: dict  # what a checkpoint must match to be resumed
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LambdaLR
    weights: torch.Tensor  # [H] loss weight of every head, summing to 1
    steps_per_epoch: int
    end: int  # the run stops after this optimizer step
    # where it stands: what the checkpoints store
    step: int = 0
    loss: list[float] = field(default_factory=list)
    valid_auc: list[dict] = field(default_factory=list)
    seconds: float = 0.0  # spent by earlier sessions of this run (before a kill)
    resumed: int | None = None
    started: float = field(default_factory=time.perf_counter)  # this session's clock
    cf_ids: np.ndarray | None = None  # [N, 2] (user, item) per training prompt, with CF tokens
    valid_cf_ids: np.ndarray | None = None  # the same for the validation prompts
    shard: Shard = field(default_factory=Shard)  # this process's share of each batch
    step_seconds: list[float] = field(default_factory=list)  # wall time of every optimizer step
    step_tokens: list[int] = field(default_factory=list)  # real (unpadded) tokens of every step

    def elapsed(self) -> float:
        """Training seconds so far, over every session of this run."""
        return self.seconds + time.perf_counter() - self.started

    def resumable(self) -> dict:
        """The state a ``step-*`` checkpoint stores."""
        return {
            "fingerprint": self.fingerprint,
            "step": self.step,
            "loss": self.loss,
            "valid_auc": self.valid_auc,
            "seconds": self.elapsed(),
            "step_seconds": self.step_seconds,
            "step_tokens": self.step_tokens,
        }

    def finished(self) -> dict:
        """The state ``final`` and snapshots store."""
        return finished_state(
            self.fingerprint,
            self.step,
            self.loss,
            self.valid_auc,
            self.elapsed(),
            self.resumed,
            (self.step_seconds, self.step_tokens),
        )


def _fingerprint(backbone: Backbone, heads: ExitHeads, config: TrainConfig, n_train: int) -> dict:
    """What a checkpoint must match to be resumed (JSON-normalised, as stored); a LoRA base
    left as loaded is not named, so runs saved before ``base_dtype`` existed still match."""
    settings = dataclasses.asdict(config)
    if config.lora.base_dtype is None:
        del settings["lora"]["base_dtype"]
    return json.loads(
        json.dumps(
            {
                "model": backbone.name,
                "num_layers": backbone.num_layers,
                "head_layers": list(heads.head_layers),
                "config": settings,
                "n_train": n_train,
                **({} if heads.cf is None else {"cf_tokens": heads.cf.source}),
            }
        )
    )


def _check_inputs(backbone: Backbone, prompts: Sequence[Sequence[int]], labels: np.ndarray) -> None:
    if len(prompts) != len(labels) or len(prompts) == 0:
        raise ConfigError(
            f"need as many labels as prompts (> 0), got {len(prompts)} prompts and {len(labels)} labels"
        )
    if not isinstance(backbone.model, PeftModel):
        raise ModelError("train_multihead expects a backbone with LoRA adapters; call attach_lora first")


def _reload_finished(directory: Path, backbone: Backbone, heads: ExitHeads, fingerprint: dict) -> TrainResult:
    """The finished run in ``directory/final``, loaded; ModelError if it was trained otherwise."""
    state = read_state(directory / "final")
    check_layout(directory / "final", state["fingerprint"], fingerprint)
    if state["fingerprint"] != fingerprint:
        raise ModelError(
            f"{directory / 'final'} was trained with other settings; delete it or use another checkpoint_dir"
        )
    return load_trained(directory, backbone, heads)


def _lr_factor(step: int, warmup_steps: int, total: int) -> float:
    """Linear warm-up, then linear decay to 0 at ``total``; it multiplies every group's own lr_d."""
    return min(1.0, (step + 1) / max(1, warmup_steps)) * max(0.0, 1 - step / max(1, total))


def _start(
    backbone: Backbone,
    heads: ExitHeads,
    config: TrainConfig,
    directory: Path,
    fingerprint: dict,
    weights: torch.Tensor,
    n_prompts: int,
    snapshot_at: Sequence[int],
) -> _Run:
    """The run's length, optimizer and schedule, before any step."""
    steps_per_epoch = math.ceil(math.ceil(n_prompts / config.batch_size) / config.grad_accum)
    # max_steps shortens the schedule; stop_at ends the run early on the schedule of the whole run
    total = config.epochs * steps_per_epoch
    if config.max_steps is not None:
        total = min(config.max_steps, total)
    end = total if config.stop_at is None else min(config.stop_at, total)
    if any(not 1 <= s < end for s in snapshot_at):
        raise ConfigError(
            f"snapshot steps {tuple(snapshot_at)} must lie in [1, {end}) (the run ends after step {end})"
        )
    if config.bf16_autocast:  # only autocast lets fp32 masters meet a bf16 base
        _fp32_masters(backbone, heads)
    optimizer = torch.optim.AdamW(parameter_groups(backbone, heads, config.lr, config.beta), weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: _lr_factor(s, config.warmup_steps, total)
    )
    return _Run(
        backbone, heads, config, directory, fingerprint, optimizer, schedule, weights, steps_per_epoch, end
    )


def _fp32_masters(backbone: Backbone, heads: ExitHeads) -> None:
    """Every trainable parameter in fp32, whatever the base's dtype: the optimizer updates fp32
    master weights (and keeps fp32 moments), so small steps are not lost to bf16 rounding."""
    for p in [*backbone.model.parameters(), *heads.parameters()]:
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()


def _resume(run: _Run) -> None:
    """Continue from the latest resumable checkpoint, if any: weights, optimizer, schedule, history."""
    latest = latest_step(run.directory) if run.directory.exists() else None
    if latest is None:
        return
    state = load_into(latest, run.backbone, run.heads, run.fingerprint)
    if state["fingerprint"] != run.fingerprint:
        raise ModelError(
            f"{latest} belongs to a run with other settings; delete {run.directory} to start over"
        )
    run.optimizer.load_state_dict(torch.load(latest / "optimizer.pt", weights_only=True))
    run.step, run.loss, run.valid_auc, run.seconds = (
        state["step"],
        state["loss"],
        state["valid_auc"],
        state["seconds"],
    )
    run.step_seconds, run.step_tokens = state.get("step_seconds", []), state.get("step_tokens", [])
    run.schedule.last_epoch = run.step - 1
    run.schedule.step()
    run.resumed = run.step


def _train_step(
    run: _Run, batches: list[np.ndarray], prompts: Sequence[Sequence[int]], labels: np.ndarray
) -> float:
    """One optimizer step over ``batches`` (gradient accumulation); returns the summed loss."""
    backbone, config, device = run.backbone, run.config, run.backbone.device
    torch.manual_seed(config.seed * 100_003 + run.step)  # LoRA dropout, reproducible per step
    run.optimizer.zero_grad(set_to_none=True)
    total_loss = 0.0
    for global_rows in batches:
        rows = run.shard.rows(global_rows)  # data-parallel: this process's rows (all of one)
        if len(rows) == 0:
            continue  # a batch smaller than the processes: this one adds zero gradients
        ids, mask = pad_prompts([prompts[r] for r in rows], backbone.pad_id, "right")
        # under autocast the adapters' matmuls run in bf16 anyway: peft's cast of their input to
        # the fp32 adapters' dtype would only add a copy (and an fp32 dropout) per adapter
        autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.bf16_autocast)
        with autocast, disable_input_dtype_casting(backbone.model, active=config.bf16_autocast):
            logits = run.heads.forward_all(
                backbone.model, ids.to(device), mask.to(device), rows_of(run.cf_ids, rows, device)
            ).float()  # [B, H, 2]
        y = torch.as_tensor(labels[rows], device=device)
        per_head = multihead_losses(logits, y, config.distill)  # [H]
        # each term is a mean over rows: weighting by the share of rows makes the processes'
        # summed gradients the global batch's
        share = len(rows) / len(global_rows)
        loss = (run.weights.to(device) * per_head).sum() * share / config.grad_accum
        loss.backward()
        total_loss += loss.item()
    run.shard.sum_gradients(p for group in run.optimizer.param_groups for p in group["params"])
    run.optimizer.step()
    return run.shard.sum(total_loss)


def _valid_auc(run: _Run, valid: tuple[Sequence[Sequence[int]], np.ndarray]) -> dict:
    """Validation AUC of every head, keyed by the head's layer."""
    p = predict_heads(run.backbone, run.heads, valid[0], cf_ids=run.valid_cf_ids, shard=run.shard)
    return {str(layer): auc(valid[1], p[:, h]) for h, layer in enumerate(run.heads.head_layers)}


def _loop(
    run: _Run,
    prompts: Sequence[Sequence[int]],
    labels: np.ndarray,
    valid: tuple[Sequence[Sequence[int]], np.ndarray] | None,
    snapshot_at: Sequence[int],
    progress: bool,
) -> None:
    """Optimizer steps from where ``run`` stands to its end."""
    config = run.config
    run.backbone.model.train()
    run.heads.train()
    bar = tqdm(total=run.end, initial=run.step, desc="train", disable=not (progress and run.shard.is_main))
    lengths = [len(x) for x in prompts]
    batches: dict[int, list[np.ndarray]] = {}
    run.started = time.perf_counter()
    while run.step < run.end:
        # batches: a pure function of (seed, epoch), so a resumed run sees the same data
        epoch, within = divmod(run.step, run.steps_per_epoch)
        if epoch not in batches:
            batches = {
                epoch: bucketed_batches(
                    lengths, config.batch_size, np.random.default_rng([config.seed, epoch])
                )
            }
        accumulated = batches[epoch][within * config.grad_accum : (within + 1) * config.grad_accum]
        # forward/backward and the optimizer step, timed with its real tokens (tokens/s)
        started = time.perf_counter()
        loss = _train_step(run, accumulated, prompts, labels)
        run.schedule.step()
        run.step_seconds.append(time.perf_counter() - started)
        run.step_tokens.append(int(sum(lengths[r] for rows in accumulated for r in rows)))
        run.step += 1
        run.loss.append(loss)
        bar.update(1)
        bar.set_postfix(loss=f"{np.mean(run.loss[-10:]):.4f}")
        # evaluate
        if valid is not None and (run.step % config.eval_every == 0 or run.step == run.end):
            run.valid_auc.append({"step": run.step, **_valid_auc(run, valid)})
            run.backbone.model.train()
            run.heads.train()
        # snapshot: the weights a run with stop_at = this step ends with
        if run.step in snapshot_at:
            _save(run, snapshot_name(run.step), None, run.finished())
        # checkpoint: the latest resumable state replaces the one before
        if run.step % config.checkpoint_every == 0 and run.step < run.end:
            _save(run, step_name(run.step), run.optimizer, run.resumable(), replace_steps=True)
    bar.close()
    run.backbone.model.eval()
    run.heads.eval()


def _finish(
    run: _Run,
    prompts: Sequence[Sequence[int]],
    labels: np.ndarray,
    valid: tuple[Sequence[Sequence[int]], np.ndarray] | None,
    progress: bool,
) -> TrainResult:
    """Fit the readouts (if asked), save ``final`` and drop the resumable checkpoints."""
    if run.config.readout_fit is not None:
        fit_readouts(run.backbone, run.heads, prompts, labels, run.config.readout_fit, progress=progress)
        if valid is not None:  # the last evaluation again, with the fitted readouts
            run.valid_auc.append({"step": run.step, "readouts": "fitted", **_valid_auc(run, valid)})
    state = run.finished()
    _save(run, "final", None, state, replace_steps=True)
    return TrainResult(**state["result"])


def _save(
    run: _Run, name: str, optimizer: torch.optim.Optimizer | None, state: dict, replace_steps: bool = False
) -> None:
    """Write checkpoint ``name`` from the main process (every process holds the same weights)
    and, with ``replace_steps``, drop the resumable ones before it; the others wait for it."""
    if run.shard.is_main:
        save_checkpoint(run.directory, name, run.backbone, run.heads, optimizer, state)
        if replace_steps:
            remove_steps(run.directory, keep=name)
    run.shard.barrier()


# --------------------------------------------------------------------------------------------
# the training run


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
    cf_ids: np.ndarray | None = None,
    valid_cf_ids: np.ndarray | None = None,
    shard: Shard | None = None,
) -> TrainResult:
    """Train LoRA adapters and all exit heads together (see the module docstring).

    Resumes from the latest checkpoint in ``checkpoint_dir`` when one matches this run, and
    returns at once when ``checkpoint_dir/final`` does.

    Args:
        backbone (Backbone): the model, already carrying LoRA adapters (:func:`attach_lora`).
        heads (ExitHeads): the exit heads built on ``backbone``; trained in place.
        prompts (Sequence[Sequence[int]]): training prompts as token-id lists.
        labels (np.ndarray): one 0/1 label per prompt.
        config (TrainConfig): rates, schedule, batches and loss options.
        checkpoint_dir (str or os.PathLike): where the run's checkpoints, snapshots and ``final``
            live (:mod:`ragrec.model.checkpoints`).
        valid (tuple, optional): ``(prompts, labels)`` scored every ``config.eval_every`` steps
            and at the end, into :attr:`TrainResult.valid_auc`. (default: :obj:`None`)
        snapshot_at (Sequence[int], optional): steps in ``[1, end)`` after which the weights are
            kept in ``checkpoint_dir/``:func:`snapshot_name` (loadable with :func:`load_trained`);
            each equals a run with ``stop_at`` = that step. (default: :obj:`()`)
        progress (bool, optional): show progress bars. (default: :obj:`True`)
        cf_ids (np.ndarray, optional): ``[N, 2]`` (user, item) per training prompt, for heads with
            collaborative tokens (:meth:`ExitHeads.attach_cf`). (default: :obj:`None`)
        valid_cf_ids (np.ndarray, optional): the same for ``valid``'s prompts. (default: :obj:`None`)
        shard (Shard, optional): this process's place in a data-parallel run
            (:mod:`ragrec.model.distributed`). (default: :func:`current_shard`: one process unless
            launched with several)
    """
    labels = np.asarray(labels).astype(np.int64)
    _check_inputs(backbone, prompts, labels)
    directory = Path(checkpoint_dir)
    fingerprint = _fingerprint(backbone, heads, config, len(prompts))
    weights = head_weights(config.head_weights, heads)
    if (directory / "final" / STATE).is_file():
        return _reload_finished(directory, backbone, heads, fingerprint)
    run = _start(backbone, heads, config, directory, fingerprint, weights, len(prompts), snapshot_at)
    run.cf_ids, run.valid_cf_ids = cf_ids, valid_cf_ids
    run.shard = current_shard() if shard is None else shard
    _resume(run)
    _loop(run, prompts, labels, valid, snapshot_at, progress)
    return _finish(run, prompts, labels, valid, progress)
