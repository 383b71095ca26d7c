"""Published outputs name no path of the machine that built them.

Committed results and the built book travel to other machines; an absolute path there (the
checkout, the home folder, the virtual environment, a temp folder) is noise to a reader and
leaks where a run was made. :func:`machine_paths` lists those roots with what replaces each,
:func:`relative_paths` rewrites a text, and :func:`scrub_notebook` cleans an executed notebook:
papermill's recorded ``input_path``/``output_path`` become repository-relative, and warnings a
library printed with its ``site-packages`` path are dropped from the stderr outputs.
"""

from __future__ import annotations

import os
import re
import sys
import sysconfig
import tempfile
from pathlib import Path

REPO_DIR = Path(__file__).resolve().parents[2]


def machine_paths(root: str | os.PathLike = REPO_DIR) -> dict[str, str]:
    """Absolute paths of this machine, each with what a published text shows instead, the
    longest first (so the repository wins over the home folder that holds it)."""
    found = {
        str(Path(root).resolve()): ".",
        sysconfig.get_paths()["purelib"]: "<site-packages>",
        sys.prefix: "<venv>",
        str(Path.home()): "~",
        tempfile.gettempdir(): "<tmp>",
    }
    found = {path.rstrip("/"): label for path, label in found.items() if len(path.rstrip("/")) > 1}
    return dict(sorted(found.items(), key=lambda item: -len(item[0])))


def relative_paths(text: str, paths: dict[str, str] | None = None) -> str:
    """``text`` with every root of :func:`machine_paths` replaced by its label; a path under the
    repository becomes relative to it (``<repo>/data/raw`` → ``data/raw``)."""
    for path, label in (paths or machine_paths()).items():
        text = text.replace(f"{path}/", "" if label == "." else f"{label}/")  # a path below the root
        text = re.sub(
            re.escape(path) + r"(?![\w-]|\.\w)", lambda _, label=label: label, text
        )  # the root itself
    return text


def names_machine_path(text: str, paths: dict[str, str] | None = None) -> list[str]:
    """The roots of :func:`machine_paths` that ``text`` names (empty: safe to publish)."""
    return [path for path in (paths or machine_paths()) if path in text]


_WARNING_LINE = re.compile(r"^\S.*:\d+: \w*Warning: ")


def _drop_path_warnings(text: str, paths: dict[str, str]) -> str:
    """Drop each ``<file>:<line>: XWarning: ...`` whose file is a machine path, with the source
    line Python echoes after it."""
    kept, skip = [], False
    for line in text.splitlines(keepends=True):
        if _WARNING_LINE.match(line) and names_machine_path(line, paths):
            skip = True  # the warning, then its indented source line
            continue
        if skip and line.startswith((" ", "\t")):
            continue
        skip = False
        kept.append(line)
    return "".join(kept)


def scrub_notebook(nb, *, root: str | os.PathLike = REPO_DIR, output_path: str | os.PathLike | None = None):
    """Clean an executed notebook (an ``nbformat`` node, changed in place and returned).

    Args:
        nb: the notebook papermill wrote.
        root: the repository the recorded paths become relative to.
        output_path: where the notebook ends up (papermill recorded the temporary file it
            executed into); None keeps the recorded one.
    """
    paths = machine_paths(root)
    record = nb.metadata.get("papermill", {})
    if output_path is not None:
        record["output_path"] = str(output_path)
    for key in ("input_path", "output_path"):
        if record.get(key):
            record[key] = _relative_to(record[key], root, paths)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = _scrub_outputs(cell.outputs, paths)
    return nb


def _scrub_outputs(outputs: list, paths: dict[str, str]) -> list:
    """stderr without path-naming warnings and with relative paths; emptied streams dropped."""
    kept = []
    for output in outputs:
        if output.get("output_type") == "stream" and output.get("name") == "stderr":
            output["text"] = relative_paths(_drop_path_warnings(output.get("text", ""), paths), paths)
            if not output["text"]:
                continue
        kept.append(output)
    return kept


def _relative_to(path: str, root: str | os.PathLike, paths: dict[str, str]) -> str:
    try:
        return Path(path).resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        return relative_paths(path, paths)


def scrub_results(folder: str | os.PathLike) -> list[Path]:
    """Scrub every executed notebook under ``folder`` in place, each relative to the checkout it
    was executed in (read from its recorded ``input_path``: ``<checkout>/notebooks/<name>.ipynb``);
    returns the notebooks that changed."""
    import nbformat

    changed = []
    for path in sorted(Path(folder).rglob("*.ipynb")):
        before = path.read_text()
        nb = nbformat.reads(before, as_version=4)
        recorded = Path(
            nb.metadata.get("papermill", {}).get("input_path") or REPO_DIR / "notebooks" / path.name
        )
        root = recorded.parent.parent if recorded.is_absolute() else REPO_DIR
        scrub_notebook(nb, root=root, output_path=root / path.resolve().relative_to(REPO_DIR))
        after = nbformat.writes(nb) + "\n"
        if after != before:
            path.write_text(after)
            changed.append(path)
    return changed


if __name__ == "__main__":  # python -m ragrec.reproduce.published results/
    for changed in scrub_results(sys.argv[1] if len(sys.argv) > 1 else REPO_DIR / "results"):
        print(f"scrubbed {changed}")
