"""`bindu-dspy report --agent ID [--out DIR]`: the agent's latest canary experiment as a chart (PNG)
and an HTML page, the same chart the ``traffic_decision`` materializations carry in the UI.

Read from the Dagster instance at DAGSTER_HOME (the experiment's ``traffic_decision`` runs).
"""

from __future__ import annotations

from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser("report", help="chart (PNG) and HTML page of the agent's latest canary experiment")
    parser.add_argument("--agent", required=True, help="agent id")
    parser.add_argument("--out", type=Path, default=Path("."), help="directory for the PNG and the HTML page (default: .)")
    parser.set_defaults(func=run_report)


def _latest_experiment(instance, agent_id: str) -> str | None:
    """The prompt of the agent's latest rollout (ramp and holdback): its id, from the newest decision."""
    import dagster as dg

    from bindu_pipelines.canary.chart import point_from_metadata
    from bindu_pipelines.names import TRAFFIC_DECISION, CanaryMeta

    result = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(TRAFFIC_DECISION), asset_partitions=[agent_id]), limit=200, ascending=False
    )
    for record in result.records:
        materialization = record.asset_materialization
        experiment = point_from_metadata(materialization.metadata or {})[CanaryMeta.EXPERIMENT_ID] if materialization else None
        if experiment:
            return experiment
    return None


def _gate_line(instance, agent_id: str, candidate_id: str) -> str:
    import dagster as dg

    result = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("candidate_prompt"), asset_partitions=[agent_id]), limit=50, ascending=False
    )
    for record in result.records:
        meta = {k: getattr(v, "value", v) for k, v in (record.asset_materialization.metadata or {}).items()}
        if meta.get("candidate_prompt_id") == candidate_id and "active_score" in meta:
            return (
                f"Offline gate: {meta.get('gate_verdict') or meta.get('outcome')} — active {meta['active_score']:.3f}, "
                f"candidate {meta['candidate_score']:.3f} (95% lower bound of the gain {meta.get('lower_bound', float('nan')):+.3f}); "
                f"model {meta.get('lm_model', '?')}."
            )
    return ""


def run_report(args) -> int:
    from bindu_pipelines.canary.chart import trajectory_from_instance, write_report
    from bindu_pipelines.cli import CommandFailed

    from bindu_pipelines.instance import open_instance  # storage initialised once, under a lock

    instance = open_instance()
    experiment_id = _latest_experiment(instance, args.agent)
    if experiment_id is None:
        raise CommandFailed(
            f"no canary experiment of {args.agent!r} in the Dagster instance at {instance.root_directory}: "
            "run bindu-dspy canary (or the canary sensor) first, with the same DAGSTER_HOME"
        )
    points = trajectory_from_instance(instance, args.agent, experiment_id)
    png, page = write_report(args.agent, points, args.out, gate=_gate_line(instance, args.agent, experiment_id))
    last = points[-1]
    print(f"{args.agent}: candidate {experiment_id}, {len(points)} decisions over {last['hours_running'] or 0:.1f} h, last: {last['decision']}")
    print(f"  chart {png}")
    print(f"  page  {page}")
    return 0
