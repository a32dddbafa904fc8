"""`bindu-dspy runs [--agent ID] [--clear-dead | --fail RUN_ID [--reason TEXT]] [--json]`

The unfinished Dagster runs of our jobs (docs/OPERATIONS.md), each with a verdict:

* ``alive`` — started on this machine and its process still holds the run's claim;
* ``dead`` — started on this machine and its process is gone (SIGKILL, out of memory): it would be
  marked failed by the next ``train``/``canary`` for the agent anyway; ``--clear-dead`` does it now;
* ``unknown`` — queued, started by the daemon or on another machine: Dagster's run monitoring
  (``dagster.yaml``) judges it; ``--fail RUN_ID`` marks it failed when you know its machine is lost.
"""

from __future__ import annotations

import json

UNFINISHED = ("QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING")


def register(subparsers) -> None:
    parser = subparsers.add_parser("runs", help="unfinished training/canary runs: alive, dead or unknown; clear dead ones")
    parser.add_argument("--agent", help="only this agent's runs")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--clear-dead", action="store_true", help="mark the runs whose process is gone failed")
    action.add_argument("--fail", metavar="RUN_ID", help="mark this unfinished run failed (its machine is lost)")
    parser.add_argument("--reason", default="marked failed by an operator", help="with --fail: the reason recorded in the run's log")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=run_runs)


def run_runs(args) -> int:
    import socket

    import dagster as dg

    from bindu_pipelines.cli import CommandFailed
    from bindu_pipelines.instance import HOST_TAG, PID_TAG, dead_reason, fail_dead_run, open_instance
    from bindu_pipelines.names import CANARY_JOB, TRAINING_JOB

    instance = open_instance()
    if args.fail:
        run = instance.get_run_by_id(args.fail)
        if run is None:
            raise CommandFailed(f"no run {args.fail} in the Dagster instance at {instance.root_directory}")
        if run.is_finished:
            raise CommandFailed(f"run {run.run_id} is already {run.status.value}: nothing to clear")
        instance.report_run_failed(run, f"Marked failed by bindu-dspy runs --fail: {args.reason}.")
        print(f"run {run.run_id} ({run.job_name}, agent {run.tags.get('dagster/partition', '?')}): marked failed")
        return 0
    filters = dg.RunsFilter(
        job_name=None,
        statuses=[dg.DagsterRunStatus(status) for status in UNFINISHED],
        tags={"dagster/partition": args.agent} if args.agent else {},
    )
    rows = []
    for run in instance.get_runs(filters=filters):
        if run.job_name not in (TRAINING_JOB, CANARY_JOB):
            continue
        reason = dead_reason(instance, run) if run.status != dg.DagsterRunStatus.QUEUED else None
        ours = run.tags.get(HOST_TAG) == socket.gethostname() and run.status != dg.DagsterRunStatus.QUEUED
        verdict = "dead" if reason else "alive" if ours else "unknown"
        if reason and args.clear_dead:
            fail_dead_run(instance, run, reason)
            verdict = "dead, marked failed"
        rows.append({"run_id": run.run_id, "job": run.job_name, "agent": run.tags.get("dagster/partition"),
                     "status": run.status.value, "host": run.tags.get(HOST_TAG), "pid": run.tags.get(PID_TAG),
                     "verdict": verdict, "reason": reason})  # fmt: skip
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no unfinished training or canary runs" + (f" for {args.agent}" if args.agent else ""))
        return 0
    for row in rows:
        where = f"pid {row['pid']} on {row['host']}" if row["host"] else "daemon or another launcher"
        print(f"{row['run_id']}  {row['job']:12}  {row['agent'] or '?':20}  {row['status']:11}  {row['verdict']:19}  {where}")
    return 0

