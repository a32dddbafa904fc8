"""The agent's own wire format: the optimized string is the system prompt the agent sends.

DSPy's ChatAdapter wraps instructions in field markers (``[[ ## user_input ## ]]`` …), so what an
optimizer tunes under it is not what a Bindu agent sends. ``AgentReplyAdapter`` sends exactly
what the agent sends: one system message (the instructions plus any demos, rendered by
``render_system_prompt``), one user message (the raw input) and takes the raw reply back.

It is scoped to the agent program's own predictor (see ``program.AgentProgram.forward``), so the
optimizers' own calls (SIMBA's rule writer, GEPA's proposer, MIPROv2's instruction proposer,
judges) keep DSPy's structured formats.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import dspy
from dspy.utils.exceptions import AdapterParseError

INPUT_FIELD = "user_input"
OUTPUT_FIELD = "agent_output"
DEMOS_HEADER = "Examples of replies users rated highly:"


def _demo_value(demo: Any, key: str) -> str | None:
    value = demo.get(key) if hasattr(demo, "get") else None
    return value if isinstance(value, str) and value.strip() else None


def raw_instructions(signature) -> str:
    """The instructions exactly as set: ``Signature.instructions`` re-indents them (cleandoc)."""
    doc = getattr(signature, "__doc__", None)
    return doc if isinstance(doc, str) and doc.strip() else signature.instructions


def render_system_prompt(instructions: str, demos: Sequence[Mapping[str, Any]] = ()) -> str:
    """The deployable system prompt: the instructions, then any demos as example exchanges.

    With no demos this is ``instructions`` unchanged, character for character.
    """
    blocks = []
    for demo in demos:
        user, reply = _demo_value(demo, INPUT_FIELD), _demo_value(demo, OUTPUT_FIELD)
        if user and reply:
            blocks.append(f"User: {user.strip()}\nAssistant: {reply.strip()}")
    if not blocks:
        return instructions
    return instructions.rstrip() + "\n\n" + DEMOS_HEADER + "\n\n" + "\n\n".join(blocks)


class AgentReplyAdapter(dspy.Adapter):
    """System message = rendered prompt, user message = raw input, output = raw reply."""

    def format(self, signature, demos, inputs) -> list[dict[str, Any]]:
        self._check_signature(signature)
        return [
            {"role": "system", "content": render_system_prompt(raw_instructions(signature), demos)},
            {"role": "user", "content": str(inputs[INPUT_FIELD])},
        ]

    def parse(self, signature, completion: str) -> dict[str, Any]:
        reply = completion.strip() if isinstance(completion, str) else ""
        if not reply:
            raise AdapterParseError(
                adapter_name=type(self).__name__,
                signature=signature,
                lm_response=str(completion),
                message="The model returned an empty reply.",
            )
        return {OUTPUT_FIELD: reply}

    def format_assistant_message_content(self, signature, outputs, missing_field_message=None) -> str:
        return str(outputs.get(OUTPUT_FIELD, missing_field_message or ""))

    @staticmethod
    def _check_signature(signature) -> None:
        if list(signature.input_fields) != [INPUT_FIELD] or list(signature.output_fields) != [OUTPUT_FIELD]:
            raise TypeError(
                f"AgentReplyAdapter serves only the agent signature ({INPUT_FIELD} -> {OUTPUT_FIELD}), "
                f"got {list(signature.input_fields)} -> {list(signature.output_fields)}"
            )
