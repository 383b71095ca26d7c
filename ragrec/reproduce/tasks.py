"""The notebooks a profile runs, one task per (notebook, dataset), and the manifest that says
which are up to date (their inputs' digest, :mod:`ragrec.reproduce.digest`)."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from ragrec import result_files as rf
from ragrec.config import get_profile
from ragrec.data import DATASETS
from ragrec.errors import ConfigError, DataError, RagrecError
from ragrec.reproduce.digest import (
    PACKAGE_DIR,
    file_digest,
    raw_data_digest,
)
from ragrec.reproduce.outputs import MANIFEST, damaged
from ragrec.reproduce.readers import read_json
from ragrec.results import write_json

PROJECT_DIR = PACKAGE_DIR.parent
NOTEBOOK_DIR = PROJECT_DIR / "notebooks"
KERNEL_NAME = "ragrec"

PAPER_DATASETS = ("bookcrossing", "amazon-beauty", "amazon-video-games")
PROFILE_DATASETS: dict[str, tuple[str, ...]] = {
    "smoke": ("synthetic",),
    "cpu": ("ml-100k", *PAPER_DATASETS),
    "gpu": ("ml-100k", *PAPER_DATASETS),
}
"""The datasets ``make reproduce`` tries for each profile; those whose files are absent are
listed as not run, with what they need."""


@dataclass(frozen=True)
class NotebookSpec:
    """One parameterized notebook.

    Attributes:
        name: the file ``notebooks/<name>.ipynb`` and the executed ``<name>.ipynb`` in results.
        title: what the book calls its chapter.
        outputs: files the notebook must leave in its results directory.
        after: notebooks whose outputs it reads (they run first).
        reads: further files of the results directory it reads when present (part of its
            inputs' digest; e.g. tables another step produces).
        reads_dataset: whether it loads the dataset, so that its raw files are inputs too.
        artifacts: trained weights it leaves for later notebooks to reload (glob patterns in its
            results directory). Committed with the reference results, so those notebooks rerun
            without training; their hashes are recorded with the run and are inputs of the later
            notebooks, and a file that no longer matches makes this notebook stale.
        artifacts_skip: patterns (``fnmatch``, on the path in the results directory) of files the
            ``artifacts`` globs match but no later notebook reloads (kept out of git).
        own_steps: the steps of ``provenance.json`` the notebook itself writes; when it also reads
            that file (``reads``), its digest leaves them out, as the run record's leaves out its
            own entry of the manifest, or the notebook would be stale as soon as it ran.
    """

    name: str
    title: str
    outputs: tuple[str, ...] = ()
    after: tuple[str, ...] = ()
    reads: tuple[str, ...] = ()
    reads_dataset: bool = True
    artifacts: tuple[str, ...] = ()
    artifacts_skip: tuple[str, ...] = ()
    own_steps: tuple[str, ...] = ()


NOTEBOOKS: tuple[NotebookSpec, ...] = (
    NotebookSpec("data", "Data", outputs=(rf.DATA,)),
    NotebookSpec(
        "recommender",
        "The LLM recommender: per-head AUC",
        outputs=(rf.HEADS, rf.TRAINING, rf.predictions("gcn")),
        # the main model and the cf variant; the β study's runs are not reloaded later
        artifacts=("checkpoints/model_beta*/final/*",),
        artifacts_skip=("checkpoints/*_study*",),
    ),
    NotebookSpec(
        "retrieval",
        "GCN-Retriever vs LLM retriever",
        outputs=(rf.RETRIEVAL, rf.DENSITY, rf.PROMPT_DEPTH, rf.ARCHITECTURE, rf.ANN_BENCHMARK),
        after=("recommender",),
    ),
    NotebookSpec(
        "ablations",
        "Ablations: prompt context and depth-wise LR decay",
        outputs=(rf.ABLATIONS, rf.BETA_STUDY, rf.LEARNING_CURVE_MEANS),
        after=("recommender",),
    ),
    NotebookSpec(
        "early_exit",
        "Early exit: accuracy vs requests per second",
        outputs=(rf.EARLY_EXIT, rf.THRESHOLD_SWEEP, rf.EARLY_EXIT_PREDICTIONS),
        after=("recommender",),
    ),
    NotebookSpec(
        "baselines",
        "Baselines: where the LLM stands",
        outputs=(rf.BASELINES, rf.BASELINE_PREDICTIONS, rf.PROMPT_NUMBERS, rf.COLD_START, rf.CONTEXT_EFFECT),
        after=("recommender",),
    ),
    NotebookSpec(
        "claims",
        "Claims check",
        outputs=(rf.CLAIMS,),
        after=("recommender", "retrieval", "ablations", "early_exit", "baselines"),
        reads_dataset=False,
    ),
    NotebookSpec(
        "run",
        "Run record",
        # the compute table times the model on the profile's own prompts, so it reads the data
        outputs=(rf.RUN_TIMES, rf.COMPUTE),
        reads=(MANIFEST, rf.PROVENANCE),
        own_steps=("compute",),
    ),
)
SPECS: dict[str, NotebookSpec] = {s.name: s for s in NOTEBOOKS}


class NotebookFailed(RagrecError):
    """A notebook raised while executing; names the notebook, the cell and the error."""


def check_order(specs: Sequence[NotebookSpec]) -> None:
    """Every notebook must come after the notebooks it reads."""
    seen: set[str] = set()
    for spec in specs:
        late = [a for a in spec.after if a not in seen]
        if late:
            raise ConfigError(f"notebook {spec.name!r} reads {late}, which do not run before it")
        seen.add(spec.name)


def check_profile(name: str) -> str:
    get_profile(name, resolve=False)  # ConfigError listing the profiles
    return name


def check_notebooks(
    names: Sequence[str] | None, specs: Sequence[NotebookSpec] = NOTEBOOKS
) -> list[NotebookSpec]:
    """The specs for ``names`` in run order (all notebooks when None)."""
    if not names:
        return list(specs)
    known = [s.name for s in specs]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"unknown notebook(s) {unknown}; choose from {', '.join(known)}")
    return [s for s in specs if s.name in names]


def check_datasets(names: Sequence[str] | None, profile: str) -> list[str]:
    """``names`` (validated), or the profile's datasets when None."""
    if not names:
        return list(PROFILE_DATASETS[profile])
    unknown = [n for n in names if n not in DATASETS]
    if unknown:
        raise ConfigError(f"unknown dataset(s) {unknown}; choose from {', '.join(DATASETS)}")
    return list(dict.fromkeys(names))


def require_present(requested: Sequence[str] | None, missing: dict[str, str]) -> None:
    """A dataset asked for by name must be present; the profile's default list may lack some."""
    absent = [d for d in requested or () if d in missing]
    if absent:
        raise DataError(
            "\n".join(f"{d!r} was requested by name but cannot run: {missing[d]}" for d in absent)
        )


def check_writable(folders: Sequence[Path]) -> None:
    """Fail before any work when a results folder cannot be created or written."""
    for folder in folders:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            handle, probe = tempfile.mkstemp(prefix=".write-check.", dir=folder)
            os.close(handle)
            os.unlink(probe)
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise ConfigError(
                f"results folder {folder} is not writable ({reason}); "
                "fix its permissions or pass --results DIR"
            ) from None


# --------------------------------------------------------------------------------------------
# the inputs digest and the manifest


@dataclass(frozen=True)
class Task:
    """One notebook for one profile and dataset."""

    spec: NotebookSpec
    profile: str
    dataset: str
    seed: int
    out_dir: Path
    source: Path
    upstream: tuple[NotebookSpec, ...] = ()
    """The specs of ``spec.after`` (their outputs are this notebook's inputs)."""
    data_root: Path | None = None
    """Where the dataset's raw files are (default ``$RAGREC_DATA`` or ``data/raw``)."""

    @property
    def output(self) -> Path:
        return self.out_dir / f"{self.spec.name}.ipynb"

    @property
    def parameters(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "profile": self.profile,
            "seed": self.seed,
            "out_dir": str(self.out_dir),
        }

    def artifact_digests(self) -> dict[str, str]:
        """``{path in the results directory: content hash}`` of the trained weights the notebook
        leaves (:attr:`NotebookSpec.artifacts`)."""
        files = {
            f.relative_to(self.out_dir).as_posix(): f
            for pattern in self.spec.artifacts
            for f in self.out_dir.glob(pattern)
            if f.is_file()
        }
        kept = sorted(
            name for name in files if not any(fnmatch(name, skip) for skip in self.spec.artifacts_skip)
        )
        return {name: file_digest(files[name]) for name in kept}

    def inputs_digest(self, manifest: dict[str, Any], library: str) -> str:
        """Digest of everything the notebook's results depend on (see the module docstring)."""
        h = hashlib.sha256()
        h.update(file_digest(self.source).encode())
        h.update(
            json.dumps({k: v for k, v in self.parameters.items() if k != "out_dir"}, sort_keys=True).encode()
        )
        h.update(library.encode())
        if self.spec.reads_dataset:
            h.update(raw_data_digest(self.dataset, self.data_root).encode())
        read = [f for up in self.upstream for f in up.outputs] + list(self.spec.reads)
        for name in read:
            if name == MANIFEST:  # the run record reads the other notebooks' entries, not its own
                others = {k: v for k, v in manifest.get("notebooks", {}).items() if k != self.spec.name}
                h.update(json.dumps(others, sort_keys=True).encode())
            elif name == rf.PROVENANCE and self.spec.own_steps:
                h.update(json.dumps(self._others_provenance(), sort_keys=True).encode())
            else:
                h.update(f"{name}:{file_digest(self.out_dir / name)}".encode())
        for up in self.spec.after:
            entry = manifest.get("notebooks", {}).get(up, {})
            h.update(str(entry.get("inputs")).encode())  # an upstream rerun changes what we read
            if entry.get("artifacts") is not None:  # the trained weights we may reload, as recorded
                h.update(json.dumps(entry["artifacts"], sort_keys=True).encode())  # (older runs: none)
        return h.hexdigest()

    def _others_provenance(self) -> dict[str, Any]:
        """``provenance.json`` without the steps this notebook writes itself (empty when absent)."""
        path = self.out_dir / rf.PROVENANCE
        record = read_json(path) if path.exists() else {}
        steps = {k: v for k, v in record.get("steps", {}).items() if k not in self.spec.own_steps}
        return {**record, "steps": steps}


def read_manifest(out_dir: Path) -> dict[str, Any]:
    """The runner's record of ``out_dir`` (empty when absent); one-line DataError when unreadable."""
    path = out_dir / MANIFEST
    return read_json(path, keys=("notebooks",)) if path.exists() else {"notebooks": {}}


def record(out_dir: Path, name: str, entry: dict[str, Any]) -> None:
    manifest = read_manifest(out_dir)
    manifest.setdefault("notebooks", {})[name] = entry
    write_json(manifest, out_dir / MANIFEST)


def up_to_date(task: Task, manifest: dict[str, Any], library: str) -> bool:
    """Whether the executed notebook and its outputs exist and its inputs are unchanged."""
    entry = manifest.get("notebooks", {}).get(task.spec.name)
    if not entry or entry.get("status") != "ok" or not task.output.exists():
        return False
    if any(not (task.out_dir / f).exists() for f in task.spec.outputs):
        return False
    if weights_changed(task, entry) or damaged(task.spec.name, manifest, task.out_dir):
        return False
    return entry.get("inputs") == task.inputs_digest(manifest, library)


def weights_changed(task: Task, entry: dict[str, Any]) -> bool:
    """Whether the trained weights the notebook left, as its run recorded them, are missing or
    differ now: rerun the notebook that trains them. (An entry from before weights were
    recorded has nothing to compare.)"""
    recorded = entry.get("artifacts")
    return bool(task.spec.artifacts) and recorded is not None and recorded != task.artifact_digests()
