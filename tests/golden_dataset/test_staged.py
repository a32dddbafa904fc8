"""The assets the schedule runs give exactly what ``build_golden_dataset`` gives.

The four assets (raw_tasks -> normalized_feedback -> extracted_interactions -> golden_dataset)
are written in one pass, a Parquet file each; ``build_golden_dataset`` / ``collect_golden_dataset``
run the same stage functions and keep only the golden rows. On the demo data (with its malformed rows and feedback),
on SQLite and PostgreSQL, both give the same golden rows in the same order and the same drop
counts per stage, with and without worker processes.
"""

import asyncio
import math

import dagster as dg
import pandas as pd
import pyarrow.parquet as pq
import pytest

from bindu_pipelines.demo.seed import seed_demo_data
from bindu_pipelines.golden_dataset.assets import golden_dataset_assets, golden_dataset_run_config
from bindu_pipelines.golden_dataset.dataset import (
    GOLDEN_COLUMNS,
    GoldenDatasetOptions,
    build_golden_dataset,
    collect_golden_dataset,
)
from bindu_pipelines.golden_dataset.stages import ParquetTable, run_golden_stages
from bindu_pipelines.io_managers import ParquetIOManager
from bindu_pipelines.partitions import agent_partitions
from bindu_pipelines.resources import BinduDatabase

AGENT = "support-bot"
OPTIONS = dict(require_feedback=True, max_interactions_query_limit=None, min_examples=1)


def _normalized(rows):
    return [tuple(None if isinstance(v, float) and math.isnan(v) else v for v in row) for row in rows]


def _stored(result, asset):
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey(asset)]
    return event.materialization.metadata


@pytest.fixture
def demo(engine, db_url):
    seed_demo_data(engine, agents=2, tasks_per_agent=200, seed=5)
    return db_url


def test_assets_give_build_golden_datasets_rows_and_drop_counts(demo, engine, tmp_path):
    expected_rows, expected = collect_golden_dataset(engine, AGENT, GoldenDatasetOptions(limit=None))
    assert len(expected_rows) > 50
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(agent_partitions.name, [AGENT])
        result = dg.materialize(
            golden_dataset_assets,
            partition_key=AGENT,
            instance=instance,
            resources={"bindu_db": BinduDatabase(url=demo),
                       "parquet_io_manager": ParquetIOManager(base_dir=str(tmp_path / "parquet"))},
            # Batches of 30 tasks: several row groups per file, and worker processes.
            run_config=golden_dataset_run_config(**OPTIONS, chunk_size=30, workers=2),
        )
        assert result.success
    golden = pd.read_parquet(_stored(result, "golden_dataset")["path"].value)
    assert list(golden.columns) == GOLDEN_COLUMNS
    assert _normalized(golden.itertuples(index=False, name=None)) == _normalized(expected_rows)
    assert pq.ParquetFile(_stored(result, "raw_tasks")["path"].value).num_row_groups > 4
    # The checks are judged per agent: each evaluation belongs to the run's partition.
    evaluations = result.get_asset_check_evaluations()
    assert len(evaluations) == 5 and {e.partition for e in evaluations} == {AGENT}
    # Drop counts stage by stage: the assets' metadata against the one-pass run's reports.
    feedback = _stored(result, "normalized_feedback")
    assert feedback["dropped_by_reason"].value == expected.reports["feedback"]["dropped"]
    assert feedback["rows_in"].value == expected.reports["feedback"]["rows_in"]
    assert feedback["dagster/row_count"].value == expected.reports["feedback"]["rows_out"]
    extract = _stored(result, "extracted_interactions")
    assert extract["dropped_by_reason"].value == expected.reports["extract"]["dropped"]
    assert extract["rows_in"].value == expected.tasks_read == _stored(result, "raw_tasks")["dagster/row_count"].value
    assert extract["dagster/row_count"].value == expected.reports["extract"]["rows_out"]
    final = _stored(result, "golden_dataset")
    drops = {}
    for stage in ("quality", "validate", "deduplicate"):
        drops.update(expected.reports[stage]["dropped"])
    assert final["dropped_by_reason"].value == drops
    assert final["fingerprint"].value == expected.fingerprint
    assert final["dagster/row_count"].value == expected.rows
    # The seed's API on the same data: the same interactions.
    interactions = asyncio.run(build_golden_dataset(AGENT, limit=10**9, engine=engine))
    assert [i.id for i in interactions] == list(golden["id"])


@pytest.mark.parametrize("workers", [1, 2])
def test_staged_run_matches_the_one_pass_run(demo, engine, tmp_path, workers):
    options = GoldenDatasetOptions(limit=150, require_feedback=False)
    rows, expected = collect_golden_dataset(engine, AGENT, options, chunk_size=40)
    staged = run_golden_stages(engine, AGENT, str(tmp_path), options, chunk_size=40, workers=workers)
    assert isinstance(staged.golden_dataset.table, ParquetTable)
    assert _normalized(staged.golden_dataset.table.iter_rows()) == _normalized(rows)
    assert staged.golden_dataset.fingerprint == expected.fingerprint
    assert staged.reports() == expected.reports
    assert staged.raw_tasks.reports[0].drops == {"over_query_limit": 50}


def test_golden_facts_count_what_the_checks_judge():
    from bindu_pipelines.golden_dataset.stages import GoldenFacts

    facts = GoldenFacts()
    rows = [
        ("t1", "hello there", "hi!", 1.0, "rating", "train", None, None),
        ("t2", "hello there", "hi!", 0.5, "rating", "validation", None, None),  # exact repeat of t1
        ("t3", "Hello  there", "hi!", None, None, "train", None, None),  # normalised repeat of t1, no score
        ("t4", "mail me", "at a@b.co", 1.5, "rating", "validation", None, None),  # score out of range, PII
    ]
    digests = [(1, 10, None), (1, 10, None), (2, 10, None), (3, 11, ("email",))]
    for row, (exact, normalized, pii) in zip(rows, digests):
        facts.observe(row, exact, normalized, pii)
    facts.finish()
    assert (facts.rows, facts.validation_rows) == (4, 2)
    assert (facts.missing_scores, facts.out_of_range_scores) == (1, 1)
    assert (facts.exact_duplicates, facts.normalized_duplicates) == (1, 2)
    assert facts.pii_found == {"email": 1} and facts.rows_with_pii == 1 and facts.example_pii_task_ids == ["t4"]


def test_the_checks_fail_on_what_the_facts_report():
    from bindu_pipelines.golden_dataset.checks import no_duplicate_pairs, scores_in_range
    from bindu_pipelines.golden_dataset.config import GoldenDatasetConfig
    from bindu_pipelines.golden_dataset.stages import GoldenFacts

    clean = GoldenFacts(rows=5)
    assert no_duplicate_pairs(clean).passed and scores_in_range(GoldenDatasetConfig(), clean).passed
    duplicated = GoldenFacts(rows=5, exact_duplicates=1, normalized_duplicates=1)
    assert no_duplicate_pairs(duplicated).passed is False
    unscored = GoldenFacts(rows=5, missing_scores=2)
    assert scores_in_range(GoldenDatasetConfig(), unscored).passed is False
    assert scores_in_range(GoldenDatasetConfig(require_feedback=False), unscored).passed is True


def test_the_step_leaves_no_working_directory_behind(demo, tmp_path, monkeypatch):
    import tempfile

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where the step makes its working directory
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(agent_partitions.name, [AGENT])
        result = dg.materialize(
            golden_dataset_assets, partition_key=AGENT, instance=instance,
            resources={"bindu_db": BinduDatabase(url=demo),
                       "parquet_io_manager": ParquetIOManager(base_dir=str(tmp_path / "parquet"))},
            # One process: a fork server would put its socket under the patched directory too.
            run_config=golden_dataset_run_config(**OPTIONS, workers=1),
        )
    assert result.success
    stored = [_stored(result, asset)["path"].value for asset in ("raw_tasks", "golden_dataset")]
    assert all(pq.ParquetFile(path).metadata.num_rows > 0 for path in stored)
    assert [p.name for p in scratch.iterdir() if p.name.startswith("bindu-golden-dataset-")] == []


def test_a_worker_that_dies_fails_the_run_with_one_line_and_the_next_run_gets_new_workers():
    import os
    import signal

    from bindu_pipelines.errors import WorkerProcessDied
    from bindu_pipelines.golden_dataset.workers import in_order

    # Each job runs function(state, *job) in a worker, state = make_state(): os.kill(own pid, SIGKILL).
    with pytest.raises(WorkerProcessDied) as died:
        list(in_order(os.kill, [(signal.SIGKILL,)], os.getpid, 2))
    assert "worker process died" in str(died.value) and "\n" not in str(died.value)
    # A new pool: the jobs run in processes other than this one.
    pids = list(in_order(max, [(0,), (0,), (0,)], os.getpid, 2))
    assert len(pids) == 3 and os.getpid() not in pids
