"""Every asset is partitioned by agent: one Bindu agent, one partition.

The partitions are discovered from the prompts table (see the agent discovery sensor), so a new
agent appears in the UI as soon as its router bootstraps its first prompt.
"""

import dagster as dg

agent_partitions = dg.DynamicPartitionsDefinition(name="agents")
