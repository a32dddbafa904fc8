"""Every asset is partitioned by agent: one Bindu agent, one partition.

The partitions are discovered from every agent schema (see the agent discovery sensor), so a new
agent appears in the UI as soon as its router bootstraps its first prompt, or as soon as
``bindu-dspy db upgrade --agent DID`` records it.
"""

import dagster as dg

agent_partitions = dg.DynamicPartitionsDefinition(name="agents")


def ensure_agent_partition(instance: dg.DagsterInstance, store, agent_id: str) -> None:
    """Add the agent's partition if the database knows the agent (its prompts or its
    ``db upgrade --agent`` record, in any agent schema: ``PromptStore.list_agents``); refuse otherwise.

    ``store`` is a ``bindu_runtime.PromptStore``. Lives here, beside the partitions, so the jobs
    and the launcher share it without importing each other."""
    from bindu_pipelines.errors import UnknownAgent

    if agent_id not in store.list_agents():
        raise UnknownAgent(
            f"unknown agent {agent_id!r}: no prompts in the database (has its router bootstrapped? "
            f"for a Bindu agent with history only, run `bindu-dspy db upgrade --agent {agent_id}`)"
        )
    if not instance.has_dynamic_partition(agent_partitions.name, agent_id):
        instance.add_dynamic_partitions(agent_partitions.name, [agent_id])
