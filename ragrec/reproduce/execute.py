"""Executing one notebook task with papermill: on this interpreter's own kernel, into a temporary
file renamed into place only on success; a failure names the notebook, the cell and the error."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from ragrec.reproduce.tasks import KERNEL_NAME, PROJECT_DIR, NotebookFailed, Task

# --------------------------------------------------------------------------------------------
# execution


def ensure_kernel() -> str:
    """Install the :data:`KERNEL_NAME` kernel spec for this interpreter into ``sys.prefix``
    unless one pointing at this interpreter is already there; returns its name."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec(KERNEL_NAME)
        if spec.argv and Path(spec.argv[0]) == Path(sys.executable):
            return KERNEL_NAME
    except NoSuchKernel:
        pass
    from ipykernel.kernelspec import install

    install(
        kernel_name=KERNEL_NAME, display_name=f"Python (ragrec, {Path(sys.prefix).name})", prefix=sys.prefix
    )
    return KERNEL_NAME


_PAPERMILL_TAGS = {"injected-parameters", "papermill-error-cell-tag"}


def _failing_cell(path: Path, exec_count: int | None) -> tuple[int | None, str]:
    """(index in the *source* notebook, first line) of the cell that ran as ``In [exec_count]``
    in a failed papermill output (papermill's injected and error cells do not count)."""
    try:
        import nbformat

        index = 0
        for cell in nbformat.read(path, as_version=4).cells:
            if _PAPERMILL_TAGS & set(cell.get("metadata", {}).get("tags", [])):
                continue
            if cell.cell_type == "code" and cell.get("execution_count") == exec_count:
                lines = cell.source.strip().splitlines()
                return index, lines[0][:100] if lines else ""
            index += 1
    except Exception:  # the summary is a courtesy; never mask the real failure
        pass
    return None, ""


def execute(task: Task, *, kernel: str, log_output: bool = False, progress_bar: bool = True) -> float:
    """Run one notebook with papermill; returns its wall seconds.

    Raises:
        NotebookFailed: the notebook raised; the partial execution is kept as
            ``<name>.failed.ipynb`` and the previous ``<name>.ipynb`` (if any) is untouched.
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    task.out_dir.mkdir(parents=True, exist_ok=True)
    running = task.out_dir / f".{task.spec.name}.running.ipynb"
    failed = task.out_dir / f"{task.spec.name}.failed.ipynb"
    started = time.perf_counter()
    try:
        papermill.execute_notebook(
            str(task.source),
            str(running),
            parameters=task.parameters,
            kernel_name=kernel,
            progress_bar=progress_bar,
            log_output=log_output,
            cwd=str(Path.cwd()),
        )
    except PapermillExecutionError as exc:
        os.replace(running, failed)
        index, first_line = _failing_cell(failed, exc.exec_count)
        where = f"cell {index} of {task.source.name}" if index is not None else f"cell In [{exc.exec_count}]"
        raise NotebookFailed(
            f"notebook {task.spec.name!r} ({task.profile}/{task.dataset}) failed in {where} "
            f"(In [{exc.exec_count}]{': ' + first_line if first_line else ''}):\n"
            f"  {exc.ename}: {exc.evalue}\n"
            f"The partial run is {failed}; earlier results in {task.out_dir} are intact. "
            "Fix the cause and rerun: finished notebooks are skipped."
        ) from None
    # what gets published names no machine path: the recorded paths become repository-relative
    import nbformat

    from ragrec.reproduce.published import scrub_notebook

    nbformat.write(
        scrub_notebook(nbformat.read(running, as_version=4), root=PROJECT_DIR, output_path=task.output),
        running,
    )
    os.replace(running, task.output)
    if failed.exists():
        failed.unlink()
    return time.perf_counter() - started


def stream_papermill_log() -> None:
    """Show papermill's cell output log on stderr, and slow the kernels' tqdm bars down to one
    line every 10 s so a long training step reads as a log, not a flood."""
    import logging

    log = logging.getLogger("papermill")
    if not any(getattr(h, "_ragrec", False) for h in log.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("    %(message)s"))
        handler._ragrec = True  # type: ignore[attr-defined]
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
    os.environ.setdefault("TQDM_MININTERVAL", "10")
