"""Worker processes for the golden dataset's per-chunk work, kept in read order.

``in_order(function, jobs, make_state, workers)`` yields ``function(state, *job)`` for each job,
in order: here, or in a pool of ``workers`` processes (at most ``workers + 1`` jobs in flight, so
memory holds a few chunks). ``state`` is what ``make_state()`` builds (a stage pipeline); each
worker builds it once per distinct ``make_state`` and reuses it, so a chunk crosses the pipe with
nothing but its own data.

One pool per worker count lives as long as the process: the runs of a process (Dagster runs in
one process, a test session) share it instead of starting processes for each run.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from bindu_pipelines.errors import WorkerProcessDied

_pools: dict[int, Any] = {}
_worker_states: dict[str, Any] = {}


def _state_in_worker(make_state: Callable[[], Any]) -> Any:
    # ``make_state`` arrives pickled with each job: its repr (a partial of a class and frozen
    # options) says whether the state built for an earlier job still fits.
    key = repr(make_state)
    state = _worker_states.get(key)
    if state is None:
        _worker_states.clear()
        state = _worker_states[key] = make_state()
    return state


_malloc_trim: Callable[[int], int] | None = None  # glibc's, set in a worker process


def _run_in_worker(function: Callable, make_state: Callable[[], Any], job: tuple) -> Any:
    try:
        return function(_state_in_worker(make_state), *job)
    finally:
        if _malloc_trim is not None:
            _malloc_trim(0)  # the batch's freed memory back to the system


def _start_worker() -> None:
    # pyarrow's default allocator (mimalloc) keeps freed pages per thread; a worker that builds
    # a few MB of tables per batch would hold on to them. The system allocator hands them back.
    import pyarrow as pa

    pa.set_memory_pool(pa.system_memory_pool())
    global _malloc_trim
    try:
        import ctypes

        _malloc_trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        pass


def _pool(workers: int):
    pool = _pools.get(workers)
    if pool is None:
        import atexit
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # Workers start from a fork server that imports nothing of ours: preloaded modules would
        # be resident in the server too (~90 MB more), for a start-up saving paid once per process.
        context = multiprocessing.get_context("forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn")
        pool = _pools[workers] = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_start_worker)
        atexit.register(pool.shutdown, cancel_futures=True)
    return pool


def in_order(function: Callable, jobs: Iterable[tuple], make_state: Callable[[], Any], workers: int) -> Iterator[Any]:
    """``function(state, *job)`` for each job, in order, here or in ``workers`` processes."""
    if workers <= 1:
        state = make_state()
        for job in jobs:
            yield function(state, *job)
        return
    from concurrent.futures.process import BrokenProcessPool

    pool = _pool(workers)
    pending: deque = deque()
    try:
        for job in jobs:
            pending.append(pool.submit(_run_in_worker, function, make_state, job))
            while len(pending) > workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    except BrokenProcessPool as error:
        _pools.pop(workers, None)  # the next run starts a new pool
        raise WorkerProcessDied(
            "a worker process died mid-run (killed, or out of memory); nothing was written, the next run starts new workers"
        ) from error
    finally:
        for future in pending:
            future.cancel()


def shutdown_workers() -> None:
    """Stop the shared worker processes (they start again when a run needs them)."""
    while _pools:
        _, pool = _pools.popitem()
        pool.shutdown(cancel_futures=True)
