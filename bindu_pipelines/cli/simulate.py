"""`bindu-dspy simulate`: the canary policy on simulated traffic (the controller's own code).

Prints how often the candidate is promoted, rolled back or left undecided, and the median feedback
events and hours to a decision.
"""

from __future__ import annotations

import json

from bindu_pipelines.canary.cli_options import add_policy_flags, policy_settings


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
    parser.add_argument("--events-per-user", type=float, default=1.0, help="mean feedback events per user (1 = independent events)")
    parser.add_argument("--correlation", type=float, default=0.0, help="intra-user correlation of the scores (0..1)")
    parser.add_argument("--delay-hours", type=float, default=2.0, help="mean feedback delay, hours (exponential)")
    for arm in ("active", "candidate"):
        for outcome in ("up", "down"):
            parser.add_argument(f"--{arm}-{outcome}-delay-hours", type=float, default=None, help=f"mean delay of the {arm}'s thumbs-{outcome}")
    parser.add_argument("--daily-swing", type=float, default=0.0, help="time-of-day swing of both arms' rates (e.g. 0.1 = +-10 pts)")
    parser.add_argument("--start-hour", type=int, default=0, help="hour of day the experiment starts")
    parser.add_argument("--fade-to", type=float, default=None, help="novelty: the candidate's effect fades linearly to this difference")
    parser.add_argument("--fade-hours", type=float, default=120.0, help="hours the fade takes")
    parser.add_argument("--candidate-loss", type=float, default=0.0, help="share of the candidate's thumbs-down lost (SRM)")
    add_policy_flags(parser)
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=run_simulate)


def run_simulate(args) -> int:
    from bindu_pipelines.canary.policy import get_policy
    from bindu_pipelines.canary.simulate import Scenario, simulate
    from bindu_pipelines.cli import CommandFailed

    try:
        scenario = Scenario(
            active_rate=args.active_rate, candidate_rate=args.candidate_rate, feedback_per_hour=args.feedback_per_hour,
            hours=args.hours, runs=args.runs, seed=args.seed, scale=args.scale,
            events_per_user=args.events_per_user, correlation=args.correlation, delay_hours=args.delay_hours,
            active_up_delay_hours=args.active_up_delay_hours, active_down_delay_hours=args.active_down_delay_hours,
            candidate_up_delay_hours=args.candidate_up_delay_hours, candidate_down_delay_hours=args.candidate_down_delay_hours,
            daily_swing=args.daily_swing, start_hour=args.start_hour, fade_to=args.fade_to, fade_hours=args.fade_hours,
            candidate_loss=args.candidate_loss,
        )  # fmt: skip
        settings = policy_settings(args)
        policy = get_policy(args.policy, **settings) if args.policy != "seed" else get_policy("seed")
    except ValueError as exc:
        raise CommandFailed(str(exc)) from None
    result = simulate(scenario, policy)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0

    def median(value, unit):
        return "-" if value is None else f"{value:.0f} {unit}"

    print(
        f"policy {result.policy}: {scenario.runs} runs, active {scenario.active_rate:.2f} vs candidate "
        f"{scenario.candidate_rate:.2f} ({scenario.scale}), {scenario.feedback_per_hour:g} feedback/h, {scenario.hours} h"
    )
    print(
        f"  promoted (active at the end) {result.promoted:.1%}   reverted by the holdback {result.reverted:.1%}   "
        f"rolled back {result.rolled_back:.1%}   undecided {result.undecided:.1%}   maturity window {result.maturity_hours:g} h"
    )
    print(
        f"  median to a decision: {median(result.median_events_to_decision, 'feedback events')}, "
        f"{median(result.median_hours_to_decision, 'hours')}"
    )
    return 0
