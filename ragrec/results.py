"""Writing results with provenance, atomically, and reading them back for the book.

Layout: ``results/<profile>/<dataset>/`` holds plain CSV tables (header row), JSON, PNG figures,
executed notebooks, and ``provenance.json`` (git commit, dirty flag, package versions, Python,
CPU/GPU, threads, seed, profile, parameters, start/end time). Every write goes to a temporary
file in the same folder and is renamed into place, so a killed run never leaves half a file.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

from ragrec.errors import DataError

RESULTS_ROOT = Path("results")
_PACKAGES = ("ragrec", "torch", "torch-geometric", "transformers", "peft", "numpy", "pandas", "scikit-learn")


CHECKPOINTS = "checkpoints"
"""Sub-folder of a results directory for fitted artefacts (git-ignored): LightGCN embeddings,
LLM user vectors, LoRA and head checkpoints."""


def result_dir(profile: str, dataset: str, root: str | os.PathLike | None = None) -> Path:
    """``<root>/<profile>/<dataset>/`` (root: argument, else ``$RAGREC_RESULTS``, else ``results``)."""
    base = Path(root) if root is not None else Path(os.environ.get("RAGREC_RESULTS", RESULTS_ROOT))
    return base / profile / dataset


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; results are meant to be read by others
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
    return pd.read_csv(path)


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
        return subprocess.run(["git", *args], capture_output=True, text=True, check=True, timeout=10).stdout.strip()
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


def environment() -> dict[str, Any]:
    """Where and with what a result was computed: git state, versions, hardware, threads."""
    import torch

    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": None if status is None else bool(status),
        "python": platform.python_version(),
        "packages": versions,
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


@dataclasses.dataclass
class Provenance:
    """Collects what a results directory needs to be trusted; ``write`` merges into
    ``provenance.json`` (one entry per producing step, keyed by ``step``)."""

    step: str
    profile: str
    dataset: str
    seed: int
    parameters: Any
    started: str = dataclasses.field(default_factory=lambda: datetime.now(timezone.utc).isoformat())

    def write(self, directory: str | os.PathLike, outputs: list[str] | None = None) -> Path:
        path = Path(directory) / "provenance.json"
        existing = json.loads(path.read_text()) if path.exists() else {}
        existing.setdefault("steps", {})[self.step] = {
            "profile": self.profile,
            "dataset": self.dataset,
            "seed": self.seed,
            "parameters": _plain(self.parameters),
            "started": self.started,
            "finished": datetime.now(timezone.utc).isoformat(),
            "outputs": outputs or [],
            **environment(),
        }
        return write_json(existing, path)
