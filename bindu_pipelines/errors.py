"""Every error bindu_pipelines raises on purpose, in one place. Each message is one line a
person can act on. (The agent-side errors live in ``bindu_runtime.errors``; the configuration
error here is one of them, so a caller that catches ``BinduError`` catches it too.)
"""

from bindu_runtime.errors import ConfigurationError


class LanguageModelNotConfigured(ConfigurationError):
    """Training was asked for without a language model (``BINDU_LM`` unset)."""


class UnknownAgent(LookupError):
    """The agent has no prompts in the database, so there is nothing to run for it."""


class BudgetExhausted(RuntimeError):
    """The training run reached its cap on LM calls or tokens."""


class EvaluationFailed(RuntimeError):
    """Evaluation could not produce a trustworthy score (errors, or nothing but zeros)."""


class TrainingFailed(RuntimeError):
    """The run could not produce a trustworthy candidate; the message is the one-line reason."""


class EstimateOverBudget(TrainingFailed):
    """The run's estimated LM calls, tokens or cost exceed its budget: refused before any call."""


NO_LANGUAGE_MODEL = (
    "no language model configured: set BINDU_LM to a LiteLLM model (e.g. openai/gpt-4o-mini), "
    "or BINDU_LM=bindu/offline-demo to train with the offline demo model"
)
