"""The three profiles (smoke, cpu, gpu) and :func:`get_profile`."""

from __future__ import annotations

from ragrec.config.compute import ComputeConfig
from ragrec.config.exit import ExitBenchmarkConfig
from ragrec.config.settings import (
    MODEL_ENV,
    BetaStudy,
    CFSettings,
    DataSettings,
    EvalSettings,
    ModelSettings,
    Profile,
)
from ragrec.config.sweeps import (
    AnnBenchmarkConfig,
    ArchitectureSweepConfig,
    DensitySweepConfig,
    RetrievalSweeps,
)
from ragrec.model.heads import default_head_layers
from ragrec.model.lora import LoraSettings
from ragrec.model.prompts import PromptConfig
from ragrec.model.train import TrainConfig
from ragrec.retrieval.lightgcn import LightGCNConfig

SMOKE = Profile(
    name="smoke",
    seed=0,
    data=DataSettings(
        dataset="synthetic",
        history_len=6,
        train_cap=192,
        valid_cap=64,
        test_cap=128,
        synthetic_users=120,
        synthetic_items=150,
    ),
    model=ModelSettings(
        source="tiny", head_layers=(2, 4, 6), tiny_layers=6, tiny_hidden=64, attention="eager"
    ),
    lightgcn=LightGCNConfig(dim=32, max_epochs=20, eval_every=5, patience=2, batch_size=512, progress=False),
    prompt=PromptConfig(history_len=6, k=2, neighbour_items=2, vote_k=10, max_tokens=256),
    train=TrainConfig(
        lr=5e-3,
        beta=0.1,
        epochs=2,
        batch_size=16,
        eval_every=1000,
        checkpoint_every=1000,
        lora=LoraSettings(r=4, alpha=8, dropout=0.0),
    ),
    exit=ExitBenchmarkConfig(
        n_boot=200,
        rule_n_boot=200,  # the operating-point rule's bootstrap, small for a plumbing check
        n_requests=64,
        batch_size=8,
        repeats=2,
        warmup=1,
        check_requests=8,
        e2e_requests=32,
        e2e_batch_size=8,
        e2e_repeats=1,
    ),
    eval_batch_size=32,
    evaluation=EvalSettings(reduced_cap=96, dtype="bfloat16", dtype_check=48),
    # two seeds of a few steps: the study's whole path (snapshots, curve, seed interval) in seconds
    beta_study=BetaStudy(seeds=(0, 1), train_cap=48, epochs=1, valid_cap=32, curve_points=3),
    cf=CFSettings(train_cap=96, lr=5e-3),
    # every retrieval sweep at a few points, in seconds: plumbing, not findings
    sweeps=RetrievalSweeps(
        density=DensitySweepConfig(fractions=(0.5, 1.0), ks=(0, 2), n_samples=48, n_queries=20, chunk=16),
        architecture=ArchitectureSweepConfig(layers=(1, 2), dims=(16, 32), max_epochs=5, n_queries=20),
        ann=AnnBenchmarkConfig(sizes=(2_000, 5_000), dim=32, n_queries=20),
    ),
    # two steps of the smoke batch (16), one timed pass per scoring path: seconds on the tiny model
    compute=ComputeConfig(n_prompts=32, batch_size=8, train_steps=1, repeats=1, warmup=1),
    notes="Whole pipeline on a synthetic dataset with a tiny random Llama: checks plumbing, not accuracy.",
)

CPU = Profile(
    name="cpu",
    seed=0,
    # valid_cap=4500: the operating-point rule's one-sided upper bound of the AUC drop needs about
    # this many validation samples to certify a point near 2× (issue #27); 600 certify almost none
    data=DataSettings(dataset="ml-100k", history_len=10, train_cap=1600, valid_cap=4500, test_cap=2000),
    # eager attention: batch-invariant bf16 scores, so the engine's exits equal the replayed sweep's
    model=ModelSettings(source="bundled", head_layers=(5, 10, 15, 20, 25, 30), attention="eager"),
    lightgcn=LightGCNConfig(),
    # vote_k=200: most test targets have a rater among the 200 nearest users, and the share who
    # liked it is less noisy than among 50 (information.csv has the coverage)
    prompt=PromptConfig(history_len=5, k=2, neighbour_items=1, vote_k=200, max_tokens=224),
    # bf16 autocast: faster steps on a CPU with native bf16 that track fp32's losses (the method
    # chapter); batch 4, lr 3e-3 and the second epoch from earlier comparisons (git history)
    # bf16 base: the frozen weights stored in bf16 (autocast no longer casts each one every step);
    # LoRA and heads stay fp32 masters with fp32 AdamW state (compute.csv, issue #26)
    train=TrainConfig(
        lr=3e-3,
        beta=0.1,
        epochs=2,
        batch_size=4,
        bf16_autocast=True,
        eval_every=400,
        checkpoint_every=50,
        lora=LoraSettings(base_dtype="bfloat16"),
    ),
    # bf16 scoring: faster on a CPU with native bf16; the fp32 check measures what it costs
    # none and random on every test sample too (~2.2 min each): every context comparison paired on
    # the same 2,000 (issue #28, "context, decided")
    evaluation=EvalSettings(
        reduced_cap=1000,
        dtype="bfloat16",
        dtype_check=300,
        full_contexts=("gcn", "llm", "none", "random"),
    ),
    # The β study: 3 seeds x 2 arms of one short schedule (six 800-step runs do not fit the budget).
    # lr_0 stays the main run's: in the one targeted validation run (β = 0.1, seed 0), 8e-3 left
    # the final head at chance at every snapshot of 72 steps (the commit message has the curve).
    # 80 steps of 4 is what ~30 min buys at today's step time for six runs with their snapshot
    # and test scoring; learning_curve.csv shows how far it is from levelling off.
    beta_study=BetaStudy(seeds=(0, 1, 2), train_cap=320, epochs=1, valid_cap=200, curve_points=3),
    # 256 timed requests: enough to time the engine steadily; accuracy is read off every test sample
    exit=ExitBenchmarkConfig(
        n_requests=256,
        batch_size=8,
        repeats=2,
        warmup=2,
        check_requests=16,
        e2e_requests=32,
        e2e_batch_size=8,
        e2e_repeats=2,
    ),
    # CoLLM's second step: the projection alone, one pass over half the main run's prompts
    cf=CFSettings(train_cap=800, epochs=1, lr=1e-3),
    # 32 prompts, four timed training steps of 4 and two timed passes per scoring path: ~1 min
    compute=ComputeConfig(n_prompts=32, batch_size=8, train_steps=4, repeats=2, warmup=1),
    notes="SmolLM2-135M-Instruct on MovieLens-100K, sized for 120 minutes on 2 CPU cores.",
)

# Paper scale on one 80 GB GPU: Vicuna-7B (32 layers, hidden 4096, MLP 11008) in bf16, LoRA r8.
# Memory of a training step:
#   weights: 6.7 B params x 2 B                                                    13.5 GB
#   LoRA (r8 on q, k, v, o: 8.4 M params) with grads and Adam moments in fp32      0.1 GB
#   activations kept for backward (bf16, no checkpointing), per token and layer:
#     9 x 4096 (norms, q, k, v, attention, residual) + 4 x 11008 (gate, up, act, product)
#     = 81 k values = 162 KB; x 32 layers = 5.2 MB a token, ~6 MB with RMSNorm's fp32 copies;
#     a micro-batch of 4 prompts x 1024 tokens = 4,096 tokens                       25 GB
#   total ~40 GB: half the card, so the estimate may be off by 2x.
# A micro-batch of 16 would need ~110 GB without gradient checkpointing (~21 GB with it, for ~1.3x
# the compute), so the global batch of 32 is 8 accumulated micro-batches of 4, with no checkpointing.
# Evaluation (no grad): 33 hidden states of 64 x 1024 x 4096 in bf16 (18 GB) + weights = ~36 GB.
GPU = Profile(
    name="gpu",
    seed=0,
    data=DataSettings(dataset="ml-100k", history_len=20, train_cap=None, valid_cap=2000, test_cap=None),
    # A template: gpu_profile() sets the source and derives the heads from the folder's depth
    # (shown for Vicuna-7B: every 5 layers plus the last, so the full model is a head).
    model=ModelSettings(source=f"${MODEL_ENV}", head_layers=default_head_layers(32), device="cuda"),
    lightgcn=LightGCNConfig(),
    prompt=PromptConfig(history_len=20, k=5, neighbour_items=5, vote_k=30, max_tokens=1024),
    train=TrainConfig(
        lr=5e-4, beta=0.1, epochs=2, batch_size=4, grad_accum=8, eval_every=500, checkpoint_every=200
    ),
    # Timed batches as large as the evaluation's (eval_batch_size).
    exit=ExitBenchmarkConfig(
        n_requests=1024,
        batch_size=64,
        repeats=5,
        warmup=2,
        check_requests=64,
        e2e_requests=512,
        e2e_batch_size=64,
        e2e_repeats=3,
    ),
    eval_batch_size=64,
    # a training step takes 32 prompts (4 x 8 accumulated): 1 warm-up + 4 timed steps need 160
    compute=ComputeConfig(n_prompts=192, batch_size=64, train_steps=4, repeats=2, warmup=1),
    notes="Paper scale: full splits, longer prompts, a local Llama-family model (e.g. Vicuna-7B) in bf16 on "
    "CUDA.",
)
