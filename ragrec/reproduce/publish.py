"""Publishing the built book: a ``gh-pages`` branch (``make publish``) and a one-file archive
(``make book-archive``).

``publish`` pushes ``book/_build/html`` to the ``gh-pages`` branch of a remote with ``ghp-import``
(``-n``: a ``.nojekyll`` file, so GitHub Pages serves Sphinx's ``_static/`` folders; ``-f``: the
branch holds one build, no history of old ones). ``archive`` zips the same folder, under one
top folder, beside the build: a reader without a server unpacks it and opens ``index.html``.
Both refuse a build that is missing or names a path of this machine (DESIGN: published outputs
hold none).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from ragrec.errors import ConfigError, RagrecError
from ragrec.reproduce.published import names_machine_path
from ragrec.reproduce.tasks import PROJECT_DIR

BOOK_HTML = PROJECT_DIR / "book" / "_build" / "html"
PAGES_BRANCH = "gh-pages"
TEXT_SUFFIXES = {".html", ".js", ".css", ".txt", ".json", ".ipynb", ".csv", ".md", ".xml", ".svg"}


class PublishFailed(RagrecError):
    """``ghp-import`` could not make or push the branch."""


def check_site(html: Path) -> list[Path]:
    """The built site's files; ConfigError when there is none or a text file names a machine path."""
    html = Path(html)
    if not (html / "index.html").is_file():
        raise ConfigError(f"no built book at {html} (no index.html): build it first with `make book`")
    files = sorted(p for p in html.rglob("*") if p.is_file())
    leaking = [
        p for p in files if p.suffix in TEXT_SUFFIXES and names_machine_path(p.read_text(errors="replace"))
    ]
    if leaking:
        raise ConfigError(
            f"{leaking[0]} (and {len(leaking) - 1} more) names a path of this machine; rebuild the book "
            "with `make book` (it makes paths relative) before publishing"
        )
    return files


def ghp_import_command() -> str:
    beside = Path(sys.executable).parent / "ghp-import"
    found = str(beside) if beside.exists() else shutil.which("ghp-import")
    if found is None:
        raise ConfigError("ghp-import is not installed; run `make install` (it is pinned in the lock)")
    return found


def publish(
    html: Path = BOOK_HTML,
    *,
    remote: str = "origin",
    branch: str = PAGES_BRANCH,
    repo: Path = PROJECT_DIR,
    message: str = "book",
) -> None:
    """Put ``html`` on ``branch`` of the git repository ``repo`` and push it to ``remote``."""
    check_site(html)
    command = [ghp_import_command(), "-n", "-f", "-p", "-r", remote, "-b", branch, "-m", message, str(html)]
    result = subprocess.run(command, cwd=repo, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        said = (result.stderr or result.stdout).strip().splitlines()
        raise PublishFailed(
            f"ghp-import could not push {branch} to {remote!r} (exit {result.returncode}"
            f"{': ' + said[-1] if said else ''}); check the remote (`git remote -v`) and your push rights"
        )
    print(f"published {html} to branch {branch} of {remote}", flush=True)


def archive(html: Path = BOOK_HTML, target: Path | None = None, *, name: str = "ragrec-book") -> Path:
    """Zip the built site as ``<name>/...`` into ``target`` (default ``<build>/<name>.zip``,
    beside the HTML folder), written under a temporary name and renamed into place."""
    files = check_site(html)
    target = Path(target) if target is not None else Path(html).parent / f"{name}.zip"
    partial = target.with_name(f".{target.name}.partial")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in files:
            zf.write(path, f"{name}/{path.relative_to(html).as_posix()}")
    partial.replace(target)
    print(f"book archive: {target} ({len(files)} files; unzip it and open {name}/index.html)", flush=True)
    return target


def add_commands(sub) -> None:
    """The ``publish`` and ``archive`` subcommands of ``python -m ragrec.reproduce``."""
    p = sub.add_parser("publish", help="push the built book to the gh-pages branch of a remote")
    p.add_argument("--html", default=str(BOOK_HTML), help="the built book (default book/_build/html)")
    p.add_argument("--remote", default="origin", help="the git remote to push to (default origin)")
    p.add_argument("--branch", default=PAGES_BRANCH, help=f"the branch (default {PAGES_BRANCH})")
    a = sub.add_parser("archive", help="zip the built book into one file beside it")
    a.add_argument("--html", default=str(BOOK_HTML), help="the built book (default book/_build/html)")
    a.add_argument("--profile", default=None, help="named in the archive: ragrec-book-<profile>.zip")


def command(args: argparse.Namespace) -> None:
    if args.command == "publish":
        publish(Path(args.html), remote=args.remote, branch=args.branch, message="book (make publish)")
    else:
        archive(Path(args.html), name=f"ragrec-book-{args.profile}" if args.profile else "ragrec-book")
