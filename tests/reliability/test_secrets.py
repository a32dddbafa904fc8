"""Secrets never leak: a canary API key (BINDU_LM_API_KEY, sent to a local OpenAI-compatible stub)
and the password of a PostgreSQL role created for the test (in BINDU_DATABASE_URL) are searched in
every output of successful and failed runs: captured logs and stdout/stderr, every Dagster event
of every run (messages, metadata, failures with stack traces), run config and tags, prompt_events
rows, agent_prompts.details, exception strings, CLI output. Plus the PII scrubber's coverage with
real-looking samples not already in tests/golden_dataset/test_pii.py.
"""

from __future__ import annotations

import contextlib
import io
import json
import secrets as random_secrets
from collections import Counter

import dagster as dg
import pytest
import sqlalchemy as sa

from bindu_pipelines.canary.assets import traffic_decision
from bindu_pipelines.golden_dataset.pii import find_pii, scrub_pii
from bindu_pipelines.optimization.lm import LanguageModel
from bindu_pipelines.partitions import agent_partitions
from bindu_pipelines.resources import BinduDatabase
from bindu_runtime import PromptStore, make_engine, upgrade
from bindu_runtime.schema import agent_prompts, prompt_events
from tests.optimization.conftest import ACTIVE_PROMPT
from tests.optimization.golden_frames import golden_frame
from tests.optimization.openai_stub import OpenAIStub
from tests.reliability.pipeline_helpers import materialize_training, run_texts, step_failures


@pytest.fixture
def secret_role_url(postgres_url):
    """A login role with a random password, owning nothing; dropped at the end."""
    url = sa.make_url(postgres_url)
    role, password = f"bindu_secret_{random_secrets.token_hex(4)}", f"pw-{random_secrets.token_hex(12)}"
    schema = url.query["options"].split("search_path=")[1]
    admin = make_engine(postgres_url)
    upgrade(admin)
    with admin.begin() as connection:
        connection.exec_driver_sql(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        connection.exec_driver_sql(f'GRANT USAGE ON SCHEMA "{schema}" TO {role}')
        connection.exec_driver_sql(f'GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA "{schema}" TO {role}')
        connection.exec_driver_sql(f'GRANT USAGE ON ALL SEQUENCES IN SCHEMA "{schema}" TO {role}')
    yield url.set(username=role, password=password).render_as_string(hide_password=False), password, admin
    with admin.begin() as connection:
        connection.exec_driver_sql(f"DROP OWNED BY {role}")
        connection.exec_driver_sql(f"DROP ROLE {role}")
    admin.dispose()


@pytest.mark.postgres
@pytest.mark.timeout(120)
def test_api_key_and_database_password_appear_in_no_output(secret_role_url, monkeypatch, caplog, capsys):
    url, password, admin = secret_role_url
    api_key = f"sk-canary-{random_secrets.token_hex(16)}"
    monkeypatch.setenv("BINDU_LM_API_KEY", api_key)
    monkeypatch.setenv("BINDU_DATABASE_URL", url)  # the deployment path: no URL in run config
    caplog.set_level("DEBUG")
    agent = "secret-bot"
    PromptStore(admin).bootstrap(agent, ACTIVE_PROMPT)
    outputs: dict[str, str] = {}
    with OpenAIStub() as stub, dg.DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions(agent_partitions.name, [agent])
        model = LanguageModel(model="openai/stub", api_base=stub.api_base, retries=0, num_threads=1)
        trained = materialize_training(None, instance, agent, golden_frame(), language_model=model)
        assert trained.success, step_failures(trained)
        assert stub.requests[0]["headers"]["authorization"] == f"Bearer {api_key}"  # the key was really used
        canary = dg.materialize([traffic_decision], partition_key=agent, instance=instance,
                                resources={"bindu_db": BinduDatabase()}, raise_on_error=False)
        assert canary.success, step_failures(canary)
        # Failed runs: the model refuses (500), and the database refuses the role's password.
        stub.mode = "error"
        PromptStore(admin).bootstrap(agent + "-x", ACTIVE_PROMPT)
        instance.add_dynamic_partitions(agent_partitions.name, [agent + "-x"])
        failed_model = materialize_training(None, instance, agent + "-x", golden_frame(), language_model=model)
        monkeypatch.setenv("BINDU_DATABASE_URL", sa.make_url(url).set(port=1).render_as_string(hide_password=False))
        failed_db = dg.materialize([traffic_decision], partition_key=agent, instance=instance,
                                   resources={"bindu_db": BinduDatabase(connect_timeout=2)}, raise_on_error=False)
        assert not failed_db.success and not failed_model.success
        runs = instance.get_runs()
        assert len(runs) == 4
        for run in runs:
            outputs[f"run {run.run_id[:8]} ({run.status.value})"] = run_texts(instance, run.run_id)
        outputs["failure reasons"] = json.dumps(step_failures(failed_db) + step_failures(failed_model))
    # Exceptions raised directly to callers (the runtime and the CLI's paths).
    bad_url = sa.make_url(url).set(port=1).render_as_string(hide_password=False)
    try:
        PromptStore(make_engine(bad_url, connect_timeout=2)).list_agents()
    except sa.exc.OperationalError as exc:
        outputs["runtime exception"] = f"{exc!s} {exc!r} {exc.orig!s}"
    from bindu_pipelines.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        codes = [main(["status", "--agent", agent, "--database-url", url, "--json"]),
                 main(["status", "--agent", agent, "--database-url", bad_url])]
    assert codes == [0, 1]
    outputs["cli"] = out.getvalue() + err.getvalue()
    with admin.connect() as connection:
        outputs["prompt_events"] = json.dumps([dict(r) for r in connection.execute(sa.select(prompt_events)).mappings()], default=str)
        outputs["agent_prompts.details"] = json.dumps(
            [r.details for r in connection.execute(sa.select(agent_prompts.c.details))], default=str)
    captured = capsys.readouterr()
    outputs["logs"] = caplog.text
    outputs["stdout/stderr"] = captured.out + captured.err
    # The searched outputs are the real ones: the candidate's audit row and its details (with the model's address).
    assert "offline_gate" in outputs["prompt_events"] and stub.api_base in outputs["agent_prompts.details"]
    leaks = [(name, secret) for name, text in outputs.items() for secret in (api_key, password) if secret in text]
    searched = sum(len(text) for text in outputs.values())
    print(f"\nSECRETS outputs_searched={len(outputs)} chars_searched={searched} runs={len(runs)} "
          f"failed_runs=2 leaks={len(leaks)}")
    assert leaks == []


PII_SAMPLES = [
    ("mail maria.garcia@empresa.es now", "email"),
    ("cc: o'brien@sub.example.ie", "email"),
    ("call +49 30 1234 5678 in Berlin", "phone"),
    ("Paris +33 1 42 68 53 00", "phone"),
    ("Mumbai +91 98765 43210", "phone"),
    ("Tokyo +81-3-1234-5678", "phone"),
    ("São Paulo +55 11 91234-5678", "phone"),
    ("visa 4111-1111-1111-1111 exp 12/29", "card_number"),
    ("mastercard 5555 5555 5555 4444", "card_number"),
    ("mc 2223 0031 2200 3222", "card_number"),
    ("amex 3782 822463 10005", "card_number"),
    ("amex 3714-496353-98431", "card_number"),
    ("sk-ant-api03-" + "AbC1dE2fG3hI4jK5lM6nO7pQ8rS9tU0vW1xY2z" + " anthropic", "api_key"),
    ("openai sk-proj-" + "x1Y2z3" * 8, "api_key"),
    ("aws ASIAY34FZKBOKMUTVV7A temporary", "api_key"),
    ("gho_" + "16C7e42F292c6912E7710c838347Ae178B4a" + " oauth", "api_key"),
    ("slack xoxb-" + "123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx", "api_key"),
    ("jwt eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U", "api_key"),
    ("Authorization: Bearer ya29.a0AfH6SMBx3kQ7zLr9Wq2", "api_key"),
]


@pytest.mark.parametrize(("text", "kind"), PII_SAMPLES, ids=[s[0][:24] for s in PII_SAMPLES])
def test_pii_scrubber_covers_real_looking_samples(text, kind):
    counts = Counter()
    scrubbed = scrub_pii(text, counts)
    assert counts[kind] >= 1 and find_pii(scrubbed) == []
    # The sensitive token itself (the longest run without spaces, digits of phones and cards joined) is gone.
    digits_only = "".join(c for c in scrubbed if c.isdigit())
    if kind in ("phone", "card_number"):
        sensitive = "".join(c for c in text if c.isdigit())
        assert sensitive[-6:] not in digits_only
    else:
        assert max(text.split(), key=len) not in scrubbed


@pytest.mark.parametrize("text", [
    "order #4111 1111 1111 1112 (fails Luhn)", "ISBN 978-3-16-148410-0", "on 2026-03-02 at 08:00:00",
    "version 10.4.3.2 build 20260302", "tracking 1Z999AA10123456784", "price € 1 234,56",
])
def test_pii_scrubber_leaves_look_alikes(text):
    assert scrub_pii(text) == text
