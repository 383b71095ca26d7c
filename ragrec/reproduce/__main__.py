"""``python -m ragrec.reproduce``: the command line behind ``make reproduce``, ``make notebook``,
``make book`` and ``make status`` (see :mod:`ragrec.reproduce.runner`).

Exit status: 0 done (datasets of the profile whose data is absent are listed, not fatal);
1 a notebook failed; 2 refused before any notebook ran (an unknown name, a dataset asked for by
name whose data is absent, an unwritable results folder) or the book build failed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ragrec.config import PROFILES
from ragrec.errors import RagrecError
from ragrec.reproduce import runner
from ragrec.reproduce.book import build_book
from ragrec.reproduce.runner import run, status
from ragrec.reproduce.tasks import PROJECT_DIR, SPECS, NotebookFailed

# --------------------------------------------------------------------------------------------
# command line


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ragrec.reproduce", description=runner.__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n")[1])
    sub = p.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--profile", default="cpu", help=f"one of {', '.join(PROFILES)} (default cpu)")
    common.add_argument("--results", default=None, help="results root (default $RAGREC_RESULTS or results/)")
    r = sub.add_parser("run", parents=[common], help="execute notebooks into results/<profile>/<dataset>/")
    r.add_argument("--dataset", action="append", help="a dataset (repeatable; default: the profile's datasets)")
    r.add_argument("--notebook", action="append", help=f"a notebook (repeatable): {', '.join(SPECS)}")
    r.add_argument("--force", action="store_true", help="rerun even when up to date")
    r.add_argument("--seed", type=int, default=None, help="override the profile's seed")
    r.add_argument("--quiet", action="store_true", help="do not stream the notebooks' output (progress bars, logs) to the terminal")
    b = sub.add_parser("book", parents=[common], help="build the Jupyter Book from existing results")
    b.add_argument("--output", default=str(PROJECT_DIR / "book"), help="the book's build goes to OUTPUT/_build/html")
    sub.add_parser("status", parents=[common], help="which notebooks are up to date")
    return p


def _blank(value: str | None) -> str | None:
    return value if value else None  # `make notebook DATASET=` passes an empty string


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "run":
            run(args.profile, [d for d in args.dataset or [] if d] or None, [n for n in args.notebook or [] if n] or None,
                force=args.force, seed=args.seed, results_root=_blank(args.results), log_output=not args.quiet)
        elif args.command == "book":
            build_book(args.profile, results_root=_blank(args.results), output=Path(args.output))
        else:
            for name, dataset, state in status(args.profile, results_root=_blank(args.results)):
                print(f"{name:<12} {dataset:<20} {state}")
    except NotebookFailed as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        return 1
    except RagrecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
