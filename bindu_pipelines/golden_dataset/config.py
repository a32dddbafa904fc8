"""The golden dataset's options: one resource, configured once per run, read by its assets and checks."""

import os
import warnings
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
from pydantic import Field

from bindu_pipelines.names import GOLDEN_DATASET_OPTIONS

from .dataset import GoldenDatasetOptions
from .fetch import DEFAULT_CHUNK_SIZE
from .history import DEFAULT_MAX_MESSAGE_CHARS

# Asset-level resource_defs are "beta" in Dagster 1.13; they let the one options resource come
# with the assets wherever they are materialized. Silence that one notice.
warnings.filterwarnings("ignore", message="Parameter `resource_defs`", category=dg.BetaWarning)


class GoldenDatasetConfig(dg.ConfigurableResource):
    """Options of a golden dataset run: one resource (``golden_dataset_options``) read by the
    golden dataset's assets and checks, configured once per run."""

    strategy: str = Field(default="last_turn", description="Extraction strategy, CLI syntax: name or name:arg[:arg].")
    require_feedback: bool = Field(default=True, description="Keep only interactions with a valid feedback score.")
    min_feedback_threshold: float = Field(default=0.0, ge=0.0, le=1.0, description="Drop interactions scored below this.")
    max_interactions_query_limit: int | None = Field(
        default=10_000, description="Most recent tasks read per agent (the seed's cap); null reads all."
    )
    since_days: float | None = Field(default=None, gt=0, description="Only tasks created in the last N days.")
    scrub_pii: bool = Field(default=True, description="Replace e-mails, phones, card numbers and keys before export.")
    rebuild_context: bool = Field(default=False, description="Rebuild conversations across the tasks of a context_id.")
    max_message_chars: int = Field(default=DEFAULT_MAX_MESSAGE_CHARS, ge=1, description="Tasks with a longer message are dropped.")
    unicode_form: str = Field(default="NFC", description="Unicode normalisation of the texts: NFC or NFKC.")
    validation_fraction: float = Field(default=0.2, ge=0.0, lt=1.0, description="Share of tasks held out for validation.")
    min_examples: int = Field(default=10, ge=1, description="Fewer examples fail the blocking check.")
    min_validation_examples: int = Field(default=2, ge=0, description="Fewer validation examples fail the blocking check.")
    max_row_shift: float = Field(default=0.5, ge=0.0, description="Warn when the row count moves by more than this share.")
    max_mean_score_shift: float = Field(default=0.15, ge=0.0, description="Warn when the mean score moves by more than this.")
    chunk_size: int = Field(default=DEFAULT_CHUNK_SIZE, ge=1, description="Tasks per batch: memory holds a few batches.")
    workers: int | None = Field(
        default=None, ge=1, description="Worker processes for the stages (null: the CPU count, at most 4; 1: none)."
    )

    def options(self, now: datetime | None = None) -> GoldenDatasetOptions:
        now = now or datetime.now(UTC)
        limit = self.max_interactions_query_limit
        return GoldenDatasetOptions(
            strategy=self.strategy,
            require_feedback=self.require_feedback,
            min_feedback_threshold=self.min_feedback_threshold,
            limit=limit if limit and limit > 0 else None,
            since=now - timedelta(days=self.since_days) if self.since_days else None,
            scrub_pii=self.scrub_pii,
            rebuild_context=self.rebuild_context,
            max_message_chars=self.max_message_chars,
            unicode_form=self.unicode_form,
            validation_fraction=self.validation_fraction,
        )

    def worker_count(self) -> int:
        return self.workers or min(os.cpu_count() or 1, 4)


# The one instance the golden dataset's step declares (Dagster requires one object per resource key).
golden_dataset_options = GoldenDatasetConfig()
OPTIONS_RESOURCE = {GOLDEN_DATASET_OPTIONS: golden_dataset_options}


def golden_dataset_run_config(**options: Any) -> dict[str, Any]:
    """Run config giving the options to every golden dataset asset and check (one resource block)."""
    block = GoldenDatasetConfig(**options).model_dump(exclude_unset=True) if options else {}
    return {"ops": {}, "resources": {GOLDEN_DATASET_OPTIONS: {"config": block}}}
