"""`bindu-dspy`: the command line of the project (DESIGN §7).

Each subcommand lives in its own module with a ``register(subparsers)`` function. Every command
exits non-zero with a one-line reason on bad input or a failed run.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

import sqlalchemy.exc

from bindu_runtime import BinduError

COMMAND_MODULES = ("db", "demo", "status", "train", "canary", "simulate")


class CommandFailed(Exception):
    """A command ran but did not achieve what it was asked; the message is the one-line reason."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bindu-dspy",
        description="Self-improving system prompts for Bindu agents (golden dataset, DSPy, canary).",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="log progress and Dagster output")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"bindu_pipelines.cli.{name}").register(subparsers)
    return parser


def one_line_reason(exc: BaseException) -> str:
    if isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.orig is not None:
        # The DBAPI's own message, without SQLAlchemy's statement and parameters.
        detail = str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else type(exc.orig).__name__
        return f"database error: {detail}"
    if isinstance(exc, sqlalchemy.exc.SQLAlchemyError):
        return f"database error: {type(exc).__name__}"
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for name, value in vars(args).items():
        # CPython's argparse turns "--opt=--" into [] without calling the option's type (no option
        # here takes a list): refuse it as the usage error it is instead of crashing later.
        if isinstance(value, list) and not value:
            parser.error(f"argument --{name.replace('_', '-')}: expected one argument")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        # DSPy's optimizers log at INFO and draw a progress bar per evaluation; commands print their
        # outcome instead. Our own progress bars (the demo's) ask for display explicitly.
        os.environ.setdefault("TQDM_DISABLE", "1")
        logging.getLogger("dspy").setLevel(logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except (BinduError, CommandFailed, LookupError, ValueError, sqlalchemy.exc.SQLAlchemyError, OSError) as exc:
        print(f"bindu-dspy {args.command}: {one_line_reason(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"bindu-dspy {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
