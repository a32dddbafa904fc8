"""Bindu's per-DID schemas: `db upgrade` finds them and adds only our column, index and tables;
prompts, events and their invariants live in the agent's schema; two agents never see each other.

Each test's shared namespace is a fresh schema (the fixtures' search_path option, which layout reads
once and then names explicitly); the DID schemas are created in the session database as a Bindu
agent creates them, with DIDs unique to the test, and dropped afterwards."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from bindu_runtime import PromptStore, layout, make_engine, upgrade
from bindu_runtime.errors import InvariantViolation
from bindu_runtime.schema import agent_prompts, prompt_events
from tests.storage.bindu_tables import create_did_schema

pytestmark = pytest.mark.postgres

REPO = Path(__file__).resolve().parents[2]


def unique_did(name: str = "support-bot", *, long: bool = False) -> str:
    """A Bindu-shaped DID; ``long`` makes one whose schema name is cut and hashed."""
    author = "ops.team@example-company.com" if long else "acme"
    return f"did:bindu:{author}:{name}:{uuid.uuid4()}" if long else f"did:bindu:{author}:{name}:{uuid.uuid4().hex[:12]}"


@pytest.fixture
def engine(postgres_url):
    """An engine whose shared namespace is a fresh schema; DID schemas made through
    ``engine.did_schema(did)`` are dropped at the end."""
    engine = make_engine(postgres_url)
    created: list[str] = []

    def did_schema(did: str, **kwargs) -> str:
        schema = layout.sanitize_did_for_schema(did)
        created.append(schema)
        return create_did_schema(engine, did, **kwargs)

    engine.did_schema = did_schema
    yield engine
    with engine.begin() as connection:
        for schema in created:
            connection.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    engine.dispose()


def structure(engine: sa.Engine, schema: str) -> dict:
    """Columns (name, type, nullable, default), indexes, foreign keys and checks of every table."""
    inspector = sa.inspect(engine)
    result = {}
    for table in inspector.get_table_names(schema=schema):
        result[table] = {
            "columns": sorted((c["name"], str(c["type"]), c["nullable"], str(c.get("default"))) for c in inspector.get_columns(table, schema=schema)),
            "indexes": sorted((i["name"], tuple(i["column_names"]), bool(i["unique"])) for i in inspector.get_indexes(table, schema=schema)),
            "foreign_keys": sorted(str(fk) for fk in inspector.get_foreign_keys(table, schema=schema)),
            "pk": inspector.get_pk_constraint(table, schema=schema)["constrained_columns"],
        }
    return result


def test_upgrade_finds_every_did_schema_and_adds_only_our_column_index_and_tables(engine):
    short, long = unique_did(), unique_did(long=True)
    schemas = [engine.did_schema(short), engine.did_schema(long)]
    assert len(schemas[1]) == 63 and schemas[1] != schemas[1][:54]  # hashed
    before = {schema: structure(engine, schema) for schema in schemas}

    changes = upgrade(engine)

    for schema in schemas:
        after = structure(engine, schema)
        assert set(after) == set(before[schema]) | {"agent_prompts", "prompt_events", "registered_agents"}
        for table in ("contexts", "task_feedback", "webhook_configs"):
            assert after[table] == before[schema][table], table
        old, new = before[schema]["tasks"], after["tasks"]
        assert [c for c in new["columns"] if c[0] not in ("prompt_id", "prompt_unit")] == old["columns"]
        assert {c[0]: (c[1], c[2]) for c in new["columns"] if c[0] in ("prompt_id", "prompt_unit")} == {
            "prompt_id": ("VARCHAR(64)", True), "prompt_unit": ("VARCHAR(64)", True)}
        assert set(new["indexes"]) - set(old["indexes"]) == {("ix_tasks_prompt_id", ("prompt_id", "created_at"), False)}
        assert (new["foreign_keys"], new["pk"]) == (old["foreign_keys"], old["pk"])
        assert f"schema {schema}: added column tasks.prompt_id" in changes
        # The trigger functions live beside the tables they guard.
        with engine.connect() as connection:
            functions = set(connection.execute(sa.text(
                "SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = :s"
            ), {"s": schema}).scalars())
        assert functions == {"bindu_check_agent_traffic", "bindu_prompt_events_append_only"}
    # The shared namespace holds no Bindu tables: nothing was created there.
    assert sa.inspect(engine).get_table_names(schema=layout.shared_schema(engine)) == []
    assert upgrade(engine) == []


def test_upgrade_of_one_agent_records_it_so_discovery_finds_it_before_its_first_prompt(engine):
    did, unnamed = unique_did("history-only"), unique_did("never-named")
    engine.did_schema(did)
    engine.did_schema(unnamed)
    changes = upgrade(engine, agent_id=did)
    schema = layout.sanitize_did_for_schema(did)
    assert f"schema {schema}: registered agent {did}" in changes
    # Only the named agent's schema was upgraded.
    assert "agent_prompts" not in sa.inspect(engine).get_table_names(schema=layout.sanitize_did_for_schema(unnamed))
    assert upgrade(engine, agent_id=did) == []
    store = PromptStore(engine)
    assert did in store.list_agents()
    # A schema name cannot be turned back into its DID: an upgraded schema without prompts or a
    # record stays out of the list until its router bootstraps.
    upgrade(engine)
    assert unnamed not in store.list_agents()
    PromptStore(engine).bootstrap(unnamed, "the code prompt")
    assert {did, unnamed} <= set(store.list_agents())


def test_an_agent_whose_schema_does_not_exist_gets_one_line_naming_it(engine, postgres_url, tmp_path):
    did = unique_did("typo")
    schema = layout.sanitize_did_for_schema(did)
    with pytest.raises(layout.SchemaNotFound, match=f"no schema '{schema}'"):
        upgrade(engine, agent_id=did)
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    env.pop("BINDU_DATABASE_URL", None)
    result = subprocess.run(
        [sys.executable, "-m", "bindu_pipelines.cli", "db", "upgrade", "--agent", did, "--database-url", postgres_url],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"no schema '{schema}'" in lines[0] and did in lines[0], result.stderr
    assert not sa.inspect(engine).has_schema(schema)


def test_a_did_schema_without_task_feedback_is_refused_and_left_alone(engine):
    did = unique_did("old-bindu")
    schema = engine.did_schema(did, with_feedback=False)
    before = structure(engine, schema)
    with pytest.raises(layout.NotABinduSchema, match="no task_feedback"):
        upgrade(engine, agent_id=did)
    with pytest.raises(layout.NotABinduSchema, match=schema):
        upgrade(engine)  # found by discovery too, and named
    assert structure(engine, schema) == before


def test_concurrent_upgrades_create_everything_once(engine, postgres_url):
    dids = [unique_did(f"bot-{n}") for n in range(3)]
    for did in dids:
        engine.did_schema(did)
    engines = [make_engine(postgres_url) for _ in range(3)]
    results: list = []
    barrier = threading.Barrier(len(engines))

    def run(other: sa.Engine) -> None:
        barrier.wait()
        try:
            results.append(upgrade(other))
        except Exception as exc:  # noqa: BLE001 - reported below
            results.append(exc)

    threads = [threading.Thread(target=run, args=(other,)) for other in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for other in engines:
        other.dispose()
    assert not [r for r in results if isinstance(r, Exception)], results
    created = [change for result in results for change in result if "created table agent_prompts" in change]
    assert sorted(created) == sorted(f"schema {layout.sanitize_did_for_schema(did)}: created table agent_prompts" for did in dids)


def test_prompt_state_lives_in_each_agents_schema_and_never_crosses(engine):
    first, second = unique_did("first"), unique_did("second", long=True)
    for did in (first, second):
        engine.did_schema(did)
    upgrade(engine)
    store = PromptStore(engine)
    active = store.bootstrap(first, "first's prompt")
    candidate = store.start_experiment(first, "first's candidate", source="test", candidate_traffic="0.1")
    store.bootstrap(second, "second's prompt")
    store.step_traffic(first, candidate_id=candidate.id, expected_traffic="0.1", new_traffic="0.25")

    def rows(did: str, table: str) -> list:
        with layout.for_agent(engine, did).connect() as connection:
            return connection.execute(sa.select(table.c.agent_id, table.c.prompt_text if table is agent_prompts else table.c.event)).all()

    assert {agent for agent, _ in rows(first, agent_prompts)} == {first}
    assert {agent for agent, _ in rows(second, agent_prompts)} == {second}
    assert {agent for agent, _ in rows(first, prompt_events)} == {first}
    assert [event for _, event in rows(second, prompt_events)] == ["bootstrap"]
    assert sa.inspect(engine).get_table_names(schema=layout.shared_schema(engine)) == []
    # Calls that name only a prompt find it in its agent's schema, bound or not.
    assert store.get_prompt(candidate.id).agent_id == first
    assert PromptStore(engine, agent_id=second).get_prompt(candidate.id) is None
    state = store.update_prompt_traffic(candidate.id, "0.5")
    assert state.candidate.traffic == state.active.traffic
    store.update_prompt_status(candidate.id, "active")
    assert store.get_active_prompt(first).id == candidate.id
    assert store.get_prompt(active.id).status == "deprecated"
    assert store.get_active_prompt(second).prompt_text == "second's prompt"
    assert [p.agent_id for p in store.list_prompts(second)] == [second]


def test_the_databases_invariants_hold_in_a_did_schema(engine):
    did = unique_did("guarded")
    engine.did_schema(did)
    upgrade(engine)
    store = PromptStore(engine)
    store.bootstrap(did, "guarded prompt")
    scoped = layout.for_agent(engine, did)
    with pytest.raises(sa.exc.IntegrityError, match="traffic is 0.5000, must be 1"):
        with scoped.begin() as connection:
            connection.execute(agent_prompts.update().values(traffic=0.5))
    with pytest.raises(sa.exc.DBAPIError, match="append-only"):
        with scoped.begin() as connection:
            connection.execute(prompt_events.delete())
    with pytest.raises(InvariantViolation):
        store.start_experiment(did, "all of it", source="test", candidate_traffic=1)
    assert store.get_active_prompt(did).traffic == 1


def test_the_prompt_index_is_built_concurrently_and_a_half_built_one_is_rebuilt(engine):
    did = unique_did("big-history")
    schema = engine.did_schema(did)
    upgrade(engine, agent_id=did)

    def index_state() -> list:
        with engine.connect() as connection:
            return connection.execute(sa.text(
                "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = :s AND c.relname = 'ix_tasks_prompt_id'"
            ), {"s": schema}).scalars().all()

    assert index_state() == [True]
    # What a CREATE INDEX CONCURRENTLY interrupted half-way leaves behind: an invalid index.
    with engine.begin() as connection:
        connection.execute(sa.text(
            "UPDATE pg_index SET indisvalid = false WHERE indexrelid = "
            "(SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            " WHERE n.nspname = :s AND c.relname = 'ix_tasks_prompt_id')"), {"s": schema})
    assert index_state() == [False]
    assert upgrade(engine, agent_id=did) == [f"schema {schema}: created index ix_tasks_prompt_id"]
    assert index_state() == [True]
    assert upgrade(engine, agent_id=did) == []
