"""Fuzzing the inputs the pipelines take from outside: task histories, feedback rows, strategy
specs and the CLI's argv. Every generated case must end in a result or in the documented clean
rejection (a counted drop reason, a one-line ValueError, exit code 1 or 2 with a one-line reason),
never in a crash; and the stage reports must account for every row (rows in = rows out + drops).

``pytest tests/reliability/test_fuzz.py -q -s`` prints one FUZZ line per target and a total.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bindu_pipelines.golden_dataset import feedback as feedback_rules
from bindu_pipelines.golden_dataset import history as history_rules
from bindu_pipelines.golden_dataset import quality as quality_rules
from bindu_pipelines.golden_dataset.dataset import GoldenDatasetOptions, GoldenDatasetPipeline
from bindu_pipelines.golden_dataset.feedback import combine_task_feedback, normalize_feedback_data
from bindu_pipelines.golden_dataset.fetch import RawTask
from bindu_pipelines.golden_dataset.history import parse_history
from bindu_pipelines.golden_dataset.strategies import STRATEGIES, BaseExtractionStrategy, parse_strategy

pytestmark = pytest.mark.timeout(120)

CASES: Counter = Counter()  # generated cases per target, printed by the last test
CRASHES: Counter = Counter()  # exceptions that are not the documented rejection (each also fails its test)
REJECTIONS: Counter = Counter()  # documented rejections seen, by target and reason
FUZZ = settings(deadline=None, suppress_health_check=list(HealthCheck), database=None, derandomize=True)

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def _reasons(module) -> set[str]:
    return {value for name, value in vars(module).items() if name.isupper() and isinstance(value, str)}


TASK_DROP_REASONS = {history_rules.HISTORY_NOT_LIST, history_rules.MESSAGE_TOO_LONG, history_rules.NO_TEXT_MESSAGES,
                     history_rules.NO_COMPLETE_TURN}
MESSAGE_DROP_REASONS = {history_rules.MESSAGE_NOT_OBJECT, history_rules.MESSAGE_WITHOUT_ROLE,
                        history_rules.MESSAGE_UNKNOWN_ROLE, history_rules.MESSAGE_WITHOUT_PARTS, history_rules.MESSAGE_NO_TEXT}
FEEDBACK_DROP_REASONS = {feedback_rules.FEEDBACK_NOT_OBJECT, feedback_rules.INVALID_RATING, feedback_rules.INVALID_THUMBS,
                         feedback_rules.NO_RATING_OR_THUMBS, feedback_rules.SUPERSEDED}
QUALITY_DROP_REASONS = {quality_rules.NO_FEEDBACK, quality_rules.BELOW_THRESHOLD}
VALIDATE_DROP_REASONS = {quality_rules.INPUT_TOO_SHORT, quality_rules.OUTPUT_TOO_SHORT, quality_rules.INPUT_EQUALS_OUTPUT}
DEDUP_DROP_REASONS = {quality_rules.DUPLICATE_EXACT, quality_rules.DUPLICATE_NORMALIZED}

# ----------------------------------------------------------------------------------- generators

HOSTILE_TEXT = ["'; DROP TABLE tasks; --", "$(rm -rf /)", "`id`", '"quoted"', "a\x00b", "\u202eevil", "😀 emoji",
                "line\nbreak", "  ", "", "x" * 40, "ünïcödé", "\ud7ff", "{\"role\": \"user\"}"]
texts = st.one_of(st.sampled_from(HOSTILE_TEXT), st.text(max_size=20))
json_scalars = st.none() | st.booleans() | st.integers(-10**20, 10**20) | st.floats() | texts
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(texts, children, max_size=3),
    max_leaves=4,
)
roles = st.one_of(st.sampled_from(["user", "assistant", "agent", "system", "User ", " AGENT", "tool", "", "  "]), json_scalars)
parts = st.lists(
    st.one_of(
        st.fixed_dictionaries({"kind": st.sampled_from(["text", "file", "data", "TEXT"]), "text": st.one_of(texts, json_scalars)}),
        st.fixed_dictionaries({"text": texts}),
        json_values,
    ),
    max_size=3,
)
messages = st.one_of(
    st.fixed_dictionaries({"kind": st.just("message"), "role": roles, "parts": st.one_of(parts, json_scalars)}),
    st.fixed_dictionaries({"role": roles, "content": st.one_of(texts, json_scalars)}),
    st.fixed_dictionaries({"role": roles}),
    json_values,
)
histories = st.one_of(
    st.lists(messages, max_size=8),
    json_values,
    st.lists(messages, max_size=6).map(lambda items: __import__("json").dumps(items)),  # JSON text, as SQLite returns it
    st.sampled_from(["[", "not json", "{}", "null", b"[]", "[1, 2"]),
)
feedback_data = st.one_of(
    st.fixed_dictionaries({"rating": json_scalars}, optional={"thumbs_up": json_scalars, "feedback": texts}),
    st.fixed_dictionaries({"thumbs_up": json_scalars}),
    st.fixed_dictionaries({}, optional={"feedback": texts, "metadata": json_values}),
    st.sampled_from([{"rating": 5}, {"rating": "4"}, {"rating": 3.0}, {"thumbs_up": "YES"}, {"thumbs_up": "no"},
                     {"rating": "five"}, {"rating": 4.5}, {"rating": True}, {"thumbs_up": "maybe"}, '{"rating": 2}',
                     "{broken", '"just a string"', "[1]"]),
    json_values,
)
feedback_rows = st.lists(
    st.tuples(st.integers(1, 10**6), st.integers(0, 10_000).map(lambda m: T0 + timedelta(minutes=m)), feedback_data),
    max_size=5,
    unique_by=lambda row: row[0],
)


def _hostile_conversation(draw_text) -> list:
    return [{"kind": "message", "role": "user", "parts": [{"kind": "text", "text": draw_text}]},
            {"kind": "message", "role": "assistant", "parts": [{"kind": "text", "text": "reply to " + draw_text}]}]


tasks = st.builds(
    lambda task_id, history, rows: RawTask(str(task_id), None, "p-1", T0, history, rows),
    st.uuids(),
    st.one_of(histories, texts.map(_hostile_conversation)),
    feedback_rows,
)

# ------------------------------------------------------------------------------ history parsing


@settings(FUZZ, max_examples=1000)
@given(histories, st.integers(1, 60))
def test_history_parsing_accounts_for_every_message(history, max_chars):
    CASES["history"] += 1
    try:
        parsed = parse_history(history, max_message_chars=max_chars)
    except Exception:
        CRASHES["history"] += 1
        raise
    assert parsed.drop_reason in TASK_DROP_REASONS | {None}
    assert set(parsed.message_drops) <= MESSAGE_DROP_REASONS
    REJECTIONS.update(f"history.{reason}" for reason in [parsed.drop_reason] if reason)
    items = history_rules.decode_history(history)
    if items is None:
        assert parsed.drop_reason == history_rules.HISTORY_NOT_LIST and not parsed.message_drops
        return
    if parsed.drop_reason == history_rules.MESSAGE_TOO_LONG:
        assert parsed.messages == []
        return
    # Every item is a skipped message (counted), a system message (not a turn), or text that was kept.
    system = sum(1 for i in items if isinstance(i, dict) and isinstance(i.get("role"), str) and i["role"].strip().lower() == "system")
    kept = len(items) - sum(parsed.message_drops.values()) - system
    assert kept >= len(parsed.messages) >= (1 if kept else 0)
    assert (parsed.drop_reason == history_rules.NO_TEXT_MESSAGES) == (kept == 0)
    for message in parsed.messages:
        assert message["role"] in ("user", "assistant") and message["content"] == message["content"].strip() != ""


# ------------------------------------------------------------------------- feedback normalisation


@settings(FUZZ, max_examples=1000)
@given(feedback_rows)
def test_feedback_rows_are_each_scored_or_dropped_with_a_reason(rows):
    CASES["feedback"] += 1
    try:
        verdicts = [normalize_feedback_data(data) for _, _, data in rows]
        combined = combine_task_feedback(rows)
    except Exception:
        CRASHES["feedback"] += 1
        raise
    valid = [v for v in verdicts if v.invalid_reason is None]
    assert all(0.0 <= v.score <= 1.0 and v.feedback_type in ("rating", "thumbs") for v in valid)
    assert set(combined.drops) <= FEEDBACK_DROP_REASONS
    # rows in = 1 scored row (if any is valid) + drops by reason (invalid ones, superseded valid ones)
    assert len(rows) == (1 if valid else 0) + sum(combined.drops.values())
    assert combined.valid_rows == len(valid) and (combined.score is None) == (not valid)
    REJECTIONS.update({f"feedback.{reason}": count for reason, count in combined.drops.items()})


# ------------------------------------------------------------------------ strategy argument parsing

strategy_names = st.one_of(
    st.sampled_from([*STRATEGIES, "last_n_turns", "first_n_turns", "LAST_TURN", " last_n", "best_turn", "", "last_n "]),
    st.text(max_size=8),
)
strategy_args = st.one_of(
    st.sampled_from(["0", "1", "3", "-2", "10", "999999999999999999999", "1.5", "nan", "inf", "-inf", "0.3", "1e3",
                     "", " ", "٣", "0x10", "3 ", "jaccard", "overlap", "weighted", "cosine", "bullets",
                     "'; DROP TABLE tasks; --", "$(rm -rf /)", "`id`", "a\x00b", "🚀"]),
    st.integers(-5, 50).map(str),
    texts,
)
strategy_specs = st.builds(lambda name, args: ":".join([name, *args]), strategy_names, st.lists(strategy_args, max_size=4))
SAMPLE = [{"role": "user", "content": "how do I reset my password?"}, {"role": "assistant", "content": "Open settings."},
          {"role": "user", "content": "and my e-mail?"}, {"role": "assistant", "content": "Settings, then profile."}]


@settings(FUZZ, max_examples=1500)
@given(st.one_of(strategy_specs, st.sampled_from([None, 3, b"last_turn", ["last_turn"]])))
def test_strategy_specs_give_a_working_strategy_or_one_line_value_error(spec):
    CASES["strategy_spec"] += 1
    try:
        strategy = parse_strategy(spec)
    except ValueError as exc:
        message = str(exc)
        assert message and "\n" not in message and "Traceback" not in message
        REJECTIONS["strategy_spec.value_error"] += 1
        return
    except Exception:
        CRASHES["strategy_spec"] += 1
        raise
    assert isinstance(strategy, BaseExtractionStrategy)
    try:
        found = strategy.extract_all("task-1", SAMPLE, 1.0, "rating")
    except Exception:
        CRASHES["strategy_spec.extract"] += 1
        raise
    assert all(i.user_input and i.agent_output for i in found)


# ------------------------------------------------------------- whole pipeline: every row accounted for

pipeline_options = st.builds(
    GoldenDatasetOptions,
    strategy=st.sampled_from(["last_turn", "last_n:2", "sliding_window:1", "full_history", "key_turns:2", "summary_context:1:1"]),
    require_feedback=st.booleans(),
    min_feedback_threshold=st.sampled_from([0.0, 0.5, 1.0]),
    scrub_pii=st.booleans(),
    max_message_chars=st.sampled_from([5, 40, 20_000]),
    unicode_form=st.sampled_from(["NFC", "NFKC"]),
)


@settings(FUZZ, max_examples=250)
@given(st.lists(tasks, max_size=8), pipeline_options)
def test_every_task_feedback_row_and_interaction_is_kept_or_dropped_with_a_reason(batch, options):
    CASES["pipeline_batch"] += 1
    CASES["pipeline_task"] += len(batch)
    pipeline = GoldenDatasetPipeline(options)
    tasks_with_output = golden = 0
    try:
        for task in batch:
            # The stages one by one, as the Dagster assets call them.
            feedback = pipeline.normalize_feedback(task.feedback)
            interactions = pipeline.extract(task.id, task.history, feedback.score, feedback.feedback_type)
            tasks_with_output += bool(interactions)
            golden += sum(pipeline.finish(row) is not None for row in interactions)
    except Exception:
        CRASHES["pipeline"] += 1
        raise
    r = pipeline.reports
    for stage, report in r.items():
        REJECTIONS.update(f"{stage}.{reason}" for reason in report.drops.elements())
    assert r["feedback"].rows_in == sum(len(t.feedback) for t in batch)
    assert r["feedback"].rows_in == r["feedback"].rows_out + sum(r["feedback"].drops.values())
    assert set(r["feedback"].drops) <= FEEDBACK_DROP_REASONS
    assert r["extract"].rows_in == len(batch) == tasks_with_output + sum(r["extract"].drops.values())
    assert set(r["extract"].drops) <= TASK_DROP_REASONS
    assert r["quality"].rows_in == r["extract"].rows_out
    for stage, reasons in (("quality", QUALITY_DROP_REASONS), ("validate", VALIDATE_DROP_REASONS),
                           ("deduplicate", DEDUP_DROP_REASONS)):
        assert r[stage].rows_in == r[stage].rows_out + sum(r[stage].drops.values()), stage
        assert set(r[stage].drops) <= reasons, stage
    assert r["validate"].rows_in == r["quality"].rows_out and r["deduplicate"].rows_in == r["validate"].rows_out
    assert r["split"].rows_out == r["deduplicate"].rows_out == golden


# ------------------------------------------------------- mutation fuzz run over realistic demo rows
#
# Hypothesis builds inputs from grammars; this run starts from what Bindu really writes (the demo
# seeder's tasks and feedback, malformed ones included) and breaks them at random: keys deleted,
# values swapped for hostile scalars, roles and parts scrambled, JSON text truncated. Cheap enough
# for tens of thousands of cases, seeded so a failure replays.

MUTATION_TASKS = 6_000
MUTATION_SPECS = 3_000
HOSTILE_SCALARS = [None, True, 0, -1, 6, 4.5, 1e308, float("nan"), float("inf"), "", " ", "5", "five", "YES", "maybe",
                   *HOSTILE_TEXT, [], {}, [[]], {"kind": "text"}, "x" * 50_000]


def _mutate(value, rng, depth=0):
    """``value`` with one random structural change somewhere inside it (a new object; input untouched)."""
    import copy

    value = copy.deepcopy(value)
    if isinstance(value, (list, dict)) and value and depth < 6 and rng.random() < 0.7:
        key = rng.randrange(len(value)) if isinstance(value, list) else rng.choice(list(value))
        value[key] = _mutate(value[key], rng, depth + 1)
        return value
    choice = rng.randrange(6)
    if choice == 0 and isinstance(value, dict) and value:
        del value[rng.choice(list(value))]
        return value
    if choice == 1 and isinstance(value, list) and value:
        value.insert(rng.randrange(len(value) + 1), rng.choice(value))  # a message sent twice
        return value
    if choice == 2 and isinstance(value, (list, dict)):
        text = __import__("json").dumps(value, default=str)
        return text[: rng.randrange(len(text) + 1)]  # truncated JSON text
    if choice == 3 and isinstance(value, str):
        cut = rng.randrange(len(value) + 1)
        return value[:cut] + rng.choice(HOSTILE_TEXT) + value[cut:]
    return rng.choice(HOSTILE_SCALARS)


def test_mutation_fuzz_run_over_demo_rows_accounts_for_every_row():
    import random

    from bindu_pipelines.demo.catalog import AGENTS
    from bindu_pipelines.demo.seed import generate_agent_rows

    rng = random.Random(7)
    seeds = list(generate_agent_rows(AGENTS[0], "p-1", tasks_count=300, seed=7, now=T0))
    mutated_rows = 0
    for options in (GoldenDatasetOptions(), GoldenDatasetOptions(strategy="last_n:2", require_feedback=False),
                    GoldenDatasetOptions(strategy="full_history", min_feedback_threshold=0.5, unicode_form="NFKC", scrub_pii=False)):
        pipeline = GoldenDatasetPipeline(options)
        feedback_in = extracted_tasks = golden = 0
        for index in range(MUTATION_TASKS // 3):
            demo = rng.choice(seeds)
            history = _mutate(demo.task["history"], rng) if rng.random() < 0.8 else demo.task["history"]
            rows = [(row_id, row["created_at"], _mutate(row["feedback_data"], rng) if rng.random() < 0.5 else row["feedback_data"])
                    for row_id, row in enumerate(demo.feedback, start=index * 10)]
            if rng.random() < 0.2:
                # The aggregate as the database hands it over (JSON text), itself broken: decoded rows that
                # are not [id, created_at, data] triples cannot come from the SQL aggregate and are skipped.
                rows = __import__("json").dumps(_mutate(rows, rng), default=str)
            mutated_rows += 1
            CASES["mutation_task"] += 1
            try:
                feedback = pipeline.normalize_feedback(rows)
                interactions = pipeline.extract(str(uuid.uuid4()), history, feedback.score, feedback.feedback_type)
                golden += sum(pipeline.finish(row) is not None for row in interactions)
            except Exception:
                CRASHES["mutation_task"] += 1
                raise
            extracted_tasks += bool(interactions)
        r = pipeline.reports
        for stage, report in r.items():
            REJECTIONS.update(f"{stage}.{reason}" for reason in report.drops.elements())
        feedback_in = r["feedback"].rows_in
        assert feedback_in == r["feedback"].rows_out + sum(r["feedback"].drops.values())
        assert r["extract"].rows_in == MUTATION_TASKS // 3 == extracted_tasks + sum(r["extract"].drops.values())
        for stage in ("quality", "validate", "deduplicate"):
            assert r[stage].rows_in == r[stage].rows_out + sum(r[stage].drops.values()), stage
        assert r["quality"].rows_in == r["extract"].rows_out and r["split"].rows_out == golden
        assert set(r["extract"].drops) <= TASK_DROP_REASONS and set(r["feedback"].drops) <= FEEDBACK_DROP_REASONS
        assert r["extract"].drops and golden  # the run hit both sides: broken rows dropped, intact ones kept
    specs = ["last_turn", "last_n:3", "first_n:2", "full_history:500", "context_window:2:Be brief: really",
             "similarity:pip install:0.3:weighted", "key_turns:4:overlap", "sliding_window:3:2:1", "summary_context:4:1"]
    for _ in range(MUTATION_SPECS):
        spec = rng.choice(specs)
        for _ in range(rng.randint(1, 3)):
            cut = rng.randrange(len(spec) + 1)
            spec = spec[:cut] + rng.choice([":", "", "-", "0", "9" * 30, "nan", " ", "'", "\x00", "é", "::"]) + spec[cut + rng.randint(0, 2):]
        CASES["mutation_strategy_spec"] += 1
        try:
            strategy = parse_strategy(spec)
        except ValueError as exc:
            assert "\n" not in str(exc)
            REJECTIONS["strategy_spec.value_error"] += 1
            continue
        except Exception:
            CRASHES["mutation_strategy_spec"] += 1
            raise
        assert all(i.user_input and i.agent_output for i in strategy.extract_all("t", SAMPLE, 1.0, "rating"))
    assert mutated_rows == MUTATION_TASKS


# ------------------------------------------------------------------------------------------ the CLI

KNOWN_AGENTS = ["support-bot", "'; DROP TABLE tasks; --", "$(rm -rf /)", "`id`", "agent \"quoted\"", "ünï 😀"]
ODD_AGENTS = KNOWN_AGENTS + ["", " ", "nobody", "a\x00b", "-x", "--json", "x" * 300, "\n", "agent\nsecond line",
                             "%s", "{0}", "../../etc/passwd", "\\", "NULL"]
NUMBERS = ["0", "1", "-1", "0.5", "1.0", "2", "nan", "NaN", "inf", "-inf", "1e300", "1e-300", "", " ", "abc", "0x10",
           "٣", "3.", ".5", "1_000", "5e", "--", "$(rm -rf /)", "'; DROP TABLE x; --", "0.75", "50", "336"]
SMALL_INTS = ["1", "2", "5", "17", "0", "-3", "abc", "1.5", "", "٣", "1e2", "nan"]  # valid ones stay small


def _float_ok(text: str, low: float, high: float, *, open_low=False, open_high=False) -> bool:
    try:
        value = float(text)
    except ValueError:
        return False
    if not math.isfinite(value):
        return False
    return (value > low if open_low else value >= low) and (value < high if open_high else value <= high)


def _int_ok(text: str) -> bool:
    try:
        return int(text) >= 1
    except ValueError:
        return False


@pytest.fixture(scope="module")
def cli_env(tmp_path_factory):
    """An SQLite database with the known agents, a quiet DAGSTER_HOME, BINDU_DATABASE_URL pointing at it."""
    from bindu_runtime import PromptStore, make_engine, upgrade

    home = tmp_path_factory.mktemp("fuzz-dagster-home")
    (home / "dagster.yaml").write_text("")
    url = f"sqlite:///{home / 'bindu.sqlite'}"
    engine = make_engine(url)
    upgrade(engine)
    store = PromptStore(engine)
    for agent in KNOWN_AGENTS:
        store.bootstrap(agent, f"prompt of {agent}")
    saved = {key: os.environ.get(key) for key in ("DAGSTER_HOME", "BINDU_DATABASE_URL", "TQDM_DISABLE")}
    os.environ.update(DAGSTER_HOME=str(home), BINDU_DATABASE_URL=url)
    yield url, engine
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    engine.dispose()


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    from bindu_pipelines.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exit_:  # argparse: usage errors exit 2, --help exits 0
            code = exit_.code
        except Exception:
            CRASHES["cli"] += 1
            raise
    return code, out.getvalue(), err.getvalue()


def check_cli_outcome(command: str, code: int, out: str, err: str) -> None:
    assert "Traceback" not in out + err
    assert code in (0, 1, 2), (code, err)
    if code == 1:
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"bindu-dspy {command}: "), err
        REJECTIONS[f"cli.{command}.exit1"] += 1
    elif code == 2:  # a usage error: one line naming the problem and where to read the usage
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("bindu-dspy") and lines[0].endswith("--help)"), err
        REJECTIONS[f"cli.{command}.exit2"] += 1
    else:
        assert out.strip() and not err.strip(), err


def _snapshot(engine) -> tuple:
    import sqlalchemy as sa

    from bindu_runtime.schema import agent_prompts, prompt_events

    with engine.connect() as connection:
        return (
            tuple(connection.execute(sa.select(agent_prompts.c.id, agent_prompts.c.agent_id, agent_prompts.c.status,
                                               agent_prompts.c.traffic).order_by(agent_prompts.c.id)).all()),
            connection.execute(sa.select(sa.func.count()).select_from(prompt_events)).scalar_one(),
        )


@settings(FUZZ, max_examples=250)
@given(
    agent=st.one_of(st.sampled_from(ODD_AGENTS), texts),
    as_json=st.booleans(),
    url_kind=st.sampled_from(["db", "db", "db", "none", "bad-scheme", "garbage", "refused"]),
)
def test_cli_status_with_odd_agents_and_urls(cli_env, agent, as_json, url_kind):
    url, engine = cli_env
    CASES["cli_status"] += 1
    urls = {"db": url, "bad-scheme": "mysql://root:pw@h/d", "garbage": "::not a url::",
            "refused": "postgresql+psycopg2://u:pw@127.0.0.1:1/d"}
    argv = ["status", "--agent", agent] + (["--json"] if as_json else []) + (["--database-url", urls[url_kind]] if url_kind in urls else [])
    code, out, err = run_cli(argv)
    check_cli_outcome("status", code, out, err)
    if url_kind in ("db", "none") and agent in KNOWN_AGENTS:
        assert code == 0 and agent in out if as_json is False else code == 0
    if url_kind in ("bad-scheme", "refused", "garbage") and not agent.startswith("-"):
        assert code in (1, 2) and "pw" not in err


@settings(FUZZ, max_examples=500)
@given(
    active=st.sampled_from(NUMBERS), candidate=st.sampled_from(NUMBERS), per_hour=st.sampled_from(NUMBERS),
    hours=st.sampled_from(SMALL_INTS), runs=st.sampled_from(SMALL_INTS), seed=st.sampled_from(SMALL_INTS + ["-7"]),
    scale=st.sampled_from(["thumbs", "rating", "stars"]), policy=st.sampled_from(["sequential", "seed", "ours", "bogus", ""]),
    as_json=st.booleans(),
)
def test_cli_simulate_with_malformed_numbers(cli_env, active, candidate, per_hour, hours, runs, seed, scale, policy, as_json):
    CASES["cli_simulate"] += 1
    argv = ["simulate", f"--active-rate={active}", f"--candidate-rate={candidate}", f"--feedback-per-hour={per_hour}",
            f"--hours={hours}", f"--runs={runs}", f"--seed={seed}", f"--scale={scale}", f"--policy={policy}"]
    code, out, err = run_cli(argv + (["--json"] if as_json else []))
    check_cli_outcome("simulate", code, out, err)
    rating = scale == "rating"
    parses = all(_float_ok(v, -math.inf, math.inf) or v.strip().lower() in ("nan", "inf", "-inf")
                 for v in (active, candidate, per_hour)) and scale != "stars"
    for v in (hours, runs, seed):
        try:
            int(v)
        except ValueError:
            parses = False
    valid = (
        parses
        and all(_float_ok(v, 0.0, 1.0, open_low=rating, open_high=rating) for v in (active, candidate))
        and _float_ok(per_hour, 0.0, 1e6, open_low=True)
        and _int_ok(hours) and _int_ok(runs) and policy in ("sequential", "seed", "ours")
    )
    # Exactly the well-formed, in-range requests succeed; argparse rejects what does not parse.
    assert code == (0 if valid else 2 if not parses else 1), (argv, code, err)


@settings(FUZZ, max_examples=30)
@given(
    command=st.sampled_from(["canary", "train"]),
    agent=st.one_of(st.sampled_from([a for a in ODD_AGENTS if a not in KNOWN_AGENTS]), texts.filter(lambda t: t not in KNOWN_AGENTS)),
    flag=st.sampled_from([[], ["--policy", "bogus"], ["--policy", "seed"], ["--max-steps", "0"], ["--max-steps", "x"],
                          ["--optimizer", "adam"], ["--strategy", "last_n:zero"], ["--json"], ["--no-require-feedback"]]),
)
def test_cli_canary_and_train_refuse_odd_agents_and_flags_without_writing(cli_env, command, agent, flag):
    url, engine = cli_env
    CASES[f"cli_{command}"] += 1
    before = _snapshot(engine)
    code, out, err = run_cli([command, "--agent", agent, *flag])
    check_cli_outcome(command, code, out, err)
    assert code in (1, 2)  # no such agent: nothing to run
    assert _snapshot(engine) == before


# ------------------------------------------------------------------ runtime: keys and feedback

# Text as it arrives from json.loads and from other code: NUL and lone surrogates included.
hostile_chars = st.one_of(st.characters(), st.sampled_from(["\x00", "\ud800", "\udfff", "\ud83d", "\ufeff"]))
hostile_texts = st.one_of(st.lists(hostile_chars, max_size=12).map("".join), texts)


class _StrRaises:
    def __str__(self):
        raise ValueError("no text for this key")


router_keys = st.one_of(
    st.none(), hostile_texts, st.integers(), st.floats(), st.binary(max_size=8), st.uuids(),
    st.just(_StrRaises()), st.just(10**5000), st.tuples(hostile_texts, st.integers()),
)


@pytest.fixture(scope="module")
def fuzz_router(tmp_path_factory):
    from bindu_runtime import PromptRouter, PromptStore, make_engine, upgrade

    engine = make_engine(f"sqlite:///{tmp_path_factory.mktemp('fuzz-router') / 'bindu.sqlite'}")
    upgrade(engine)
    store = PromptStore(engine)
    store.bootstrap("bot", "v1")
    store.start_experiment("bot", "v2", source="fuzz", candidate_traffic="0.5")
    with PromptRouter(engine, agent_id="bot", default_prompt="code", start=False) as router:
        router.refresh()
        yield router
    engine.dispose()


@settings(FUZZ, max_examples=1500)
@given(router_keys, st.one_of(st.uuids(), hostile_texts, st.integers(), st.none()))
def test_select_stamp_and_the_bindu_handler_never_raise_for_any_key(fuzz_router, key, task_id):
    CASES["router_key"] += 1
    try:
        choice = fuzz_router.select(key)
        assert choice.status in ("active", "candidate")
        fuzz_router.stamp_task(task_id, choice, key=key)
        handler = fuzz_router.bindu_handler(lambda messages, system_prompt: system_prompt)
        assert handler([{"context_id": key, "task_id": task_id}]) in ("v1", "v2")
    except Exception as exc:
        CRASHES["router_key"] += 1
        raise AssertionError(f"select/stamp raised {type(exc).__name__} for key {key!r}") from exc


def _nesting(value, depth=0) -> int:
    if isinstance(value, dict):
        return max([depth] + [_nesting(item, depth + 1) for item in value.values()])
    if isinstance(value, list):
        return max([depth] + [_nesting(item, depth + 1) for item in value])
    return depth


def _storable(text: str) -> bool:
    return "\x00" not in text and not any(0xD800 <= ord(char) <= 0xDFFF for char in text)


def _all_text(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [text for key, item in value.items() for text in [*_all_text(key), *_all_text(item)]]
    if isinstance(value, list):
        return [text for item in value for text in _all_text(item)]
    return []


feedback_metadata = st.recursive(
    st.none() | st.booleans() | st.integers(-10**30, 10**30) | st.floats(allow_nan=False, allow_infinity=False) | hostile_texts,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(hostile_texts, children, max_size=3),
    max_leaves=8,
).map(lambda value: {"value": value})


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def fuzz_feedback(request):
    from bindu_runtime import FeedbackCollector, make_engine, upgrade
    from bindu_runtime.schema import tasks as tasks_table

    engine = make_engine(request.getfixturevalue(f"{request.param}_url"))
    upgrade(engine)
    task_id = uuid.uuid4()
    with engine.begin() as connection:
        connection.execute(tasks_table.insert().values(id=task_id, context_id=uuid.uuid4(), state="completed",
                                                       state_timestamp=T0, history=[]))
    yield engine, FeedbackCollector(engine), task_id
    engine.dispose()


@settings(FUZZ, max_examples=400)
@given(st.one_of(st.none(), hostile_texts), feedback_metadata)
def test_feedback_is_stored_as_given_or_refused_the_same_on_both_backends(fuzz_feedback, text, metadata):
    """One contract on SQLite and PostgreSQL: refused (FeedbackError) exactly when some text holds
    NUL or a lone surrogate; otherwise stored and read back unchanged. Never a driver error."""
    import sqlalchemy as sa

    from bindu_runtime import FeedbackError
    from bindu_runtime.schema import task_feedback

    engine, collector, task_id = fuzz_feedback
    CASES[f"feedback_{engine.dialect.name}"] += 1
    texts_given = _all_text(metadata) + ([text] if text is not None else [])
    refusable = not all(_storable(item) for item in texts_given) or _nesting(metadata) > 33
    try:
        row_id = collector.record_feedback(task_id, rating=3, feedback=text, metadata=metadata)
    except FeedbackError as exc:
        REJECTIONS[("feedback", str(exc).split(" contains")[0])] += 1
        assert refusable, f"refused storable feedback: {exc}"
        return
    except Exception as exc:
        CRASHES["feedback"] += 1
        raise AssertionError(f"record_feedback raised {type(exc).__name__}") from exc
    assert not refusable
    with engine.connect() as connection:
        stored = connection.execute(sa.select(task_feedback.c.feedback_data).where(task_feedback.c.id == row_id)).scalar_one()
    # JSONB keeps numbers as decimals: 4.878742954396018e+16 reads back as the integer
    # 48787429543960180, the same number to float precision. Compared as floats, both backends
    # return exactly what was given.
    as_floats = lambda value: json.loads(json.dumps(value), parse_int=float)  # noqa: E731
    assert as_floats(stored["metadata"]) == as_floats(metadata) and stored.get("feedback") == text


def test_zz_fuzz_summary():
    """Runs last in the file: the totals (the 10 000-case floor only when every target ran)."""
    total = sum(v for k, v in CASES.items() if k != "pipeline_task")
    targets = {"history", "feedback", "strategy_spec", "pipeline_batch", "mutation_task", "cli_status", "cli_simulate"}
    for name, count in sorted(CASES.items()):
        print(f"\nFUZZ target={name} cases={count}", end="")
    rejected = sum(REJECTIONS.values())
    print(f"\nFUZZ TOTAL cases={total} crashes={sum(CRASHES.values())} documented_rejections={rejected} "
          f"distinct_rejection_reasons={len(REJECTIONS)}")
    assert not CRASHES
    if targets <= set(CASES):
        assert total >= 10_000
