"""One experiment's trajectory, as a person should see it: a chart and a table on the experiment's
own time axis (hours since the candidate started), per agent.

The points are the experiment's ``traffic_decision`` materializations (one per controller
iteration, read from the Dagster instance) — the same metadata the asset writes, so the UI, the
``bindu-dspy report`` files and the table agree. Scores are the mean feedback score on 0..1 (a
rating r of 1-5 scores (r-1)/4, thumbs up 1, thumbs down 0), the one scale used everywhere.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from bindu_pipelines.names import TRAFFIC_DECISION, CanaryMeta

SCORE_SCALE = "mean feedback score, 0..1 (rating r of 1-5 → (r−1)/4; thumbs up 1, down 0)"
# The traffic_decision metadata a trajectory point carries.
POINT_KEYS = (
    "hours_running", "traffic_before", "traffic_after", "decision", "status",
    "active_mean_score", "candidate_mean_score", "active_feedback_tasks", "candidate_feedback_tasks",
    "difference", "lower_bound", "upper_bound", CanaryMeta.CANDIDATE_ID, CanaryMeta.EXPERIMENT_ID, CanaryMeta.PHASE,
)  # fmt: skip
HOLDBACK_NOTE = ("After a promotion the old prompt is held back: \"candidate\" stays the new prompt and "
                 "\"active\" the old one, so the lines run on through the holdback.")


def point_from_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    values = {key: getattr(value, "value", value) for key, value in metadata.items()}
    point = {key: values.get(key) for key in POINT_KEYS}
    # Decisions recorded before experiment ids existed were about their candidate.
    point[CanaryMeta.EXPERIMENT_ID] = point[CanaryMeta.EXPERIMENT_ID] or point[CanaryMeta.CANDIDATE_ID]
    point[CanaryMeta.PHASE] = point[CanaryMeta.PHASE] or "experiment"
    return point


def experiment_view(points: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One rollout on one axis, seen from the prompt under test (oldest first): the ramp's
    points, then the holdback's as ``from_the_new_prompt`` turns them, their hours running on from
    the decision that promoted it."""
    ordered = sorted(points, key=lambda p: (p.get(CanaryMeta.PHASE) == "holdback", _number(p.get("hours_running"))))
    ramp_hours = [_number(p.get("hours_running")) for p in ordered if p.get(CanaryMeta.PHASE) != "holdback"]
    promoted_at = max((h for h in ramp_hours if not math.isnan(h)), default=0.0)
    return [from_the_new_prompt(point, promoted_at) for point in ordered]


def from_the_new_prompt(point: Mapping[str, Any], promoted_at: float = 0.0) -> dict[str, Any]:
    """A decision as the prompt under test sees it. During the holdback the promoted prompt is the
    active arm and the old prompt the candidate arm; turned back, "candidate" stays the new prompt:
    its traffic is 1 − the held-back share, the difference is new − old (bounds negated and
    swapped), and the hours count from the start of the ramp (``promoted_at`` + holdback hours)."""
    point = dict(point)
    if point.get(CanaryMeta.PHASE) != "holdback":
        return point
    flip = lambda key: None if point.get(key) is None else 1.0 - float(point[key])  # noqa: E731
    negate = lambda key: None if point.get(key) is None else -float(point[key])  # noqa: E731
    point.update(
        hours_running=promoted_at + _number(point.get("hours_running")),
        traffic_before=flip("traffic_before"), traffic_after=flip("traffic_after"),
        active_mean_score=point.get("candidate_mean_score"), candidate_mean_score=point.get("active_mean_score"),
        active_feedback_tasks=point.get("candidate_feedback_tasks"), candidate_feedback_tasks=point.get("active_feedback_tasks"),
        difference=negate("difference"), lower_bound=negate("upper_bound"), upper_bound=negate("lower_bound"),
    )  # fmt: skip
    return point


def trajectory_from_instance(
    instance, agent_id: str, experiment_id: str | None, *, latest: Mapping[str, Any] | None = None, limit: int = 2000
) -> list[dict[str, Any]]:
    """The rollout's points (oldest first, as ``experiment_view``): this agent's
    ``traffic_decision`` materializations about ``experiment_id``, its ramp and its holdback,
    then ``latest`` (a decision being recorded now)."""
    import dagster as dg

    if not experiment_id:
        return []
    result = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(TRAFFIC_DECISION), asset_partitions=[agent_id]), limit=limit
    )
    points = []
    for record in result.records:
        materialization = record.asset_materialization
        if materialization is None:
            continue
        point = point_from_metadata(materialization.metadata)
        if point[CanaryMeta.EXPERIMENT_ID] == experiment_id:
            points.append(point)
    return experiment_view([*points, *([latest] if latest else [])])


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(float(value)) else math.nan


def chart_png(points: Sequence[Mapping[str, Any]], agent_id: str) -> bytes:
    """Three panels over hours since start: candidate traffic, both arms' mean scores, and the
    difference with its always-valid bounds; decisions that changed traffic are marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hours = [_number(p.get("hours_running")) for p in points]
    traffic = [_number(p.get("traffic_after") if p.get("traffic_after") is not None else p.get("traffic_before")) for p in points]
    # Fixed margins: constrained layout would cost half of the drawing time for the same frame.
    figure, (top, middle, bottom) = plt.subplots(3, 1, figsize=(9, 7.5), sharex=True)
    figure.subplots_adjust(left=0.08, right=0.98, top=0.94, bottom=0.07, hspace=0.1)
    figure.suptitle(f"{agent_id}: canary experiment by hour since the candidate started")
    top.step(hours, [100 * t for t in traffic], where="post", color="tab:purple", label="candidate traffic")
    top.set_ylabel("candidate traffic %")
    top.set_ylim(-5, 105)
    middle.plot(hours, [_number(p.get("active_mean_score")) for p in points], marker=".", label="active", color="tab:blue")
    middle.plot(hours, [_number(p.get("candidate_mean_score")) for p in points], marker=".", label="candidate", color="tab:orange")
    middle.set_ylabel("mean score (0..1)")
    middle.set_ylim(0, 1)
    difference = [_number(p.get("difference")) for p in points]
    lower = [_number(p.get("lower_bound")) for p in points]
    upper = [_number(p.get("upper_bound")) for p in points]
    bottom.fill_between(hours, lower, upper, color="tab:green", alpha=0.25, label="always-valid bounds")
    bottom.plot(hours, difference, color="tab:green", label="candidate − active")
    bottom.axhline(0, color="black", linewidth=0.8)
    bottom.set_ylabel("difference")
    bottom.set_xlabel("hours since the experiment started")
    for point, hour in zip(points, hours, strict=True):
        if point.get("traffic_after") is not None and point.get("traffic_after") != point.get("traffic_before"):
            for axis in (top, middle, bottom):
                axis.axvline(hour, color="grey", linestyle=":", linewidth=0.8)
            top.annotate(str(point.get("decision")), (hour, 100 * _number(point.get("traffic_after"))),
                         textcoords="offset points", xytext=(3, 4), fontsize=8)  # fmt: skip
    for axis in (top, middle, bottom):
        axis.grid(alpha=0.3)
        axis.legend(loc="upper left", fontsize=8)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    return buffer.getvalue()


def _fmt(value: Any, pattern: str) -> str:
    number = _number(value)
    return "—" if math.isnan(number) else pattern.format(number)


TABLE_COLUMNS = ("hour", "candidate traffic", "active (n)", "candidate (n)", "difference [bounds]", "decision")


def decision_label(point: Mapping[str, Any]) -> str:
    return str(point.get("decision") or "") + (" (holdback)" if point.get(CanaryMeta.PHASE) == "holdback" else "")


def table_rows(points: Iterable[Mapping[str, Any]]) -> list[tuple[str, ...]]:
    rows = []
    for p in points:
        after = p.get("traffic_after")
        traffic = _fmt(p.get("traffic_before"), "{:.0%}") + ("" if after is None or after == p.get("traffic_before") else " → " + _fmt(after, "{:.0%}"))
        rows.append((
            _fmt(p.get("hours_running"), "{:.1f}"),
            traffic,
            f"{_fmt(p.get('active_mean_score'), '{:.3f}')} ({_fmt(p.get('active_feedback_tasks'), '{:.0f}')})",
            f"{_fmt(p.get('candidate_mean_score'), '{:.3f}')} ({_fmt(p.get('candidate_feedback_tasks'), '{:.0f}')})",
            f"{_fmt(p.get('difference'), '{:+.3f}')} [{_fmt(p.get('lower_bound'), '{:+.3f}')}, {_fmt(p.get('upper_bound'), '{:+.3f}')}]",
            decision_label(p),
        ))  # fmt: skip
    return rows


def table_markdown(points: Sequence[Mapping[str, Any]]) -> str:
    lines = ["| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---:|" * 5 + "---|"]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(points)]
    return "\n".join(lines)


def chart_markdown(png: bytes, points: Sequence[Mapping[str, Any]], agent_id: str) -> str:
    encoded = base64.b64encode(png).decode("ascii")
    return "\n".join([
        f"![{agent_id}: canary trajectory](data:image/png;base64,{encoded})",
        "",
        f"Scores: {SCORE_SCALE}. Hours since the experiment started. {HOLDBACK_NOTE}",
        "",
        table_markdown(points),
    ])  # fmt: skip


def report_html(agent_id: str, png_name: str, points: Sequence[Mapping[str, Any]], gate: str = "") -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in TABLE_COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>" for row in table_rows(points))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(agent_id)}: canary report</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}</style>
</head><body>
<h1>{html.escape(agent_id)}: canary experiment</h1>
<p>{html.escape(gate)}</p>
<p><img src="{html.escape(png_name)}" alt="{html.escape(agent_id)}: canary trajectory"></p>
<p>Scores: {html.escape(SCORE_SCALE)}. Hours since the experiment started. {html.escape(HOLDBACK_NOTE)}</p>
<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
</body></html>
"""


def write_report(agent_id: str, points: Sequence[Mapping[str, Any]], out_dir: Path, *, gate: str = "") -> tuple[Path, Path]:
    """``<agent>-canary.png`` and ``<agent>-canary.html`` in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in agent_id) + "-canary"
    png_path, html_path = out_dir / f"{stem}.png", out_dir / f"{stem}.html"
    png_path.write_bytes(chart_png(points, agent_id))
    html_path.write_text(report_html(agent_id, png_path.name, points, gate))
    return png_path, html_path


def trajectory_metadata(instance, agent_id: str, current: Mapping[str, Any]) -> dict[str, Any]:
    """The ``trajectory`` metadata of a ``traffic_decision`` materialization: the chart and the
    table of the whole rollout so far (earlier materializations plus this one). Empty when no
    experiment is running."""
    import dagster as dg

    point = point_from_metadata(current)
    if not point[CanaryMeta.EXPERIMENT_ID]:
        return {}
    points = trajectory_from_instance(instance, agent_id, point[CanaryMeta.EXPERIMENT_ID], latest=point)
    return {"trajectory": dg.MetadataValue.md(chart_markdown(chart_png(points, agent_id), points, agent_id))}
