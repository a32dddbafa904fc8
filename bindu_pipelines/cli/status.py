"""`bindu-dspy status --agent ID [--json]`: prompts, traffic and usage of one agent."""

from __future__ import annotations

import json

from bindu_pipelines.status import agent_status
from bindu_runtime import make_engine


def register(subparsers) -> None:
    parser = subparsers.add_parser("status", help="an agent's prompts, traffic and experiment state")
    parser.add_argument("--agent", required=True, help="agent id")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--database-url", help="default: BINDU_DATABASE_URL, STORAGE__POSTGRES_URL, dagster_home/bindu.sqlite")
    parser.set_defaults(func=run_status)


def run_status(args) -> int:
    engine = make_engine(args.database_url)
    try:
        status = agent_status(engine, args.agent)
    finally:
        engine.dispose()
    if args.json:
        print(json.dumps(status, indent=2, default=str))
        return 0
    print(render_status(status))
    return 0


def render_status(status: dict) -> str:
    lines = [
        f"agent {status['agent_id']}: " + ("experiment running" if status["experiment_running"] else "no experiment"),
        f"  {'prompt id':36}  {'status':11}  {'traffic':>7}  {'tasks':>7}  {'w/ feedback':>11}  source",
    ]
    for prompt in status["prompts"]:
        lines.append(
            f"  {prompt['id']:36}  {prompt['status']:11}  {prompt['traffic']:>7.1%}  "
            f"{prompt['tasks']:>7}  {prompt['tasks_with_feedback']:>11}  {prompt['source']}"
        )
    experiment = status.get("experiment")  # canary (issue 5): the live experiment's statistic
    if experiment:
        s = experiment["statistics"]
        lines.append(
            f"  experiment: {experiment['hours_running']:.1f} h, active {experiment['active']['mean_score'] or 0:.3f} "
            f"(n={experiment['active']['feedback_tasks']}) vs candidate {experiment['candidate']['mean_score'] or 0:.3f} "
            f"(n={experiment['candidate']['feedback_tasks']}), bounds [{s.get('lower_bound') or float('-inf'):+.3f}, "
            f"{s.get('upper_bound') or float('inf'):+.3f}]; next: {experiment['next_action']} ({experiment['reason']})"
        )
    return "\n".join(lines)
