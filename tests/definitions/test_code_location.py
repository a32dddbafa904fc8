"""The code location loads the way `dagster dev` and the daemon load it, with everything in it."""

from __future__ import annotations

import dagster as dg
from dagster._core.workspace.autodiscovery import loadable_targets_from_python_module

EXPECTED_ASSETS = {"raw_tasks", "normalized_feedback", "extracted_interactions", "golden_dataset", "candidate_prompt", "traffic_decision"}


def test_module_exposes_exactly_one_definitions_object():
    targets = loadable_targets_from_python_module("bindu_pipelines.definitions", working_directory=None)
    assert [target.attribute for target in targets] == ["defs"]


def test_definitions_hold_the_assets_jobs_and_automation():
    from bindu_pipelines.definitions import defs

    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    assert {key.to_user_string() for key in graph.get_all_asset_keys()} == EXPECTED_ASSETS
    assert graph.get(dg.AssetKey("candidate_prompt")).parent_keys == {dg.AssetKey("golden_dataset")}
    assert graph.get(dg.AssetKey("golden_dataset")).parent_keys == {dg.AssetKey("extracted_interactions")}
    assert {job.name for job in defs.resolve_all_job_defs()} >= {"training_job", "canary_job"}
    assert {s.name for s in defs.schedules} == {"daily_training_schedule", "hourly_canary_schedule"}
    assert {s.name for s in defs.sensors} == {"agent_discovery_sensor", "canary_sensor"}
    groups = {graph.get(key).group_name for key in graph.get_all_asset_keys()}
    assert groups == {"golden_dataset", "optimization", "canary"}
    assert graph.get(dg.AssetKey("traffic_decision")).parent_keys == {dg.AssetKey("candidate_prompt")}
