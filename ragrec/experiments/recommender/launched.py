"""A step's library call under a launcher: ``make reproduce LAUNCH="accelerate launch --multi_gpu
--num_processes 8"`` (or ``torchrun --nproc_per_node 8``; several machines through accelerate's
own config).

A notebook's kernel is one process, and data-parallel training needs one per device. With
``RAGREC_LAUNCH`` set (the Makefile's ``LAUNCH``), a step that supports it (the recommender) runs
its call as ``<LAUNCH> -m ragrec.experiments.recommender.launched <call.pkl>`` (the function, pickled by its
name, with its arguments): every process executes the
same call on the same profile, training and scoring are split between them
(:mod:`ragrec.model.distributed`), the main process alone writes results
(:func:`ragrec.results.is_main_process`), and the notebook then reads the tables it wrote. The
launched processes see ``RAGREC_LAUNCHED``, so they run the call instead of launching again.
"""

from __future__ import annotations

import os
import pickle
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ragrec.config import Profile
from ragrec.errors import ConfigError, RagrecError

LAUNCH_ENV = "RAGREC_LAUNCH"
LAUNCHED_ENV = "RAGREC_LAUNCHED"


class LaunchFailed(RagrecError):
    """The launched processes exited with an error (their output says why)."""


def launcher() -> list[str] | None:
    """The launch command from ``RAGREC_LAUNCH`` (None when unset or inside a launched process)."""
    value = os.environ.get(LAUNCH_ENV, "").strip()
    if not value or os.environ.get(LAUNCHED_ENV):
        return None
    return shlex.split(value)


def run_launched(step: Callable[..., Any], profile: Profile, **kwargs: Any) -> None:
    """Run the library call ``step(profile, **kwargs)`` (a module-level function) under the
    launcher, streaming the processes' output; raises :class:`LaunchFailed` when they fail."""
    command = launcher()
    if command is None:
        raise ConfigError(
            f"run_launched needs {LAUNCH_ENV}, e.g. 'accelerate launch --multi_gpu --num_processes 2'"
        )
    name = f"{step.__module__}.{step.__qualname__}"
    with tempfile.TemporaryDirectory(prefix="ragrec-launch-") as tmp:
        call = Path(tmp) / "call.pkl"
        call.write_bytes(pickle.dumps((step, profile, kwargs)))
        full = [*command, "-m", "ragrec.experiments.recommender.launched", str(call)]
        print(f"{name}: launching {shlex.join(full)}", flush=True)
        env = {**os.environ, LAUNCHED_ENV: "1"}
        with subprocess.Popen(
            full, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        ) as proc:
            tail: list[str] = []
            for line in proc.stdout:  # the kernel shows what the processes print
                print(line, end="", flush=True)
                tail = [*tail[-40:], line]
        if proc.returncode != 0:
            raise LaunchFailed(
                f"{name} under {shlex.join(command)} exited with {proc.returncode}:\n{''.join(tail)}"
            )


def main(argv: list[str]) -> None:
    """Entry point of every launched process: run the pickled call."""
    step, profile, kwargs = pickle.loads(Path(argv[0]).read_bytes())  # our own file, from run_launched
    step(profile, **kwargs)


if __name__ == "__main__":
    main(sys.argv[1:])
