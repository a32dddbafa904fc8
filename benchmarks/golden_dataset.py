"""Golden dataset from 1 M demo-shaped tasks in PostgreSQL: training_job's dataset stages through
Dagster, the one-pass streaming path, and the seed's way, in the same run.

    .venv/bin/python -m benchmarks.golden_dataset [--tasks 1000000] [--repeat 3] [--no-write]

1. Creates its own database (dropped at the end), loads ``--templates`` demo tasks from the demo
   generator (with its malformed rows and feedback) with COPY, and multiplies them to ``--tasks``
   rows with ``generate_series`` in SQL; each copy's first user message gets a unique suffix so
   the copies are not all duplicates.
2. Runs each approach in a fresh subprocess (so peak RSS is that approach's own):
   - dagster (what ``training_job`` runs): ``dg.materialize`` of the golden dataset's step, which
     writes the four assets in one pass and judges the five checks, in-process executor, an
     ephemeral instance, query limit lifted, ``--workers`` worker processes;
   - streaming (``write_golden_parquet``): COPY blocks of 5 000 tasks, decoded and processed in
     one process or in ``--workers`` worker processes, golden rows streamed into Parquet; the
     parallel run is repeated ``--repeat`` times (shared machine: the median is reported);
   - seed: every task and feedback row fetched into memory, then processed, the dataset built
     in memory (what the original did, minus its 10 000-row cap).
3. Prints tasks/s, the speed-up over the seed's way in the same run (the machine is shared: the
   ratio carries over between runs better than tasks/s do) and peak RSS, and writes them to
   benchmarks/results/golden_dataset.txt with the command line at the top.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from benchmarks._common import scratch_postgres_database, write_results
from bindu_pipelines.demo.seed import demo_agents, generate_agent_rows
from bindu_pipelines.golden_dataset.dataset import (
    GoldenDatasetOptions,
    GoldenDatasetPipeline,
    golden_frame,
    write_golden_parquet,
)
from bindu_pipelines.golden_dataset.feedback import FeedbackRow
from bindu_pipelines.golden_dataset.fetch import RawTask, _agent_filter
from bindu_runtime import PromptStore, make_engine, upgrade
from bindu_runtime.schema import task_feedback, tasks

ROOT = Path(__file__).resolve().parents[1]
AGENT_ID = "support-bot"
OPTIONS = dict(limit=None, require_feedback=True)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _tree_pids() -> list[int]:
    """This process and all its descendants now (from /proc)."""
    children: dict[int, list[int]] = defaultdict(list)
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children[ppid].append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    pids, todo = [], [os.getpid()]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        todo.extend(children.get(pid, []))
    return pids


def _tree_rss_mb(pids: list[int], field: str = "VmRSS:", file: str = "status") -> float:
    """RSS (or, with ``"Pss:", "smaps_rollup"``, PSS: shared pages split between their users) of
    ``pids`` now, in MB."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/{file}") as f:
                for line in f:
                    if line.startswith(field):
                        total += int(line.split()[1])
                        break
        except OSError:
            continue
    return total / 1024


def _cpu_of(pid: int) -> float | None:
    """User + system CPU seconds of ``pid`` so far (None once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


class TreePeak:
    """Peak RSS of the whole process tree (this process + worker processes), sampled every 0.1 s
    (PSS near the peak),
    and its CPU seconds (each process's last sample: worker processes of a fork server are not
    this process's children, so ``RUSAGE_CHILDREN`` would miss them)."""

    def __enter__(self) -> "TreePeak":
        import threading

        self.peak = self.peak_pss = 0.0
        self._pss_at = -1.0
        self._cpu: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self._sample()

    def _sample(self) -> None:
        pids = _tree_pids()
        rss = _tree_rss_mb(pids)
        self.peak = max(self.peak, rss)
        # Reading PSS walks every page table (~14 ms for a 400 MB process): done each 0.1 s it
        # would take a sixth of a core from the run it measures. Only near the RSS peak, at most
        # twice a second.
        now = time.monotonic()
        if rss >= 0.97 * self.peak and now - self._pss_at >= 0.5:
            self._pss_at = now
            self.peak_pss = max(self.peak_pss, _tree_rss_mb(pids, "Pss:", "smaps_rollup"))
        for pid in pids:
            cpu = _cpu_of(pid)
            if cpu is not None:
                self._cpu[pid] = cpu

    @property
    def cpu_seconds(self) -> float:
        return round(sum(self._cpu.values()), 1)

    def __exit__(self, *exc) -> None:
        self._sample()
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, peak_rss_mb())


# ---------------------------------------------------------------- data loading ------------------
def _copy(raw, table: str, columns: list[str], rows) -> None:
    buffer = io.StringIO()
    for row in rows:
        buffer.write("\t".join(_copy_value(v) for v in row) + "\n")
    buffer.seek(0)
    with raw.cursor() as cursor:
        cursor.copy_expert(f"COPY {table} ({', '.join(columns)}) FROM STDIN", buffer)


def _copy_value(value) -> str:
    if value is None:
        return "\\N"
    text = value if isinstance(value, str) else json.dumps(value)
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def load(url: str, n_tasks: int, n_templates: int) -> dict:
    engine = make_engine(url)
    upgrade(engine)
    prompt_id = PromptStore(engine).bootstrap(AGENT_ID, "You are a helpful support agent.").id
    agent = next(a for a in demo_agents(3) if a.agent_id == AGENT_ID)
    started = time.perf_counter()
    template_tasks, template_feedback = [], []
    for n, demo in enumerate(generate_agent_rows(agent, prompt_id, tasks_count=n_templates, seed=7, now=datetime.now(UTC))):
        t = demo.task
        template_tasks.append((str(n), t["state"], json.dumps(t["history"]), t["created_at"].isoformat()))
        for f in demo.feedback:
            template_feedback.append((str(n), json.dumps(f["feedback_data"]), f["created_at"].isoformat()))
    raw = engine.raw_connection()
    try:
        with raw.cursor() as cursor:
            cursor.execute("CREATE TEMP TABLE tpl_tasks (n int, state text, history jsonb, created_at timestamptz)")
            cursor.execute("CREATE TEMP TABLE tpl_feedback (n int, feedback_data jsonb, created_at timestamptz)")
        _copy(raw, "tpl_tasks", ["n", "state", "history", "created_at"], template_tasks)
        _copy(raw, "tpl_feedback", ["n", "feedback_data", "created_at"], template_feedback)
        with raw.cursor() as cursor:
            cursor.execute("CREATE INDEX ON tpl_feedback (n)")
            # Copy k of template n is series i = k * n_templates + n; ids derive from i.
            cursor.execute(
                """
                INSERT INTO tasks (id, context_id, kind, state, state_timestamp, history, artifacts, metadata,
                                   prompt_id, created_at, updated_at)
                SELECT md5('t' || s.i)::uuid, md5('c' || s.i)::uuid, 'task', t.state,
                       t.created_at - make_interval(secs => s.i / %(m)s), 
                       CASE WHEN jsonb_typeof(t.history -> 0 -> 'parts' -> 0 -> 'text') = 'string'
                            THEN jsonb_set(t.history, '{0,parts,0,text}',
                                           to_jsonb((t.history -> 0 -> 'parts' -> 0 ->> 'text') || ' (#' || s.i || ')'))
                            ELSE t.history END,
                       '[]'::jsonb, '{}'::jsonb, %(prompt)s,
                       t.created_at - make_interval(secs => s.i / %(m)s), t.created_at
                  FROM generate_series(0, %(total)s - 1) AS s(i)
                  JOIN tpl_tasks t ON t.n = s.i %% %(m)s
                """,
                {"m": n_templates, "total": n_tasks, "prompt": prompt_id},
            )
            cursor.execute(
                """
                INSERT INTO task_feedback (task_id, feedback_data, created_at)
                SELECT md5('t' || s.i)::uuid, f.feedback_data, f.created_at
                  FROM generate_series(0, %(total)s - 1) AS s(i)
                  JOIN tpl_feedback f ON f.n = s.i %% %(m)s
                """,
                {"m": n_templates, "total": n_tasks},
            )
            cursor.execute("ANALYZE tasks; ANALYZE task_feedback")
        raw.commit()
    finally:
        raw.close()
    with engine.connect() as conn:
        counts = {
            "tasks": conn.execute(sa.select(sa.func.count()).select_from(tasks)).scalar_one(),
            "feedback_rows": conn.execute(sa.select(sa.func.count()).select_from(task_feedback)).scalar_one(),
            "table_size": conn.exec_driver_sql("SELECT pg_size_pretty(pg_total_relation_size('tasks'))").scalar_one(),
        }
    engine.dispose()
    counts["load_seconds"] = round(time.perf_counter() - started, 1)
    return counts


# ---------------------------------------------------------------- the two approaches ------------
def run_streaming(url: str, chunk_size: int, workers: int) -> dict:
    engine = make_engine(url)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        result = write_golden_parquet(engine, AGENT_ID, os.path.join(tmp, "golden.parquet"),
                                      GoldenDatasetOptions(**OPTIONS), chunk_size=chunk_size, workers=workers)
        seconds = time.perf_counter() - started
    engine.dispose()
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024 if workers > 1 else 0.0
    label = "streaming, 1 process" if workers <= 1 else f"streaming, {workers} workers"
    return {"approach": label, "tasks": result.tasks_read, "golden_rows": result.rows, "seconds": seconds,
            "fingerprint": result.fingerprint, "cpu_seconds": _cpu_seconds(),
            # Upper bound for the whole process tree: main peak + each worker at the largest worker's peak.
            "peak_rss_mb": peak_rss_mb() + workers * children if workers > 1 else peak_rss_mb(),
            "reports": result.reports}


def run_dagster(url: str, chunk_size: int, workers: int) -> dict:
    """training_job's dataset step: the four assets and their checks, materialized by Dagster."""
    import dagster as dg

    from bindu_pipelines.golden_dataset.assets import golden_dataset_assets, golden_dataset_run_config
    from bindu_pipelines.golden_dataset.workers import shutdown_workers
    from bindu_pipelines.io_managers import ParquetIOManager
    from bindu_pipelines.partitions import agent_partitions
    from bindu_pipelines.resources import BinduDatabase

    with tempfile.TemporaryDirectory() as tmp, dg.DagsterInstance.ephemeral() as instance, TreePeak() as peak:
        instance.add_dynamic_partitions(agent_partitions.name, [AGENT_ID])
        started = time.perf_counter()
        result = dg.materialize(
            golden_dataset_assets, partition_key=AGENT_ID, instance=instance,
            resources={"bindu_db": BinduDatabase(url=url), "parquet_io_manager": ParquetIOManager(base_dir=tmp)},
            run_config=golden_dataset_run_config(max_interactions_query_limit=None, require_feedback=True,
                                                 chunk_size=chunk_size, workers=workers),
        )
        seconds = time.perf_counter() - started
        shutdown_workers()
    assert result.success
    meta = {e.asset_key.path[-1]: {k: v.value for k, v in e.materialization.metadata.items()}
            for e in result.get_asset_materialization_events()}
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    steps = {e.step_key: round(e.event_specific_data.duration_ms / 1000, 1)
             for e in result.all_events if e.event_type_value == "STEP_SUCCESS"}
    drops: dict[str, int] = {}
    for asset in ("normalized_feedback", "extracted_interactions", "golden_dataset"):
        drops.update(meta[asset]["dropped_by_reason"])
    return {"approach": f"dagster assets, {workers} w", "tasks": meta["raw_tasks"]["dagster/row_count"],
            "golden_rows": meta["golden_dataset"]["dagster/row_count"], "seconds": seconds,
            "fingerprint": meta["golden_dataset"]["fingerprint"], "peak_rss_mb": peak.peak, "peak_pss_mb": peak.peak_pss,
            "drops": {k: v for k, v in sorted(drops.items()) if v}, "checks": checks, "steps": steps,
            "cpu_seconds": peak.cpu_seconds}


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (user + system)."""
    return round(sum(getattr(resource.getrusage(who), f) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
                     for f in ("ru_utime", "ru_stime")), 1)


def _drops(reports: dict) -> dict[str, int]:
    drops: dict[str, int] = {}
    for report in reports.values():
        drops.update(report["dropped"])
    return {k: v for k, v in sorted(drops.items()) if v}


def run_seed(url: str) -> dict:
    """Everything into memory first (one plain query per table), then the same stages."""
    engine = make_engine(url)
    started = time.perf_counter()
    with engine.connect() as conn:
        task_rows = conn.execute(
            sa.select(tasks.c.id, tasks.c.context_id, tasks.c.prompt_id, tasks.c.created_at, tasks.c.history)
            .where(*_agent_filter(AGENT_ID, None, None))
            .order_by(tasks.c.created_at.desc(), tasks.c.id)
        ).all()
        feedback_rows = conn.execute(
            sa.select(task_feedback.c.task_id, task_feedback.c.id, task_feedback.c.created_at, task_feedback.c.feedback_data)
            .where(task_feedback.c.task_id.in_(sa.select(tasks.c.id).where(*_agent_filter(AGENT_ID, None, None))))
        ).all()
    feedback = defaultdict(list)
    for task_id, row_id, created_at, data in feedback_rows:
        feedback[task_id].append(FeedbackRow(row_id, created_at, data))
    pipeline = GoldenDatasetPipeline(GoldenDatasetOptions(**OPTIONS))
    rows = []
    for row in task_rows:
        raw_task = RawTask(str(row.id), str(row.context_id), row.prompt_id, row.created_at, row.history, feedback.get(row.id, []))
        rows.extend(pipeline.process_task(raw_task))
    frame = golden_frame(rows)
    seconds = time.perf_counter() - started
    engine.dispose()
    from bindu_pipelines.golden_dataset.dataset import fingerprint_frame

    return {"approach": "seed (all in memory)", "tasks": len(task_rows), "golden_rows": len(frame), "seconds": seconds,
            "peak_rss_mb": peak_rss_mb(), "reports": pipeline.summary(), "fingerprint": fingerprint_frame(frame),
            "cpu_seconds": _cpu_seconds()}


def in_subprocess(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, "-m", "benchmarks.golden_dataset", *args],
                         cwd=ROOT, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- main --------------------------
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--templates", type=int, default=20_000)
    parser.add_argument("--chunk-size", type=int, default=5_000)
    parser.add_argument("--workers", type=int, default=2, help="processes for the parallel streaming run")
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs of the parallel streaming approach; the median is reported, every run listed")
    parser.add_argument("--skip-seed", action="store_true", help="only measure the streaming path")
    parser.add_argument("--no-write", action="store_true", help="print only, do not write the results file")
    parser.add_argument("--skip-streaming", action="store_true", help="only measure Dagster's assets and the seed's way")
    parser.add_argument("--worker", choices=["streaming", "seed", "dagster"], help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker == "streaming":
        print(json.dumps(run_streaming(args.url, args.chunk_size, args.workers)))
        return 0
    if args.worker == "dagster":
        print(json.dumps(run_dagster(args.url, args.chunk_size, args.workers)))
        return 0
    if args.worker == "seed":
        print(json.dumps(run_seed(args.url)))
        return 0

    with scratch_postgres_database("bindu_bench_golden") as url:
        loaded = load(url, args.tasks, args.templates)
        print(f"loaded {loaded}", flush=True)
        streaming = ["--worker", "streaming", "--url", url, "--chunk-size", str(args.chunk_size)]
        dagster = ["--worker", "dagster", "--url", url, "--chunk-size", str(args.chunk_size)]
        dagster_runs = [in_subprocess([*dagster, "--workers", str(args.workers)]) for _ in range(max(1, args.repeat))]
        results = [sorted(dagster_runs, key=lambda r: r["seconds"])[len(dagster_runs) // 2]]
        parallel_runs = []
        if not args.skip_streaming:
            results.append(in_subprocess([*streaming, "--workers", "1"]))
        if args.workers > 1 and not args.skip_streaming:
            parallel_runs = [in_subprocess([*streaming, "--workers", str(args.workers)]) for _ in range(max(1, args.repeat))]
            results.append(sorted(parallel_runs, key=lambda r: r["seconds"])[len(parallel_runs) // 2])
        if not args.skip_seed:
            results.append(in_subprocess(["--worker", "seed", "--url", url]))

    seed_rate = next((r["tasks"] / r["seconds"] for r in results if r["approach"].startswith("seed")), None)
    lines = [
        f"data: {loaded['tasks']:,} tasks ({loaded['table_size']}), {loaded['feedback_rows']:,} feedback rows, "
        f"{args.templates:,} demo templates x copies; loaded in {loaded['load_seconds']} s (COPY + generate_series)",
        "options: strategy last_turn, require_feedback, PII scrubbing on, no limit, "
        f"chunk size {args.chunk_size:,}",
        "dagster assets: dg.materialize of golden_dataset_stages (raw_tasks, normalized_feedback, "
        "extracted_interactions and golden_dataset in one pass, and the 5 checks; in-process executor, "
        "ephemeral instance), N worker processes",
        "peak RSS: each approach in its own subprocess; dagster: the whole process tree (main + workers, /proc "
        "sampled every 0.1 s); streaming, N workers: main + N x the largest worker's ru_maxrss (an upper bound); "
        "others ru_maxrss; CPU s: user + system of the subprocess and its workers (dagster: of its process tree, "
        "sampled from /proc), less load-dependent than seconds",
        "x seed: tasks/s over the seed's way in the same run",
        "",
        f"{'approach':<24}{'tasks':>11}{'golden rows':>13}{'seconds':>10}{'tasks/s':>10}{'x seed':>8}{'peak RSS MB':>13}{'CPU s':>8}",
    ]
    for r in results:
        rate = r["tasks"] / r["seconds"]
        ratio = f"{rate / seed_rate:.2f}" if seed_rate else "-"
        lines.append(f"{r['approach']:<24}{r['tasks']:>11,}{r['golden_rows']:>13,}{r['seconds']:>10.1f}"
                     f"{rate:>10,.0f}{ratio:>8}{r['peak_rss_mb']:>13,.0f}{r.get('cpu_seconds', float('nan')):>8.1f}")
    if len(dagster_runs) > 1:
        lines.append(
            f"  (dagster assets: median of {len(dagster_runs)} runs; each run: "
            + ", ".join(f"{r['seconds']:.1f} s = {r['tasks'] / r['seconds']:,.0f} tasks/s" for r in dagster_runs) + ")"
        )
    verdicts = ", ".join(f"{name} {'passed' if passed else 'FAILED'}" for name, passed in results[0]["checks"].items())
    lines.append(f"  (dagster checks: {verdicts})")
    lines.append(f"  (dagster steps, seconds: {results[0]['steps']})")
    lines.append(f"  (dagster peak PSS of the process tree, shared pages counted once: {results[0]['peak_pss_mb']:,.0f} MB)")
    if len(parallel_runs) > 1:
        lines.append(
            f"  (streaming, {args.workers} workers: median of {len(parallel_runs)} runs; each run: "
            + ", ".join(f"{r['seconds']:.1f} s = {r['tasks'] / r['seconds']:,.0f} tasks/s" for r in parallel_runs) + ")"
        )
        assert len({(r["golden_rows"], r["fingerprint"]) for r in parallel_runs}) == 1, "runs disagree"
    lines += ["", "stage report (seed's way):"]
    for stage, report in results[-1]["reports"].items():
        lines.append(f"  {stage:<12} in {report['rows_in']:>9,}  out {report['rows_out']:>9,}  dropped {report['dropped']}")
    same_reports = len({json.dumps(r["reports"], sort_keys=True) for r in results if "reports" in r}) == 1
    same_rows = len({(r["golden_rows"], r["fingerprint"]) for r in results}) == 1
    same_drops = len({json.dumps(r["drops"] if "drops" in r else _drops(r["reports"]), sort_keys=True) for r in results}) == 1
    lines += ["", "every approach gave the same golden rows (count and fingerprint of the rows in order): "
              + ("yes" if same_rows else "NO"),
              "every approach gave the same drop counts by reason: " + ("yes" if same_drops else "NO")
              + (f" {results[0]['drops']}" if same_drops else "; " + "; ".join(
                  f"{r['approach']}: {r.get('drops') or _drops(r['reports'])}" for r in results)),
              "the non-Dagster approaches gave the same stage reports: " + ("yes" if same_reports else "NO")]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        print(f"\nwritten to {write_results('golden_dataset', text)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
