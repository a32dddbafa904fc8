"""Golden dataset: an agent's best real interactions, cleaned, as training examples.

Pure domain code (no Dagster import here); the Dagster assets live in ``assets.py`` and are
collected in ``definitions.py``. The seed's names are importable from this package.
"""

from .dataset import (
    GOLDEN_COLUMNS,
    GoldenDatasetOptions,
    GoldenDatasetPipeline,
    build_golden_dataset,
    convert_to_dspy_examples,
    stream_golden_dataset,
    write_golden_parquet,
)
from .extractor import InteractionExtractor, clean_messages
from .feedback import FeedbackScale, combine_task_feedback, normalize_feedback_data
from .models import Interaction
from .strategies import (
    STRATEGIES,
    BaseExtractionStrategy,
    ContextWindowStrategy,
    FirstNTurnsStrategy,
    FullHistoryStrategy,
    KeyTurnsStrategy,
    LastNTurnsStrategy,
    LastTurnStrategy,
    SimilarityStrategy,
    SlidingWindowStrategy,
    SummaryContextStrategy,
    get_strategy,
    parse_strategy,
)

__all__ = [
    "GOLDEN_COLUMNS",
    "STRATEGIES",
    "BaseExtractionStrategy",
    "ContextWindowStrategy",
    "FeedbackScale",
    "FirstNTurnsStrategy",
    "FullHistoryStrategy",
    "GoldenDatasetOptions",
    "GoldenDatasetPipeline",
    "Interaction",
    "InteractionExtractor",
    "KeyTurnsStrategy",
    "LastNTurnsStrategy",
    "LastTurnStrategy",
    "SimilarityStrategy",
    "SlidingWindowStrategy",
    "SummaryContextStrategy",
    "build_golden_dataset",
    "clean_messages",
    "combine_task_feedback",
    "convert_to_dspy_examples",
    "get_strategy",
    "normalize_feedback_data",
    "parse_strategy",
    "stream_golden_dataset",
    "write_golden_parquet",
]
