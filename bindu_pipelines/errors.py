"""Every error bindu_pipelines raises on purpose, in one place. Each message is one line a
person can act on. (The agent-side errors live in ``bindu_runtime.errors``; the configuration
error and ``DatabaseUnavailable`` here are ``BinduError`` subclasses, so a caller that catches
``BinduError`` catches them too.) The modules that raise these import them from here, and
callers may import them from either place (``bindu_pipelines.launch.RunInProgress`` still works).
"""

from bindu_runtime.errors import BinduError, ConfigurationError, ExperimentRunning


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


# Runs: the launcher, the run claims and the training entry points.


class RunInProgress(ExperimentRunning, RuntimeError):
    """A run of this job for this agent is queued or running (here or on another machine)."""


class RunClaimed(Exception):
    """Another live process on this machine holds the claim for this job and agent."""


class TrainingRunFailed(RuntimeError):
    """The training run failed; the message is the run's one-line reason."""


class TrainingInProgress(ExperimentRunning, RuntimeError):
    """A training run for this agent is queued or running."""


class ExperimentActive(ExperimentRunning, RuntimeError):
    """The seed's guard: the agent has a candidate in its canary, so no training now (a RuntimeError, as in the seed)."""


# Golden dataset.


class WorkerProcessDied(RuntimeError):
    """A worker process of the golden dataset died mid-run (killed, out of memory): the run
    fails and writes nothing; the next run starts new workers."""


# Canary.


class DatabaseUnavailable(BinduError):
    """The database could not be reached or dropped the connection; nothing half-done is left
    behind, because every transition is a single transaction."""


class CanarySettingsError(ValueError):
    """The settings file or a setting is unusable (named in the message)."""


# Command line and demo.


class CommandFailed(Exception):
    """A command ran but did not achieve what it was asked; the message is the one-line reason."""


class UsageError(Exception):
    """An option is invalid (found after parsing, before any run): exit code 2."""


class DemoDatabaseInUse(ValueError):
    """The demo database already holds a demo run; the message says how to start over."""


NO_LANGUAGE_MODEL = (
    "no language model configured: set BINDU_LM to a LiteLLM model (e.g. openai/gpt-4o-mini), "
    "or BINDU_LM=bindu/offline-demo to train with the offline demo model"
)
