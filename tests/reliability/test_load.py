"""8 threads selecting while the candidate's traffic steps 10 → 50 % and the database flaps.

The router reads PostgreSQL through a TCP proxy that is cut, stalled and restored during the run;
the steps go to the database directly (the canary's path). Each selecting thread tags what it saw
with the traffic phase it was in, and only counts a selection when the phase was the same before and
after it (the main thread sets "between phases" before each step and names the next phase only once
the router serves the new split). The test then checks, per phase over the distinct keys seen:
- no selection raised, none served the code default or a prompt of another agent;
- each key stayed on one arm (sticky);
- the candidate share is within 5 binomial standard deviations of the configured share;
- between phases, keys only moved active → candidate, never back.

Run with ``-s`` for the LOAD summary line recorded in docs/RELIABILITY.md.
"""

from __future__ import annotations

import math
import random
import sys
import threading
import time
from collections import defaultdict
from decimal import Decimal

import pytest

from bindu_runtime import PromptRouter, PromptStore, make_engine, upgrade
from tests.reliability.helpers import state_violations, wait_until
from tests.support.tcp_proxy import TcpProxy

THREADS = 8
KEYS = [f"context-{random.Random(7).getrandbits(64):x}-{i}" for i in range(5_000)]
SHARES = [Decimal("0.1"), Decimal("0.2"), Decimal("0.3"), Decimal("0.4"), Decimal("0.5")]
PHASE_SECONDS = 1.0
REFRESH_S = 0.05
TOLERANCE_SD = 5


class _Selector(threading.Thread):
    """Selects keys in its own shuffled order; records each key's arm per phase."""

    def __init__(self, router: PromptRouter, phase: list, stop: threading.Event, allowed_ids: set, seed: int):
        super().__init__(daemon=True)
        self.router, self.phase, self.stop, self.allowed_ids = router, phase, stop, allowed_ids
        self.order = random.Random(seed).sample(KEYS, len(KEYS))
        self.arms: dict[int, dict[str, str]] = defaultdict(dict)
        self.errors: list[str] = []
        self.flips: list[str] = []
        self.selections = 0

    def run(self) -> None:
        select, phase, order = self.router.select, self.phase, self.order
        while not self.stop.is_set():
            for key in order:
                seen_phase = phase[0]
                try:
                    choice = select(key)
                except BaseException as exc:  # the point of the test: there must be none
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                self.selections += 1
                if choice.prompt_id not in self.allowed_ids:
                    self.errors.append(f"served {choice.status} prompt {choice.prompt_id}")
                if seen_phase is None or phase[0] != seen_phase:
                    continue
                arms = self.arms[seen_phase]
                previous = arms.setdefault(key, choice.status)
                if previous != choice.status:
                    self.flips.append(f"phase {seen_phase}: {key} {previous} -> {choice.status}")


@pytest.mark.postgres
@pytest.mark.timeout(60)
def test_selecting_threads_under_traffic_steps_and_a_flapping_database(postgres_url):
    engine = make_engine(postgres_url)
    upgrade(engine)
    store = PromptStore(engine)
    active = store.bootstrap("bot", "v1")
    candidate = store.start_experiment("bot", "v2", source="load-test", candidate_traffic=SHARES[0])
    proxy, proxied_url = TcpProxy.for_url(postgres_url)
    router = PromptRouter(proxied_url, agent_id="bot", default_prompt="code prompt", refresh_interval=REFRESH_S, connect_timeout=2)
    phase: list[int | None] = [None]
    stop = threading.Event()
    selectors = [_Selector(router, phase, stop, {active.id, candidate.id}, seed) for seed in range(THREADS)]
    faults = {"cut": 0, "stall": 0, "step_while_cut": 0}

    def serving(share: Decimal) -> bool:
        return router.status()["candidate_id"] == candidate.id and router.status()["candidate_share"] == float(share)

    def cut_and_restore() -> None:
        proxy.cut()
        faults["cut"] += 1
        assert wait_until(lambda: router.last_error is not None, timeout=10), "the cut was never felt by the router"
        time.sleep(0.2)
        proxy.restore()
        assert wait_until(lambda: router.last_error is None, timeout=15), "the router did not recover after the cut"

    def stall_and_restore() -> None:
        refreshes = router.refresh_count
        proxy.stall()
        faults["stall"] += 1
        time.sleep(0.4)  # eight refresh intervals
        assert router.refresh_count <= refreshes + 1, "the stall did not hold the refresh thread"
        proxy.restore()
        assert wait_until(lambda: router.refresh_count > refreshes + 2, timeout=15), "no refresh after the stall"

    # Eight threads that never block starve the refresh thread and the proxy of the GIL; hand it
    # over more often so database round trips (and this test) are not stretched by the harness.
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(0.0005)
    try:
        assert wait_until(lambda: serving(SHARES[0]), timeout=10)
        started = time.perf_counter()
        for selector in selectors:
            selector.start()
        for index, share in enumerate(SHARES):
            if index:
                phase[0] = None
                if index == 3:  # the canary steps while this router is cut off: it keeps the old split
                    proxy.cut()
                    faults["step_while_cut"] += 1
                    assert wait_until(lambda: router.last_error is not None, timeout=10)
                store.step_traffic("bot", candidate_id=candidate.id, expected_traffic=SHARES[index - 1], new_traffic=share)
                if index == 3:
                    time.sleep(0.3)
                    assert serving(SHARES[index - 1])
                    proxy.restore()
                assert wait_until(lambda: serving(share), timeout=15), f"the router never served {share}"
            phase[0] = index
            phase_started = time.monotonic()
            if index in (0, 2, 4):
                cut_and_restore()
            if index == 1:
                stall_and_restore()
            time.sleep(max(0.0, PHASE_SECONDS - (time.monotonic() - phase_started)))
        stop.set()
        for selector in selectors:
            selector.join(timeout=10)
        elapsed = time.perf_counter() - started
    finally:
        sys.setswitchinterval(switch_interval)
        stop.set()
        router.close()
        proxy.close()

    errors = [error for s in selectors for error in s.errors]
    flips = [flip for s in selectors for flip in s.flips]
    selections = sum(s.selections for s in selectors)
    arms: dict[int, dict[str, str]] = defaultdict(dict)
    for selector in selectors:
        for index, seen in selector.arms.items():
            for key, status in seen.items():
                if arms[index].setdefault(key, status) != status:
                    flips.append(f"phase {index}: {key} differs between threads")
    report = []
    off_split = []
    for index, share in enumerate(SHARES):
        seen = arms[index]
        n = len(seen)
        observed = sum(status == "candidate" for status in seen.values()) / n
        tolerance = TOLERANCE_SD * math.sqrt(float(share) * (1 - float(share)) / n)
        report.append(f"{share}:{observed:.4f}±{tolerance:.4f}(n={n})")
        if abs(observed - float(share)) > tolerance or n < len(KEYS):
            off_split.append(report[-1])
    back_to_active, moved = [], 0
    for index in range(1, len(SHARES)):
        before, after = arms[index - 1], arms[index]
        for key in before.keys() & after.keys():
            if before[key] == "candidate" and after[key] == "active":
                back_to_active.append(key)
            moved += before[key] == "active" and after[key] == "candidate"
    print(
        f"\nLOAD threads={THREADS} keys={len(KEYS)} selections={selections} elapsed_s={elapsed:.1f} "
        f"selections_per_s={selections / elapsed:,.0f} faults={sum(faults.values())} {faults} "
        f"exceptions={len(errors)} sticky_violations={len(flips)} candidate_to_active={len(back_to_active)} "
        f"moved_active_to_candidate={moved} split={' '.join(report)}"
    )
    assert errors == []
    assert flips == []
    assert back_to_active == []
    assert off_split == []
    assert moved > 0
    assert state_violations(engine, "bot") == []
    assert store.get_candidate_prompt("bot").traffic == SHARES[-1]
    engine.dispose()
