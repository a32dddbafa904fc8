"""The canary as a Dagster asset: one ``traffic_decision`` per agent partition per iteration.

Each materialization is one controller iteration (``controller.run_controller_once``). Its
metadata is the experiment's record over time: both arms' feedback counts and mean scores, the
always-valid bounds on the difference, the decision, and the candidate's traffic before and after,
as numbers Dagster plots across materializations, plus a Markdown summary for people.
"""

from datetime import UTC, datetime

import dagster as dg
from pydantic import Field

from bindu_pipelines.canary.chart import trajectory_metadata
from bindu_pipelines.canary.controller import ControllerOutcome, DatabaseUnavailable, run_controller_once
from bindu_pipelines.canary.policy import available_policies
from bindu_pipelines.errors import UnknownAgent
from bindu_pipelines.metadata import rounded_float
from bindu_pipelines.names import CanaryMeta
from bindu_pipelines.partitions import agent_partitions
from bindu_pipelines.resources import BinduDatabase

GROUP = "canary"
CANARY_AGENT_TAG = "bindu/canary-agent"  # dagster.yaml limits canary runs to one per agent

# Numeric metadata plotted across materializations: (metadata key, statistic key).
PLOTTED_STATISTICS = [
    ("active_feedback_tasks", "active_n"),
    ("active_mean_score", "active_mean"),
    ("candidate_feedback_tasks", "candidate_n"),
    ("candidate_mean_score", "candidate_mean"),
    ("difference", "difference"),
    ("lower_bound", "lower_bound"),
    ("upper_bound", "upper_bound"),
    ("z", "z"),
    ("srm_z", "srm_z"),
]


class CanaryConfig(dg.Config):
    """Options of one controller iteration."""

    policy: str = Field(default="sequential", description=f"Decision policy: one of {', '.join(available_policies())}.")
    as_of: str | None = Field(
        default=None, description="ISO timestamp to decide as of (back-fills, simulations); default: now."
    )
    settings: dict[str, str] = Field(
        default_factory=dict, description="Policy settings for this run (canary.settings: ramp, min_stage_hours, holdback_hours, ...)."
    )

    def as_of_datetime(self) -> datetime | None:
        if self.as_of is None:
            return None
        moment = datetime.fromisoformat(self.as_of)
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _summary(outcome: ControllerOutcome) -> str:
    if outcome.decision is None:
        return f"**{outcome.agent_id}**: {outcome.message}"
    s = outcome.statistics

    def fmt(key: str, pattern: str = "{:.3f}") -> str:
        value = s.get(key)
        return "n/a" if value is None else pattern.format(value)

    return "\n".join(
        [
            f"**{outcome.agent_id}** · policy `{outcome.policy}` · {outcome.hours_running:.1f} h running",
            "",
            f"**Decision: {outcome.decision.action.label}** ({outcome.status}) — {outcome.decision.reason}",
            "",
            "| arm | prompt | feedback tasks | mean score |",
            "|---|---|---:|---:|",
            f"| active | `{outcome.active_id}` | {fmt('active_n', '{:.0f}')} | {fmt('active_mean')} |",
            f"| candidate | `{outcome.candidate_id}` | {fmt('candidate_n', '{:.0f}')} | {fmt('candidate_mean')} |",
            "",
            f"Difference {fmt('difference', '{:+.3f}')}; always-valid bounds "
            f"[{fmt('lower_bound', '{:+.3f}')}, {fmt('upper_bound', '{:+.3f}')}] (promote above 0, roll back below 0).",
            "",
            f"Candidate traffic: {outcome.traffic_before:.0%} → "
            + ("unchanged (another run decided first)" if outcome.traffic_after is None else f"{outcome.traffic_after:.0%}"),
        ]
    )


def outcome_metadata(outcome: ControllerOutcome) -> dict[str, dg.MetadataValue]:
    metadata: dict[str, dg.MetadataValue | None] = {
        "status": dg.MetadataValue.text(outcome.status),
        "decision": dg.MetadataValue.text(outcome.decision.action.label if outcome.decision else "none"),
        "reason": dg.MetadataValue.text(outcome.decision.reason if outcome.decision else outcome.message),
        "policy": dg.MetadataValue.text(outcome.policy or ""),
        "traffic_before": rounded_float(outcome.traffic_before),
        "traffic_after": rounded_float(outcome.traffic_after),
        "hours_running": rounded_float(outcome.hours_running),
        "summary": dg.MetadataValue.md(_summary(outcome)),
    }
    for key, statistic in PLOTTED_STATISTICS:
        metadata[key] = rounded_float(outcome.statistics.get(statistic))
    if outcome.candidate_id:
        metadata[CanaryMeta.CANDIDATE_ID] = dg.MetadataValue.text(outcome.candidate_id)
    if outcome.experiment_id:
        metadata[CanaryMeta.EXPERIMENT_ID] = dg.MetadataValue.text(outcome.experiment_id)
        metadata[CanaryMeta.PHASE] = dg.MetadataValue.text(outcome.phase or "experiment")
    return {key: value for key, value in metadata.items() if value is not None}


@dg.asset(
    partitions_def=agent_partitions,
    group_name=GROUP,
    # Lineage: the decision is about the candidate that `candidate_prompt` put into the canary.
    deps=["candidate_prompt"],
    kinds={"python", "sql"},
    description=(
        "How much traffic the agent's candidate prompt gets after this canary iteration: ramped up, "
        "promoted to active, rolled back, or held, decided by an always-valid sequential test on live feedback."
    ),
)
def traffic_decision(context: dg.AssetExecutionContext, config: CanaryConfig, bindu_db: BinduDatabase) -> dg.MaterializeResult:
    agent_id = context.partition_key
    try:
        outcome = run_controller_once(
            bindu_db.engine(), agent_id, policy=config.policy, as_of=config.as_of_datetime(), settings=config.settings
        )
    except (UnknownAgent, DatabaseUnavailable, ValueError) as exc:
        raise dg.Failure(description=str(exc)) from exc
    context.log.info(outcome.message)
    metadata = outcome_metadata(outcome)
    # The experiment's whole trajectory on its own time axis, as a chart and a table (issue 14).
    metadata.update(trajectory_metadata(context.instance, agent_id, metadata))
    return dg.MaterializeResult(metadata=metadata)


canary_job = dg.define_asset_job(
    name="canary_job",
    selection=[traffic_decision],
    description="One canary controller iteration for one agent (the seed's hourly `cli.canary`).",
)
