"""Every Dagster definition of the project, from one place.

Each domain folder (golden_dataset, optimization, canary) exposes its own ``defs``; the resources
they share are bound here once. (Dagster loads the one ``Definitions`` object at module scope, so
the domain modules are imported, not their objects.)
"""

import dagster as dg

from bindu_pipelines.canary import definitions as canary
from bindu_pipelines.golden_dataset import definitions as golden_dataset
from bindu_pipelines.optimization import definitions as optimization
from bindu_pipelines.names import BINDU_DB
from bindu_pipelines.resources import BinduDatabase

defs = dg.Definitions.merge(
    dg.Definitions(resources={BINDU_DB: BinduDatabase()}),
    golden_dataset.defs,
    optimization.defs,
    canary.defs,
)
