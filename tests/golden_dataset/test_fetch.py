"""Reading tasks for the golden dataset: COPY blocks, texts cut in the database, the read-ahead thread."""

import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from bindu_pipelines.golden_dataset.fetch import (
    PYTHON_WHITESPACE,
    decode_task_block,
    iter_agent_task_blocks,
    iter_agent_task_fields,
    read_ahead,
)
from bindu_pipelines.golden_dataset.history import MESSAGE_TOO_LONG, MESSAGE_WITHOUT_ROLE, parse_history
from bindu_runtime import PromptStore, make_engine
from bindu_runtime.schema import task_feedback, tasks

from .helpers import agent, conversation, msg, user

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
LIMIT = 60  # max_message_chars for these tests: small, so that most histories take the database's check


def insert(engine, agent_id, histories, feedback=()):
    """Tasks with the given histories (newest first, in list order); returns their ids in that order."""
    prompt_id = PromptStore(engine).bootstrap(agent_id, "You help.").id
    ids = []
    with engine.begin() as conn:
        for n, history in enumerate(histories):
            task_id = uuid.uuid4()
            created = NOW - timedelta(minutes=n)
            conn.execute(tasks.insert().values(
                id=task_id, context_id=uuid.uuid4(), state="completed", state_timestamp=created,
                history=history, prompt_id=prompt_id, created_at=created, updated_at=created,
            ))
            for data in feedback[n] if n < len(feedback) else ():
                conn.execute(task_feedback.insert().values(task_id=task_id, feedback_data=data, created_at=created))
            ids.append(str(task_id))
    return ids


NASTY_TEXTS = [
    'quote " and backslash \\ and \\N and \\\\N',
    "tab\tnewline\nreturn\rbell\x07 form\x0c vertical\x0b",
    "unicode é ü 日本 😀 \u2028 \u00a0",
    "\\t literally, \\n literally, C:\\path\\to",
    "\\",
    "N",
]


@pytest.mark.postgres
def test_copy_blocks_decode_to_exactly_the_rows_the_driver_returns(postgres_engine):
    histories = [conversation((text, f"reply to {text}")) for text in NASTY_TEXTS]
    histories += [{"not": "a list"}, "a string", [], [None, 3, "x"]]
    feedback = [[{"rating": 5, "note": text}, {"thumbs_up": "yes"}] for text in NASTY_TEXTS] + [[], [{"rating": "five"}]]
    insert(postgres_engine, "nasty", histories, feedback)

    fields = [row for chunk in iter_agent_task_fields(postgres_engine, "nasty", chunk_size=3) for row in chunk]
    blocks = list(iter_agent_task_blocks(postgres_engine, "nasty", chunk_size=3))
    decoded = [row for _, block in blocks for row in decode_task_block(block)]

    assert decoded == fields
    assert len(decoded) == len(histories)
    assert [count for count, _ in blocks] == [3, 3, 3, 1]
    assert any(row[4] is None for row in decoded)  # tasks without feedback come back as NULL, not as "\N"


def test_copy_blocks_need_postgresql(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with pytest.raises(ValueError, match="PostgreSQL"):
        next(iter_agent_task_blocks(engine, "a"))


LONG = "x" * (LIMIT + 1)
HISTORIES_WITH_LONG_TEXTS = {
    # The task is dropped as too long; the message without a role before it is still counted.
    "too long after a skipped message": [{"parts": [{"kind": "text", "text": "no role"}]}, user("hi"), agent("a" + LONG * 300)],
    # A system message is not a turn: its enormous text is cut, and the task keeps its turn.
    "long system message": [msg("system", LONG * 300), user("question?"), agent("answer.")],
    # Only the part's first and last 30 000 characters are whitespace: nothing to cut, the parse strips it.
    "whitespace padding": [user(" " * 30_000 + "short" + "\n" * 30_000), agent("fine.")],
    # Exactly the limit after stripping is allowed; one more is not.
    "at the limit": [user("  " + "y" * LIMIT + "  "), agent("ok.")],
    "one over the limit": [user("  " + "y" * (LIMIT + 1) + "  "), agent("ok.")],
    # Unicode whitespace is Python's whitespace: stripped by both sides alike.
    "unicode padding": [user("\u3000\u2003" + "z" * LIMIT + "\u00a0\u2028"), agent("ok.")],
    # Two enormous parts: the first is cut; the verdict is the same.
    "two long parts": [user("q?"), msg("agent", LONG * 200, LONG * 200)],
    # Parts that are not text parts, or not objects, or texts that are not strings.
    "odd parts": [user("q?"), {"role": "agent", "parts": [{"kind": "file", "text": LONG * 100}, 7, {"text": 5}]}, agent("a.")],
    "parts not a list": [user("q?"), {"role": "agent", "parts": {"text": LONG * 100}, "content": "c."}],
    "not a list": {"role": "user", "parts": [{"text": LONG * 100}]},
}


@pytest.mark.postgres
def test_texts_cut_in_the_database_give_the_same_parse(postgres_engine):
    names = list(HISTORIES_WITH_LONG_TEXTS)
    insert(postgres_engine, "long", [HISTORIES_WITH_LONG_TEXTS[name] for name in names])

    whole = [row for chunk in iter_agent_task_fields(postgres_engine, "long") for row in chunk]
    cut = [row for _, block in iter_agent_task_blocks(postgres_engine, "long", max_text_chars=LIMIT)
           for row in decode_task_block(block)]

    assert [row[0] for row in cut] == [row[0] for row in whole]
    for name, full_row, cut_row in zip(names, whole, cut):
        assert parse_history(cut_row[3], LIMIT) == parse_history(full_row[3], LIMIT), name
    by_name = dict(zip(names, zip(whole, cut)))
    # The enormous texts were really cut (that is the point), the small ones left alone.
    for name in ("too long after a skipped message", "long system message"):
        full_row, cut_row = by_name[name]
        assert len(cut_row[3]) < len(full_row[3]) / 50, name
    full_row, cut_row = by_name["two long parts"]  # only the first is cut: the verdict needs no more
    assert len(full_row[3]) * 0.45 < len(cut_row[3]) < len(full_row[3]) * 0.55
    for name in ("at the limit", "whitespace padding", "not a list"):
        full_row, cut_row = by_name[name]
        assert cut_row[3] == full_row[3], name
    parsed = parse_history(by_name["too long after a skipped message"][1][3], LIMIT)
    assert parsed.drop_reason == MESSAGE_TOO_LONG and parsed.message_drops == {MESSAGE_WITHOUT_ROLE: 1}
    assert parse_history(by_name["long system message"][1][3], LIMIT).messages == [
        {"role": "user", "content": "question?"}, {"role": "assistant", "content": "answer."}
    ]


def test_python_whitespace_is_what_str_strip_strips():
    assert all(c.isspace() for c in PYTHON_WHITESPACE)
    assert ("".join(sorted(set(PYTHON_WHITESPACE))) + "x").strip() == "x"
    assert {"\u3000", "\u00a0", "\x1c", "\x85", "\u2028"} <= set(PYTHON_WHITESPACE)


# ------------------------------------------------------------------------------------- read_ahead


def test_read_ahead_keeps_order_and_stays_at_most_depth_ahead():
    produced = []

    def source():
        for n in range(20):
            produced.append(n)
            yield n

    seen = []
    for item in read_ahead(source(), depth=2):
        time.sleep(0.005)
        # The reader holds at most `depth` items in the queue and one in hand.
        assert len(produced) - len(seen) <= 2 + 2
        seen.append(item)
    assert seen == list(range(20))


def test_read_ahead_hands_the_error_to_the_consumer_after_the_good_items():
    def source():
        yield 1
        yield 2
        raise sa.exc.OperationalError("SELECT", {}, Exception("server closed the connection"))

    seen = []
    with pytest.raises(sa.exc.OperationalError, match="server closed"):
        for item in read_ahead(source()):
            seen.append(item)
    assert seen == [1, 2]


def test_a_consumer_that_stops_early_stops_and_closes_the_reader():
    closed = threading.Event()

    def source():
        try:
            for n in range(1_000_000):
                yield n
        finally:
            closed.set()

    stream = read_ahead(source(), depth=1)
    assert next(stream) == 0
    stream.close()
    assert closed.wait(2)
    assert not any(t.name == "golden-dataset-read-ahead" and t.is_alive() for t in threading.enumerate())


# ------------------------------------------------------------------------------------- faults


@pytest.mark.postgres
@pytest.mark.timeout(120)
@pytest.mark.parametrize("workers", [1, 2])
def test_a_database_lost_mid_copy_fails_cleanly_and_leaves_no_file(postgres_url, postgres_engine, tmp_path, workers):
    from bindu_pipelines.golden_dataset.dataset import GoldenDatasetOptions, write_golden_parquet
    from tests.support.tcp_proxy import TcpProxy

    direct = postgres_engine
    tasks_count = 300
    insert(direct, "cut", [conversation((f"question {n}?", f"answer {n}: " + "and so on " * 20)) for n in range(tasks_count)],
           [[{"rating": 1 + n % 5}] for n in range(tasks_count)])
    expected = write_golden_parquet(direct, "cut", str(tmp_path / "clean.parquet"), GoldenDatasetOptions(limit=None), chunk_size=5)
    assert expected.rows == tasks_count

    proxy, url = TcpProxy.for_url(postgres_url)
    engine = make_engine(url)
    path = tmp_path / "golden.parquet"
    try:
        # The server starts the COPY, sends its first rows, and is gone.
        proxy.cut_after_reply_to(b"COPY")
        with pytest.raises(sa.exc.OperationalError) as lost:
            write_golden_parquet(engine, "cut", str(path), GoldenDatasetOptions(limit=None), chunk_size=5, workers=workers)
        reason = str(lost.value.orig).lower()
        assert "connection" in reason and "lost" in reason or "server closed" in reason, reason
        assert proxy.replies_dropped == 1
        assert not list(tmp_path.glob("golden.parquet*"))

        proxy.restore()
        retried = write_golden_parquet(engine, "cut", str(path), GoldenDatasetOptions(limit=None), chunk_size=5, workers=workers)
        assert (retried.rows, retried.fingerprint, retried.reports) == (expected.rows, expected.fingerprint, expected.reports)
        assert path.exists() and not list(tmp_path.glob("golden.parquet.partial"))
    finally:
        engine.dispose()
        proxy.close()



def _read_one_block_and_stop(url: str, agent_id: str) -> tuple[int, int]:
    """In a process of its own: the first block, then stop; what the pooled connection says next."""
    engine = make_engine(url)
    try:
        blocks = iter_agent_task_blocks(engine, agent_id, chunk_size=10)
        count, _ = next(blocks)
        blocks.close()
        with engine.connect() as conn:
            return count, conn.execute(sa.select(sa.func.count()).select_from(tasks)).scalar_one()
    finally:
        engine.dispose()


@pytest.mark.postgres
@pytest.mark.timeout(120)
def test_a_consumer_that_stops_early_cancels_the_copy_instead_of_reading_the_rest(postgres_url, postgres_engine):
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from tests.support.tcp_proxy import TcpProxy

    # 1 000 tasks of ~60 KB history each (compressed on disk, ~60 MB as COPY text).
    prompt_id = PromptStore(postgres_engine).bootstrap("big", "You help.").id
    with postgres_engine.begin() as conn:
        conn.execute(sa.text(
            """
            INSERT INTO tasks (id, context_id, kind, state, state_timestamp, history, artifacts, metadata,
                               prompt_id, created_at, updated_at)
            SELECT gen_random_uuid(), gen_random_uuid(), 'task', 'completed', :now,
                   jsonb_build_array(jsonb_build_object('role', 'user', 'parts', jsonb_build_array(
                       jsonb_build_object('kind', 'text', 'text', repeat('question ' || i || ' ', 5000))))),
                   '[]', '{}', :prompt, :now - make_interval(secs => i), :now
              FROM generate_series(1, 1000) AS i
            """
        ), {"now": NOW, "prompt": prompt_id})
        tasks_in_schema = conn.execute(sa.select(sa.func.count()).select_from(tasks)).scalar_one()
    total = sum(len(block) for _, block in iter_agent_task_blocks(postgres_engine, "big", chunk_size=10))
    assert total > 50_000_000

    proxy, url = TcpProxy.for_url(postgres_url)
    try:
        # The reader runs in another process: the driver's cancel request holds the GIL while it
        # connects, and it connects through this process's proxy.
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            count, counted_after = pool.submit(_read_one_block_and_stop, url, "big").result(timeout=90)
        assert count == 10
        # Without the cancel, the driver reads the whole result before the COPY ends.
        assert proxy.bytes_from_server < total / 3, (proxy.bytes_from_server, total)
        # The connection went back to the pool in a usable state.
        assert counted_after == tasks_in_schema
    finally:
        proxy.close()
