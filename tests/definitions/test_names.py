"""The names in ``bindu_pipelines.names`` are the ones the Dagster definitions actually carry."""

import dagster as dg

from bindu_pipelines import names
from bindu_pipelines.definitions import defs
from bindu_pipelines.golden_dataset.assets import golden_dataset_run_config


def test_assets_checks_jobs_schedules_sensors_and_resources_are_named_once():
    asset_keys = {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}
    assert asset_keys == {*names.GOLDEN_DATASET_ASSETS, names.CANDIDATE_PROMPT, names.TRAFFIC_DECISION}
    check_keys = defs.resolve_asset_graph().asset_check_keys
    golden = dg.AssetKey(names.GOLDEN_DATASET)
    assert {k.name for k in check_keys if k.asset_key == golden} == set(names.GOLDEN_DATASET_CHECKS)
    training_steps = {node.name for node in defs.resolve_job_def(names.TRAINING_JOB).graph.node_defs}
    assert names.GOLDEN_DATASET_STAGES in training_steps
    assert dg.AssetCheckKey(dg.AssetKey(names.CANDIDATE_PROMPT), names.OFFLINE_GATE_CHECK) in check_keys
    assert {job.name for job in defs.resolve_all_job_defs()} >= {names.TRAINING_JOB, names.CANARY_JOB}
    assert {s.name for s in defs.schedules} == {names.DAILY_TRAINING_SCHEDULE, names.HOURLY_CANARY_SCHEDULE}
    assert {s.name for s in defs.sensors} == {names.CANARY_SENSOR, names.AGENT_DISCOVERY_SENSOR}
    assert set(defs.resources) >= {names.BINDU_DB, names.LANGUAGE_MODEL, names.PARQUET_IO_MANAGER}


def test_the_golden_dataset_run_config_is_one_resource_block_not_a_copy_per_op():
    config = golden_dataset_run_config(strategy="last_turn")
    assert config[names.RUN_CONFIG_OPS] == {}
    assert config["resources"] == {names.GOLDEN_DATASET_OPTIONS: {"config": {"strategy": "last_turn"}}}
