"""`bindu-dspy db upgrade`: create or migrate the tables (idempotent)."""

from __future__ import annotations

from bindu_runtime import make_engine, upgrade
from bindu_runtime.config import redact_url, resolve_database_url


def register(subparsers) -> None:
    db = subparsers.add_parser("db", help="database schema")
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="DB_COMMAND")
    up = db_commands.add_parser("upgrade", help="create or migrate the tables; safe to repeat")
    up.add_argument("--database-url", help="default: BINDU_DATABASE_URL, STORAGE__POSTGRES_URL, dagster_home/bindu.sqlite")
    up.set_defaults(func=run_upgrade)


def run_upgrade(args) -> int:
    url = resolve_database_url(args.database_url)
    engine = make_engine(url)
    try:
        changes = upgrade(engine)
    finally:
        engine.dispose()
    print(f"database {redact_url(url)}: " + ("; ".join(changes) if changes else "up to date"))
    return 0
