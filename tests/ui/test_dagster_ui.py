"""The Dagster UI after a demo run, in a real headless Chromium (Debian's, never a downloaded one).

A throwaway DAGSTER_HOME gets a (smaller) demo run; `dagster dev` is started on it by the test and
stopped by PID. Screenshots are kept in test-output/ui/.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.ui.dagster_dev import REPO, DagsterDev

# One xdist worker runs the whole module: its demo run and `dagster dev` are set up once.
pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(1800), pytest.mark.xdist_group("dagster_ui")]

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = REPO / "test-output" / "ui"
ASSETS = ["raw_tasks", "normalized_feedback", "extracted_interactions", "golden_dataset", "candidate_prompt", "traffic_decision"]
EXPANDED_LINEAGE = "/asset-groups?expanded=" + "%2C".join(
    f"global%40global%3A{group}" for group in ("golden_dataset", "optimization", "canary")
)
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


@pytest.fixture(scope="module")
def dagster_ui(tmp_path_factory):
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is not installed (.ci/run installs it: apt-get install chromium)")
    home = tmp_path_factory.mktemp("dagster_home")
    shutil.copy(REPO / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    env = {**os.environ, "DAGSTER_HOME": str(home), "BINDU_DATABASE_URL": f"sqlite:///{home / 'bindu.sqlite'}"}
    demo = subprocess.run(
        [sys.executable, "-m", "bindu_pipelines.cli", "demo", "run", "--reset", "--agents", "2", "--tasks", "120",
         "--max-steps", "1", "--hours", "28", "--requests-per-hour", "100", "--no-progress"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=1500,
    )  # fmt: skip
    assert demo.returncode == 0, demo.stderr[-3000:]
    assert "promote" in demo.stdout
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    server = DagsterDev(home, env, SCREENSHOTS / "dagster-dev.log")
    try:
        server.latest_agent, server.latest_decision = _latest_decision(home)
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser(dagster_ui):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    page = browser.new_page(viewport={"width": 2200, "height": 1000})
    page.set_default_timeout(30_000)
    yield page
    page.close()


def test_asset_graph_shows_the_assets_and_their_edges(dagster_ui, page):
    page.goto(dagster_ui.url + EXPANDED_LINEAGE)
    for name in ASSETS:
        page.get_by_text(name, exact=True).first.wait_for()
    # Lineage edges are the arrow-headed paths of the graph's SVG layer.
    page.locator("svg path[marker-end]").first.wait_for(state="attached")  # straight edges have no height
    edges = page.locator("svg path[marker-end]").count()
    page.screenshot(path=SCREENSHOTS / "asset-graph.png")
    # raw_tasks→normalized_feedback, raw_tasks→extracted_interactions, normalized_feedback→extracted_interactions,
    # extracted_interactions→golden_dataset, golden_dataset→candidate_prompt, candidate_prompt→traffic_decision
    assert edges == 6


def test_asset_page_shows_latest_materialization_metadata_and_checks(dagster_ui, page):
    page.goto(dagster_ui.url + "/assets/golden_dataset?partition=support-bot")
    page.get_by_text("Latest materialization").first.wait_for()
    page.get_by_text("Row count", exact=True).first.wait_for()  # dagster/row_count, shown in the status bar
    for key in ("rows_in", "fingerprint", "preview", "dropped_by_reason", "score_distribution"):
        page.get_by_text(key, exact=True).first.wait_for()
    page.screenshot(path=SCREENSHOTS / "golden-dataset.png", full_page=True)
    page.goto(dagster_ui.url + "/assets/golden_dataset?view=checks")
    page.get_by_text("has_enough_examples", exact=True).first.wait_for()
    page.get_by_text("This is a blocking asset check").wait_for()
    assert page.get_by_text("Passed", exact=True).count() >= 1
    page.screenshot(path=SCREENSHOTS / "golden-dataset-checks.png")


def _visible_image(page, selector: str, timeout: float | None = None):
    # The metadata table holds a clipped copy of a long Markdown value too: take the one drawn.
    image = page.locator(f"{selector} >> visible=true").first
    image.wait_for(state="visible", timeout=timeout)
    size = image.evaluate("img => [img.complete, img.naturalWidth, img.naturalHeight, img.getBoundingClientRect().width]")
    assert size[0] and size[1] > 300 and size[2] > 300 and size[3] > 200, size  # decoded and drawn, not a broken icon
    return image


def _latest_decision(home: Path) -> tuple[str, str]:
    """(agent, decision) of the latest traffic_decision materialization, read from the instance:
    what the asset's page shows first."""
    import dagster as dg

    with dg.DagsterInstance.from_config(str(home)) as instance:
        [record] = instance.fetch_materializations(dg.AssetKey("traffic_decision"), limit=1, ascending=False).records
    return record.partition_key, record.asset_materialization.metadata["decision"].value


def test_traffic_decision_shows_the_experiments_trajectory_chart(dagster_ui, page):
    """A person opening the latest decision sees the chart of the whole experiment (hours since start)."""
    page.goto(dagster_ui.url + "/assets/traffic_decision")
    page.get_by_text("traffic_after", exact=True).first.wait_for()
    assert page.get_by_text(dagster_ui.latest_decision, exact=True).count() >= 1
    page.get_by_text("trajectory", exact=True).first.wait_for()
    # A long Markdown value opens in a dialog from its row of the metadata table. On a busy machine
    # the first click can land before the page wires its handlers: click again, at most three times.
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    opener = page.locator("tr", has=page.get_by_text("trajectory", exact=True)).first.locator("a").first
    for attempt in range(3):
        opener.click()
        try:
            image = _visible_image(page, f"img[alt='{dagster_ui.latest_agent}: canary trajectory']", timeout=20_000)
            break
        except PlaywrightTimeout:
            page.screenshot(path=SCREENSHOTS / f"traffic-decision-attempt-{attempt}.png")
            page.keyboard.press("Escape")
    else:
        pytest.fail("the trajectory chart never became visible (screenshots: test-output/ui/traffic-decision-attempt-*.png)")
    image.scroll_into_view_if_needed()
    page.get_by_text("hours since", exact=False).first.wait_for()
    page.screenshot(path=SCREENSHOTS / "traffic-decision.png")


def test_candidate_prompt_shows_the_offline_gate_result(dagster_ui, page):
    page.goto(dagster_ui.url + "/assets/candidate_prompt?view=checks")
    page.get_by_text("offline_gate", exact=True).first.wait_for()
    assert page.get_by_text("Passed", exact=True).count() >= 1
    page.screenshot(path=SCREENSHOTS / "offline-gate.png")


def test_automation_page_lists_sensors_and_schedules(dagster_ui, page):
    page.goto(dagster_ui.url + "/automation")
    for name in ("daily_training_schedule", "hourly_canary_schedule", "agent_discovery_sensor", "canary_sensor"):
        page.get_by_text(name, exact=True).first.wait_for()
    page.screenshot(path=SCREENSHOTS / "automation.png")
