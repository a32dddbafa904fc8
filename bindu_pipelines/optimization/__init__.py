"""DSPy prompt optimization for Bindu agents: SIMBA (default), GEPA and MIPROv2, an offline gate,
and the ``candidate_prompt`` asset. ``train`` / ``train_async`` are the seed's entry points.

The names below are loaded on first use (PEP 562): importing ``bindu_pipelines.optimization.gate``
or ``.metric`` loads neither Dagster (``train`` runs through it) nor anything else it does not need.
"""

from bindu_pipelines.lazy import lazy_exports

_EXPORTS = {
    "TrainingResult": "api",
    "train": "api",
    "train_async": "api",
    "AgentProgram": "program",
    "AgentSignature": "program",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
