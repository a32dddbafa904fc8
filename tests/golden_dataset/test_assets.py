"""The golden dataset graph materialized with Dagster on SQLite and PostgreSQL."""

import dagster as dg
import pandas as pd
import pytest
import sqlalchemy as sa

from bindu_pipelines.demo.seed import seed_demo_data
from bindu_pipelines.golden_dataset.assets import golden_dataset_assets, golden_dataset_run_config
from bindu_pipelines.golden_dataset.dataset import GOLDEN_COLUMNS
from bindu_pipelines.golden_dataset.definitions import defs as golden_defs
from bindu_pipelines.golden_dataset.pii import find_pii
from bindu_pipelines.golden_dataset.sensors import agent_discovery_sensor
from bindu_pipelines.io_managers import ParquetIOManager
from bindu_pipelines.partitions import agent_partitions
from bindu_pipelines.resources import BinduDatabase
from bindu_runtime import make_engine, upgrade
from bindu_runtime.schema import agent_prompts, tasks

AGENTS = ["support-bot", "travel-planner"]


@pytest.fixture
def seeded(engine, db_url):
    """Demo data for two agents, on SQLite and on PostgreSQL."""
    summary = seed_demo_data(engine, agents=2, tasks_per_agent=150, seed=11)
    assert summary["agents"] == AGENTS
    return db_url


@pytest.fixture
def seeded_sqlite(sqlite_url):
    """The same demo data on SQLite only, for the tests about checks and metadata."""
    engine = make_engine(sqlite_url)
    upgrade(engine)
    seed_demo_data(engine, agents=2, tasks_per_agent=150, seed=11)
    engine.dispose()
    return sqlite_url


def resources(db_url, tmp_path):
    return {"bindu_db": BinduDatabase(url=db_url), "parquet_io_manager": ParquetIOManager(base_dir=str(tmp_path / "parquet"))}


def materialize(db_url, tmp_path, instance, agent, extra_assets=(), **options):
    return dg.materialize(
        [*golden_dataset_assets, *extra_assets],
        partition_key=agent,
        instance=instance,
        resources=resources(db_url, tmp_path),
        run_config=golden_dataset_run_config(**options),
        raise_on_error=False,
    )


def stored(result, asset: str) -> pd.DataFrame:
    """What the run stored for ``asset`` (each stage hands a Parquet file on, not a frame)."""
    return pd.read_parquet(_stored_path(result, asset))


def _stored_path(result, asset: str) -> str:
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey(asset)]
    return event.materialization.metadata["path"].value


def golden_output(result) -> pd.DataFrame:
    return stored(result, "golden_dataset")


def materialization(result, asset):
    events = [e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey(asset)]
    return events[0].materialization.metadata


def check_results(result):
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def agent_task_ids(engine, agent):
    prompt_ids = sa.select(agent_prompts.c.id).where(agent_prompts.c.agent_id == agent)
    with engine.connect() as conn:
        return {str(i) for i in conn.execute(sa.select(tasks.c.id).where(tasks.c.prompt_id.in_(prompt_ids))).scalars()}


def test_two_agents_each_see_only_their_own_tasks(seeded, engine, tmp_path):
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(agent_partitions.name, AGENTS)
        outputs = {}
        for agent in AGENTS:
            result = materialize(seeded, tmp_path, instance, agent, min_examples=5)
            assert result.success
            outputs[agent] = result
        for agent, result in outputs.items():
            own = agent_task_ids(engine, agent)
            raw = stored(result, "raw_tasks")
            assert set(raw["id"]) == own and len(own) == 150
            golden = golden_output(result)
            assert list(golden.columns) == GOLDEN_COLUMNS
            assert set(golden["id"]) <= own and len(golden) > 20
            assert golden["feedback_score"].between(0, 1).all()  # require_feedback: no NaN
            assert set(golden["split"]) == {"train", "validation"}
            assert golden["feedback_type"].isin(["rating", "thumbs"]).all()
            assert not any(find_pii(t) for t in golden["user_input"])
            checks = check_results(result)
            assert len(checks) == 5 and all(c.passed for c in checks.values()), checks

            raw_meta = materialization(result, "raw_tasks")
            assert raw_meta["dagster/row_count"].value == 150
            fb_meta = materialization(result, "normalized_feedback")
            dropped = fb_meta["dropped_by_reason"].value
            assert set(dropped) <= {"invalid_rating", "invalid_thumbs", "feedback_not_object", "no_rating_or_thumbs",
                                    "superseded_by_later_feedback"}
            ex_meta = materialization(result, "extracted_interactions")
            assert ex_meta["rows_in"].value == 150
            assert ex_meta["rows_out"].value + ex_meta["rows_dropped"].value == 150
            gd_meta = materialization(result, "golden_dataset")
            assert gd_meta["dagster/row_count"].value == len(golden)
            assert gd_meta["train_rows"].value + gd_meta["validation_rows"].value == len(golden)
            assert sum(gd_meta["score_histogram"].value.values()) == len(golden)
            assert len(gd_meta["fingerprint"].value) == 64
            assert "| id |" in gd_meta["preview"].value
        # The two agents' datasets do not overlap.
        assert not set(golden_output(outputs[AGENTS[0]])["id"]) & set(golden_output(outputs[AGENTS[1]])["id"])


def test_stage_drops_on_demo_data(seeded_sqlite, tmp_path):
    """The demo's malformed rows are dropped with reasons; nothing crashes."""
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(agent_partitions.name, AGENTS)
        result = materialize(seeded_sqlite, tmp_path, instance, "support-bot", require_feedback=False, min_examples=5,
                             max_interactions_query_limit=100)
        assert result.success
        raw_meta = materialization(result, "raw_tasks")
        assert raw_meta["dagster/row_count"].value == 100
        assert raw_meta["dropped_by_reason"].value == {"over_query_limit": 50}
        golden = golden_output(result)
        # require_feedback off: tasks without feedback stay, with a NaN score and no type.
        assert golden["feedback_score"].isna().any()
        assert golden.loc[golden["feedback_score"].isna(), "feedback_type"].isna().all()
        # Fingerprint is the content's: the same run again gives the same digest.
        again = materialize(seeded_sqlite, tmp_path, instance, "support-bot", require_feedback=False, min_examples=5,
                            max_interactions_query_limit=100)
        assert materialization(again, "golden_dataset")["fingerprint"] == materialization(result, "golden_dataset")["fingerprint"]


def test_failed_blocking_check_stops_downstream(seeded_sqlite, tmp_path):
    ran = []

    @dg.asset(partitions_def=agent_partitions, deps=["golden_dataset"], group_name="test")
    def candidate_prompt_probe() -> None:
        ran.append(True)

    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(agent_partitions.name, AGENTS)
        blocked = materialize(seeded_sqlite, tmp_path, instance, "support-bot", extra_assets=[candidate_prompt_probe],
                              min_examples=100_000)
        assert not blocked.success
        assert check_results(blocked)["has_enough_examples"].passed is False
        assert ran == []
        allowed = materialize(seeded_sqlite, tmp_path, instance, "support-bot", extra_assets=[candidate_prompt_probe], min_examples=5)
        assert allowed.success and ran == [True]


def test_pii_check_fails_when_scrubbing_is_off_and_shift_warns(seeded_sqlite, tmp_path):
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(agent_partitions.name, AGENTS)
        first = materialize(seeded_sqlite, tmp_path, instance, "support-bot", require_feedback=False, min_examples=1)
        assert check_results(first)["no_pii"].passed
        assert materialization(first, "extracted_interactions")["pii_scrubbed_total"].value > 0
        first_rows = len(golden_output(first))  # the next run stores over the same file
        unscrubbed = materialize(seeded_sqlite, tmp_path, instance, "support-bot", require_feedback=False, min_examples=1,
                                 scrub_pii=False, max_interactions_query_limit=30)
        checks = check_results(unscrubbed)
        assert checks["no_pii"].passed is False
        # 150 -> 30 tasks: the dataset shrank sharply since the previous materialization.
        shift = checks["shift"]
        assert shift.passed is False and shift.severity == dg.AssetCheckSeverity.WARN
        assert shift.metadata["previous_rows"].value == first_rows


def test_agent_discovery_sensor_adds_partitions(seeded_sqlite):
    with dg.instance_for_test() as instance:
        with dg.build_sensor_context(instance=instance, resources={"bindu_db": BinduDatabase(url=seeded_sqlite)}) as context:
            result = agent_discovery_sensor(context)
            assert isinstance(result, dg.SensorResult)
            (request,) = result.dynamic_partitions_requests
            assert sorted(request.partition_keys) == AGENTS
            instance.add_dynamic_partitions(agent_partitions.name, AGENTS)
            assert isinstance(agent_discovery_sensor(context), dg.SkipReason)


def test_definitions_load_with_the_shared_database_resource():
    defs = dg.Definitions.merge(golden_defs, dg.Definitions(resources={"bindu_db": BinduDatabase()}))
    graph = defs.resolve_asset_graph()
    assert {k.path[-1] for k in graph.get_all_asset_keys()} == {
        "raw_tasks", "normalized_feedback", "extracted_interactions", "golden_dataset"
    }
    assert {k.name for k in graph.asset_check_keys} == {
        "has_enough_examples", "scores_in_range", "no_duplicate_pairs", "no_pii", "shift",
    }
    # One step writes the four assets and judges the checks (all on golden_dataset).
    job = defs.resolve_implicit_global_asset_job_def()
    assert {node.name for node in job.graph.node_defs} == {"golden_dataset_stages"}
    assert {k.asset_key for k in graph.asset_check_keys} == {dg.AssetKey("golden_dataset")}
    assert graph.get(dg.AssetKey("extracted_interactions")).parent_keys == {
        dg.AssetKey("raw_tasks"), dg.AssetKey("normalized_feedback")}
    assert defs.resolve_sensor_def("agent_discovery_sensor") is not None
