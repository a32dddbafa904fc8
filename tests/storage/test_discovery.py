"""Agents are discovered across schemas: the discovery sensor, the partitions guard and the
canary's agent list all read PromptStore.list_agents, which looks in every namespace."""

from __future__ import annotations

import uuid

import dagster as dg
import pytest

from bindu_pipelines.golden_dataset.sensors import agent_discovery_sensor
from bindu_pipelines.partitions import agent_partitions
from bindu_pipelines.resources import BinduDatabase
from bindu_runtime import PromptStore, make_engine, upgrade
from bindu_runtime import layout
from tests.storage.bindu_tables import create_bindu_tables, create_did_schema

pytestmark = pytest.mark.postgres


def test_the_discovery_sensor_finds_agents_in_every_schema(postgres_url):
    engine = make_engine(postgres_url)
    suffix = uuid.uuid4().hex[:8]
    bootstrapped = f"did:bindu:acme:bootstrapped:{suffix}"
    registered = f"did:bindu:ops.team_at_example-company.com:registered-before-any-prompt:{uuid.uuid4()}"
    schemas = [create_did_schema(engine, did) for did in (bootstrapped, registered)]
    create_bindu_tables(engine, layout.shared_schema(engine))  # a legacy single-tenant agent too
    try:
        upgrade(engine)
        upgrade(engine, agent_id=registered)
        PromptStore(engine).bootstrap(bootstrapped, "a prompt")
        PromptStore(engine).bootstrap("legacy-bot", "a prompt in the shared schema")
        with dg.instance_for_test() as instance:
            resources = {"bindu_db": BinduDatabase(url=postgres_url)}
            with dg.build_sensor_context(instance=instance, resources=resources) as context:
                result = agent_discovery_sensor(context)
                (request,) = result.dynamic_partitions_requests
                assert {bootstrapped, registered, "legacy-bot"} <= set(request.partition_keys)
                instance.add_dynamic_partitions(agent_partitions.name, list(request.partition_keys))
                assert isinstance(agent_discovery_sensor(context), dg.SkipReason)
    finally:
        with engine.begin() as connection:
            for schema in schemas:
                connection.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        engine.dispose()
