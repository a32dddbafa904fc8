"""The canary domain's Dagster definitions (``bindu_db`` is bound in the top-level definitions)."""

import dagster as dg

from .assets import canary_job, traffic_decision
from .sensors import canary_sensor, hourly_canary_schedule

defs = dg.Definitions(
    assets=[traffic_decision],
    jobs=[canary_job],
    sensors=[canary_sensor],
    schedules=[hourly_canary_schedule],
)
