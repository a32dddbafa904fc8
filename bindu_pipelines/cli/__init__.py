"""`bindu-dspy`: the command line of the project (DESIGN §7), fit for cron and for people.

Each subcommand lives in its own module with a ``register(subparsers)`` function. What every
subcommand gets from here, without doing anything:

* ``-v`` / ``--verbose`` before or after the subcommand. Without it the terminal shows only the
  command's outcome: no Dagster banner, log line or traceback, no DSPy log or progress bar (those
  go to the run's logs in the Dagster instance, visible in the UI). With it they go to stderr too.
* One line on every failure — the cause and the next step — and the exit code: 0 done, 1 failed,
  2 usage (a bad option, refused before any run starts).
* ``DAGSTER_HOME``: when unset, ``~/.bindu-dspy/dagster_home`` (``DEFAULT_DAGSTER_HOME``), with the
  project's ``dagster.yaml`` (telemetry off) copied in on first use, so a cron line needs nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import re
import shutil
import sys
import traceback
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import sqlalchemy.exc

from bindu_pipelines.errors import CommandFailed, UsageError
from bindu_runtime import BinduError

COMMAND_MODULES = ("db", "demo", "status", "train", "canary", "simulate", "report", "runs")
EXIT_DONE, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

DEFAULT_DAGSTER_HOME = Path("~/.bindu-dspy/dagster_home")
# The instance configuration shipped with the project (telemetry off, run monitoring, limits).
SHIPPED_DAGSTER_YAML = Path(__file__).resolve().parents[2] / "dagster_home" / "dagster.yaml"
# Libraries whose log records are the run's business, not the terminal's.
LIBRARY_LOGGERS = ("dagster", "dspy", "LiteLLM", "litellm", "httpx", "optuna", "alembic")


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (with where to look) and exit code 2."""

    def error(self, message: str):  # noqa: D401 - argparse's signature
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _add_verbose_everywhere(parser: argparse.ArgumentParser) -> None:
    """``-v`` accepted after any subcommand, at any depth (``bindu-dspy db upgrade -v``)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for subparser in action.choices.values():
                if not any("--verbose" in a.option_strings for a in subparser._actions):
                    subparser.add_argument(
                        "--verbose", "-v", action="store_true", default=argparse.SUPPRESS,
                        help="show Dagster and DSPy logs and tracebacks on the terminal",
                    )  # fmt: skip
                _add_verbose_everywhere(subparser)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(
        prog="bindu-dspy",
        description="Self-improving system prompts for Bindu agents (golden dataset, DSPy, canary).",
        epilog="Exit codes: 0 done, 1 failed, 2 usage. DAGSTER_HOME defaults to ~/.bindu-dspy/dagster_home.",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="show Dagster and DSPy logs and tracebacks")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"bindu_pipelines.cli.{name}").register(subparsers)
    _add_verbose_everywhere(parser)
    return parser


# --------------------------------------------------------------------------- the Dagster instance


def prepare_dagster_home() -> Path:
    """``DAGSTER_HOME`` (default ``~/.bindu-dspy/dagster_home``), created with our dagster.yaml if
    it has none, and exported for Dagster. Returns the directory."""
    home = Path(os.environ.get("DAGSTER_HOME") or DEFAULT_DAGSTER_HOME).expanduser().resolve()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        if SHIPPED_DAGSTER_YAML.exists():
            shutil.copyfile(SHIPPED_DAGSTER_YAML, config)
        else:  # an installed wheel without the source tree: at least never ask about telemetry
            config.write_text("telemetry:\n  enabled: false\n")
    os.environ["DAGSTER_HOME"] = str(home)
    return home


# --------------------------------------------------------------------------- one-line reasons

_MISSING_TABLE = re.compile(r'no such table: (?:\w+\.)?(\w+)|relation "(?:[^"]+\.)?([^"]+)" does not exist')


def explain(text: str) -> str:
    """Add the next step to a reason whose cause we recognise (a missing table → ``db upgrade``)."""
    found = _MISSING_TABLE.search(text)
    if found:
        table = found.group(1) or found.group(2)
        return f"the database has no table {table}: run bindu-dspy db upgrade (with the same database URL) first"
    return text


def one_line_reason(exc: BaseException) -> str:
    if isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.orig is not None:
        # The DBAPI's own message, without SQLAlchemy's statement and parameters.
        detail = str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else type(exc.orig).__name__
        return explain(f"database error: {detail}")
    if isinstance(exc, sqlalchemy.exc.SQLAlchemyError):
        return f"database error: {type(exc).__name__}"
    text = str(exc).strip().splitlines()
    return explain(text[0] if text else type(exc).__name__)


# --------------------------------------------------------------------------- the quiet terminal


@contextlib.contextmanager
def terminal(verbose: bool) -> Iterator[None]:
    """Without ``verbose``, library output never reaches the terminal: Python warnings are
    ignored, library loggers stay off the console, and writes to stderr during the command (the
    Dagster console logger, progress bars drawn by DSPy) are dropped — the run's own logs keep
    them. Commands write their outcome to stdout; progress bars a command wants shown go to
    ``visible_stderr()``."""
    if verbose:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
        yield
        return
    os.environ.setdefault("TQDM_DISABLE", "1")
    with open(os.devnull, "w") as sink, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # Records still reach the handlers Dagster attaches to capture them in the run's logs;
        # only the console handlers are silenced (those created later bind to the sink).
        logging.basicConfig(level=logging.WARNING, handlers=[logging.NullHandler()], force=True)
        patched = []
        for logger in [logging.getLogger(), *map(logging.getLogger, LIBRARY_LOGGERS)]:
            for handler in logger.handlers:
                if isinstance(handler, logging.StreamHandler) and handler.stream in _terminal_streams():
                    patched.append((handler, handler.setStream(sink)))
        try:
            with contextlib.redirect_stderr(sink):
                yield
        finally:
            for handler, stream in patched:
                handler.setStream(stream)


def _terminal_streams() -> tuple:
    return tuple(s for s in (sys.stderr, sys.stdout, sys.__stderr__, sys.__stdout__) if s is not None)


def visible_stderr():
    """The terminal's stderr, even inside ``terminal(verbose=False)`` (for our own progress bars)."""
    return sys.__stderr__ or sys.stderr


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for name, value in vars(args).items():
        # CPython's argparse turns "--opt=--" into [] without calling the option's type (no option
        # here takes a list): refuse it as the usage error it is instead of crashing later.
        if isinstance(value, list) and not value:
            parser.error(f"argument --{name.replace('_', '-')}: expected one argument")
    verbose = bool(getattr(args, "verbose", False))
    command = f"bindu-dspy {args.command}"
    try:
        prepare_dagster_home()
        with terminal(verbose):
            return int(args.func(args) or 0)
    except UsageError as exc:
        print(f"{command}: {one_line_reason(exc)} (see {command} --help)", file=sys.stderr)
        return EXIT_USAGE
    except (BinduError, CommandFailed, LookupError, ValueError, sqlalchemy.exc.SQLAlchemyError, OSError) as exc:
        if verbose:
            traceback.print_exc()
        print(f"{command}: {one_line_reason(exc)}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(f"{command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: still one line, the traceback with -v
        if verbose:
            traceback.print_exc()
        print(f"{command}: unexpected {type(exc).__name__}: {one_line_reason(exc)} (run with -v for the traceback)", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
