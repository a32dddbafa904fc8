"""The storage layout: Bindu's schema-naming rule, and every statement naming the agent's schema.

The expected schema names were produced by running bindu 2026.36.7's own
``bindu.utils.schema_manager.sanitize_did_for_schema`` on these DIDs; they are literals here so the
test needs no ``bindu`` install."""

from __future__ import annotations

import hashlib

import pytest
import sqlalchemy as sa

from bindu_runtime import layout, make_engine

BINDU_SCHEMA_NAMES = {
    # Bindu's documented example and the one in its docstring.
    "did:bindu:acme:support-bot:1234": "did_bindu_acme_support_bot_1234",
    "did:bindu:alice:agent1:abc123": "did_bindu_alice_agent1_abc123",
    # Real-shaped DIDs (author with @ and ., a uuid) are longer than 63 characters: cut and hashed.
    "did:bindu:Alice_at_Example_com:Support Bot:0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0":
        "did_bindu_alice_at_example_com_support_bot_0f1e2d3c_4b_8a867bd2",
    "did:bindu:gaurika_at_getbindu_com:echo_agent:5c3b6d2a-6b1f-5d0e-9c8f-2a1b3c4d5e6f":
        "did_bindu_gaurika_at_getbindu_com_echo_agent_5c3b6d2a__c3799a0d",
    "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK": "did_key_z6mkhaxgbzdvotdkl5257faiztigic2qtklgpbnnegta2dok",
    # A leading digit gets the prefix, and the hash is of the prefixed name.
    "123-agent": "schema_123_agent",
    "9" * 70: "schema_99999999999999999999999999999999999999999999999_302e61f4",
    # Exactly 63 characters stays; 64 is cut.
    "did:bindu:" + "x" * 53: "did_bindu_" + "x" * 53,
    "did:bindu:" + "x" * 54: "did_bindu_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx_d2473c50",
    # Lowercase comes before the replacement: non-ASCII letters become "_", but the Kelvin sign
    # lowercases to an ASCII "k" and the dotted capital I to "i" + a combining dot ("_").
    "DID:BINDU:ÄÖÜ:straße:Ω": "did_bindu_____stra_e__",
    "did:bindu:\u212a:kelvin": "did_bindu_k_kelvin",
    "did:bindu:\u0130stanbul:agent": "did_bindu_i_stanbul_agent",
    "did:bindu:acme.corp:Bot@Home:1": "did_bindu_acme_corp_bot_home_1",
    "_already_ok": "_already_ok",
}


@pytest.mark.parametrize(("did", "schema"), sorted(BINDU_SCHEMA_NAMES.items()))
def test_schema_names_match_bindus_own_function(did, schema):
    assert layout.sanitize_did_for_schema(did) == schema
    assert len(schema) <= 63


def test_long_names_keep_54_characters_and_the_hash_of_the_whole_name():
    did = "did:bindu:" + "a" * 100
    full = "did_bindu_" + "a" * 100
    assert layout.sanitize_did_for_schema(did) == full[:54] + "_" + hashlib.sha256(full.encode()).hexdigest()[:8]
    # Two DIDs that share the first 54 characters still get two schemas.
    assert layout.sanitize_did_for_schema(did) != layout.sanitize_did_for_schema(did + "b")


def test_agent_schema_per_dialect():
    assert layout.is_did("did:bindu:a:b:1") and not layout.is_did("support-bot")
    assert layout.agent_schema("did:bindu:acme:support-bot:1234", "postgresql") == "did_bindu_acme_support_bot_1234"
    assert layout.agent_schema("support-bot", "postgresql") == "public"
    assert layout.agent_schema("did:bindu:acme:support-bot:1234", "sqlite") is None


def test_shared_schema_comes_from_the_urls_startup_search_path():
    assert layout.shared_schema_of_url("postgresql+psycopg2://u@h/db") == "public"
    assert layout.shared_schema_of_url("postgresql+psycopg2://u@h/db?options=-csearch_path%3Dt_1") == "t_1"
    assert layout.shared_schema_of_url('postgresql+psycopg2://u@h/db?options=-c%20search_path%3D%22$user%22,%22Tenant%22') == "Tenant"


def test_sqlite_statements_stay_unqualified(sqlite_url):
    engine = make_engine(sqlite_url)
    assert layout.for_agent(engine, "did:bindu:a:b:1") is engine
    assert layout.qualified_table(engine, "did:bindu:a:b:1", "tasks") == "tasks"
    engine.dispose()


@pytest.mark.postgres
def test_postgres_qualified_names_are_quoted(postgres_server_url):
    engine = make_engine(postgres_server_url)
    did = "did:bindu:acme:support-bot:1234"
    assert layout.qualified_table(engine, did, "tasks") == '"did_bindu_acme_support_bot_1234"."tasks"'
    assert layout.qualified_table(engine.dialect, "support-bot", "agent_prompts") == '"public"."agent_prompts"'
    assert layout.for_agent(engine, did).get_execution_options()["schema_translate_map"] == {None: "did_bindu_acme_support_bot_1234"}
    engine.dispose()


@pytest.mark.postgres
def test_statements_reach_the_did_schema_with_no_search_path(postgres_server_url):
    """A table of the same name in public is never what a DID agent's statement reads."""
    engine = make_engine(postgres_server_url)
    did = "did:bindu:layout:probe:1"
    schema = layout.sanitize_did_for_schema(did)
    with engine.begin() as connection:
        connection.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        connection.exec_driver_sql(f'CREATE TABLE "{schema}".layout_probe (v text)')
        connection.exec_driver_sql(f"INSERT INTO \"{schema}\".layout_probe VALUES ('did')")
        connection.exec_driver_sql("CREATE TABLE public.layout_probe (v text)")
        connection.exec_driver_sql("INSERT INTO public.layout_probe VALUES ('public')")
    probe = sa.Table("layout_probe", sa.MetaData(), sa.Column("v", sa.Text()))
    with layout.for_agent(engine, did).connect() as connection:
        assert connection.execute(sa.select(probe.c.v)).scalar_one() == "did"
        assert connection.execute(sa.text(f"SELECT v FROM {layout.qualified_table(connection, did, 'layout_probe')}")).scalar_one() == "did"
    with layout.for_agent(engine, "legacy-agent").connect() as connection:
        assert connection.execute(sa.select(probe.c.v)).scalar_one() == "public"
    with engine.begin() as connection:
        connection.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        connection.exec_driver_sql("DROP TABLE public.layout_probe")
    engine.dispose()
