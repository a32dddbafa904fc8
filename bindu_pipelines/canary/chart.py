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

SCORE_SCALE = "mean feedback score, 0..1 (rating r of 1-5 → (r−1)/4; thumbs up 1, down 0)"
# The traffic_decision metadata a trajectory point carries.
POINT_KEYS = (
    "hours_running", "traffic_before", "traffic_after", "decision", "status",
    "active_mean_score", "candidate_mean_score", "active_feedback_tasks", "candidate_feedback_tasks",
    "difference", "lower_bound", "upper_bound", "candidate_id",
)  # fmt: skip
DECIDED = {"promote", "rollback", "roll back", "rolled_back", "promoted"}


def point_from_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    values = {key: getattr(value, "value", value) for key, value in metadata.items()}
    return {key: values.get(key) for key in POINT_KEYS}


def trajectory_from_instance(instance, agent_id: str, candidate_id: str | None, *, limit: int = 2000) -> list[dict[str, Any]]:
    """The experiment's earlier points (oldest first): this agent's ``traffic_decision``
    materializations about ``candidate_id``."""
    import dagster as dg

    if not candidate_id:
        return []
    result = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("traffic_decision"), asset_partitions=[agent_id]), limit=limit
    )
    points = []
    for record in result.records:
        materialization = record.asset_materialization
        if materialization is None:
            continue
        point = point_from_metadata(materialization.metadata)
        if point["candidate_id"] == candidate_id:
            points.append(point)
    return sorted(points, key=lambda p: (p["hours_running"] is None, p["hours_running"] or 0.0))


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
    figure, (top, middle, bottom) = plt.subplots(3, 1, figsize=(9, 7.5), sharex=True, constrained_layout=True)
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


TABLE_COLUMNS = ("hour", "traffic", "active (n)", "candidate (n)", "difference [bounds]", "decision")


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
            str(p.get("decision") or ""),
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
        f"Scores: {SCORE_SCALE}. Hours since the experiment started.",
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
<p>Scores: {html.escape(SCORE_SCALE)}. Hours since the experiment started.</p>
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
    table of the whole experiment so far (earlier materializations plus this one). Empty when no
    experiment is running."""
    import dagster as dg

    point = point_from_metadata(current)
    if not point["candidate_id"]:
        return {}
    points = trajectory_from_instance(instance, agent_id, point["candidate_id"]) + [point]
    return {"trajectory": dg.MetadataValue.md(chart_markdown(chart_png(points, agent_id), points, agent_id))}
