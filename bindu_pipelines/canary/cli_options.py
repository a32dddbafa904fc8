"""The policy-setting flags shared by ``bindu-dspy canary`` and ``bindu-dspy simulate``."""

from __future__ import annotations

# flag -> (setting name, help)
POLICY_FLAGS = {
    "--ramp": ("ramp", "ramp stages, comma-separated candidate shares (default 0.1,0.25,0.5)"),
    "--min-stage-hours": ("min_stage_hours", "dwell per ramp stage, hours (default 24)"),
    "--alpha-promote": ("alpha_promote", "error rate of a false promotion (default 0.025)"),
    "--alpha-harm": ("alpha_harm", "error rate of a false harm rollback (default 0.05)"),
    "--max-hours": ("max_hours", "maximum experiment duration, hours (default 336)"),
    "--maturity-hours": ("maturity_hours", "maturity window, hours (default: derived from observed delays)"),
    "--holdback-share": ("holdback_share", "old prompt's share after a promotion; 0 = no holdback (default 0.1)"),
    "--holdback-hours": ("holdback_hours", "holdback length, hours (default 168)"),
}


def add_policy_flags(parser) -> None:
    for flag, (name, help_text) in POLICY_FLAGS.items():
        parser.add_argument(flag, dest=f"policy_{name}", default=None, metavar="VALUE", help=help_text)


def policy_settings(args) -> dict[str, str]:
    """The flags given, as the run's settings (strings, checked by policy.coerce_settings)."""
    return {
        name: str(getattr(args, f"policy_{name}"))
        for name, _ in POLICY_FLAGS.values()
        if getattr(args, f"policy_{name}", None) is not None
    }
