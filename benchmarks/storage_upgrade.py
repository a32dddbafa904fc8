"""`db upgrade` on an existing Bindu agent schema: how long it takes, and how long Bindu's own
writes to the agent's tasks wait meanwhile (adding the nullable columns is instant; building
ix_tasks_prompt_id reads the whole table under a lock that blocks inserts).

    .venv/bin/python -m benchmarks.storage_upgrade [--tasks N]
"""

from __future__ import annotations

import argparse
import threading
import time
import uuid

import sqlalchemy as sa

from benchmarks._common import percentile, scratch_postgres_database, write_results
from bindu_runtime import layout, make_engine, upgrade
from tests.storage.bindu_tables import create_did_schema

DID = "did:bindu:bench_at_example_com:upgrade-bot:" + str(uuid.UUID(int=12))


def fill(engine: sa.Engine, tasks: int) -> None:
    t, c = layout.qualified_table(engine, DID, "tasks"), layout.qualified_table(engine, DID, "contexts")
    with engine.begin() as connection:
        connection.exec_driver_sql(f"INSERT INTO {c} (id) SELECT md5('c' || g)::uuid FROM generate_series(1, {tasks}) g")
        connection.exec_driver_sql(
            f"INSERT INTO {t} (id, context_id, kind, state, state_timestamp, history, created_at, updated_at) "
            f"SELECT md5('t' || g)::uuid, md5('c' || g)::uuid, 'task', 'completed', now(), "
            """jsonb_build_array(jsonb_build_object('kind', 'message', 'role', 'user', 'parts',
                   jsonb_build_array(jsonb_build_object('kind', 'text', 'text', 'question ' || g)))),
               now() - g * interval '1 second', now() """
            f"FROM generate_series(1, {tasks}) g"
        )
        connection.exec_driver_sql(f"ANALYZE {t}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=500_000)
    args = parser.parse_args()
    with scratch_postgres_database("bench_upgrade") as url:
        engine = make_engine(url)
        create_did_schema(engine, DID)
        started = time.perf_counter()
        fill(engine, args.tasks)
        fill_s = time.perf_counter() - started

        # Bindu's writes during the upgrade: one new task per loop, as a server would insert them.
        waits: list[float] = []
        stop = threading.Event()
        writer = make_engine(url)
        t, c = layout.qualified_table(writer, DID, "tasks"), layout.qualified_table(writer, DID, "contexts")

        def bindu_writes() -> None:
            while not stop.is_set():
                task, context = uuid.uuid4(), uuid.uuid4()
                began = time.perf_counter()
                with writer.begin() as connection:
                    connection.execute(sa.text(f"INSERT INTO {c} (id) VALUES (:c)"), {"c": str(context)})
                    connection.execute(sa.text(
                        f"INSERT INTO {t} (id, context_id, kind, state, state_timestamp, history) "
                        "VALUES (:t, :c, 'task', 'submitted', now(), '[]')"), {"t": str(task), "c": str(context)})
                waits.append(time.perf_counter() - began)
                time.sleep(0.005)

        thread = threading.Thread(target=bindu_writes)
        thread.start()
        time.sleep(0.5)
        before = len(waits)
        started = time.perf_counter()
        changes = upgrade(engine, agent_id=DID)
        upgrade_s = time.perf_counter() - started
        after = len(waits)
        time.sleep(0.5)
        stop.set()
        thread.join()
        # An insert blocked by the upgrade finishes just after it: include the first one after.
        during = sorted(waits[before:after + 1])
        started = time.perf_counter()
        again = upgrade(engine, agent_id=DID)
        again_s = time.perf_counter() - started
        writer.dispose()
        engine.dispose()
    schema = layout.sanitize_did_for_schema(DID)
    changes = [change.replace(f"schema {schema}: ", "") for change in changes]
    body = (
        f"schema {schema}\n"
        f"tasks in the agent's schema: {args.tasks:,} (filled in {fill_s:.1f} s)\n"
        f"first upgrade (--agent): {upgrade_s:.2f} s; changes: {'; '.join(changes)}\n"
        f"second upgrade: {again_s:.3f} s, changes: {again or 'none'}\n"
        f"Bindu inserts during the first upgrade: {len(during)}, "
        f"median {percentile(during, 0.5) * 1000:.1f} ms, max {(during[-1] if during else float('nan')) * 1000:.0f} ms\n"
    )
    print(body)
    write_results("storage_upgrade", body)


if __name__ == "__main__":
    main()
