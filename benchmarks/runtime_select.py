"""`select()` latency and throughput against the seed's way, `select` + stamp on the request path,
and how fast a change reaches a router.

Run: .venv/bin/python -m benchmarks.runtime_select [--requests 200000] [--seed-requests 3000] [--stamp-requests 100000]

Both ways run in the same process against the same PostgreSQL database (created and dropped
here), with an experiment at 10 % so the router does its full sticky-bucket work:
- ours: ``PromptRouter.select(key)`` from the in-memory snapshot; database statements issued
  during the timed loop are counted with an SQLAlchemy event;
- the seed's: every request reads the active and the candidate prompt from the database, then
  draws by traffic weights (``select_prompt_with_canary`` as the original README describes it);
- select + stamp: what ``router.bindu_handler`` does per call — ``select(key)`` then
  ``stamp_task(task_id, choice, key=key)`` — timed on the request path while the router's stamp
  writer thread writes those stamps onto real task rows in the background (all must arrive).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from sqlalchemy import event

import uuid
from datetime import UTC, datetime

import sqlalchemy as sa

from benchmarks._common import percentile, scratch_postgres_database, write_results
from bindu_runtime import PromptRouter, PromptStore, make_engine, upgrade
from bindu_runtime.schema import tasks


def time_calls(function, keys) -> list[float]:
    clock = time.perf_counter_ns
    samples = []
    for key in keys:
        started = clock()
        function(key)
        samples.append((clock() - started) / 1_000)  # µs
    samples.sort()
    return samples


def count_statements(engine) -> list[int]:
    counter = [0]

    @event.listens_for(engine, "before_cursor_execute")
    def _count(*_args):
        counter[0] += 1

    return counter


def insert_tasks(engine, count: int) -> list[uuid.UUID]:
    now = datetime.now(UTC)
    ids = [uuid.uuid4() for _ in range(count)]
    with engine.begin() as connection:
        for start in range(0, count, 10_000):
            connection.execute(tasks.insert(), [
                {"id": task_id, "context_id": task_id, "state": "completed", "state_timestamp": now, "history": []}
                for task_id in ids[start:start + 10_000]
            ])
    return ids


def time_select_and_stamp(router, keys, task_ids) -> list[float]:
    clock = time.perf_counter_ns
    select, stamp = router.select, router.stamp_task
    samples = []
    for key, task_id in zip(keys, task_ids):
        started = clock()
        stamp(task_id, select(key), key=key)
        samples.append((clock() - started) / 1_000)  # µs
    samples.sort()
    return samples


def seed_style_select(store: PromptStore, agent_id: str, rng: random.Random):
    active = store.get_active_prompt(agent_id)
    candidate = store.get_candidate_prompt(agent_id)
    if candidate is None:
        return active
    return candidate if rng.random() < float(candidate.traffic) else active


def change_visibility(url: str, store: PromptStore, agent_id: str, candidate_id: str, rounds: int) -> list[float]:
    """Seconds from a committed traffic step to a running router (default settings) serving it."""
    router = PromptRouter(url, agent_id=agent_id, default_prompt="code prompt")
    delays = []
    try:
        traffic = store.get_candidate_prompt(agent_id).traffic
        for _ in range(rounds):
            new = traffic + type(traffic)("0.05")
            store.step_traffic(agent_id, candidate_id=candidate_id, expected_traffic=traffic, new_traffic=new)
            committed = time.monotonic()
            while router.status()["candidate_share"] != float(new):
                time.sleep(0.005)
            delays.append(time.monotonic() - committed)
            traffic = new
            time.sleep(random.uniform(0, router.refresh_interval))  # land at a random phase of the refresh cycle
    finally:
        router.close()
    return delays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--seed-requests", type=int, default=3_000)
    parser.add_argument("--visibility-rounds", type=int, default=8)
    parser.add_argument("--stamp-requests", type=int, default=100_000)
    args = parser.parse_args()

    with scratch_postgres_database("bindu_bench_select") as url:
        setup_engine = make_engine(url)
        upgrade(setup_engine)
        store = PromptStore(setup_engine)
        store.bootstrap("bench-bot", "You are the benchmark agent.")
        candidate = store.start_experiment("bench-bot", "You are the better benchmark agent.", source="benchmark")
        keys = [f"context-{i}" for i in range(args.requests)]

        router = PromptRouter(url, agent_id="bench-bot", default_prompt="code prompt", start=False)
        router.refresh()
        statements = count_statements(router.engine)
        for key in keys[:10_000]:  # warm-up
            router.select(key)
        statements[0] = 0
        started = time.perf_counter()
        for key in keys:
            router.select(key)
        loop_seconds = time.perf_counter() - started
        ours_statements = statements[0]
        ours = time_calls(router.select, keys)
        ours_share = sum(router.select(key).status == "candidate" for key in keys) / len(keys)
        router.close()

        seed_engine = make_engine(url)
        seed_store = PromptStore(seed_engine)
        seed_statements = count_statements(seed_engine)
        rng = random.Random(1)
        seed_keys = keys[: args.seed_requests]
        started = time.perf_counter()
        for _ in seed_keys:
            seed_style_select(seed_store, "bench-bot", rng)
        seed_loop_seconds = time.perf_counter() - started
        seed_per_request = seed_statements[0] / len(seed_keys)
        seed = time_calls(lambda _key: seed_style_select(seed_store, "bench-bot", rng), seed_keys)
        seed_engine.dispose()

        warm_up = 10_000  # as for select() above: the first calls pay for cold caches, not the code
        all_task_ids = insert_tasks(setup_engine, args.stamp_requests + warm_up)
        warm_ids, task_ids = all_task_ids[:warm_up], all_task_ids[warm_up:]
        stamp_keys = [f"conversation-{i}" for i in range(len(task_ids))]
        stamp_router = PromptRouter(url, agent_id="bench-bot", default_prompt="code prompt",
                                    stamp_queue_limit=len(all_task_ids))  # writer thread running
        time_select_and_stamp(stamp_router, [f"warm-{i}" for i in range(warm_up)], warm_ids)
        stamp_router.flush_stamps(timeout=120)
        stamp_statements = count_statements(stamp_router.engine)
        written_before = stamp_router.status()["stamps_written"]
        started = time.perf_counter()
        stamped = time_select_and_stamp(stamp_router, stamp_keys, task_ids)
        stamp_loop_seconds = time.perf_counter() - started
        drained = stamp_router.flush_stamps(timeout=120)
        drain_seconds = time.perf_counter() - started
        stamp_status = stamp_router.status()
        stamp_status["stamps_written"] -= written_before  # the timed calls' stamps only
        stamp_router.close()
        with setup_engine.connect() as connection:
            stamped_rows = connection.execute(
                sa.select(sa.func.count()).select_from(tasks).where(tasks.c.prompt_unit.is_not(None))).scalar() - written_before

        delays = change_visibility(url, store, "bench-bot", candidate.id, args.visibility_rounds)
        setup_engine.dispose()

    ours_rate = len(keys) / loop_seconds
    seed_rate = len(seed_keys) / seed_loop_seconds
    lines = [
        "select() on PostgreSQL 15 (local), experiment at 10 %, sticky keys",
        "",
        f"{'':32} {'ours (PromptRouter)':>20} {'seed (2 reads/request)':>24}",
        f"{'requests timed':32} {len(ours):>20,} {len(seed):>24,}",
        f"{'p50 latency (µs)':32} {percentile(ours, 0.50):>20.2f} {percentile(seed, 0.50):>24.1f}",
        f"{'p99 latency (µs)':32} {percentile(ours, 0.99):>20.2f} {percentile(seed, 0.99):>24.1f}",
        f"{'p99.9 latency (µs)':32} {percentile(ours, 0.999):>20.2f} {percentile(seed, 0.999):>24.1f}",
        f"{'selections per second (1 thread)':32} {ours_rate:>20,.0f} {seed_rate:>24,.0f}",
        f"{'database statements per request':32} {ours_statements / len(keys):>20.3f} {seed_per_request:>24.2f}",
        f"{'candidate share served':32} {ours_share:>20.4f} {'(random draw)':>24}",
        "",
        f"ratio: ours is {percentile(seed, 0.5) / percentile(ours, 0.5):,.0f}x faster at p50, "
        f"{ours_rate / seed_rate:,.0f}x the throughput",
        "",
        f"select + stamp_task on the request path ({len(stamped):,} calls after {warm_up:,} warm-up calls, stamp writer running):",
        f"  p50 {percentile(stamped, 0.50):.2f} µs, p99 {percentile(stamped, 0.99):.2f} µs, "
        f"p99.9 {percentile(stamped, 0.999):.2f} µs, {len(stamped) / stamp_loop_seconds:,.0f} calls/s",
        f"  stamps written {stamp_status['stamps_written']:,} (rows with prompt_unit: {stamped_rows:,}), "
        f"dropped {stamp_status['stamps_dropped']}, all written {'yes' if drained else 'NO'} "
        f"{drain_seconds:.1f} s after the first call; writer statements {stamp_statements[0]:,} "
        f"({stamp_statements[0] / max(1, stamp_status['stamps_written']):.3f} per stamp)",
        "",
        f"traffic change visible to a running router (refresh_interval 2 s, {len(delays)} changes):",
        f"  median {statistics.median(delays):.2f} s, max {max(delays):.2f} s   (target ≤ 10 s)",
        "",
        "targets: p99 ≤ 5 µs (select, and select + stamp), 0 database calls per request, change visible ≤ 10 s",
        f"met: p99 {'yes' if percentile(ours, 0.99) <= 5 else 'NO'}, "
        f"select + stamp p99 {'yes' if percentile(stamped, 0.99) <= 5 else 'NO'}, "
        f"0 calls {'yes' if ours_statements == 0 else 'NO'}, visibility {'yes' if max(delays) <= 10 else 'NO'}",
    ]
    path = write_results("runtime_select", "\n".join(lines))
    print("\n".join(lines))
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    main()
