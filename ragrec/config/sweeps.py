"""The retrieval sweeps' settings (issue #28): graph density and neighbours in the prompt, the
LightGCN architecture, and approximate nearest-neighbour search at scale. Defined here because a
profile carries them and this package sits below ``ragrec.experiments`` in the import order."""

from __future__ import annotations

from dataclasses import dataclass

from ragrec.errors import ConfigError
from ragrec.retrieval.vector import AnnBackend


@dataclass(frozen=True)
class DensitySweepConfig:
    """The graph-density and retrieval-depth sweep
    (:func:`ragrec.experiments.retrieval.density.run_density_sweep`).

    Attributes:
        fractions: shares of the training interactions the GCN is trained on (seeded subsamples;
            1.0 is the full graph).
        ks: neighbours shown in the prompt (``PromptConfig.k``) in the depth sweep; the vote keeps
            the profile's ``vote_k``.
        n_samples: paired test samples the trained LLM scores at every setting (seeded,
            label-stratified; None: every test sample).
        n_queries: query users of the neighbour hit rate.
        chunk: samples per timed chunk; the depth sweep scores each chunk at every k in turn,
            so the timings of the k values interleave.
        score_llm: score the trained LLM (False: the retrieval metrics and the vote baseline only).
    """

    fractions: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7, 1.0)
    ks: tuple[int, ...] = (0, 1, 2, 4)
    n_samples: int | None = 1000
    n_queries: int = 200
    chunk: int = 64
    score_llm: bool = True

    def __post_init__(self) -> None:
        if not self.fractions or any(not 0 < f <= 1 for f in self.fractions) or 1.0 not in self.fractions:
            raise ConfigError(f"fractions must lie in (0, 1] and include 1.0; got {self.fractions}")
        if not self.ks or min(self.ks) < 0 or self.n_queries < 1 or self.chunk < 1:
            raise ConfigError(
                f"need ks ≥ 0, n_queries ≥ 1, chunk ≥ 1; got {self.ks}, {self.n_queries}, {self.chunk}"
            )
        if self.n_samples is not None and self.n_samples < 2:
            raise ConfigError(f"n_samples must be ≥ 2 or None, got {self.n_samples}")


@dataclass(frozen=True)
class ArchitectureSweepConfig:
    """The LightGCN architecture sweep, one factor at a time around the profile's LightGCN
    (:func:`ragrec.experiments.retrieval.architecture.run_architecture_sweep`).

    Attributes:
        layers: K values (propagation layers).
        dims: embedding sizes.
        combinations: layer read-outs (``"mean"``, ``"last"``; PyG's LightGCN keeps α fixed, so
            there is no learned combination to sweep).
        max_epochs: the sweep's epoch cap (None: the profile's), so that every fit fits the budget.
        n_queries: query users of the neighbour hit rate.
    """

    layers: tuple[int, ...] = (1, 2, 3, 4)
    dims: tuple[int, ...] = (32, 64, 128)
    combinations: tuple[str, ...] = ("mean", "last")
    max_epochs: int | None = 30
    n_queries: int = 200

    def __post_init__(self) -> None:
        if not self.layers or min(self.layers) < 1 or not self.dims or min(self.dims) < 1:
            raise ConfigError(f"need layers ≥ 1 and dims ≥ 1; got {self.layers}, {self.dims}")
        if (self.max_epochs is not None and self.max_epochs < 1) or self.n_queries < 1:
            raise ConfigError(
                f"need max_epochs ≥ 1 (or None) and n_queries ≥ 1; got {self.max_epochs}, {self.n_queries}"
            )


@dataclass(frozen=True)
class AnnBenchmarkConfig:
    """Cosine top-k over synthetic user embeddings: exact search against the ANN backends
    (:func:`ragrec.experiments.retrieval.scale.run_ann_benchmark`).

    Attributes:
        sizes: how many users (vectors) per row.
        dim: embedding size (the GCN's).
        backends: what each size is searched with (exact is the reference of recall@k).
        n_queries: single queries timed one at a time, on one thread.
        k: the neighbours searched and the k of recall@k.
        hnsw_max_n: the largest size HNSW is built for (None: every size). Its build is the
            slowest step: at 10⁶ it took minutes on 2 shared cores (and M=16, efSearch=64 gave
            recall@10 below IVF's), so by default it stops at 10⁵.
        seed: the synthetic vectors.
    """

    sizes: tuple[int, ...] = (10_000, 100_000, 1_000_000)
    dim: int = 64
    backends: tuple[AnnBackend, ...] = (AnnBackend.EXACT, AnnBackend.HNSW, AnnBackend.IVF)
    n_queries: int = 200
    k: int = 10
    hnsw_max_n: int | None = 100_000
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.sizes or min(self.sizes) <= self.k or self.dim < 1 or self.n_queries < 1 or self.k < 1:
            raise ConfigError(f"need sizes > k ≥ 1, dim ≥ 1, n_queries ≥ 1; got {self}")
        if AnnBackend.EXACT not in self.backends:
            raise ConfigError("the ANN benchmark needs the exact backend: it is the reference of recall@k")


@dataclass(frozen=True)
class RetrievalSweeps:
    """What the retrieval chapter sweeps beyond the benchmark (None: not run)."""

    density: DensitySweepConfig | None = DensitySweepConfig()
    architecture: ArchitectureSweepConfig | None = ArchitectureSweepConfig()
    ann: AnnBenchmarkConfig | None = AnnBenchmarkConfig()
