"""`make demo` as a user runs it, twice: the same story each time on a fresh demo database, the
terminal (stdout and stderr) holding only the report and progress bars that end at 100 %, nothing
in the database after now, and the canary's trajectory as a chart in the UI and in `report`."""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEMO = ["demo", "run", "--reset", "--agents", "1", "--tasks", "120", "--max-steps", "1", "--hours", "28", "--requests-per-hour", "80"]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]


def run(env, *args) -> subprocess.CompletedProcess:
    # Both streams into one, as a terminal shows them.
    return subprocess.run([sys.executable, "-m", "bindu_pipelines.cli", *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=900)  # fmt: skip


def story(transcript: str) -> list[str]:
    """The report without what differs between runs by construction: ids, dates, durations."""
    report = transcript.split("[4/4] report", 1)[1]
    report = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "<id>", report)
    report = re.sub(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}", "<date>", report)
    report = re.sub(r"finished in \d+ s", "finished", report)
    return [line for line in report.splitlines() if line.strip()]


def test_the_demo_twice_tells_the_same_story_and_ends_now(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    env = {k: v for k, v in os.environ.items() if k not in ("BINDU_DATABASE_URL", "STORAGE__POSTGRES_URL", "BINDU_LM")}
    env |= {"DAGSTER_HOME": str(home), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}

    first, second = run(env, *DEMO), run(env, *DEMO)
    assert first.returncode == 0, first.stdout[-3000:]
    assert second.returncode == 0, second.stdout[-3000:]
    for transcript in (first.stdout, second.stdout):
        # Only our lines: the four steps, the bars, the report. No log line, warning or banner.
        assert not re.search(r"\b(DEBUG|INFO|WARNING|ERROR)\b|Traceback|Telemetry", transcript), transcript[:3000]
        bars = [chunk for chunk in re.split(r"[\r\n]", transcript) if "|" in chunk and "/" in chunk and "%" in chunk]
        for name in ("training", "simulated hours"):
            last = [bar for bar in bars if bar.startswith(name)][-1]
            assert "100%" in last, last
        assert "promote" in transcript and "mean score" in transcript
        assert "/5" not in transcript  # one score scale: 0..1

    assert story(first.stdout) == story(second.stdout)  # the split hashes with the candidate's text, not a random id

    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")
    with sqlite3.connect(home / "bindu.sqlite") as connection:
        for table, column in (("tasks", "created_at"), ("task_feedback", "created_at"), ("prompt_events", "created_at"),
                              ("agent_prompts", "updated_at"), ("tasks", "state_timestamp")):  # fmt: skip
            (latest,) = connection.execute(f"SELECT max({column}) FROM {table}").fetchone()
            assert latest[:19] <= now, (table, column, latest)
        # One demo run's rows: the second run started over.
        (agents,) = connection.execute("SELECT count(DISTINCT agent_id) FROM agent_prompts").fetchone()
        (history,) = connection.execute("SELECT count(*) FROM tasks").fetchone()
    assert agents == 1 and history > 120

    # Without --reset the demo refuses to mix a second story into the first, in one line.
    again = run(env, *[a for a in DEMO if a != "--reset"])
    assert again.returncode == 1 and len(again.stdout.strip().splitlines()) == 1 and "--reset" in again.stdout

    # The canary's trajectory: the chart and table in the last decision's metadata, and `report`.
    import dagster as dg

    with dg.DagsterInstance.from_config(str(home)) as instance:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("traffic_decision"), asset_partitions=["support-bot"]), limit=500
        ).records
        with_chart = [r for r in records if "trajectory" in (r.asset_materialization.metadata or {})]
        latest = max(with_chart, key=lambda r: r.timestamp)
        markdown = latest.asset_materialization.metadata["trajectory"].value
        decisions_of_latest_experiment = markdown.count("\n| ") - 1
    assert markdown.startswith("![support-bot: canary trajectory](data:image/png;base64,")
    # One row per hourly decision of the rollout, its ramp and its holdback, as the report counts them.
    (reported,) = re.findall(r"(\d+) hourly decisions while the experiment ran", second.stdout)
    assert "promote" in markdown and "conclude (holdback)" in markdown
    assert decisions_of_latest_experiment == int(reported) >= 12
    out = tmp_path / "report"
    report = run(env, "report", "--agent", "support-bot", "--out", str(out))
    assert report.returncode == 0, report.stdout
    assert (out / "support-bot-canary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out / "support-bot-canary.html").read_text()
    assert '<img src="support-bot-canary.png"' in page and "Offline gate" in page and "promote" in page
