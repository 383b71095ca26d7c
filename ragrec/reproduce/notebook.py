"""What the parameterized notebooks call to find their results and show numbers in prose.

Every notebook starts with :func:`setup_notebook` (its ``parameters`` cell holds ``dataset``,
``profile``, ``seed`` and ``out_dir``), writes its tables and figures through the returned
:class:`NotebookContext`, and puts numbers into its prose only with :meth:`NotebookContext.glue`:
the value is read back *from a CSV file the results directory holds*, formatted, glued with
myst-nb, and recorded in ``glue_<step>.csv`` (key, table, column, row filter, format, text). The
book test reads that record to check that every glued number in the built HTML equals its CSV
cell. A value that does not exist (a table not produced, a NaN) is glued as ``"not run"`` —
never a made-up number.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ragrec.config import Profile, get_profile
from ragrec.data import DATASETS
from ragrec.errors import ConfigError, DataError
from ragrec.results import atomic_path, read_csv, read_provenance, write_csv

NOT_RUN = "not run"
GLUE_COLUMNS = ("key", "table", "column", "where", "fmt", "text")


def glue_record_name(step: str) -> str:
    """The file (in the results directory) listing what a notebook step glued."""
    return f"glue_{step}.csv"


@dataclass
class NotebookContext:
    """A notebook run: its profile (dataset and seed applied), where its results go, and the
    record of what it glued.

    Attributes:
        step: the notebook's name (``data``, ``retrieval`` ...), used for provenance and the
            glue record.
        profile: the run profile with ``dataset`` and ``seed`` applied.
        out_dir: ``<results_root>/<profile>/<dataset>/``.
        results_root: the folder holding ``<profile>/<dataset>/`` (pass it to library calls).
    """

    step: str
    profile: Profile
    out_dir: Path
    results_root: Path
    glued: list[dict[str, str]] = field(default_factory=list)

    @property
    def dataset(self) -> str:
        return self.profile.data.dataset

    @property
    def seed(self) -> int:
        return self.profile.seed

    def path(self, name: str) -> Path:
        """A file of this run's results directory."""
        return self.out_dir / name

    def has(self, *names: str) -> bool:
        """Whether every named result file exists."""
        return all(self.path(n).exists() for n in names)

    def read(self, name: str) -> pd.DataFrame | None:
        """A results table, or None when it was not produced (yet)."""
        return read_csv(self.path(name)) if self.path(name).exists() else None

    def write(self, frame: pd.DataFrame, name: str) -> Path:
        """Write a results table atomically."""
        return write_csv(frame, self.path(name))

    def save_figure(self, fig, name: str) -> None:
        """Save a matplotlib figure as PNG in the results directory, atomically (returns nothing,
        so a notebook cell ending with it shows only the figure)."""
        with atomic_path(self.path(name)) as tmp:
            fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")

    def show_figure(self, fig, name: str):
        """Save ``fig`` as ``name`` (PNG) and return the saved image, so a cell ending with it
        shows exactly the file the results directory holds."""
        from IPython.display import Image

        self.save_figure(fig, name)
        return Image(data=self.path(name).read_bytes(), format="png")

    def glue_table(self, key: str, table) -> None:
        """Glue a table for people (:class:`ragrec.reproduce.tables.PeopleTable`) under ``key``
        without showing it."""
        from myst_nb import glue as myst_glue

        myst_glue(key, table, display=False)

    def value(self, table: str, column: str, where: dict[str, Any] | None = None) -> Any:
        """The one cell of ``table`` (a CSV in the results directory) in ``column`` on the row
        matching ``where``; None when the table, row or value is absent.

        Raises:
            DataError: ``where`` matches more than one row, or the column does not exist.
        """
        frame = self.read(table)
        if frame is None:
            return None
        return select_cell(frame, column, where, table=table)

    def glue(
        self, key: str, table: str, column: str, where: dict[str, Any] | None = None, fmt: str = ".3f"
    ) -> None:
        """Glue ``table[column]`` at the row matching ``where`` under ``key`` (for
        ``{glue:text}`key``` in the notebook's prose), formatted with ``fmt`` ("" for strings);
        ``"not run"`` when absent. The text glued is recorded in ``glue_<step>.csv`` (and
        :attr:`glued`); nothing is returned, so a notebook cell shows no stray output."""
        text = format_value(self.value(table, column, where), fmt)
        from myst_nb import glue as myst_glue

        myst_glue(key, text, display=False)
        self.glued = [g for g in self.glued if g["key"] != key]
        self.glued.append(
            {
                "key": key,
                "table": table,
                "column": column,
                "where": json.dumps(where or {}, sort_keys=True),
                "fmt": fmt,
                "text": text,
            }
        )
        write_csv(
            pd.DataFrame(self.glued, columns=list(GLUE_COLUMNS)), self.path(glue_record_name(self.step))
        )


def select_cell(
    frame: pd.DataFrame, column: str, where: dict[str, Any] | None, *, table: str = "table"
) -> Any:
    """The value in ``column`` of the single row of ``frame`` whose columns equal ``where``
    (compared as strings, so ``6`` matches ``"6"`` and ``0.1`` matches ``0.1``); None when no
    row matches or the value is missing."""
    if column not in frame.columns:
        raise DataError(f"{table} has no column {column!r}; columns: {list(frame.columns)}")
    rows = frame
    for name, wanted in (where or {}).items():
        if name not in rows.columns:
            raise DataError(f"{table} has no column {name!r} to select rows by")
        rows = rows[rows[name].map(_canonical) == _canonical(wanted)]
    if len(rows) > 1:
        raise DataError(f"{table}: {where} selects {len(rows)} rows, expected one")
    if rows.empty:
        return None
    value = rows[column].iloc[0]
    return None if _missing(value) else value


def format_value(value: Any, fmt: str) -> str:
    """``format(value, fmt)``, or ``"not run"`` for None/NaN."""
    if _missing(value):
        return NOT_RUN
    if fmt and fmt[-1] in "eEfFgGn%":
        value = float(value)
    elif fmt and fmt[-1] in "d":
        value = int(value)
    return format(value, fmt)


def _missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _canonical(value: Any) -> str:
    """A string form under which CSV round-trips compare equal (6 == 6.0 == "6")."""
    if isinstance(value, bool):
        return str(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isfinite(number) and number == int(number):
        return str(int(number))
    return repr(number)


def setup_notebook(
    step: str, profile: str, dataset: str, seed: int | None, out_dir: str | os.PathLike
) -> NotebookContext:
    """Validate a notebook's parameters and prepare its results directory.

    Args:
        step: the notebook's name.
        profile: ``smoke``, ``cpu`` or ``gpu``.
        dataset: one of :data:`ragrec.data.DATASETS`.
        seed: overrides the profile's seed (None: keep it).
        out_dir: must be ``<results root>/<profile>/<dataset>`` (the results layout).

    Raises:
        ConfigError: an unknown profile or dataset, or an ``out_dir`` that breaks the layout.
    """
    base = get_profile(profile)
    if dataset not in DATASETS:
        raise ConfigError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    chosen = base.with_dataset(dataset)
    if seed is not None and seed != chosen.seed:
        chosen = dataclasses.replace(chosen, seed=int(seed))
    out = Path(out_dir)
    if out.name != dataset or out.parent.name != profile:
        raise ConfigError(f"out_dir {out} must end in {profile}/{dataset} (results/<profile>/<dataset>/)")
    out.mkdir(parents=True, exist_ok=True)
    return NotebookContext(step=step, profile=chosen, out_dir=out, results_root=out.parent.parent)


# --------------------------------------------------------------------------------------------
# the run record: what ran, how long, where


def run_times(
    out_dir: str | os.PathLike, *, exclude: tuple[str, ...] = (), manifest_name: str = "reproduce.json"
) -> pd.DataFrame:
    """One row per notebook recorded in the run manifest (status, wall seconds, start, finish) in
    the order they started, ``exclude`` left out, plus a ``total`` row summing the wall seconds of
    those that finished."""
    path = Path(out_dir) / manifest_name
    entries = json.loads(path.read_text()).get("notebooks", {}) if path.exists() else {}
    entries = dict(
        sorted(
            ((k, v) for k, v in entries.items() if k not in exclude), key=lambda kv: str(kv[1].get("started"))
        )
    )
    rows = [
        {
            "notebook": name,
            "status": e.get("status"),
            "wall_s": e.get("wall_s"),
            "started": e.get("started"),
            "finished": e.get("finished"),
        }
        for name, e in entries.items()
    ]
    frame = pd.DataFrame(rows, columns=["notebook", "status", "wall_s", "started", "finished"])
    ok = frame[frame["status"] == "ok"]
    total = {
        "notebook": "total",
        "status": f"{len(ok)} ok",
        "wall_s": float(pd.to_numeric(ok["wall_s"]).sum()) if len(ok) else None,
        "started": ok["started"].min() if len(ok) else None,
        "finished": ok["finished"].max() if len(ok) else None,
    }
    return pd.concat([frame, pd.DataFrame([total])], ignore_index=True)


def provenance_table(out_dir: str | os.PathLike) -> pd.DataFrame:
    """One row per step recorded in ``provenance.json``: where and with what it was computed."""
    rows = []
    for step, e in read_provenance(out_dir).items():
        packages = e.get("packages") or {}
        rows.append(
            {
                "step": step,
                "seed": e.get("seed"),
                "git_commit": (e.get("git_commit") or "")[:12],
                "git_dirty": e.get("git_dirty"),
                "python": e.get("python"),
                "torch": packages.get("torch"),
                "transformers": packages.get("transformers"),
                "cpu": e.get("cpu"),
                "cpu_count": e.get("cpu_count"),
                "torch_threads": e.get("torch_threads"),
                "gpu": e.get("gpu"),
                "started": e.get("started"),
                "finished": e.get("finished"),
            }
        )
    return pd.DataFrame(
        rows,
        columns=[
            "step",
            "seed",
            "git_commit",
            "git_dirty",
            "python",
            "torch",
            "transformers",
            "cpu",
            "cpu_count",
            "torch_threads",
            "gpu",
            "started",
            "finished",
        ],
    )


def run_summary(results_root: str | os.PathLike, manifest_name: str = "reproduce.json") -> pd.DataFrame:
    """One row per results folder ``<profile>/<dataset>`` under ``results_root`` that has a run
    manifest: notebooks finished, their summed wall seconds, and when the last one finished — the
    time each profile took wherever its results are present."""
    rows = []
    for path in sorted(Path(results_root).glob(f"*/*/{manifest_name}")):
        times = run_times(path.parent, manifest_name=manifest_name)
        total = times[times["notebook"] == "total"].iloc[0]
        rows.append(
            {
                "profile": path.parent.parent.name,
                "dataset": path.parent.name,
                "notebooks_ok": total["status"],
                "wall_s": total["wall_s"],
                "last_finished": total["finished"],
            }
        )
    return pd.DataFrame(rows, columns=["profile", "dataset", "notebooks_ok", "wall_s", "last_finished"])
