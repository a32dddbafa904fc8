"""`bindu-dspy canary --agent ID`: one canary controller iteration, run through Dagster.

The run goes to the instance at DAGSTER_HOME, so it shows in the UI's run history exactly like
the runs the hourly schedule and the feedback sensor start.
"""

from __future__ import annotations

import json

from bindu_pipelines.canary.cli_options import add_policy_flags, policy_settings


def register(subparsers) -> None:
    parser = subparsers.add_parser("canary", help="one canary iteration: ramp, promote, roll back or hold the candidate")
    parser.add_argument("--agent", required=True, help="agent id")
    parser.add_argument("--policy", default="sequential", help="decision policy: sequential (default) or seed")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    add_policy_flags(parser)  # override the agent's settings file (BINDU_CANARY_SETTINGS) for this run
    parser.set_defaults(func=run_canary)


def run_canary(args) -> int:
    from bindu_pipelines.canary.assets import CANARY_AGENT_TAG
    from bindu_pipelines.cli import CommandFailed
    from bindu_pipelines.launch import run_job_for_agent

    from bindu_pipelines.canary.settings import resolve_policy

    settings = policy_settings(args)
    # An unknown policy, a bad settings file or flag is a one-line error before any run starts.
    try:
        resolve_policy(args.policy, args.agent, settings)
    except ValueError as exc:
        raise CommandFailed(str(exc)) from None
    result = run_job_for_agent(
        "canary_job",
        args.agent,
        run_config={"ops": {"traffic_decision": {"config": {"policy": args.policy, "settings": settings}}}},
        tags={CANARY_AGENT_TAG: args.agent},
    )
    if not result.success:
        failures = [event.step_failure_data.error for event in result.get_step_failure_events()]
        detail = failures[0].message.strip().splitlines()[0] if failures and failures[0] else "see the Dagster run"
        raise CommandFailed(f"canary run {result.run_id} failed: {detail}")
    materialization = result.asset_materializations_for_node("traffic_decision")[0]
    metadata = {key: value.value for key, value in materialization.metadata.items()}
    if args.json:
        print(json.dumps({"agent": args.agent, "run_id": result.run_id, **metadata}, indent=2, default=str))
        return 0
    print(f"{args.agent}: {metadata.get('decision')} ({metadata.get('status')}) — {metadata.get('reason')}")
    if "traffic_before" in metadata:
        after = metadata.get("traffic_after")
        print(f"  candidate traffic {metadata['traffic_before']:.0%} -> " + (f"{after:.0%}" if after is not None else "unchanged"))
    if "difference" in metadata:
        print(
            f"  active {metadata.get('active_mean_score', float('nan')):.3f} (n={metadata.get('active_feedback_tasks', 0):.0f}), "
            f"candidate {metadata.get('candidate_mean_score', float('nan')):.3f} (n={metadata.get('candidate_feedback_tasks', 0):.0f}), "
            f"bounds [{metadata.get('lower_bound', float('nan')):+.3f}, {metadata.get('upper_bound', float('nan')):+.3f}]"
        )
    print(f"  dagster run {result.run_id}")
    return 0
