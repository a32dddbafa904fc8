"""`bindu-dspy train --agent ID [--optimizer simba|gepa|miprov2] [--strategy last_n:3] [--require-feedback|--no-require-feedback] [--dry-run]`

Launches the training job for the agent through Dagster (recorded in DAGSTER_HOME, visible in the
UI's run history, same path as the daily schedule) and prints the outcome. Every option is checked
before the run is launched: a bad one is a usage error (exit 2) and leaves no run behind.
"""

from __future__ import annotations

import argparse
import json
import os


def _strategy(text: str) -> str:
    from bindu_pipelines.golden_dataset.strategies import strategy_spec

    try:
        return strategy_spec(text) or text
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1, got {value}")
    return value


def register(subparsers) -> None:
    from bindu_pipelines.names import OPTIMIZER_NAMES as OPTIMIZERS

    parser = subparsers.add_parser("train", help="optimize an agent's prompt and start a canary if it wins offline")
    parser.add_argument("--agent", required=True, help="agent id")
    parser.add_argument("--optimizer", type=str.lower, choices=OPTIMIZERS, default="simba")
    parser.add_argument("--strategy", type=_strategy, default="last_turn", help="extraction strategy: name or name:arg[:arg]")
    parser.add_argument(
        "--require-feedback", action=argparse.BooleanOptionalAction, default=True,
        help="only train on interactions with feedback (default: on)",
    )  # fmt: skip
    parser.add_argument("--max-steps", type=positive_int, help="SIMBA steps (default 8)")
    parser.add_argument("--database-url", help="default: BINDU_DATABASE_URL or STORAGE__POSTGRES_URL (one of them is required)")
    parser.add_argument("--dry-run", action="store_true", help="print the estimated LM calls, tokens and cost; start nothing")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=run_train)


def _use_database(url: str | None) -> str:
    """The database URL the run will use, refused in one line when none is configured."""
    from bindu_runtime.config import resolve_database_url

    resolved = resolve_database_url(url)
    if url:
        # The run's resource reads the environment, so the password never lands in its config.
        os.environ["BINDU_DATABASE_URL"] = resolved
    return resolved


def run_dry(args) -> int:
    """Build the golden dataset in this process (no run, no LM call) and estimate the run on it."""
    import asyncio

    from bindu_pipelines.golden_dataset import build_golden_dataset
    from bindu_pipelines.optimization.estimate import estimate_training_run
    from bindu_pipelines.optimization.optimizers import OptimizerConfig
    from bindu_pipelines.optimization.settings import LanguageModelSettings

    rows = asyncio.run(build_golden_dataset(agent_id=args.agent, strategy=args.strategy, require_feedback=args.require_feedback))
    config = OptimizerConfig(name=args.optimizer, **({"max_steps": args.max_steps} if args.max_steps else {}))
    estimate = estimate_training_run(LanguageModelSettings(), len(rows), config, args.strategy)
    if args.json:
        print(json.dumps({"agent": args.agent, "golden_dataset_rows": len(rows), **estimate.as_dict()}, indent=2, default=str))
    else:
        print(f"{args.agent}: golden dataset of {len(rows)} rows. {estimate.summary()}")
    return 1 if estimate.over_budget() else 0


def run_train(args) -> int:
    from bindu_pipelines.cli import CommandFailed
    from bindu_pipelines.optimization.api import TrainingRunFailed, launch_training

    _use_database(args.database_url)
    if args.dry_run:
        return run_dry(args)
    extra = {"max_steps": args.max_steps} if args.max_steps is not None else {}
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
                          "reason": result.reason, **result.details}, indent=2, default=str))  # fmt: skip
        return 0
    d = result.details
    print(f"{result.agent_id}: {result.outcome} — {result.reason}")
    if "active_score" in d:
        # One score scale everywhere: mean feedback score 0..1 (a 1-5 rating r is (r-1)/4, thumbs up 1).
        print(f"  offline scores (0-1): active {d['active_score']:.3f}, candidate {d['candidate_score']:.3f} "
              f"(lower bound {d.get('lower_bound', float('nan')):+.3f})")  # fmt: skip
    if "lm_calls" in d:
        print(f"  model {d.get('lm_model')}: {d['lm_calls']} calls, {d['lm_tokens']} tokens")
    if d.get("candidate_prompt_id"):
        print(f"  candidate {d['candidate_prompt_id']} now serves 10% of traffic")
    print(f"  dagster run {result.run_id}")
    return 0
