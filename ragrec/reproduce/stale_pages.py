"""The book shows current results only, unless told otherwise.

Before staging, ``make book`` asks :func:`~ragrec.reproduce.runner.status` about the profile: a
notebook whose executed copy is in the results but that is stale (its inputs changed, an output
no longer matches what it wrote, its weights changed) or failed after an earlier success makes
the build stop with :class:`StaleResults`, naming each one and both ways on. With
``--allow-stale`` (``make book ALLOW_STALE=1``) the book is built anyway and every affected page
(the executed notebook, its chapter, the landing page) says so in a warning.
"""

from __future__ import annotations

from pathlib import Path

import nbformat

from ragrec.errors import RagrecError
from ragrec.reproduce.runner import status
from ragrec.results import result_dir

SHOWN = 3
"""How many stale notebooks the refusal names before counting the rest."""


class StaleResults(RagrecError):
    """The book would show results that are stale or damaged."""


def stale_results(profile: str, *, results_root=None, data_root=None) -> dict[tuple[str, str], str]:
    """``{(notebook, dataset): state}`` of the executed notebooks the book would show that are not
    up to date (an unreadable manifest raises its own one-line error)."""
    found = {}
    for name, dataset, state in status(profile, results_root=results_root, data_root=data_root):
        executed = result_dir(profile, dataset, results_root) / f"{name}.ipynb"
        if name != "*" and executed.exists() and (state.startswith("stale") or state == "failed"):
            found[(name, dataset)] = state
    return found


def refuse(profile: str, stale: dict[tuple[str, str], str]) -> StaleResults:
    named = "; ".join(f"{nb}/{dataset} ({state})" for (nb, dataset), state in list(stale.items())[:SHOWN])
    more = f"; and {len(stale) - SHOWN} more" if len(stale) > SHOWN else ""
    return StaleResults(
        f"the {profile} results are not up to date, so the book would show them as current: {named}{more}. "
        f"Bring them up to date with `make reproduce PROFILE={profile}`, or build anyway with "
        f"`make book PROFILE={profile} ALLOW_STALE=1` (--allow-stale), which marks every affected page"
    )


def warning(state: str, profile: str) -> str:
    return (
        "```{warning}\n"
        f"These results are **not up to date**: {state}. They are shown as they are; "
        f"`make reproduce PROFILE={profile}` brings them up to date.\n"
        "```"
    )


def mark_stale(staging: Path, profile: str, stale: dict[tuple[str, str], str], chapter_of) -> list[str]:
    """Put a warning on every staged page that shows stale results (after its title): the
    executed notebook, its chapter page and the landing page. Returns the docnames marked."""
    marked = []
    for (name, dataset), state in stale.items():
        doc = f"results/{dataset}/{name}"
        path = staging / f"{doc}.ipynb"
        if path.exists():
            nb = nbformat.read(path, as_version=4)
            cell = nbformat.v4.new_markdown_cell(warning(state, profile))
            nb.cells.insert(_after_title(nb), cell)
            nbformat.write(nb, path)
            marked.append(doc)
        _insert_after_title(staging / f"{chapter_of(name)}.md", warning(f"{dataset}: {state}", profile))
    if stale:
        listed = ", ".join(f"{nb}/{dataset}" for nb, dataset in stale)
        _insert_after_title(staging / "intro.md", warning(f"this build was asked to show {listed}", profile))
    return marked


def _after_title(nb) -> int:
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown" and cell.source.lstrip().startswith("#"):
            return i + 1
    return 0


def _insert_after_title(page: Path, text: str) -> None:
    if not page.exists():
        return
    lines = page.read_text().splitlines()
    at = next((i + 1 for i, line in enumerate(lines) if line.startswith("# ")), 0)
    page.write_text("\n".join([*lines[:at], "", text, "", *lines[at:]]) + "\n")
