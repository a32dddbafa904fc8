"""The agent as a DSPy program: one predictor whose instructions are the system prompt."""

from __future__ import annotations

import dspy

from .adapter import AgentReplyAdapter, raw_instructions, render_system_prompt


class AgentSignature(dspy.Signature):
    """Reply to the user as the agent."""

    user_input: str = dspy.InputField(desc="The user's message to the agent")
    agent_output: str = dspy.OutputField(desc="The agent's reply")


class AgentProgram(dspy.Module):
    """The seed's ``AgentProgram``: the active prompt is the predictor's instructions.

    Its calls always go through ``AgentReplyAdapter`` (scoped here, not globally), so the model
    sees exactly the system prompt the agent would send.
    """

    def __init__(self, system_prompt: str):
        super().__init__()
        if not isinstance(system_prompt, str) or not system_prompt.strip():
            raise ValueError("the agent's system prompt must be a non-empty string")
        self.respond = dspy.Predict(AgentSignature.with_instructions(system_prompt))

    def forward(self, user_input: str) -> dspy.Prediction:
        with dspy.context(adapter=AgentReplyAdapter()):
            return self.respond(user_input=user_input)


def deployable_prompt(program: AgentProgram) -> str:
    """The exact system message the program sends: what gets stored and served."""
    predictors = program.predictors()
    if len(predictors) != 1:
        raise ValueError(f"the agent program has one predictor, found {len(predictors)}")
    predictor = predictors[0]
    return render_system_prompt(raw_instructions(predictor.signature), predictor.demos)
