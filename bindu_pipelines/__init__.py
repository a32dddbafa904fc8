"""bindu_pipelines: the Dagster side of Bindu's self-improving prompts.

Golden dataset → DSPy optimization → canary rollout, partitioned by agent. Every Dagster
definition is reachable from ``bindu_pipelines.definitions``.
"""
