"""`bindu-dspy train --agent ID [--optimizer simba|gepa|miprov2] [--strategy last_n:3] [--require-feedback|--no-require-feedback]`

Launches the training job for the agent through Dagster (recorded in DAGSTER_HOME, visible in the
UI's run history, same path as the daily schedule) and prints the outcome.
"""

from __future__ import annotations

import argparse
import json


def register(subparsers) -> None:
    parser = subparsers.add_parser("train", help="optimize an agent's prompt and start a canary if it wins offline")
    parser.add_argument("--agent", required=True, help="agent id")
    parser.add_argument("--optimizer", choices=("simba", "gepa", "miprov2"), default="simba")
    parser.add_argument("--strategy", default="last_turn", help="extraction strategy: name or name:arg[:arg]")
    parser.add_argument(
        "--require-feedback", action=argparse.BooleanOptionalAction, default=True,
        help="only train on interactions with feedback (default: on)",
    )
    parser.add_argument("--max-steps", type=int, help="SIMBA steps (default 8)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=run_train)


def run_train(args) -> int:
    from bindu_pipelines.cli import CommandFailed
    from bindu_pipelines.optimization.api import TrainingRunFailed, launch_training

    extra = {"max_steps": args.max_steps} if args.max_steps is not None else {}
    if args.max_steps is not None and args.max_steps < 1:
        raise ValueError("--max-steps must be at least 1")
    try:
        result = launch_training(
            args.agent,
            optimizer=args.optimizer,
            strategy=args.strategy,
            require_feedback=args.require_feedback,
            quiet=not args.verbose,
            **extra,
        )
    except TrainingRunFailed as exc:
        raise CommandFailed(f"training run failed: {exc}") from None
    if args.json:
        print(json.dumps({"agent": result.agent_id, "run_id": result.run_id, "outcome": result.outcome,
                          "reason": result.reason, **result.details}, indent=2, default=str))
        return 0
    d = result.details
    print(f"{result.agent_id}: {result.outcome} — {result.reason}")
    if "active_score" in d:
        print(f"  offline scores: active {d['active_score']:.3f}, candidate {d['candidate_score']:.3f} "
              f"(lower bound {d.get('lower_bound', float('nan')):+.3f})")
    if "lm_calls" in d:
        print(f"  model {d.get('lm_model')}: {d['lm_calls']} calls, {d['lm_tokens']} tokens")
    if d.get("candidate_prompt_id"):
        print(f"  candidate {d['candidate_prompt_id']} now serves 10% of traffic")
    print(f"  dagster run {result.run_id}")
    return 0
