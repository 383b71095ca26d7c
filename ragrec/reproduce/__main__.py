"""``python -m ragrec.reproduce``: the command line behind ``make reproduce``, ``make notebook``,
``make book`` and ``make status`` (see :mod:`ragrec.reproduce.runner`).

Exit status: 0 done (datasets of the profile whose data is absent are listed, not fatal);
1 a notebook failed; 2 refused before any notebook ran (an unknown name, a dataset asked for by
name whose data is absent, an unwritable results folder, another run holding the results folder,
a flag the profile ignores, an unreadable results file), the book refused stale results or its
build failed, or publishing failed.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from ragrec.config import DEVICE_ENV, MODEL_ENV, PROFILES
from ragrec.errors import ConfigError, RagrecError
from ragrec.experiments.recommender.launched import LAUNCH_ENV
from ragrec.reproduce import publish, runner
from ragrec.reproduce.book import build_book
from ragrec.reproduce.fresh import leftovers, run_fresh, up_to_date_summary
from ragrec.reproduce.lock import describe, held, holder
from ragrec.reproduce.runner import run, status
from ragrec.reproduce.tasks import PROJECT_DIR, SPECS, NotebookFailed
from ragrec.results import results_base

# --------------------------------------------------------------------------------------------
# command line


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ragrec.reproduce",
        description=runner.__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n")[1],
    )
    sub = p.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--profile", default="cpu", help=f"one of {', '.join(PROFILES)} (default cpu)")
    common.add_argument("--results", default=None, help="results root (default $RAGREC_RESULTS or results/)")
    r = sub.add_parser("run", parents=[common], help="execute notebooks into results/<profile>/<dataset>/")
    r.add_argument(
        "--dataset", action="append", help="a dataset (repeatable; default: the profile's datasets)"
    )
    r.add_argument("--notebook", action="append", help=f"a notebook (repeatable): {', '.join(SPECS)}")
    r.add_argument("--force", action="store_true", help="rerun even when up to date")
    r.add_argument(
        "--fresh",
        action="store_true",
        help="re-execute every notebook from empty into a fresh folder, swapped in only when all succeed",
    )
    r.add_argument(
        "--model", default=None, help=f"gpu profile: a local Llama-family HF folder (sets ${MODEL_ENV})"
    )
    r.add_argument(
        "--device",
        default=None,
        help=f"gpu profile: cuda (default) or cpu for a dry run (sets ${DEVICE_ENV})",
    )
    r.add_argument(
        "--launch",
        default=None,
        help=f"run the recommender's training and scoring data-parallel under this launcher, e.g. "
        f"'accelerate launch --multi_gpu --num_processes 8' (sets ${LAUNCH_ENV})",
    )
    r.add_argument("--seed", type=int, default=None, help="override the profile's seed")
    r.add_argument(
        "--wait",
        action="store_true",
        help="when another run holds the profile's results folder, wait for it instead of refusing",
    )
    r.add_argument(
        "--quiet",
        action="store_true",
        help="do not stream the notebooks' output (progress bars, logs) to the terminal",
    )
    b = sub.add_parser("book", parents=[common], help="build the Jupyter Book from existing results")
    b.add_argument(
        "--output", default=str(PROJECT_DIR / "book"), help="the book's build goes to OUTPUT/_build/html"
    )
    b.add_argument(
        "--allow-stale",
        action="store_true",
        help="build even when results are stale or damaged (each affected page says so)",
    )
    sub.add_parser("status", parents=[common], help="which notebooks are up to date")
    publish.add_commands(sub)
    return p


def _blank(value: str | None) -> str | None:
    return value if value else None  # `make notebook DATASET=` passes an empty string


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "run":
            _run(args)
        elif args.command == "book":
            build_book(
                args.profile,
                results_root=_blank(args.results),
                output=Path(args.output),
                allow_stale=args.allow_stale,
            )
        elif args.command == "status":
            _status(args)
        else:
            publish.command(args)
    except NotebookFailed as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        return 1
    except RagrecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _status(args: argparse.Namespace) -> None:
    results = _blank(args.results)
    for name, dataset, state in status(args.profile, results_root=results):
        print(f"{name:<12} {dataset:<20} {state}")
    folder = results_base(results) / args.profile
    if held(folder):
        print(f"a run is in progress ({describe(holder(folder))}): these states change as it goes")
    for left in leftovers(results):
        print(f"left behind by a failed or killed FRESH=1 run: {left}/ (inspect it, then `make clean`)")


def _refuse_ignored_flags(args: argparse.Namespace) -> None:
    """--model and --device only reach the gpu profile's model: elsewhere they would do nothing."""
    given = [f"--{flag} {value}" for flag in ("model", "device") if (value := _blank(getattr(args, flag)))]
    if given and args.profile != "gpu":
        raise ConfigError(
            f"{' and '.join(given)}: only the gpu profile takes a model and device (profile "
            f"{args.profile!r} runs its own model on the CPU); drop {'them' if len(given) > 1 else 'it'} "
            "or add --profile gpu"
        )


def _run(args: argparse.Namespace) -> None:
    _refuse_ignored_flags(args)
    # The notebooks' kernels inherit the environment: that is how the model reaches them.
    for name, value in (
        (MODEL_ENV, _blank(args.model)),
        (DEVICE_ENV, _blank(args.device)),
        (LAUNCH_ENV, _blank(args.launch)),
    ):
        if value is not None:
            os.environ[name] = value
    datasets = [d for d in args.dataset or [] if d] or None
    notebooks = [n for n in args.notebook or [] if n] or None
    options = {
        "seed": args.seed,
        "results_root": _blank(args.results),
        "log_output": not args.quiet,
        "wait": args.wait,
    }
    if args.fresh:
        if notebooks:
            raise ConfigError(
                "--fresh re-executes every notebook of the profile; drop --notebook (or use --force)"
            )
        run_fresh(args.profile, datasets, **options)
        return
    report = run(args.profile, datasets, notebooks, force=args.force, **options)
    for line in up_to_date_summary(report, args.profile, _blank(args.results)):
        print(line)


if __name__ == "__main__":
    sys.exit(main())
