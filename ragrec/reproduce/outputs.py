"""What a notebook wrote, and whether its results folder still holds it.

After a notebook succeeds, the runner records in ``reproduce.json`` a content hash of every file
it wrote into its results directory (the top-level files that are new or changed while it ran,
and its declared outputs; ``checkpoints/`` are its trained weights, hashed apart). A file that
later differs from its hash — truncated, edited, deleted — makes its *writer* stale, naming the
file; the notebooks that read it are stale after it. A file several notebooks write (each step
merges its record into ``provenance.json``) belongs to the one that wrote it last.

Entries from before output hashes were recorded have none, and read as they always did: their
outputs must exist, nothing more.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ragrec.reproduce.digest import file_digest
from ragrec.result_files import MANIFEST, PROVENANCE


def snapshot(out_dir: Path) -> dict[str, tuple[int, int]]:
    """``{file name: (size, mtime)}`` of the top-level files of ``out_dir`` a notebook may write."""
    if not out_dir.is_dir():
        return {}
    found = {}
    for entry in os.scandir(out_dir):
        if entry.is_file() and _notebook_file(entry.name):
            stat = entry.stat()
            found[entry.name] = (stat.st_size, stat.st_mtime_ns)
    return found


def _notebook_file(name: str) -> bool:
    return not name.startswith(".") and name != MANIFEST and not name.endswith(".failed.ipynb")


def written(before: dict[str, tuple[int, int]], out_dir: Path, declared: Iterable[str]) -> dict[str, str]:
    """``{file name: content hash}`` of what a notebook wrote: files new or changed since
    ``before`` (its :func:`snapshot`), and its ``declared`` outputs."""
    after = snapshot(out_dir)
    names = {name for name, stat in after.items() if before.get(name) != stat}
    names |= {name for name in declared if name in after}
    return {name: file_digest(out_dir / name) for name in sorted(names)}


def writer_of(name: str, manifest: dict[str, Any]) -> str | None:
    """The notebook that wrote ``name`` last, by the recorded output hashes (None: no record)."""
    writers = [
        (str(entry.get("finished")), notebook)
        for notebook, entry in manifest.get("notebooks", {}).items()
        if entry.get("status") == "ok" and name in (entry.get("outputs") or {})
    ]
    return max(writers)[1] if writers else None


@dataclass(frozen=True)
class Damage:
    """A file that is no longer what its writer wrote."""

    name: str
    writer: str
    finished: str
    missing: bool

    def __str__(self) -> str:
        how = "is missing, written by" if self.missing else "differs from what"
        verb = "" if self.missing else " wrote"
        return f"{self.name} {how} {self.writer}{verb} at {self.finished[:19].replace('T', ' ')}"


def damaged(notebook: str, manifest: dict[str, Any], out_dir: Path) -> list[Damage]:
    """The files ``notebook`` wrote last that now differ from their recorded hash."""
    entry = manifest.get("notebooks", {}).get(notebook) or {}
    if entry.get("status") != "ok":
        return []
    found = []
    for name, digest in (entry.get("outputs") or {}).items():
        if writer_of(name, manifest) != notebook:
            continue  # a later notebook rewrote it: its hash is that one's
        now = file_digest(out_dir / name)
        if now != digest:
            found.append(Damage(name, notebook, str(entry.get("finished")), now == "absent"))
    return found


def damage_reason(damage: list[Damage], profile: str, dataset: str) -> str:
    """The status line of a writer whose outputs are damaged: which file, and the fix."""
    first = damage[0]
    more = f" (and {len(damage) - 1} more file(s))" if len(damage) > 1 else ""
    if first.name == PROVENANCE:  # every step's record is merged into it: only a fresh run restores it
        fix = f"it records every notebook's run: make reproduce PROFILE={profile} FRESH=1"
    else:
        fix = f"rerun {first.writer} (make reproduce PROFILE={profile} does, then what reads it)"
    return f"stale: {first}{more}: {fix}"


def reader_reason(upstream: str, damage: list[Damage]) -> str:
    """The status line of a notebook that reads a damaged file."""
    return f"stale: reads {damage[0].name}, which is no longer what {upstream} wrote; rerun {upstream} first"
