"""Materialization metadata for the golden dataset stages: counts, drops, previews, fingerprints."""

from __future__ import annotations

import math
from typing import Any

import dagster as dg
import pandas as pd

from .dataset import StageReport, fingerprint_frame

PREVIEW_ROWS = 5
PREVIEW_CHARS = 80
SCORE_BINS = ((0.0, 0.2), (0.2, 0.4), (0.4, 0.6), (0.6, 0.8), (0.8, 1.0000001))


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    text = str(value).replace("\n", " ⏎ ").replace("|", "\\|")
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def preview_markdown(frame: pd.DataFrame, columns: list[str]) -> str:
    if frame.empty:
        return "_no rows_"
    head = frame[columns].head(PREVIEW_ROWS)
    return markdown_table(columns, head.values.tolist())


def drops_markdown(reports: list[StageReport]) -> str:
    rows = [[r.stage, r.rows_in, r.rows_out, reason, count] for r in reports for reason, count in sorted(r.drops.items())]
    if not rows:
        return "_nothing dropped_"
    return markdown_table(["stage", "rows in", "rows out", "dropped because", "rows"], rows)


def score_histogram(scores: pd.Series) -> dict[str, int]:
    """Counts of scores per fifth of 0..1, plus the rows without a score."""
    histogram = {}
    for low, high in SCORE_BINS:
        label = f"[{low:.1f}, {min(high, 1.0):.1f}{']' if high > 1 else ')'}"
        histogram[label] = int(((scores >= low) & (scores < high)).sum())
    histogram["no score"] = int(scores.isna().sum())
    return histogram


def stage_metadata(
    reports: list[StageReport], frame: pd.DataFrame, preview_columns: list[str], **extra: Any
) -> dict[str, Any]:
    """The metadata every stage reports: rows in/out, drops by reason, preview, fingerprint."""
    drops: dict[str, int] = {}
    for report in reports:
        for reason, count in report.drops.items():
            drops[reason] = drops.get(reason, 0) + count
    notes: dict[str, int] = {}
    for report in reports:
        notes.update(report.notes)
    metadata: dict[str, Any] = {
        "dagster/row_count": len(frame),
        "rows_in": reports[0].rows_in,
        "rows_out": len(frame),
        "rows_dropped": sum(drops.values()),
        "dropped_by_reason": dg.MetadataValue.json(dict(sorted(drops.items()))),
        "drops": dg.MetadataValue.md(drops_markdown(reports)),
        "preview": dg.MetadataValue.md(preview_markdown(frame, preview_columns)),
        "fingerprint": fingerprint_frame(frame),
    }
    if notes:
        metadata["notes"] = dg.MetadataValue.json(dict(sorted(notes.items())))
    metadata.update(extra)
    return metadata


def output_metadata(output, columns: list[str], preview_columns: list[str], **extra: Any) -> dict[str, Any]:
    """``stage_metadata`` for a stage written to Parquet in batches (a ``stages.StageOutput``):
    the counts, drops and fingerprint gathered while writing, the preview from its first rows."""
    reports = output.reports
    drops: dict[str, int] = {}
    notes: dict[str, int] = {}
    for report in reports:
        for reason, count in report.drops.items():
            drops[reason] = drops.get(reason, 0) + count
        notes.update(report.notes)
    at = [columns.index(c) for c in preview_columns]
    preview = [[row[i] for i in at] for row in output.preview]
    metadata: dict[str, Any] = {
        "dagster/row_count": output.rows,
        "rows_in": reports[0].rows_in,
        "rows_out": output.rows,
        "rows_dropped": sum(drops.values()),
        "dropped_by_reason": dg.MetadataValue.json(dict(sorted(drops.items()))),
        "drops": dg.MetadataValue.md(drops_markdown(reports)),
        "preview": dg.MetadataValue.md(markdown_table(preview_columns, preview) if preview else "_no rows_"),
        "fingerprint": output.fingerprint,
    }
    if notes:
        metadata["notes"] = dg.MetadataValue.json(dict(sorted(notes.items())))
    metadata.update(extra)
    return metadata
