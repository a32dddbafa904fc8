"""Agent discovery: a partition appears for every agent the database knows, in every schema.

``PromptStore.list_agents`` reads the agent ids of ``agent_prompts`` and ``registered_agents`` in
each namespace (each Bindu DID schema and the shared one): an agent appears once its router has
bootstrapped, or, before that, once ``bindu-dspy db upgrade --agent DID`` has recorded it (a DID
cannot be recovered from its schema's name)."""


import dagster as dg

from bindu_pipelines.partitions import agent_partitions
from bindu_pipelines.resources import BinduDatabase


@dg.sensor(minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Adds an 'agents' partition for each agent found in any agent schema's prompts or registered agents.")
def agent_discovery_sensor(context: dg.SensorEvaluationContext, bindu_db: BinduDatabase) -> dg.SensorResult | dg.SkipReason:
    agents = bindu_db.store().list_agents()
    known = set(context.instance.get_dynamic_partitions(agent_partitions.name))
    new = [agent for agent in agents if agent not in known]
    if not new:
        return dg.SkipReason(f"no new agents ({len(agents)} known)")
    return dg.SensorResult(dynamic_partitions_requests=[agent_partitions.build_add_request(new)])
