"""``bindu/offline-demo``: a deterministic offline language model for the embedded demo and tests.

It is NOT a language model. It is a small rule-based simulator that speaks DSPy's wire formats
well enough for SIMBA, GEPA and MIPROv2 to run end to end with no network:

* As the **agent** (the plain-text format of ``adapter.AgentReplyAdapter``) it reads the system
  prompt it is given and obeys the style directives it finds there (``text.directives``: opener,
  numbered steps, style words, closer, word limit) and reuses the reply of the closest example
  exchange rendered in the prompt. A better prompt therefore really produces better replies.
* As the **optimizer's helper** (DSPy's ChatAdapter ``[[ ## field ## ]]`` format or its JSON
  fallback) it fills every requested output field. Instruction proposals (SIMBA's advice, GEPA's
  ``new_instruction``, MIPROv2's ``proposed_instruction``) are built from the rated replies it is
  shown (``text.rated_replies``): the house style of the highly rated ones, contrasted with the
  poorly rated ones, written as directive sentences.

At temperature > 0 a copy made with a ``rollout_id`` (as SIMBA and MIPROv2 do) follows its
directives less faithfully in a way fixed by the rollout id, so sampled trajectories differ.
Outputs depend only on the request and the rollout id: the same run gives the same prompt.

It runs as a DSPy 3.4 engine (``complete(Request) -> Response``) inside ``OfflineLM``, a ``dspy.LM``
subclass, so history, usage, retries, callbacks and our budget meter behave as with a real model.
It is chosen only when ``BINDU_LM`` is unset (see ``settings``) and is named in every place it is
used: the model string, the stored prompt's details and the run metadata.
"""

from __future__ import annotations

import json
import re
import zlib
from dataclasses import replace
from typing import Any

from dspy.clients.engines.base import validate_request
from dspy.lm15 import Message, Response, TextPart, Usage

from bindu_pipelines.names import OFFLINE_MODEL

from .adapter import DEMOS_HEADER
from .metering import MeteredLM
from .text import (
    HouseStyle,
    content_words,
    directives,
    house_style,
    jaccard,
    merge_instructions,
    rated_replies,
    similarity,
    style_from_text,
    words,
)

LIKED_RATING = 0.5

_FIELD_MARKER = re.compile(r"\[\[ ## (\w+) ## \]\]")
_OUTPUT_FIELD = re.compile(r"^\d+\. `(\w+)` \(([^)]*)\)", re.MULTILINE)
_DEMO_BLOCK = re.compile(r"User: (.*?)\nAssistant: (.*?)(?=\n\nUser: |\Z)", re.DOTALL)
_INSTRUCTION_FIELDS = ("current_instruction", "basic_instruction", "instruction")


def _stable_hash(*parts: Any) -> int:
    return zlib.crc32("\x1f".join(map(str, parts)).encode())


# --------------------------------------------------------------------------- the agent


def _split_prompt(system: str) -> tuple[str, list[tuple[str, str]]]:
    if DEMOS_HEADER not in system:
        return system, []
    instructions, _, demo_text = system.partition(DEMOS_HEADER)
    demos = [(u.strip(), a.strip()) for u, a in _DEMO_BLOCK.findall(demo_text.strip())]
    return instructions, demos


def _loosen(style: HouseStyle, variant: int) -> HouseStyle:
    """A sampled trajectory that forgets one directive (which one is fixed by the rollout)."""
    choice = variant % 4
    if choice == 0:
        return replace(style, opener="")
    if choice == 1:
        return replace(style, closer="")
    if choice == 2:
        return replace(style, layout="prose")
    return replace(style, style_words=())


# What a sampled reply may improvise where the prompt is silent: common support-desk habits.
_IMPROVISED_OPENERS = ("", "Hi there!", "Happy to help.", "Sure thing.")
_IMPROVISED_CLOSERS = ("", "Hope this helps.", "Have a great day.")
_IMPROVISED_LAYOUTS = ("prose", "numbered", "bullets")


def _improvise(style: HouseStyle, variant: int) -> HouseStyle:
    h = _stable_hash("improvise", variant)
    return replace(
        style,
        opener=style.opener or _IMPROVISED_OPENERS[h % len(_IMPROVISED_OPENERS)],
        closer=style.closer or _IMPROVISED_CLOSERS[(h // 7) % len(_IMPROVISED_CLOSERS)],
        layout=style.layout if style.layout != "prose" else _IMPROVISED_LAYOUTS[(h // 49) % len(_IMPROVISED_LAYOUTS)],
    )


def agent_reply(system: str, user_input: str, *, variant: int | None = None) -> str:
    instructions, demos = _split_prompt(system)
    style = style_from_text(instructions)
    if demos:
        # Few-shot: where the instructions are silent, follow the example replies' habits.
        shown = house_style([reply for _, reply in demos])
        style = replace(
            style,
            opener=style.opener or shown.opener,
            closer=style.closer or shown.closer,
            layout=style.layout if style.layout != "prose" else shown.layout,
        )
    if variant is not None:
        # Sampling: improvise where the prompt says nothing, and now and then forget a directive.
        style = _improvise(style, _stable_hash(variant, user_input))
        if _stable_hash(variant, user_input) % 3 == 0:
            style = _loosen(style, _stable_hash(user_input, variant))

    topic = content_words(user_input)[:6] or ["your request"]
    best_demo = max(demos, key=lambda d: jaccard(content_words(user_input), content_words(d[0])), default=None)
    if best_demo and jaccard(content_words(user_input), content_words(best_demo[0])) >= 0.25:
        body = [s for s in re.split(r"\n+", best_demo[1]) if s.strip()]
    else:
        body = [f"I can help with {' '.join(topic[:3])}."]
        body += [f"Check the {word} details." for word in topic[:3]]

    if style.layout in ("numbered", "bullets") and len(body) > 1:
        head, steps = body[0], [re.sub(r"^\s*(\d+[.)]|[-*•])\s+", "", s) for s in body[1:]]
        marks = [f"{i}." for i in range(1, len(steps) + 1)] if style.layout == "numbered" else ["-"] * len(steps)
        body = [head] + [f"{m} {s}" for m, s in zip(marks, steps, strict=True)]
    missing = [w for w in style.style_words if w not in words(" ".join(body))]
    if missing:
        body.append(f"This covers {', '.join(missing)}.")

    if style.opener and not body[0].startswith(style.opener):
        body.insert(0, style.opener)
    if style.closer and not body[-1].endswith(style.closer):
        body.append(style.closer)
    if style.max_words:
        kept, used = [], 0
        for line in body:
            n = len(line.split())
            if kept and used + n > style.max_words and line != style.closer:
                continue
            kept.append(line)
            used += n
        body = kept
    return "\n".join(body)


# --------------------------------------------------------------------------- structured calls


_OUTPUT_REMINDER = re.compile(r"\n\nRespond with (the corresponding output fields|a JSON object)")


def _sections(text: str) -> dict[str, str]:
    text = _OUTPUT_REMINDER.split(text, maxsplit=1)[0]
    parts = _FIELD_MARKER.split(text)
    return {parts[i]: parts[i + 1].strip() for i in range(1, len(parts) - 1, 2)}


def _output_fields(system: str) -> list[tuple[str, str]]:
    if "Your output fields are:" not in system:
        return []
    section = system.split("Your output fields are:", 1)[1].split("All interactions will be structured", 1)[0]
    return _OUTPUT_FIELD.findall(section)


def _evidence_style(inputs: dict[str, str]) -> HouseStyle:
    text = "\n".join(inputs.values())
    pairs = rated_replies(text)
    liked = [reply for reply, rating in pairs if rating >= LIKED_RATING]
    disliked = [reply for reply, rating in pairs if rating < LIKED_RATING]
    style = house_style(liked, disliked)
    if style.empty:
        style = style_from_text(text, strict=True)
    return style


def _general(style: HouseStyle) -> HouseStyle:
    """Without an opener that is not a whole sentence of its own ("Here's how to reset my password:",
    or its first words cut short): such an opener restates one question, and as a directive it would
    begin every reply with it. A sentence like "Good news: this is quick to fix." stays."""
    return style if style.opener.rstrip().endswith((".", "!", "?")) else replace(style, opener="")


def _advice(inputs: dict[str, str], current: str, variant: int | None) -> list[str]:
    """Style advice the current instructions lack, so the prompt stays coherent however often an
    optimizer appends advice: one length limit, one layout, one opener, one closer."""
    have = style_from_text(current, strict=True)
    style = _general(_evidence_style(inputs))
    style = replace(
        style,
        opener="" if have.opener else style.opener,
        closer="" if have.closer else style.closer,
        layout="prose" if have.layout != "prose" else style.layout,
        max_words=None if have.max_words else style.max_words,
        style_words=() if have.style_words else style.style_words,
    )
    advice = [a for a in directives(style) if a not in current]
    if variant is not None and len(advice) > 1:
        # A sampled proposal keeps a rollout-specific subset, so proposals differ.
        keep = [a for i, a in enumerate(advice) if (_stable_hash(variant, i) % 4) != 0]
        advice = keep or advice[:1]
    return advice


def _numeric(inputs: dict[str, str]) -> float:
    texts = [v for k, v in inputs.items() if any(t in k for t in ("reply", "output", "response", "answer"))]
    return round(similarity(texts[0], texts[1]), 3) if len(texts) >= 2 else 0.5


def _field_value(name: str, kind: str, inputs: dict[str, str], variant: int | None) -> Any:
    if kind.startswith("dict"):
        try:
            modules = json.loads(inputs.get("module_names", "[]"))
        except json.JSONDecodeError:
            modules = []
        current = inputs.get("modules_defn", "")
        # One directive a line: the stored prompt (and its diff in the UI) reads in full, line by line.
        advice = "\n".join(_advice(inputs, current, variant))
        return {str(m): advice for m in modules} if advice else {}
    if kind in ("float", "int"):
        return _numeric(inputs)
    if "instruction" in name:
        base = next((inputs[k] for k in _INSTRUCTION_FIELDS if inputs.get(k)), "")
        if name == "shortened_instruction":
            return base
        return merge_instructions(base, _advice(inputs, base, variant)) or "Reply to the user's request."
    advice = directives(_general(_evidence_style(inputs)))
    if advice:
        return "Highly rated replies share this style: " + " ".join(advice)
    return "The data are user requests to an agent and the agent's replies, some rated by users."


def structured_reply(system: str, user: str, *, variant: int | None = None) -> str:
    inputs = _sections(user)
    fields = _output_fields(system) or [("answer", "str")]
    values = {name: _field_value(name, kind, inputs, variant) for name, kind in fields}
    if "Outputs will be a JSON object" in system or "Respond with a JSON object" in user:
        return json.dumps(values)
    rendered = [
        f"[[ ## {name} ## ]]\n{json.dumps(value) if not isinstance(value, str) else value}"
        for name, value in values.items()
    ]
    return "\n\n".join(rendered) + "\n\n[[ ## completed ## ]]"


# --------------------------------------------------------------------------- engine and LM


def _text_of(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(getattr(part, "text", "") or "" for part in content)


class OfflineEngine:
    """DSPy 3.4 engine: ``complete(Request) -> Response``, no I/O."""

    def __init__(self, variant: int | None = None):
        self.variant = variant

    def complete(self, request):
        validate_request(request)
        system = _text_of(request.system)
        user_messages = [m for m in request.messages if m.role == "user"]
        user = (user_messages[-1].text or "") if user_messages else ""
        sampled = (request.config.temperature or 0) > 0
        variant = self.variant if sampled else None
        if _FIELD_MARKER.search(user) or "Your output fields are:" in system:
            text = structured_reply(system, user, variant=variant)
        else:
            text = agent_reply(system, user, variant=variant)
        prompt_tokens = len(system.split()) + sum(len((m.text or "").split()) for m in request.messages)
        completion_tokens = len(text.split())
        return Response(
            id=None,
            model=OFFLINE_MODEL,
            message=Message.assistant([TextPart(text)]),
            finish_reason="stop",
            usage=Usage(
                input_tokens=prompt_tokens, output_tokens=completion_tokens, total_tokens=prompt_tokens + completion_tokens
            ),
        )

    def stream(self, request):
        from dspy.lm15 import response_to_events

        return response_to_events(self.complete(request))

    def close(self) -> None:
        pass


class AsyncOfflineEngine:
    def __init__(self, sync: OfflineEngine):
        self.sync = sync

    async def complete(self, request):
        return self.sync.complete(request)

    async def stream(self, request):
        for event in self.sync.stream(request):
            yield event

    async def aclose(self) -> None:
        pass


class OfflineLM(MeteredLM):
    """The offline model as a ``dspy.LM`` (hence ``dspy.BaseLM``) with the offline engine."""

    def __init__(self, *, budget=None, variant: int | None = None, **kwargs):
        engine = OfflineEngine(variant)
        kwargs.setdefault("cache", False)
        kwargs.setdefault("num_retries", 0)
        super().__init__(OFFLINE_MODEL, budget=budget, engine=engine, async_engine=AsyncOfflineEngine(engine), **kwargs)

    def copy(self, **kwargs):
        copied = super().copy(**kwargs)
        rollout = copied.kwargs.get("rollout_id")
        if rollout is not None:
            engine = OfflineEngine(int(rollout))
            copied._engine_spec, copied._async_engine_spec = engine, AsyncOfflineEngine(engine)
        return copied
