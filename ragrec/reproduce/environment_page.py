"""The reproduce page's "pinned environment" section: the lock's pins beside what each run had
installed (from its ``provenance.json``), with a verdict per run."""

from __future__ import annotations

from pathlib import Path

from ragrec.results import LOCK_FILE, read_lock

MAIN_PACKAGES = (
    "torch",
    "transformers",
    "peft",
    "accelerate",
    "torch-geometric",
    "scikit-learn",
    "numpy",
    "pandas",
    "papermill",
    "jupyter-book",
)
"""The packages the reproduce page's environment table shows first (every pin is in a dropdown)."""
ENVIRONMENT_PAGE = "reproduce.md"


def lock_verdict(steps: dict[str, dict]) -> tuple[bool, str]:
    """Whether every step (``{step: entry}`` of ``provenance.json``) of one dataset's run had the
    lock's versions installed, and a line saying so or naming each step's drift (its ``lock``)."""
    drifted = [
        f"{step}: "
        + (
            "; ".join(s["lock"])
            if isinstance(s.get("lock"), list)
            else str(s.get("lock", "not recorded (a run from before the lock)"))
        )
        for step, s in steps.items()
        if s.get("lock") != "match"
    ]
    if not steps:
        return False, "no provenance recorded"
    if not drifted:
        return True, f"all {len(steps)} steps ran with exactly the locked versions"
    return False, f"{len(drifted)} of {len(steps)} steps differ from the lock: " + " | ".join(drifted)


def environment_section(pins: dict[str, str], runs: dict[str, dict[str, dict]]) -> str:
    """The reproduce page's "Pinned environment" section: the lock's main pins beside what each
    dataset's run had installed (its last step's record), a verdict per run (a warning on drift),
    and every pin of the lock in a dropdown."""
    lines = [
        "",
        "## The pinned environment",
        "",
        (
            f"`requirements/cpu.lock` pins {len(pins)} packages. The versions each run had installed, "
            "as its `provenance.json` records them:"
        ),
        "",
    ]
    datasets = list(runs)
    installed = {d: ([*runs[d].values()][-1].get("packages", {}) if runs[d] else {}) for d in datasets}
    header = ["package", "locked", *(f"installed ({d})" for d in datasets)]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in [p for p in MAIN_PACKAGES if p in pins]:
        lines.append(
            "| " + " | ".join([name, pins[name], *(installed[d].get(name) or "—" for d in datasets)]) + " |"
        )
    for dataset in datasets:
        ok, verdict = lock_verdict(runs[dataset])
        kind = "note" if ok else "warning"
        lines += [
            "",
            f":::{{{kind}}} {dataset}: {'matches the lock' if ok else 'differs from the lock'}",
            verdict,
            ":::",
        ]
    lines += [
        "",
        ":::{dropdown} Every locked package",
        "",
        "| package | version |",
        "|---|---|",
        *[f"| {name} | {version} |" for name, version in sorted(pins.items())],
        ":::",
    ]
    return "\n".join(lines) + "\n"


def write_environment(staging: Path, runs: dict[str, dict[str, dict]], lock: Path = LOCK_FILE) -> None:
    """Append :func:`environment_section` to the reproduce page (nothing without a lock file)."""
    page = staging / ENVIRONMENT_PAGE
    if page.exists() and lock.is_file():
        page.write_text(page.read_text().rstrip("\n") + "\n" + environment_section(read_lock(lock), runs))
