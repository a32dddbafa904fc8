"""`bindu-dspy simulate`: the canary policy on simulated traffic (the controller's own code).

Prints how often the candidate is promoted, rolled back or left undecided, and the median feedback
events and hours to a decision.
"""

from __future__ import annotations

import json


def register(subparsers) -> None:
    parser = subparsers.add_parser("simulate", help="promote / rollback rates of a canary policy on simulated traffic")
    parser.add_argument("--active-rate", type=float, default=0.7, help="active prompt's mean score (0..1)")
    parser.add_argument("--candidate-rate", type=float, default=0.75, help="candidate's mean score (0..1)")
    parser.add_argument("--feedback-per-hour", type=float, default=50.0)
    parser.add_argument("--hours", type=int, default=336, help="hourly checks (336 = 14 days)")
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--scale", choices=("thumbs", "rating"), default="thumbs", help="thumbs 0/1 or ratings 1-5")
    parser.add_argument("--policy", default="sequential", help="sequential (default, alias ours) or seed (the original rule)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=run_simulate)


def run_simulate(args) -> int:
    from bindu_pipelines.canary.simulate import Scenario, simulate

    scenario = Scenario(
        active_rate=args.active_rate,
        candidate_rate=args.candidate_rate,
        feedback_per_hour=args.feedback_per_hour,
        hours=args.hours,
        runs=args.runs,
        seed=args.seed,
        scale=args.scale,
    )
    result = simulate(scenario, args.policy)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0

    def median(value, unit):
        return "-" if value is None else f"{value:.0f} {unit}"

    print(
        f"policy {result.policy}: {scenario.runs} runs, active {scenario.active_rate:.2f} vs candidate "
        f"{scenario.candidate_rate:.2f} ({scenario.scale}), {scenario.feedback_per_hour:g} feedback/h, {scenario.hours} h"
    )
    print(f"  promoted {result.promoted:.1%}   rolled back {result.rolled_back:.1%}   undecided {result.undecided:.1%}")
    print(
        f"  median to a decision: {median(result.median_events_to_decision, 'feedback events')}, "
        f"{median(result.median_hours_to_decision, 'hours')}"
    )
    return 0
