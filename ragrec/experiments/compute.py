"""The compute table (``compute.csv``): what share of the machine's own bf16 matmul limit each
model path reaches, timed in one process on the profile's own prompts.

Rows: the measured matmul limit in bf16 and fp32, then the plain Hugging Face full-depth forward,
the early-exit engine never exiting, all-heads scoring (:func:`~ragrec.model.predict.predict_heads`)
and a training step (the profile's own :func:`~ragrec.model.train.train_multihead` for a few steps,
on a fresh LoRA of the profile's base dtype). Columns: ``tokens_per_s`` over real (unpadded)
prompt tokens, ``tflops`` = ``flop_per_token · tokens_per_s``, and ``fraction_of_limit`` =
``tflops / limit_tflops`` (the bf16 limit row's).

FLOP counts, stated rather than measured:

- forward: ``2 · N`` per real token, ``N`` the decoder layers' parameters (the non-embedding
  ones: 106 M for SmolLM2-135M). Only the weights' matmuls: attention's score and value products
  (``4 · L · T · d`` a token over a causal prompt of ``T`` tokens, ~3% at 180 tokens) and the LM
  head (read at one position a prompt) are left out, and so is padding: what a path spends on
  padding counts against it.
- training step: ``4 · N`` per real token: the forward, and the backward's gradient through the
  frozen weights to their inputs (``2 · N``). Frozen weights get no weight gradient (the ``6 · N``
  of full fine-tuning would overstate the work), and the r = 8 adapters add under 1%.
- limit: the fastest of ``matmul_repeats`` products ``x @ W`` on the model's own shapes, ``x``
  ``[B·T, H]`` or ``[B·T, I]`` (``B`` the batch, ``T`` the prompts' mean length, ``H`` hidden,
  ``I`` the MLP width), ``2 · m · k · n`` FLOPs each.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ragrec.config import Profile
from ragrec.config.compute import ComputeConfig
from ragrec.errors import ConfigError
from ragrec.experiments.early_exit.plain_forward import plain_predict
from ragrec.experiments.recommender.contexts import encode_contexts, mixed_contexts
from ragrec.experiments.recommender.prepare import Prepared, load_model, prepare_data
from ragrec.experiments.timing import torch_threads
from ragrec.llm.backbone import Backbone
from ragrec.model.criteria import NeverExit
from ragrec.model.engine import EarlyExitEngine
from ragrec.model.forward import unwrap_llama
from ragrec.model.heads import ExitHeads
from ragrec.model.inference import for_inference, scoring_dtype
from ragrec.model.lora import attach_lora
from ragrec.model.predict import predict_heads
from ragrec.model.prompts import PromptBuilder
from ragrec.model.train import train_multihead
from ragrec.result_files import COMPUTE, TRAINING
from ragrec.results import Provenance, read_csv, result_dir, write_csv

COLUMNS = (
    "path",
    "dtype",
    "batch_size",
    "tokens",
    "seconds",
    "tokens_per_s",
    "flop_per_token",
    "tflops",
    "limit_tflops",
    "fraction_of_limit",
)
# a forward's and a LoRA training step's FLOPs per real token, in units of N (module docstring)
FORWARD_FLOPS, TRAIN_FLOPS = 2, 4
# contexts whose neighbours need a fitted model are replaced by random users: as many users shown
NEEDS_FIT = ("gcn", "llm")


def nonembedding_params(backbone: Backbone) -> int:
    """``N``: the parameters of the decoder layers and the final norm (no embeddings, no LM
    head, and no LoRA adapters: a peft-wrapped model counts as its base)."""
    core = unwrap_llama(backbone.model).model
    named = [*core.layers.named_parameters(), *core.norm.named_parameters()]
    return sum(p.numel() for name, p in named if "lora_" not in name)


def profile_prompts(prepared: Prepared, backbone: Backbone, n: int) -> tuple[list[list[int]], np.ndarray]:
    """The first ``n`` training prompts of the profile, with its mix of contexts (``gcn`` and
    ``llm`` shown as random users, who need no fitted retriever) and their labels."""
    p = prepared.profile
    if n > len(prepared.train):
        raise ConfigError(
            f"compute.n_prompts = {n} but the profile has {len(prepared.train)} training samples"
        )
    retrievers = {
        name: p.retriever_config(name).build(prepared.dataset).fit(prepared.split.train, prepared.split.valid)
        for name in ("random", "none")
    }
    samples = prepared.train.subset(prepared.train.frame.index[:n])
    contexts = ["random" if c in NEEDS_FIT else c for c in mixed_contexts(n, p.contexts, p.seed)]
    contexts = [c if c in retrievers else "random" for c in contexts]
    builder = PromptBuilder(prepared.dataset, backbone, retrievers["random"].sequences, p.prompt)
    prompts = encode_contexts(builder, retrievers, samples, contexts)
    return prompts, samples.frame["label"].to_numpy().astype(np.int64)


def matmul_limit(hidden: int, intermediate: int, tokens: int, dtype: torch.dtype, repeats: int) -> float:
    """TFLOP/s of the fastest of ``repeats`` timings of ``x @ W`` over the model's three weight
    shapes (``[tokens, H]·[H, H]``, ``[tokens, H]·[H, I]``, ``[tokens, I]·[I, H]``), summed."""
    flops, seconds = 0.0, 0.0
    generator = torch.Generator().manual_seed(0)
    for k, n in ((hidden, hidden), (hidden, intermediate), (intermediate, hidden)):
        x = torch.randn(tokens, k, generator=generator).to(dtype)
        w = torch.randn(k, n, generator=generator).to(dtype)
        x @ w  # warm-up: kernel choice and first-touch of the output
        best = np.inf
        for _ in range(repeats):
            start = time.perf_counter()
            x @ w
            best = min(best, time.perf_counter() - start)
        flops, seconds = flops + 2.0 * tokens * k * n, seconds + best
    return flops / seconds / 1e12


def _median_seconds(fn, config: ComputeConfig) -> float:
    """The median wall seconds of ``config.repeats`` calls of ``fn`` after ``config.warmup``."""
    for _ in range(config.warmup):
        fn()
    times = []
    for _ in range(config.repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _row(
    path: str, dtype: torch.dtype, batch: int, tokens: int, seconds: float, flop_per_token: float
) -> dict:
    return {
        "path": path,
        "dtype": str(dtype).removeprefix("torch."),
        "batch_size": batch,
        "tokens": int(tokens),
        "seconds": seconds,
        "tokens_per_s": tokens / seconds,
        "flop_per_token": flop_per_token,
    }


def training_row(
    backbone: Backbone, heads: ExitHeads, prompts, labels: np.ndarray, profile: Profile, config: ComputeConfig
) -> dict:
    """A few steps of the profile's own training loop (its batch, dtype and autocast) on
    ``prompts``; the row counts the timed steps' real tokens and wall seconds, after warm-up."""
    steps = config.warmup + config.train_steps
    train = dataclasses.replace(
        profile.train, epochs=1, max_steps=steps, eval_every=10**9, checkpoint_every=10**9, readout_fit=None
    )
    if steps * train.batch_size * train.grad_accum > len(prompts):
        raise ConfigError(
            f"compute: {steps} training steps of {train.batch_size * train.grad_accum} prompts need "
            f"more than n_prompts = {len(prompts)}"
        )
    with tempfile.TemporaryDirectory() as directory:
        result = train_multihead(backbone, heads, prompts, labels, train, directory, progress=False)
    tokens, seconds = sum(result.step_tokens[config.warmup :]), sum(result.step_seconds[config.warmup :])
    n = nonembedding_params(backbone)
    return _row("train_step", backbone.dtype, train.batch_size, tokens, seconds, TRAIN_FLOPS * n)


def scoring_rows(backbone: Backbone, heads: ExitHeads, prompts, config: ComputeConfig) -> list[dict]:
    """The plain forward, the engine never exiting and all-heads scoring on the same prompts and
    batches, interleaved repeat by repeat so a busy machine slows all three alike."""
    batch, tokens = config.batch_size, sum(len(p) for p in prompts)
    engine = EarlyExitEngine(backbone, heads, NeverExit())
    paths = {
        "plain_forward": lambda: plain_predict(backbone, prompts, batch),
        "engine_never_exit": lambda: engine.predict(prompts, batch),
        "predict_heads": lambda: predict_heads(backbone, heads, prompts, batch_size=batch),
    }
    for fn in paths.values():
        for _ in range(config.warmup):
            fn()
    once = dataclasses.replace(config, repeats=1, warmup=0)
    times = {name: [_median_seconds(fn, once) for _ in range(config.repeats)] for name, fn in paths.items()}
    flop = FORWARD_FLOPS * nonembedding_params(backbone)
    return [_row(name, backbone.dtype, batch, tokens, float(np.median(t)), flop) for name, t in times.items()]


def limit_rows(backbone: Backbone, prompts, config: ComputeConfig) -> list[dict]:
    """The measured matmul limit in bf16 and fp32 on the model's shapes (``batch_size`` prompts
    of the prompts' mean length)."""
    cfg = unwrap_llama(backbone.model).config
    hidden, intermediate = int(cfg.hidden_size), int(cfg.intermediate_size)
    tokens = config.batch_size * int(round(np.mean([len(p) for p in prompts])))
    flop_per_token = 2.0 * (hidden * hidden + 2 * hidden * intermediate)
    rows = []
    for dtype in (torch.bfloat16, torch.float32):
        tflops = matmul_limit(hidden, intermediate, tokens, dtype, config.matmul_repeats)
        seconds = flop_per_token * tokens / (tflops * 1e12)
        rows.append(
            _row(
                f"matmul_limit_{str(dtype).removeprefix('torch.')}",
                dtype,
                config.batch_size,
                tokens,
                seconds,
                flop_per_token,
            )
        )
    return rows


def compute_table(rows: list[dict]) -> pd.DataFrame:
    """The rows as ``compute.csv``: achieved TFLOP/s by the stated counts, and their share of the
    bf16 limit (the ``matmul_limit_bfloat16`` row)."""
    frame = pd.DataFrame(rows)
    frame["tflops"] = frame["flop_per_token"] * frame["tokens_per_s"] / 1e12
    limit = frame.loc[frame["path"] == "matmul_limit_bfloat16", "tflops"]
    if len(limit) != 1:
        raise ConfigError("the compute table needs exactly one matmul_limit_bfloat16 row")
    frame["limit_tflops"] = float(limit.iloc[0])
    frame["fraction_of_limit"] = frame["tflops"] / frame["limit_tflops"]
    return frame[list(COLUMNS)]


def training_minutes(out_dir) -> pd.DataFrame:
    """Where a run's training time went, from its ``training.csv``: per variant (main, cf, the β
    pair) its steps, training seconds (evaluation and readout fit included), seconds a step, and
    its loop's own tokens/s (``Σ step_tokens / Σ step_seconds``; NaN for runs from before the
    per-step timing was recorded)."""
    log = read_csv(Path(out_dir) / TRAINING)
    if "step_seconds" not in log.columns:  # a log from before the timing columns
        log = log.assign(step_seconds=np.nan, step_tokens=np.nan)
    grouped = log.groupby(["variant", "beta"], sort=False)
    frame = grouped.agg(
        steps=("step", "max"),
        train_seconds=("train_seconds", "first"),
        loop_seconds=("step_seconds", lambda x: x.sum(min_count=len(x))),
        tokens=("step_tokens", lambda x: x.sum(min_count=len(x))),
    ).reset_index()
    frame["seconds_per_step"] = frame["train_seconds"] / frame["steps"]
    frame["tokens_per_s"] = frame["tokens"] / frame["loop_seconds"]
    return frame


def run_compute(profile: Profile, *, data_root=None, results_root=None) -> pd.DataFrame:
    """``compute.csv`` for ``profile`` (its :class:`~ragrec.config.compute.ComputeConfig`): train a
    fresh LoRA for a few steps, merge it for scoring in the profile's scoring dtype, time every
    path, write the table with provenance. Returns the table."""
    config = profile.compute
    with torch_threads(config.threads):
        prepared = prepare_data(profile, data_root=data_root)
        backbone = load_model(profile, prepared.dataset)
        prompts, labels = profile_prompts(prepared, backbone, config.n_prompts)
        rows = limit_rows(backbone, prompts, config)
        tuned = attach_lora(backbone, profile.train.lora, seed=profile.seed)
        heads = ExitHeads(tuned, profile.model.head_layers)
        rows.append(training_row(tuned, heads, prompts, labels, profile, config))
        merged, merged_heads = for_inference(tuned, heads, scoring_dtype(profile.evaluation.dtype))
        rows += scoring_rows(merged, merged_heads, prompts, config)
    table = compute_table(rows)
    out_dir = result_dir(profile.name, profile.data.dataset, results_root)
    write_csv(table, out_dir / COMPUTE)
    Provenance("compute", profile.name, profile.data.dataset, profile.seed, profile).write(out_dir, [COMPUTE])
    return table
