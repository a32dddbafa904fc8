"""DSPy prompt optimization for Bindu agents: SIMBA (default), GEPA and MIPROv2, an offline gate,
and the ``candidate_prompt`` asset. ``train`` / ``train_async`` are the seed's entry points."""

import os

# Before anything imports LiteLLM: never fetch its model cost map from the network.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from .api import TrainingResult, train, train_async  # noqa: E402
from .program import AgentProgram, AgentSignature  # noqa: E402

__all__ = ["AgentProgram", "AgentSignature", "TrainingResult", "train", "train_async"]
