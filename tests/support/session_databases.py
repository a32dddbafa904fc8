"""The databases test sessions create on the PostgreSQL server, named so that one left behind by a
killed session (its teardown never ran) is recognised and dropped by a later session.

A name carries the machine and the process that created it: ``bindu_test_<host>_<pid>_<random>``.
A later session on the same machine drops only such databases whose process no longer exists:
never another machine's, never a running session's.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import uuid

import sqlalchemy as sa

PREFIX = "bindu_test_"


def _host_tag() -> str:
    return hashlib.blake2b(socket.gethostname().encode(), digest_size=4).hexdigest()


def session_database_name(pid: int | None = None) -> str:
    return f"{PREFIX}{_host_tag()}_{pid if pid is not None else os.getpid()}_{uuid.uuid4().hex[:8]}"


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


def drop_abandoned_session_databases(admin: sa.Connection) -> list[str]:
    """Drop this machine's session databases whose creating process is gone; returns their names.
    ``admin`` must be in autocommit mode (DROP DATABASE cannot run in a transaction)."""
    mine = re.compile(rf"{PREFIX}{_host_tag()}_(\d+)_[0-9a-f]+")
    names = admin.execute(
        sa.text("SELECT datname FROM pg_database WHERE starts_with(datname, :prefix)"), {"prefix": f"{PREFIX}{_host_tag()}_"}
    ).scalars().all()
    dropped = []
    for name in names:
        match = mine.fullmatch(name)
        if match and not _process_exists(int(match.group(1))):
            try:
                admin.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            except sa.exc.DBAPIError:  # another session starting now is dropping it
                continue
            dropped.append(name)
    return dropped
