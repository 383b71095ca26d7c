"""Run profiles as typed dataclasses: ``smoke`` (seconds to minutes, tiny model, synthetic data),
``cpu`` (SmolLM2 on MovieLens-100K within 100 minutes on 2 cores) and ``gpu`` (paper scale).

A profile composes the configuration objects of the modules that use them (data, LightGCN,
prompts, training), so each module owns its own settings and the profile only picks values.
The early-exit benchmark's settings (:class:`ExitBenchmarkConfig`) are defined here rather than
beside :func:`ragrec.experiments.early_exit.benchmark.run_exit_benchmark`: a profile carries them, and
this module sits below ``ragrec.experiments`` in the import order.

The ``gpu`` profile is a template until it is pointed at a model: :func:`get_profile` resolves it
with :func:`gpu_profile` against the folder in ``$RAGREC_MODEL`` (``make reproduce PROFILE=gpu
MODEL=/path``) and derives the exit heads from the model's depth. Environment variables carry
the choice because the notebooks run in kernels, which inherit the runner's environment.
"""

from ragrec.config.exit import (
    CONFIDENCE,
    DIFFERENCE,
    E2E_METHODS,
    RATIO,
    STATIC_EXIT,
    TAUS_CONFIDENCE,
    TAUS_DIFFERENCE,
    TAUS_RATIO,
    ExitBenchmarkConfig,
    check_methods,
)
from ragrec.config.profiles import CPU, GPU, SMOKE
from ragrec.config.resolve import (
    PROFILES,
    check_device,
    dry_run,
    get_profile,
    gpu_profile,
    llama_depth,
    run_profile,
)
from ragrec.config.settings import (
    DEVICE_ENV,
    DRY_RUN_ENV,
    MODEL_ENV,
    BetaStudy,
    CFSettings,
    DataSettings,
    EvalSettings,
    ModelSettings,
    Profile,
)

__all__ = [
    "BetaStudy",
    "CFSettings",
    "DEVICE_ENV",
    "DRY_RUN_ENV",
    "DataSettings",
    "EvalSettings",
    "MODEL_ENV",
    "ModelSettings",
    "Profile",
    "CONFIDENCE",
    "DIFFERENCE",
    "E2E_METHODS",
    "ExitBenchmarkConfig",
    "RATIO",
    "STATIC_EXIT",
    "TAUS_CONFIDENCE",
    "TAUS_DIFFERENCE",
    "TAUS_RATIO",
    "check_methods",
    "CPU",
    "GPU",
    "SMOKE",
    "PROFILES",
    "check_device",
    "dry_run",
    "get_profile",
    "gpu_profile",
    "llama_depth",
    "run_profile",
]
