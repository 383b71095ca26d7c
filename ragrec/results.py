"""Writing results with provenance, atomically, and reading them back for the book.

Layout: ``results/<profile>/<dataset>/`` holds plain CSV tables (header row), JSON, PNG figures,
executed notebooks, and ``provenance.json`` (git commit, dirty flag, package versions, Python,
CPU/GPU, threads, seed, profile, parameters, start/end time). Every write goes to a temporary
file in the same folder and is renamed into place, so a killed run never leaves half a file.

The package versions recorded are those of every package pinned in the lock file
(``requirements/cpu.lock``, written by ``make lock``), with ``lock: "match"`` when each installed
version is the pinned one, else the list of mismatches: a reader sees at once whether a result
came from the pinned environment.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import platform
import re
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd
from packaging.version import InvalidVersion, Version

from ragrec.errors import DataError
from ragrec.result_files import PROVENANCE

RESULTS_ROOT = Path("results")
LOCK_FILE = Path(__file__).resolve().parent.parent / "requirements" / "cpu.lock"
"""The pinned environment ``make install`` installs (absent when ragrec is installed as a wheel)."""


CHECKPOINTS = "checkpoints"
"""Sub-folder of a results directory for fitted artefacts (git-ignored): LightGCN embeddings,
LLM user vectors, LoRA and head checkpoints."""


def results_base(root: str | os.PathLike | None = None) -> Path:
    """The folder holding ``<profile>/<dataset>/``: ``root``, else ``$RAGREC_RESULTS``, else ``results``."""
    return Path(root) if root is not None else Path(os.environ.get("RAGREC_RESULTS", RESULTS_ROOT))


def result_dir(profile: str, dataset: str, root: str | os.PathLike | None = None) -> Path:
    """``<root>/<profile>/<dataset>/`` (root: see :func:`results_base`)."""
    return results_base(root) / profile / dataset


def is_main_process() -> bool:
    """Whether this process puts results in place: always, except in a data-parallel run
    (:mod:`ragrec.model.distributed`), where every process computes the same tables and only
    rank 0 (the launcher's ``RANK``) writes them."""
    return int(os.environ.get("RANK", "0")) == 0


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it over ``path`` (in the main
    process; the others' copies are dropped, :func:`is_main_process`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; results are meant to be read by others
        if is_main_process():
            os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_csv(frame: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write a table as CSV with a header row, atomically."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    return Path(path)


def write_json(obj: Any, path: str | os.PathLike) -> Path:
    """Write JSON (dataclasses and paths become plain values), atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(_plain(obj), indent=2, sort_keys=True) + "\n")
    return Path(path)


def read_csv(path: str | os.PathLike) -> pd.DataFrame:
    """Read a results table back; a missing file says which run produces it."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"results table {path} does not exist; run the notebook that writes it (see README)")
    try:
        return pd.read_csv(path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(
            f"results table {path} is unreadable ({reason}): rerun the notebook that writes it "
            "(make status names it)"
        ) from None


def _plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        return obj.item()
    return obj


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(
            ["git", *args], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# --------------------------------------------------------------------------------------------
# the pinned environment


def canonical_name(name: str) -> str:
    """PEP 503 name: ``Scikit_Learn`` and ``scikit-learn`` are one package."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: str | os.PathLike = LOCK_FILE) -> dict[str, str]:
    """``{name: pinned version}`` of every ``name==version`` line of a pip requirements lock."""
    pins = {}
    for line in Path(path).read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)", line)
        if match:
            pins[canonical_name(match.group(1))] = match.group(2)
    return pins


def installed_versions() -> dict[str, str]:
    """``{name: version}`` of every distribution importable here, in one pass (cheap)."""
    found = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found.setdefault(canonical_name(name), dist.version)
    return found


def pin_satisfied(pinned: str, installed: str) -> bool:
    """Whether ``installed`` is the ``pinned`` release. A local build label is allowed when the pin
    has none (PEP 440 ``==``): the CPU wheel ``2.13.0+cpu`` is ``torch==2.13.0``."""
    try:
        want, have = Version(pinned), Version(installed)
    except InvalidVersion:
        return pinned == installed
    return have == want if want.local else Version(have.public) == want


def lock_drift(pins: Mapping[str, str], installed: Mapping[str, str]) -> list[str]:
    """One line per pinned package whose installed version is not the pinned one (or is absent)."""
    drift = []
    for name, pinned in sorted(pins.items()):
        have = installed.get(name)
        if have is None:
            drift.append(f"{name}: pinned {pinned}, not installed")
        elif not pin_satisfied(pinned, have):
            drift.append(f"{name}: pinned {pinned}, installed {have}")
    return drift


@functools.cache
def _locked_environment() -> tuple[dict[str, str | None], str | list[str]]:
    # Installed packages do not change while a notebook runs, so one look per process is enough.
    installed = installed_versions()
    if not LOCK_FILE.is_file():
        return {
            "ragrec": installed.get("ragrec")
        }, "no lock file (ragrec is installed without its repository)"
    pins = read_lock(LOCK_FILE)
    versions = {name: installed.get(name) for name in ["ragrec", *sorted(pins)]}
    drift = lock_drift(pins, installed)
    return versions, drift or "match"


def environment() -> dict[str, Any]:
    """Where and with what a result was computed: git state, the installed versions of the
    locked packages and whether they match the lock, hardware, threads."""
    import torch

    versions, lock = _locked_environment()
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": None if status is None else bool(status),
        "python": platform.python_version(),
        "packages": dict(versions),
        "lock": lock if isinstance(lock, str) else list(lock),  # a copy: the cached list stays intact
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def read_provenance(directory: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """``{step: entry}`` recorded in a results folder's ``provenance.json`` (empty when absent)."""
    path = Path(directory) / PROVENANCE
    return json.loads(path.read_text()).get("steps", {}) if path.exists() else {}


@dataclasses.dataclass
class Provenance:
    """Collects what a results directory needs to be trusted; ``write`` merges into
    ``provenance.json`` (one entry per producing step, keyed by ``step``)."""

    step: str
    profile: str
    dataset: str
    seed: int
    parameters: Any
    started: str = dataclasses.field(default_factory=lambda: datetime.now(UTC).isoformat())

    def write(self, directory: str | os.PathLike, outputs: list[str] | None = None) -> Path:
        path = Path(directory) / PROVENANCE
        existing = json.loads(path.read_text()) if path.exists() else {}
        existing.setdefault("steps", {})[self.step] = {
            "profile": self.profile,
            "dataset": self.dataset,
            "seed": self.seed,
            "parameters": _plain(self.parameters),
            "started": self.started,
            "finished": datetime.now(UTC).isoformat(),
            "outputs": outputs or [],
            **environment(),
        }
        return write_json(existing, path)
