"""Optimization domain: the ``candidate_prompt`` asset, the training job and its schedule.

``bindu_db`` is bound once in ``bindu_pipelines.definitions``; the language model is bound here.
"""

import dagster as dg

from bindu_pipelines.names import LANGUAGE_MODEL

from .assets import candidate_prompt
from .jobs import daily_training_schedule, training_job
from .lm import LanguageModel

defs = dg.Definitions(
    assets=[candidate_prompt],
    jobs=[training_job],
    schedules=[daily_training_schedule],
    resources={LANGUAGE_MODEL: LanguageModel()},
)
