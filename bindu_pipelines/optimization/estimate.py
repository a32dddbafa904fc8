"""What a training run will spend, worked out before its first LM call.

``estimate_run`` counts the LM calls of the chosen optimizer's loops (from its settings and the
capped example counts), the offline gate (both prompts on every validation example) and the
preflight; tokens from the texts' lengths (about four characters a token); the cost from
LiteLLM's bundled cost map (``litellm.cost_per_token``; never fetched from the network). A run
whose estimate exceeds its budget is refused before it starts (``EstimateOverBudget``); the
per-call budget still stops a run that spends more than estimated.

``estimate_training_run`` is the same estimate from a row count, for ``bindu-dspy train --dry-run``.
Dagster-free.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from bindu_pipelines.errors import EstimateOverBudget

from .examples import DEFAULT_MAX_TRAIN_EXAMPLES, DEFAULT_MAX_VALIDATION_EXAMPLES
from .metering import litellm_with_local_cost_map
from .optimizers import OptimizerConfig, settings_for
from .settings import LanguageModelSettings

CHARS_PER_TOKEN = 4
# DSPy's chat adapter wraps every call in field headers and format instructions.
ADAPTER_OVERHEAD_TOKENS = 150
# A proposal call (SIMBA's rule, GEPA's reflection, MIPROv2's instruction) shows the model this
# many example trajectories beside the prompt, and answers with about a prompt's length.
TRAJECTORIES_PER_PROPOSAL = 4
# DSPy's chat adapter retries a reply it cannot parse through its JSON adapter: a structured call
# (a proposal, the preflight) may take two calls, and some share of the program's calls do too.
STRUCTURED_CALL_ATTEMPTS = 2
RETRY_MARGIN = 0.1
# Used by the row-count estimate when the texts are not at hand.
DEFAULT_PROMPT_CHARS = 800
DEFAULT_INPUT_CHARS = 400
DEFAULT_OUTPUT_CHARS = 600


@dataclass(frozen=True)
class Estimate:
    """The estimated LM calls, tokens and cost of one training run, against its budget."""

    model: str | None
    offline_demo: bool
    optimizer: str
    metric: str
    strategy: str | None
    train_examples: int
    validation_examples: int
    available_train_examples: int
    available_validation_examples: int
    calls: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None
    budget_calls: int
    budget_tokens: int
    budget_usd: float | None
    calls_by_stage: dict[str, int] = field(default_factory=dict)

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def over_budget(self) -> list[str]:
        """Why the run must not start (empty when the estimate fits the budget)."""
        reasons = []
        if self.calls > self.budget_calls:
            reasons.append(f"{self.calls:,} LM calls exceed BINDU_LM_BUDGET_CALLS={self.budget_calls:,}")
        if self.tokens > self.budget_tokens:
            reasons.append(f"{self.tokens:,} tokens exceed BINDU_LM_BUDGET_TOKENS={self.budget_tokens:,}")
        if self.budget_usd is not None:
            if self.cost_usd is None:
                reasons.append(f"the cost of {self.model} is not in LiteLLM's cost map, so BINDU_LM_BUDGET_USD cannot be checked")
            elif self.cost_usd > self.budget_usd:
                reasons.append(f"${self.cost_usd:,.2f} exceeds BINDU_LM_BUDGET_USD={self.budget_usd:,.2f}")
        return reasons

    def cost_text(self) -> str:
        if self.offline_demo:
            return "$0 (offline demo model)"
        return f"${self.cost_usd:,.4f}" if self.cost_usd is not None else "unknown (model not in LiteLLM's local cost map)"

    def summary(self) -> str:
        """One paragraph a person reads before deciding to run."""
        stages = ", ".join(f"{stage} {n:,}" for stage, n in self.calls_by_stage.items())
        capped = ""
        if (self.train_examples, self.validation_examples) != (self.available_train_examples, self.available_validation_examples):
            capped = (f" (capped from {self.available_train_examples:,} and {self.available_validation_examples:,},"
                      " stratified by score)")
        over = self.over_budget()
        verdict = ("over budget, the run would be refused: " + "; ".join(over)) if over else (
            f"within the budget of {self.budget_calls:,} calls and {self.budget_tokens:,} tokens"
            + (f" and ${self.budget_usd:,.2f}" if self.budget_usd is not None else ""))
        return (
            f"Training with {self.optimizer} ({self.metric} metric) on {self.model or 'no model'}"
            f"{' — the offline demo model' if self.offline_demo else ''}"
            f"{f', strategy {self.strategy}' if self.strategy else ''}: "
            f"{self.train_examples:,} training and {self.validation_examples:,} validation examples{capped}; "
            f"estimated {self.calls:,} LM calls ({stages}), {self.tokens:,} tokens "
            f"({self.prompt_tokens:,} prompt + {self.completion_tokens:,} completion), cost {self.cost_text()}; "
            f"{verdict}."
        )

    def as_dict(self) -> dict[str, Any]:
        # Dollars to a millionth: readable in the UI and in the stored details.
        cost = None if self.cost_usd is None else round(self.cost_usd, 6)
        return asdict(self) | {"tokens": self.tokens, "cost_usd": cost}

    def refuse_if_over_budget(self) -> None:
        if over := self.over_budget():
            raise EstimateOverBudget(
                "estimated run exceeds its budget: " + "; ".join(over)
                + " (lower max_train_examples / max_validation_examples or the optimizer's size, or raise the budget)"
            )


def optimizer_calls(config: OptimizerConfig, n_train: int) -> tuple[int, int]:
    """(program calls, proposal calls) of the optimizer's loops on ``n_train`` examples.

    Upper-bound counts of each optimizer's loops in DSPy 3: SIMBA samples ``bsize × candidates``
    trajectories a step, proposes up to ``candidates`` rules (one call each) and scores the new
    candidates on the batch, then scores ``candidates + 1`` programs on the whole training split;
    GEPA spends its metric-call budget plus about one reflection per two minibatches; MIPROv2
    bootstraps demos over the split per candidate set, proposes instructions, then runs its trials.
    """
    s = settings_for(config, n_train)
    if config.name == "simba":
        per_step = 2 * s["num_candidates"] * s["bsize"]
        program = s["max_steps"] * per_step + (s["num_candidates"] + 1) * n_train
        return program, s["max_steps"] * s["num_candidates"]
    if config.name == "gepa":
        program = s["max_metric_calls"] + n_train  # the budget, plus the last full pass it may finish
        return program, math.ceil(s["max_metric_calls"] / (2 * max(1, s["reflection_minibatch_size"])))
    valset = max(1, int(n_train * 0.8))
    trials = s["num_trials"] * (s["minibatch_size"] if s["minibatch"] else valset)
    full_evals = (s["num_trials"] // 10 + 2) * valset if s["minibatch"] else valset
    bootstrap = s["num_candidates"] * n_train
    proposals = s["num_candidates"] + math.ceil(n_train / 10) + 2
    return bootstrap + trials + full_evals, proposals


def cost_of(model: str | None, prompt_tokens: int, completion_tokens: int) -> float | None:
    """USD from LiteLLM's local cost map; None for a model it does not know."""
    if model is None:
        return None
    litellm = litellm_with_local_cost_map()
    try:
        prompt_cost, completion_cost = litellm.cost_per_token(
            model=model, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens
        )
    except Exception:  # LiteLLM raises a bare Exception for a model missing from its map
        return None
    return float(prompt_cost) + float(completion_cost)


def estimate_run(
    settings: LanguageModelSettings,
    config: OptimizerConfig,
    *,
    n_train: int,
    n_validation: int,
    metric: str = "reply",
    strategy: str | None = None,
    prompt_chars: int = DEFAULT_PROMPT_CHARS,
    input_chars: float = DEFAULT_INPUT_CHARS,
    output_chars: float = DEFAULT_OUTPUT_CHARS,
    available_train: int | None = None,
    available_validation: int | None = None,
) -> Estimate:
    """The estimate for a run on exactly ``n_train`` / ``n_validation`` examples (already capped)."""
    from bindu_pipelines.names import OFFLINE_MODEL

    program_calls, proposal_calls = optimizer_calls(config, n_train) if n_train else (0, 0)
    program_calls = math.ceil(program_calls * (1 + RETRY_MARGIN))
    proposal_calls *= STRUCTURED_CALL_ATTEMPTS
    gate_calls = math.ceil(2 * n_validation * (1 + RETRY_MARGIN))
    judged = metric == "judge"
    calls_by_stage = {"preflight": STRUCTURED_CALL_ATTEMPTS, config.name: program_calls + proposal_calls, "offline gate": gate_calls}
    if judged:  # the judge rates every reply the program gives
        calls_by_stage["judge"] = program_calls + gate_calls

    def tokens(chars: float) -> int:
        return math.ceil(chars / CHARS_PER_TOKEN)

    reply_tokens = min(settings.max_tokens, tokens(output_chars) + 20)
    demos = config.max_demos if config.name == "simba" else config.mipro_max_bootstrapped_demos
    # Half the demos on average: candidates gain them step by step.
    program_prompt = ADAPTER_OVERHEAD_TOKENS + tokens(prompt_chars + input_chars + demos / 2 * (input_chars + output_chars))
    proposal_prompt = ADAPTER_OVERHEAD_TOKENS + tokens(prompt_chars + TRAJECTORIES_PER_PROPOSAL * (input_chars + output_chars))
    proposal_reply = min(settings.max_tokens, tokens(prompt_chars) + 50)
    judge_prompt = ADAPTER_OVERHEAD_TOKENS + tokens(input_chars + output_chars)

    evaluated = program_calls + gate_calls + 1
    prompt_total = evaluated * program_prompt + proposal_calls * proposal_prompt
    completion_total = evaluated * reply_tokens + proposal_calls * proposal_reply
    if judged:
        prompt_total += (program_calls + gate_calls) * judge_prompt
        completion_total += (program_calls + gate_calls) * 30
    offline = settings.model == OFFLINE_MODEL
    return Estimate(
        model=settings.model,
        offline_demo=offline,
        optimizer=config.name,
        metric=metric,
        strategy=strategy,
        train_examples=n_train,
        validation_examples=n_validation,
        available_train_examples=n_train if available_train is None else available_train,
        available_validation_examples=n_validation if available_validation is None else available_validation,
        calls=sum(calls_by_stage.values()),
        prompt_tokens=prompt_total,
        completion_tokens=completion_total,
        cost_usd=0.0 if offline else cost_of(settings.model, prompt_total, completion_total),
        budget_calls=settings.budget_calls,
        budget_tokens=settings.budget_tokens,
        budget_usd=settings.budget_usd,
        calls_by_stage=calls_by_stage,
    )


def estimate_training_run(
    settings: LanguageModelSettings,
    n_examples: int,
    optimizer: str | OptimizerConfig = "simba",
    strategy: str | None = None,
    *,
    validation_fraction: float = 0.2,
    max_train_examples: int = DEFAULT_MAX_TRAIN_EXAMPLES,
    max_validation_examples: int = DEFAULT_MAX_VALIDATION_EXAMPLES,
    metric: str = "reply",
    prompt_chars: int = DEFAULT_PROMPT_CHARS,
    input_chars: float = DEFAULT_INPUT_CHARS,
    output_chars: float = DEFAULT_OUTPUT_CHARS,
) -> Estimate:
    """The estimate for a golden dataset of ``n_examples`` rows (``bindu-dspy train --dry-run``).

    The rows split like the golden dataset's (``validation_fraction`` held out), then are capped
    like a run caps them. ``strategy`` is the extraction strategy, reported in the summary.
    """
    config = optimizer if isinstance(optimizer, OptimizerConfig) else OptimizerConfig(name=optimizer)
    available_validation = round(n_examples * validation_fraction)
    available_train = n_examples - available_validation
    return estimate_run(
        settings,
        config,
        n_train=min(available_train, max_train_examples),
        n_validation=min(available_validation, max_validation_examples),
        metric=metric,
        strategy=strategy,
        prompt_chars=prompt_chars,
        input_chars=input_chars,
        output_chars=output_chars,
        available_train=available_train,
        available_validation=available_validation,
    )
