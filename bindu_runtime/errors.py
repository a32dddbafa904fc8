"""Errors the runtime raises. Each says what was wrong in one line a person can act on."""


class BinduError(Exception):
    """Base class for every error raised by bindu_runtime."""


class ConfigurationError(BinduError):
    """The database URL or another setting cannot be used."""


class SchemaNotFound(ConfigurationError):
    """The agent's schema is not in the database (wrong DID, or the agent never started)."""


class NotABinduSchema(ConfigurationError):
    """A namespace lacks a table Bindu creates (``task_feedback``, or ``tasks`` in a DID schema)."""


class NoActivePrompt(BinduError):
    """The agent has no active prompt (never bootstrapped, or unknown agent)."""


class ExperimentRunning(BinduError):
    """A candidate already exists for the agent: only one experiment at a time."""


class NoExperiment(BinduError):
    """A canary transition was asked for but the agent has no candidate."""


class StaleTransition(BinduError):
    """The prompt state changed since the caller read it; the transition was not applied.

    Two controllers deciding on the same state apply one decision: the second gets this.
    """


class InvariantViolation(BinduError):
    """A change would break a prompt-state invariant; nothing was written."""


class FeedbackError(BinduError, ValueError):
    """Feedback that cannot be recorded as given; nothing was written."""


class UnknownTask(FeedbackError, LookupError):
    """Feedback or a prompt stamp names a task that is not in the database."""


class DatabaseFailure(BinduError):
    """The database failed a runtime call (unreachable, timed out, or refused the statement).

    The message names the call and the driver's first line, never the statement's parameters;
    the driver's exception is the ``__cause__``. Nothing was recorded: the call may be retried.
    """
