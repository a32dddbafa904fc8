"""DESIGN §8 canary table: our sequential policy next to the seed's rule, on simulated traffic.

    .venv/bin/python -m benchmarks.canary_policy [--runs 1000] [--seed 1] [--no-write]

50 feedback events per hour, 14 days (336 hourly checks), active arm at 0.7; every cell is
``--runs`` independent experiments run by the same policy code the controller uses. The table
goes to benchmarks/results/canary_policy.txt.
"""

from __future__ import annotations

import argparse
import time

from benchmarks._common import write_results
from bindu_pipelines.canary.simulate import Scenario, simulate

# (label, candidate rate, scale, candidate_loss, target on the promotion rate, comparison)
CELLS = [
    ("identical candidate (A/A)", 0.70, "thumbs", 0.0, 0.025, "<="),
    ("candidate 5 points worse", 0.65, "thumbs", 0.0, 0.005, "<="),
    ("candidate 10 points worse", 0.60, "thumbs", 0.0, 0.005, "<="),
    ("candidate 5 points better", 0.75, "thumbs", 0.0, 0.95, ">="),
    ("candidate 10 points better", 0.80, "thumbs", 0.0, 0.995, ">="),
    ("ratings 1-5: identical (A/A)", 0.70, "rating", 0.0, 0.025, "<="),
    ("ratings 1-5: 5 points worse", 0.65, "rating", 0.0, 0.005, "<="),
    ("ratings 1-5: 5 points better", 0.75, "rating", 0.0, 0.95, ">="),
    ("A/A, candidate loses 90% of thumbs-down (SRM)", 0.70, "thumbs", 0.9, None, ""),
]
POLICIES = ("sequential", "seed")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--feedback-per-hour", type=float, default=50.0)
    parser.add_argument("--hours", type=int, default=336)
    parser.add_argument("--no-write", action="store_true", help="print only, do not write the results file")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    lines = [
        f"{args.runs} runs per cell, {args.feedback_per_hour:g} feedback/h, {args.hours} hourly checks, "
        f"active rate 0.70, candidate starts at 10 %, seed {args.seed}",
        "promoted = share of runs where the candidate became active; rb = rolled back; und = undecided at the end;",
        "events/hours = medians over decided runs (total feedback events, both arms).",
        "",
    ]
    width = 40
    columns = f"{'promoted':>9} {'rb':>7} {'und':>6} {'events':>7} {'hours':>6}"
    lines.append(f"{'':<46} {'':>9} | " + " | ".join(f"{p:^{width}}" for p in POLICIES))
    header = f"{'scenario':<46} {'target':>9} | " + " | ".join(f"{columns:>{width}}" for _ in POLICIES)
    lines += [header, "-" * len(header)]
    verdicts = []
    for label, rate, scale, loss, target, comparison in CELLS:
        row = f"{label:<46} {(comparison + format(target, '.1%')) if target is not None else '-':>9} | "
        cells = []
        for index, policy in enumerate(POLICIES):
            result = simulate(
                Scenario(
                    active_rate=0.70,
                    candidate_rate=rate,
                    feedback_per_hour=args.feedback_per_hour,
                    hours=args.hours,
                    runs=args.runs,
                    seed=args.seed + index,
                    scale=scale,
                    candidate_loss=loss,
                ),
                policy,
            )
            events = f"{result.median_events_to_decision:.0f}" if result.median_events_to_decision is not None else "-"
            hours = f"{result.median_hours_to_decision:.0f}" if result.median_hours_to_decision is not None else "-"
            cells.append(
                f"{result.promoted:>9.2%} {result.rolled_back:>7.1%} {result.undecided:>6.1%} {events:>7} {hours:>6}"
            )
            if policy == "sequential" and target is not None:
                ok = result.promoted <= target if comparison == "<=" else result.promoted >= target
                verdicts.append(f"{'MET ' if ok else 'MISSED'} {label}: promoted {result.promoted:.2%} (target {comparison} {target:.1%})")
        lines.append(row + " | ".join(f"{c:>{width}}" for c in cells))
    lines += ["", "sequential policy vs DESIGN §8:", *("  " + v for v in verdicts)]
    lines.append(f"\nwall time {time.perf_counter() - started:.1f} s")
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        print(f"\nwritten to {write_results('canary_policy', text)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
