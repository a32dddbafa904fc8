"""`bindu-dspy demo …`: the embedded demo (SQLite, offline model)."""

from __future__ import annotations

import json

from bindu_pipelines.cli.status import render_status
from bindu_pipelines.demo.seed import seed_demo_data
from bindu_pipelines.status import agent_status
from bindu_runtime import make_engine, upgrade
from bindu_runtime.config import redact_url, resolve_database_url


def register(subparsers) -> None:
    demo = subparsers.add_parser("demo", help="the embedded demo")
    commands = demo.add_subparsers(dest="demo_command", required=True, metavar="DEMO_COMMAND")
    seed = commands.add_parser("seed", help="write deterministic Bindu-shaped demo data")
    seed.add_argument("--agents", type=_positive_int, default=3, help="number of demo agents (default 3)")
    seed.add_argument("--tasks", type=_non_negative_int, default=200, help="tasks per agent (default 200)")
    seed.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    seed.add_argument("--database-url", help="default: BINDU_DATABASE_URL, STORAGE__POSTGRES_URL, dagster_home/bindu.sqlite")
    seed.add_argument("--json", action="store_true")
    seed.set_defaults(func=run_seed)

    run = commands.add_parser("run", help="the whole demo: database, data, pipeline, canary")
    run.add_argument("--agents", type=_positive_int, default=2)
    run.add_argument("--tasks", type=_non_negative_int, default=200)
    run.add_argument("--seed", type=int, default=7)
    run.add_argument("--database-url")
    run.set_defaults(func=run_demo)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(f"expected a positive integer, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(f"expected a non-negative integer, got {text}")
    return value


def run_seed(args) -> int:
    url = resolve_database_url(args.database_url)
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
    url = resolve_database_url(args.database_url)
    engine = make_engine(url)
    try:
        upgrade(engine)
        summary = seed_demo_data(engine, agents=args.agents, tasks_per_agent=args.tasks, seed=args.seed)
        print(f"database {redact_url(url)}: {summary['tasks']} new demo tasks for {', '.join(summary['agents'])}")
        for agent_id in summary["agents"]:
            print(render_status(agent_status(engine, agent_id)))
    finally:
        engine.dispose()
    return 0
