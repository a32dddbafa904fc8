"""DSPy prompt optimization for Bindu agents: SIMBA (default), GEPA and MIPROv2, an offline gate,
and the ``candidate_prompt`` asset. ``train`` / ``train_async`` are the seed's entry points."""

from .api import TrainingResult, train, train_async
from .program import AgentProgram, AgentSignature

__all__ = ["AgentProgram", "AgentSignature", "TrainingResult", "train", "train_async"]
