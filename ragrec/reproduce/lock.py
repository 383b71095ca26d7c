"""One run at a time per results folder.

A run (``make reproduce``, ``make notebook``, a fresh run) holds an exclusive ``fcntl.flock`` on
``<results>/<profile>/.run.lock`` from before its first notebook until it returns. The kernel
drops the lock when the process ends, however it ends (a crash, ``kill -9``), so a lock is never
left behind and there is nothing to clean up by hand. The file also says who holds it (pid, start
time, command), so a second run on the same folder exits at once naming the holder. ``status`` and
``book`` only read results and never take the lock.
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from ragrec.errors import ConfigError, RagrecError

LOCK_NAME = ".run.lock"


class RunLocked(RagrecError):
    """Another live process is running notebooks into the same results folder."""


def lock_path(folder: Path) -> Path:
    return Path(folder) / LOCK_NAME


def holder(folder: Path) -> dict | None:
    """What the lock file of ``folder`` says about its holder (None: no lock file, or unreadable)."""
    try:
        return json.loads(lock_path(folder).read_text() or "null")
    except (OSError, ValueError):
        return None


def describe(record: dict | None) -> str:
    if not record:
        return "another process (its lock file names none)"
    return f"pid {record.get('pid')}, started {record.get('started')}, command `{record.get('command')}`"


@contextmanager
def run_lock(folder: Path, *, wait: bool = False) -> Iterator[Path]:
    """Hold the run lock of ``folder`` (created if needed) while the block runs.

    Raises:
        RunLocked: another process holds it (unless ``wait``, which blocks until it is free).
        ConfigError: the lock file cannot be created (the folder is not writable).
    """
    folder = Path(folder)
    path = lock_path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by the notebooks' kernels
    except OSError as exc:
        raise ConfigError(
            f"cannot create the run lock {path} ({exc.strerror}); fix the folder's permissions "
            "or pass --results DIR"
        ) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            record = holder(folder)
            pid = (record or {}).get("pid", "<pid>")
            raise RunLocked(
                f"{folder} is in use by another run ({describe(record)}); wait for it to end (add --wait "
                f"to queue behind it) or stop it (kill {pid}): the lock goes with its process, "
                "nothing to delete"
            ) from None
        record = {
            "pid": os.getpid(),
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": command_line(),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the lock (the file stays: removing it would race a waiting run)


def command_line() -> str:
    """This process's command, as typed (``python -m ragrec.reproduce run ...``)."""
    argv = list(sys.argv)
    if argv and Path(argv[0]).name == "__main__.py":
        argv[0:1] = ["-m", __package__ or "ragrec.reproduce"]  # not the machine path of __main__.py
    return shlex.join(["python", *argv])


def held(folder: Path) -> bool:
    """Whether a live process holds the run lock of ``folder`` (a peek: nothing is taken for long)."""
    try:
        fd = os.open(lock_path(folder), os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
