"""`bindu-dspy db upgrade`: create or migrate the tables in every Bindu agent schema (idempotent)."""

from __future__ import annotations

from bindu_runtime import make_engine, upgrade
from bindu_runtime.config import redact_url, resolve_database_url


def register(subparsers) -> None:
    db = subparsers.add_parser("db", help="database schema")
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="DB_COMMAND")
    up = db_commands.add_parser(
        "upgrade",
        help="add prompt_id/prompt_unit and our tables to every Bindu agent schema; safe to repeat",
        description=(
            "Finds every Bindu agent schema in the database (did_… schemas holding Bindu's tasks, and "
            "public when it holds them) and adds tasks.prompt_id, tasks.prompt_unit, their index and the "
            "prompt tables there; nothing else of Bindu's changes. --agent upgrades one agent's schema "
            "and records its id, so the pipelines list it before its first prompt."
        ),
    )
    up.add_argument("--database-url", help="default: BINDU_DATABASE_URL, then STORAGE__POSTGRES_URL")
    up.add_argument("--agent", metavar="AGENT_ID", help="only this agent (its DID, or another id for public)")
    up.set_defaults(func=run_upgrade)


def run_upgrade(args) -> int:
    url = resolve_database_url(args.database_url)
    engine = make_engine(url)
    try:
        changes = upgrade(engine, agent_id=args.agent)
    finally:
        engine.dispose()
    target = f" (agent {args.agent})" if args.agent else ""
    print(f"database {redact_url(url)}{target}: " + ("; ".join(changes) if changes else "up to date"))
    return 0
