"""bindu_runtime: what a live Bindu agent imports to pick its system prompt and record feedback.

Depends only on SQLAlchemy and a database driver; never on Dagster, DSPy, pandas or LiteLLM.
"""

from .config import resolve_database_url
from .db import make_engine
from .errors import (
    BinduError,
    ConfigurationError,
    DatabaseFailure,
    ExperimentRunning,
    FeedbackError,
    InvariantViolation,
    NoActivePrompt,
    NoExperiment,
    StaleTransition,
    UnknownTask,
)
from .feedback import FeedbackCollector
from .prompt_selector import select_prompt_with_canary
from .router import PromptChoice, PromptRouter
from .schema import upgrade
from .store import Prompt, PromptStore, ServingState

__all__ = [
    "BinduError",
    "ConfigurationError",
    "DatabaseFailure",
    "ExperimentRunning",
    "FeedbackCollector",
    "FeedbackError",
    "InvariantViolation",
    "NoActivePrompt",
    "NoExperiment",
    "Prompt",
    "PromptChoice",
    "PromptRouter",
    "PromptStore",
    "ServingState",
    "StaleTransition",
    "UnknownTask",
    "make_engine",
    "resolve_database_url",
    "select_prompt_with_canary",
    "upgrade",
]
