"""`bindu-dspy demo …`: the embedded demo (SQLite, offline model)."""

from __future__ import annotations

import argparse
import json

from bindu_pipelines.demo.seed import seed_demo_data
from bindu_runtime import make_engine, upgrade
from bindu_runtime.config import normalize_database_url, redact_url


def register(subparsers) -> None:
    demo = subparsers.add_parser("demo", help="the embedded demo")
    commands = demo.add_subparsers(dest="demo_command", required=True, metavar="DEMO_COMMAND")
    seed = commands.add_parser("seed", help="write deterministic Bindu-shaped demo data")
    seed.add_argument("--agents", type=_positive_int, default=3, help="number of demo agents (default 3)")
    seed.add_argument("--tasks", type=_non_negative_int, default=200, help="tasks per agent (default 200)")
    seed.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    seed.add_argument("--database-url", help="default: the embedded demo database $DAGSTER_HOME/bindu.sqlite")
    seed.add_argument("--json", action="store_true")
    seed.set_defaults(func=run_seed)

    run = commands.add_parser("run", help="the whole loop: data, training through Dagster, live traffic, canary")
    run.add_argument("--agents", type=_positive_int, default=2, help="demo agents (default 2)")
    run.add_argument("--tasks", type=_non_negative_int, default=200, help="history tasks per agent (default 200)")
    run.add_argument("--seed", type=int, default=7)
    run.add_argument("--optimizer", choices=("simba", "gepa", "miprov2"), default="simba")
    run.add_argument("--max-steps", type=_positive_int, default=4, help="SIMBA steps (default 4)")
    run.add_argument("--requests-per-hour", type=_positive_int, default=80, help="simulated requests per agent and hour")
    run.add_argument("--hours", type=_positive_int, default=48, help="simulated hours of live traffic, ending now (default 48)")
    run.add_argument("--reset", action="store_true", help="start over on a fresh demo database (deletes the SQLite demo file)")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    run.add_argument("--database-url", help="default: the embedded demo database $DAGSTER_HOME/bindu.sqlite")
    run.set_defaults(func=run_demo)


def _whole_number(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected at least {minimum}, got {value}")
    return value


def _positive_int(text: str) -> int:
    return _whole_number(text, 1)


def _non_negative_int(text: str) -> int:
    return _whole_number(text, 0)


def _demo_url(url: str | None) -> str:
    from bindu_pipelines.demo.run import demo_database_url

    return normalize_database_url(url) if url else demo_database_url()


def run_seed(args) -> int:
    url = _demo_url(args.database_url)
    engine = make_engine(url)
    try:
        upgrade(engine)
        summary = seed_demo_data(engine, agents=args.agents, tasks_per_agent=args.tasks, seed=args.seed)
    finally:
        engine.dispose()
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(
            f"seeded {redact_url(url)}: {summary['tasks']} tasks, {summary['feedback_rows']} feedback rows "
            f"({summary['malformed_tasks']} malformed tasks, {summary['malformed_feedback_rows']} malformed feedback rows) "
            f"for {', '.join(summary['agents'])}"
            + (f"; already seeded: {', '.join(summary['already_seeded'])}" if summary["already_seeded"] else "")
        )
    return 0


def run_demo(args) -> int:
    from bindu_pipelines.cli import visible_stderr
    from bindu_pipelines.demo.run import run_demo as run_whole_demo

    def say(text: str) -> None:
        print(text, flush=True)

    run_whole_demo(
        agents=args.agents, tasks_per_agent=args.tasks, seed=args.seed, optimizer=args.optimizer,
        max_steps=args.max_steps, requests_per_hour=args.requests_per_hour, hours=args.hours,
        database_url=_demo_url(args.database_url), reset=args.reset, progress=not args.no_progress,
        progress_file=visible_stderr(), say=say,
    )  # fmt: skip
    return 0
