"""Every Dagster definition of the project, from one place.

Each domain folder (golden_dataset, optimization, canary) exposes its own ``defs``; the resources
they share are bound here once.
"""

import dagster as dg

from bindu_pipelines.canary.definitions import defs as canary_defs
from bindu_pipelines.golden_dataset.definitions import defs as golden_dataset_defs
from bindu_pipelines.optimization.definitions import defs as optimization_defs
from bindu_pipelines.resources import BinduDatabase

shared_defs = dg.Definitions(resources={"bindu_db": BinduDatabase()})

defs = dg.Definitions.merge(shared_defs, golden_dataset_defs, optimization_defs, canary_defs)
