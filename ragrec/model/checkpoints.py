"""Training checkpoints: LoRA adapters and exit heads as safetensors, optimizer state, progress.

A run's checkpoint directory holds at most one ``step-NNNNNN`` folder (the latest, to resume a
killed run from), the ``snapshot-NNNNNN`` folders it was asked to keep, and ``final`` once it
has finished. Every folder is written atomically (temporary sibling + rename), so a kill never
leaves one that loads.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import set_peft_model_state_dict
from peft.utils import get_peft_model_state_dict
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ragrec.errors import ModelError
from ragrec.llm.backbone import Backbone
from ragrec.model.heads import ExitHeads

STATE = "state.json"


@dataclass
class TrainResult:
    """What training produced: per-step loss, per-evaluation validation AUC of every head, and
    per optimizer step its wall seconds (forward, backward, optimizer; no evaluation or
    checkpoint) and real (unpadded) prompt tokens, so tokens/s is ``Σ tokens / Σ seconds``.
    Runs saved before the timing was recorded load with empty timing lists."""

    steps: int
    seconds: float
    loss: list[float]
    valid_auc: list[dict]
    resumed_from: int | None
    step_seconds: list[float] = dataclasses.field(default_factory=list)
    step_tokens: list[int] = dataclasses.field(default_factory=list)


def snapshot_name(step: int) -> str:
    """The folder, inside a run's checkpoint directory, of the weights kept at ``step``."""
    return f"snapshot-{step:06d}"


def step_name(step: int) -> str:
    """The folder of the resumable checkpoint after ``step``."""
    return f"step-{step:06d}"


def finished_state(
    fingerprint: dict,
    step: int,
    history: list[float],
    evals: list[dict],
    seconds: float,
    resumed: int | None,
    timing: tuple[list[float], list[int]] = ([], []),
) -> dict:
    """What ``final`` and snapshots store: progress plus the :class:`TrainResult` they load as
    (``timing``: per-step seconds and real tokens)."""
    result = TrainResult(step, seconds, list(history), list(evals), resumed, list(timing[0]), list(timing[1]))
    return {
        "fingerprint": fingerprint,
        "step": step,
        "loss": result.loss,
        "valid_auc": result.valid_auc,
        "seconds": seconds,
        "result": dataclasses.asdict(result),
    }


def save_checkpoint(
    directory: Path,
    name: str,
    backbone: Backbone,
    heads: ExitHeads,
    optimizer: torch.optim.Optimizer | None,
    state: dict,
) -> Path:
    """Write ``directory/name`` atomically: adapters, heads, optimizer (if given) and progress."""
    directory.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=directory))
    adapter = get_peft_model_state_dict(backbone.model)
    save_file({k: v.detach().cpu().contiguous() for k, v in adapter.items()}, tmp / "adapter.safetensors")
    save_file(
        {k: v.detach().cpu().contiguous() for k, v in heads.state_dict().items()}, tmp / "heads.safetensors"
    )
    if optimizer is not None:
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    (tmp / STATE).write_text(json.dumps(state, indent=2))
    final = directory / name
    if final.exists():
        shutil.rmtree(final)
    os.rename(tmp, final)
    return final


def read_state(path: Path) -> dict:
    """The progress record of the checkpoint folder ``path``."""
    return json.loads((path / STATE).read_text())


def check_layout(path: Path, theirs: dict, ours: dict) -> None:
    """ModelError when the checkpoint at ``path`` was made for another model or head layout."""
    for key in ("model", "num_layers", "head_layers"):
        if theirs[key] != ours[key]:
            raise ModelError(
                f"checkpoint {path} was made for {key}={theirs[key]}, but this run has {ours[key]}"
            )


def load_into(path: Path, backbone: Backbone, heads: ExitHeads, fingerprint: dict) -> dict:
    """Load the adapters and heads saved at ``path`` (after :func:`check_layout`); returns its state."""
    if not (path / STATE).is_file():
        raise ModelError(f"no training checkpoint at {path} (expected {STATE}, adapter and head safetensors)")
    state = read_state(path)
    check_layout(path, state["fingerprint"], fingerprint)
    set_peft_model_state_dict(backbone.model, _tensors(path / "adapter.safetensors"))
    heads.load_state_dict(_tensors(path / "heads.safetensors"))
    return state


def _tensors(file: Path) -> dict:
    """A checkpoint's tensors; a damaged file is named with the fix instead of safetensors' own error."""
    try:
        return load_file(file)
    except (SafetensorError, OSError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelError(
            f"checkpoint file {file} is unreadable ({reason}): delete {file.parent}/ and rerun the "
            "notebook that trains it (make reproduce, or make notebook NB=recommender)"
        ) from None


def load_trained(
    directory: str | os.PathLike, backbone: Backbone, heads: ExitHeads, name: str = "final"
) -> TrainResult:
    """Load the finished run in ``directory/final`` (or a kept snapshot, ``name`` =
    :func:`snapshot_name`) into ``backbone`` (with LoRA attached) and ``heads``; ModelError when
    it is missing or was trained for another model or head layout."""
    layout = {
        "model": backbone.name,
        "num_layers": backbone.num_layers,
        "head_layers": list(heads.head_layers),
    }
    directory = Path(directory)
    if (
        name != "final"
        and (directory / "final" / STATE).is_file()
        and not (directory / name / STATE).is_file()
    ):
        raise ModelError(
            f"the finished run in {directory} kept no {name} (it was trained without that snapshot); "
            f"delete {directory} to train it again with the snapshot"
        )
    state = load_into(directory / name, backbone, heads, layout)
    r = state["result"]
    return TrainResult(
        r["steps"],
        r["seconds"],
        r["loss"],
        r["valid_auc"],
        resumed_from=r["steps"],
        step_seconds=r.get("step_seconds", []),
        step_tokens=r.get("step_tokens", []),
    )


def latest_step(directory: Path) -> Path | None:
    """The latest complete ``step-*`` checkpoint in ``directory``, if any."""
    done = sorted(p for p in directory.glob("step-*") if (p / STATE).is_file())
    return done[-1] if done else None


def remove_steps(directory: Path, keep: str | None = None) -> None:
    """Delete the resumable ``step-*`` checkpoints in ``directory`` except the one named ``keep``."""
    for old in directory.glob("step-*"):
        if old.name != keep:
            shutil.rmtree(old, ignore_errors=True)
