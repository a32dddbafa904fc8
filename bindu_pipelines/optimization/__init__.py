"""DSPy prompt optimization for Bindu agents: SIMBA (default), GEPA and MIPROv2, an offline gate,
and the ``candidate_prompt`` asset. ``train`` / ``train_async`` are the seed's entry points.

The names below are loaded on first use (PEP 562): importing ``bindu_pipelines.optimization.gate``
or ``.metric`` loads neither Dagster (``train`` runs through it) nor anything else it does not need.
"""

import importlib

_EXPORTS = {
    "TrainingResult": "api",
    "train": "api",
    "train_async": "api",
    "AgentProgram": "program",
    "AgentSignature": "program",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
