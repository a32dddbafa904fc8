"""The seed README's Python, run as written: only the imports change and the agent is added.

Each ``seed_example_*`` body is the README's code block (``/work/shared/seed/dspy-integration-README.md``)
with ``from bindu.dspy… import`` replaced by ``from bindu_pipelines.compat import`` and the agent
passed where the seed had one implicit agent. The training examples run ``training_job`` through
Dagster with the offline demo model, each for its own demo agent (the seed's guard refuses a second
training while the first one's canary runs).
"""

import asyncio
import inspect
import uuid

import pytest

import bindu_pipelines.compat as compat
from bindu_pipelines.demo.seed import seed_demo_data
from bindu_runtime import PromptStore, make_engine, upgrade

SEED_NAMES = [
    "train", "train_async", "build_golden_dataset", "convert_to_dspy_examples", "BaseExtractionStrategy",
    "InteractionExtractor", "clean_messages", "select_prompt_with_canary", "run_canary_controller",
    "compare_metrics", "promote_step", "rollback_step", "ensure_system_stable", "LastTurnStrategy",
    "FullHistoryStrategy", "LastNTurnsStrategy", "FirstNTurnsStrategy", "ContextWindowStrategy",
    "SimilarityStrategy", "KeyTurnsStrategy", "SlidingWindowStrategy", "SummaryContextStrategy",
    "AgentSignature", "AgentProgram", "Interaction", "SIMBA", "GEPA", "MIPROv2",
]  # fmt: skip
PROMPT_MANAGER = ["get_active_prompt", "get_candidate_prompt", "insert_prompt", "update_prompt_traffic",
                  "update_prompt_status", "zero_out_all_except"]  # fmt: skip


def test_seed_names_exist_with_the_seed_parameters():
    missing = [name for name in SEED_NAMES if not hasattr(compat, name)]
    assert missing == []
    assert {"optimizer", "strategy", "require_feedback"} <= set(inspect.signature(compat.train_async).parameters)
    assert inspect.iscoroutinefunction(compat.train_async) and inspect.iscoroutinefunction(compat.build_golden_dataset)
    # The seed's positional order, the agent as a keyword.
    parameters = list(inspect.signature(compat.build_golden_dataset).parameters.values())
    assert [p.name for p in parameters[:4]] == ["limit", "strategy", "require_feedback", "min_feedback_threshold"]
    assert inspect.signature(compat.build_golden_dataset).parameters["agent_id"].kind is inspect.Parameter.KEYWORD_ONLY
    assert inspect.iscoroutinefunction(compat.select_prompt_with_canary)
    assert all(callable(getattr(compat.PromptStore, name)) for name in PROMPT_MANAGER)


@pytest.fixture
def seeded(sqlite_url, monkeypatch):
    engine = make_engine(sqlite_url)
    upgrade(engine)
    seed_demo_data(engine, agents=3, tasks_per_agent=60, seed=5)
    monkeypatch.setenv("BINDU_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("BINDU_LM", "bindu/offline-demo")  # the operator's explicit choice of the offline model
    yield engine
    engine.dispose()


# --------------------------------------------------------------------------- the README's blocks


async def seed_example_programmatic_training(agent_id):
    # "Training from Python"
    from bindu_pipelines.compat import SIMBA, ContextWindowStrategy, train_async

    # Configure strategy
    strategy = ContextWindowStrategy(n_turns=3, system_prompt="Be helpful and concise")

    # Configure optimizer (only SIMBA is currently supported)
    optimizer = SIMBA()

    # Run training
    return await train_async(optimizer=optimizer, strategy=strategy, require_feedback=True, agent_id=agent_id)


async def seed_example_optimizer_configuration(agent_id, strategy):
    # "SIMBA Optimizer"
    from bindu_pipelines.compat import SIMBA, train_async

    optimizer = SIMBA(
        # SIMBA-specific configuration
    )

    return await train_async(optimizer=optimizer, strategy=strategy, agent_id=agent_id)


async def seed_example_dataset_filtering(agent_id, optimizer, strategy):
    # "Dataset Filtering"
    from bindu_pipelines.compat import train_async

    return await train_async(
        optimizer=optimizer,
        strategy=strategy,
        require_feedback=True,  # Only interactions with feedback
        agent_id=agent_id,
    )


async def seed_example_golden_dataset(agent_id):
    # "build_golden_dataset()" and "convert_to_dspy_examples()" of the API reference, positionally
    from bindu_pipelines.compat import LastTurnStrategy, build_golden_dataset, convert_to_dspy_examples

    interactions = await build_golden_dataset(None, LastTurnStrategy(), True, 0.0, agent_id=agent_id)
    return interactions, convert_to_dspy_examples(interactions)


def seed_example_extractor(task_id, history, feedback_score, feedback_type):
    # "Interaction Extractor"
    from bindu_pipelines.compat import InteractionExtractor, LastTurnStrategy

    # Clean and extract
    extractor = InteractionExtractor(strategy=LastTurnStrategy())
    return extractor.extract(task_id, history, feedback_score, feedback_type)


def seed_example_custom_strategy():
    # "Custom Extraction Strategies"
    from typing import Any
    from uuid import UUID

    from bindu_pipelines.compat import BaseExtractionStrategy, Interaction

    class CustomStrategy(BaseExtractionStrategy):
        def __init__(self, custom_param: str):
            self.custom_param = custom_param

        @property
        def name(self) -> str:
            return f"custom_{self.custom_param}"

        def extract(
            self,
            task_id: UUID,
            messages: list[dict[str, Any]],
            feedback_score: float | None = None,
            feedback_type: str | None = None,
        ) -> Interaction | None:
            # Your extraction logic here
            user_input = "..."
            agent_output = "..."

            return Interaction(
                id=task_id,
                user_input=user_input,
                agent_output=agent_output,
                feedback_score=feedback_score,
                feedback_type=feedback_type,
            )

    return CustomStrategy


async def seed_example_prompt_selection(agent_id):
    # "Runtime Prompt Selection"
    from bindu_pipelines.compat import select_prompt_with_canary

    # During agent request handling
    prompt = await select_prompt_with_canary(agent_id)

    if prompt:
        system_message = prompt["prompt_text"]
        prompt_id = prompt["id"]
    return system_message, prompt_id


async def seed_example_canary_controller(agent_id):
    # "Canary Controller": compare, then step
    from bindu_pipelines.compat import compare_metrics, ensure_system_stable, promote_step, rollback_step, select_prompt_with_canary

    active = {"num_interactions": 400, "average_feedback_score": 0.5}
    candidate = {"num_interactions": 400, "average_feedback_score": 0.9}
    # Compare metrics
    winner = compare_metrics(active, candidate)

    store = PromptStore(make_engine())
    active_prompt, candidate_prompt = store.get_active_prompt(agent_id), store.get_candidate_prompt(agent_id)
    if winner == "candidate":
        await promote_step(active_prompt, candidate_prompt, agent_id=agent_id)  # +10% traffic
    elif winner == "active":
        await rollback_step(active_prompt, candidate_prompt, agent_id=agent_id)  # -10% traffic
    try:
        await ensure_system_stable(agent_id)
    except RuntimeError as exc:
        stable = str(exc)
    else:
        stable = None
    return winner, stable, await select_prompt_with_canary(agent_id)


# --------------------------------------------------------------------------- the test


@pytest.mark.slow
def test_the_seed_readme_python_examples_run_as_written(seeded):
    store = PromptStore(seeded)
    agents = store.list_agents()
    assert len(agents) == 3

    interactions, examples = asyncio.run(seed_example_golden_dataset(agents[0]))
    assert len(interactions) == len(examples) > 10
    assert all(0.0 <= i.feedback_score <= 1.0 for i in interactions)

    task_id = uuid.uuid4()
    history = [
        {"role": "user", "parts": [{"kind": "text", "text": "How do I reset my password?"}]},
        {"role": "assistant", "parts": [{"kind": "text", "text": "Open Settings > Security."}]},
    ]
    interaction = seed_example_extractor(task_id, history, 0.75, "rating")
    assert (interaction.user_input, interaction.agent_output, interaction.feedback_score) == (
        "How do I reset my password?", "Open Settings > Security.", 0.75,
    )  # fmt: skip
    custom = seed_example_custom_strategy()("x")
    assert custom.name == "custom_x" and custom.extract(task_id, history, 1.0, "rating").user_input == "..."

    first = asyncio.run(seed_example_programmatic_training(agents[0]))
    assert first.outcome in {"candidate_started", "rejected"}, first.reason
    assert "context_window" in str(first.details.get("optimizer_settings", "")) or first.run_id
    second = asyncio.run(seed_example_optimizer_configuration(agents[1], compat.LastTurnStrategy()))
    third = asyncio.run(seed_example_dataset_filtering(agents[2], "simba", compat.LastNTurnsStrategy(n_turns=2)))
    for result in (first, second, third):
        assert result.outcome in {"candidate_started", "rejected"}, result.reason
    started = [r for r in (first, second, third) if r.outcome == "candidate_started"]
    assert started, "the offline model's candidate wins offline on the demo data"

    # The seed's guard: a second training while the first canary runs is refused.
    with pytest.raises(RuntimeError):
        asyncio.run(seed_example_dataset_filtering(started[0].agent_id, compat.SIMBA(), None))

    text, prompt_id = asyncio.run(seed_example_prompt_selection(started[0].agent_id))
    assert text and prompt_id in {p.id for p in store.list_prompts(started[0].agent_id)}

    winner, stable, selected = asyncio.run(seed_example_canary_controller(started[0].agent_id))
    assert winner == "candidate"
    assert stable is not None  # the experiment is still running (20 % candidate)
    assert float(store.get_candidate_prompt(started[0].agent_id).traffic) == pytest.approx(0.2)
    assert selected["status"] in {"active", "candidate"}
