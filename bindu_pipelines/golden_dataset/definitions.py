"""The golden dataset domain's Dagster definitions (``bindu_db`` is bound in the top-level definitions)."""

import dagster as dg

from bindu_pipelines.io_managers import ParquetIOManager

from .assets import IO_MANAGER_KEY, golden_dataset_assets
from .sensors import agent_discovery_sensor

defs = dg.Definitions(
    assets=golden_dataset_assets,
    sensors=[agent_discovery_sensor],
    resources={IO_MANAGER_KEY: ParquetIOManager()},
)
