"""Multi-head training: it learns, and its checkpoints reload, resume and pair with shorter runs."""

import dataclasses
import re

import numpy as np
import pytest
import torch

from ragrec.errors import ConfigError, ModelError
from ragrec.llm.backbone import encode_chat, tiny_backbone
from ragrec.metrics import auc
from ragrec.model.checkpoints import load_trained, snapshot_name
from ragrec.model.heads import ExitHeads
from ragrec.model.lora import LoraSettings, attach_lora
from ragrec.model.predict import predict_heads
from ragrec.model.readout import ReadoutFit
from ragrec.model.train import TrainConfig, multihead_losses, train_multihead

LAYERS = (2, 4, 6)


def fresh(seed: int = 0, readout: bool = False):
    bb = attach_lora(
        tiny_backbone(num_layers=6, hidden_size=32, seed=seed),
        LoraSettings(r=4, alpha=8, dropout=0.0),
        seed=seed,
    )
    return bb, ExitHeads(bb, LAYERS, readout=readout)


def learnable_task(bb, n: int = 48, seed: int = 0):
    """Label = whether the user liked the item, stated by one word in an otherwise noisy prompt."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    filler = ["movie", "user", "rated", "history", "genre", "year", "similar", "target"]
    prompts = []
    for y in labels:
        words = list(rng.choice(filler, rng.integers(3, 9)))
        words.insert(rng.integers(len(words) + 1), "good" if y else "bad")
        prompts.append(encode_chat(bb, " ".join(words)))
    return prompts, labels


def test_distillation_mixes_the_last_heads_answer_into_earlier_heads_only():
    torch.manual_seed(0)
    logits = torch.randn(5, 3, 2, requires_grad=True)  # [B, H, 2]
    y = torch.tensor([0, 1, 1, 0, 1])
    hard = torch.stack([torch.nn.functional.cross_entropy(logits[:, h], y) for h in range(3)])
    assert torch.allclose(multihead_losses(logits, y, 0.0), hard)

    teacher = torch.softmax(logits[:, -1], dim=-1).detach()
    soft = -(teacher * torch.log_softmax(logits[:, 0], dim=-1)).sum(-1).mean()
    mixed = multihead_losses(logits, y, 0.25)
    assert torch.allclose(mixed[0], 0.75 * hard[0] + 0.25 * soft)
    assert torch.allclose(mixed[-1], hard[-1])  # the last head still learns from the label alone

    # The teacher is detached: pure distillation sends no gradient into the last head's logits.
    multihead_losses(logits, y, 1.0)[:-1].sum().backward()
    assert logits.grad[:, -1].abs().max() == 0
    assert logits.grad[:, 0].abs().max() > 0


def test_an_interrupted_run_resumes_to_the_same_result(tmp_path, monkeypatch):
    config = TrainConfig(lr=1e-2, epochs=3, batch_size=8, checkpoint_every=2, warmup_steps=1)
    bb, heads = fresh()
    prompts, labels = learnable_task(bb, n=24)
    train_multihead(bb, heads, prompts, labels, config, tmp_path / "a", progress=False)
    expected = predict_heads(bb, heads, prompts)

    bb2, heads2 = fresh()
    calls = {"n": 0}
    real_step = torch.optim.AdamW.step

    def dies_at_step_5(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", dies_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        train_multihead(bb2, heads2, prompts, labels, config, tmp_path / "b", progress=False)
    monkeypatch.undo()
    assert (tmp_path / "b" / "step-000004").is_dir() and not (tmp_path / "b" / "final").exists()

    bb3, heads3 = fresh()
    result = train_multihead(bb3, heads3, prompts, labels, config, tmp_path / "b", progress=False)
    assert result.resumed_from == 4 and result.steps == 9
    np.testing.assert_allclose(predict_heads(bb3, heads3, prompts), expected, atol=1e-5)


def test_a_stopped_run_keeps_the_full_schedule_and_equals_the_full_runs_snapshot(tmp_path):
    """The β ablation's short run and the main run's snapshot at its step are the same model."""
    config = TrainConfig(lr=1e-2, epochs=3, batch_size=8, warmup_steps=1)
    bb, heads = fresh()
    prompts, labels = learnable_task(bb, n=24)
    full = train_multihead(
        bb, heads, prompts, labels, config, tmp_path / "full", snapshot_at=(4,), progress=False
    )
    assert full.steps == 9 and (tmp_path / "full" / snapshot_name(4)).is_dir()

    bb2, heads2 = fresh()
    stopped = train_multihead(
        bb2,
        heads2,
        prompts,
        labels,
        dataclasses.replace(config, stop_at=4),
        tmp_path / "stop",
        progress=False,
    )
    assert stopped.steps == 4 and stopped.loss == pytest.approx(full.loss[:4], abs=1e-6)
    # Shortening the schedule instead (max_steps) decays the rate sooner: a different model.
    bb3, heads3 = fresh()
    train_multihead(
        bb3,
        heads3,
        prompts,
        labels,
        dataclasses.replace(config, max_steps=4),
        tmp_path / "max",
        progress=False,
    )
    assert not np.allclose(
        predict_heads(bb3, heads3, prompts), predict_heads(bb2, heads2, prompts), atol=1e-4
    )

    bb4, heads4 = fresh()
    kept = load_trained(tmp_path / "full", bb4, heads4, snapshot_name(4))
    assert kept.steps == 4
    np.testing.assert_allclose(
        predict_heads(bb4, heads4, prompts), predict_heads(bb2, heads2, prompts), atol=1e-5
    )
    with pytest.raises(ModelError, match="kept no snapshot-000002.*delete"):
        load_trained(tmp_path / "full", *fresh(), snapshot_name(2))
    with pytest.raises(ConfigError, match="snapshot"):
        train_multihead(
            *fresh(),
            prompts,
            labels,
            dataclasses.replace(config, stop_at=4),
            tmp_path / "bad",
            snapshot_at=(4,),
        )


def test_save_then_load_gives_identical_predictions(tmp_path):
    bb, heads = fresh()
    prompts, labels = learnable_task(bb, n=16)
    train_multihead(
        bb, heads, prompts, labels, TrainConfig(lr=1e-2, epochs=2, batch_size=8), tmp_path, progress=False
    )
    expected = predict_heads(bb, heads, prompts)
    bb2, heads2 = fresh()
    assert not np.allclose(predict_heads(bb2, heads2, prompts), expected)
    result = train_multihead(
        bb2, heads2, prompts, labels, TrainConfig(lr=1e-2, epochs=2, batch_size=8), tmp_path, progress=False
    )
    assert result.resumed_from == result.steps  # loaded, not retrained
    np.testing.assert_allclose(predict_heads(bb2, heads2, prompts), expected, atol=1e-6)


def test_fitted_readouts_are_part_of_the_saved_model(tmp_path):
    bb, heads = fresh(readout=True)
    prompts, labels = learnable_task(bb, n=32)
    config = TrainConfig(lr=1e-2, epochs=1, batch_size=8, readout_fit=ReadoutFit(c=1.0))
    train_multihead(bb, heads, prompts, labels, config, tmp_path, progress=False)
    expected = predict_heads(bb, heads, prompts)
    assert auc(labels, expected[:, 0]) > 0.9  # the fit read "good"/"bad" off layer 2
    bb2, heads2 = fresh(readout=True)
    train_multihead(bb2, heads2, prompts, labels, config, tmp_path, progress=False)
    np.testing.assert_allclose(predict_heads(bb2, heads2, prompts), expected, atol=1e-6)


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16-autocast"])
def test_a_few_steps_lower_the_loss_on_a_learnable_task(tmp_path, bf16):
    bb, heads = fresh()
    prompts, labels = learnable_task(bb)
    before = predict_heads(bb, heads, prompts)
    config = TrainConfig(lr=1e-2, beta=0.1, epochs=6, batch_size=8, warmup_steps=1, bf16_autocast=bf16)
    result = train_multihead(bb, heads, prompts, labels, config, tmp_path, progress=False)
    after = predict_heads(bb, heads, prompts)

    def ce(p):
        return -np.mean(np.log(np.where(labels[:, None] == 1, p, 1 - p)), axis=0)

    assert np.mean(result.loss[-5:]) < np.mean(result.loss[:5])
    assert (ce(after) < ce(before)).all()  # every head improved


def test_bf16_autocast_computes_in_bf16_but_keeps_fp32_weights(tmp_path):
    losses = {}
    for bf16 in (False, True):
        bb, heads = fresh()
        prompts, labels = learnable_task(bb, n=16)
        config = TrainConfig(lr=1e-2, epochs=1, batch_size=8, bf16_autocast=bf16)
        losses[bf16] = train_multihead(
            bb, heads, prompts, labels, config, tmp_path / str(bf16), progress=False
        ).loss
        trainable = [p for p in [*bb.model.parameters(), *heads.parameters()] if p.requires_grad]
        assert {p.dtype for p in trainable} == {torch.float32}
    # Same seed, same batches: only the matmul precision differs, and it shows in the loss.
    assert losses[True] != pytest.approx(losses[False], abs=1e-6)
    assert losses[True] == pytest.approx(losses[False], abs=0.05)


def test_a_bf16_base_tracks_the_fp32_base_loss_curve_with_fp32_masters(tmp_path):
    # the cpu profile's change: same seed, prompts, batches and schedule; only the frozen base's
    # dtype differs (bf16 instead of fp32 cast by autocast at every use)
    losses = {}
    for base in (None, "bfloat16"):
        lora = LoraSettings(r=4, alpha=8, dropout=0.0, base_dtype=base)
        bb = attach_lora(tiny_backbone(num_layers=6, hidden_size=32), lora)
        heads = ExitHeads(bb, LAYERS)
        prompts, labels = learnable_task(bb, n=32)
        config = TrainConfig(lr=1e-2, epochs=3, batch_size=8, warmup_steps=1, bf16_autocast=True, lora=lora)
        losses[base] = np.array(
            train_multihead(bb, heads, prompts, labels, config, tmp_path / str(base), progress=False).loss
        )
        trainable = [p for p in [*bb.model.parameters(), *heads.parameters()] if p.requires_grad]
        assert {p.dtype for p in trainable} == {torch.float32}
    assert np.abs(losses["bfloat16"] - losses[None]).max() < 0.05


def test_every_step_records_its_wall_time_and_real_tokens(tmp_path):
    bb, heads = fresh()
    prompts, labels = learnable_task(bb, n=20)
    config = TrainConfig(epochs=1, batch_size=4, grad_accum=2)
    result = train_multihead(bb, heads, prompts, labels, config, tmp_path, progress=False)
    assert len(result.step_seconds) == len(result.step_tokens) == len(result.loss) == 3
    assert all(s > 0 for s in result.step_seconds)
    # every prompt is seen once in the epoch, unpadded: the steps' tokens sum to the prompts'
    assert sum(result.step_tokens) == sum(len(p) for p in prompts)
    assert load_trained(tmp_path, bb, heads).step_tokens == result.step_tokens


def test_checkpoint_from_another_head_layout_is_refused(tmp_path):
    bb, heads = fresh()
    prompts, labels = learnable_task(bb, n=8)
    train_multihead(bb, heads, prompts, labels, TrainConfig(epochs=1, batch_size=8), tmp_path, progress=False)
    bb2 = attach_lora(tiny_backbone(num_layers=6, hidden_size=32), LoraSettings(r=4, alpha=8))
    with pytest.raises(ModelError, match="head_layers"):
        train_multihead(
            bb2,
            ExitHeads(bb2, (3, 6)),
            prompts,
            labels,
            TrainConfig(epochs=1, batch_size=8),
            tmp_path,
            progress=False,
        )


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(beta=-1), "invalid training configuration"),
        (dict(lr=0), "invalid training configuration"),
        (dict(grad_accum=0), "invalid training configuration"),
        (dict(stop_at=0), "stop_at must be ≥ 1"),
        (dict(head_weights=(1.0, -1.0, 1.0)), "head_weights must be non-negative"),
        (dict(distill=1.5), "distill"),
        (dict(lora=LoraSettings(base_dtype="bfloat16")), "needs bf16_autocast"),
    ],
    ids=[
        "negative-beta",
        "zero-lr",
        "no-batches-per-step",
        "stop-at-0",
        "negative-head-weight",
        "distill-above-1",
        "bf16-base-without-autocast",
    ],
)
def test_bad_training_configuration(settings, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**settings)


def test_bad_training_input_is_refused(tmp_path):
    bb, heads = fresh()
    with pytest.raises(ConfigError, match="labels"):
        train_multihead(bb, heads, [[1, 2]], np.array([0, 1]), TrainConfig(), tmp_path)
    with pytest.raises(ConfigError, match="2 head weights for 3 heads"):
        train_multihead(bb, heads, [[1, 2]], np.array([1]), TrainConfig(head_weights=(1.0, 1.0)), tmp_path)
    plain = tiny_backbone(num_layers=6, hidden_size=32)
    with pytest.raises(ModelError, match="attach_lora"):
        train_multihead(plain, ExitHeads(plain, LAYERS), [[1, 2]], np.array([1]), TrainConfig(), tmp_path)


@pytest.mark.parametrize("damage", ["zero bytes", "truncated", "garbage"])
@pytest.mark.parametrize("file", ["heads.safetensors", "adapter.safetensors"])
def test_a_damaged_checkpoint_file_is_named_with_the_fix(tmp_path, file, damage):
    bb, heads = fresh()
    prompts, labels = learnable_task(bb, n=8)
    train_multihead(bb, heads, prompts, labels, TrainConfig(epochs=1, batch_size=8), tmp_path, progress=False)
    path = tmp_path / "final" / file
    data = path.read_bytes()
    path.write_bytes(
        {"zero bytes": b"", "truncated": data[: len(data) // 2], "garbage": b"not safetensors"}[damage]
    )
    with pytest.raises(
        ModelError, match=re.escape(str(path)) + r" is unreadable .*delete .*final/ and rerun"
    ):
        load_trained(tmp_path, *fresh())
