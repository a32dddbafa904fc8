"""Every name that is a contract between modules: asset, check, op, job, schedule, sensor and
resource names, run-config keys, run tags and the metadata keys a caller reads back.

Defined once here, imported everywhere (Dagster definitions, CLI, demo, tests). This module imports
nothing, so any layer, Dagster-free or not, can use it without a cycle.
"""

# --- assets -------------------------------------------------------------------------------
RAW_TASKS = "raw_tasks"
NORMALIZED_FEEDBACK = "normalized_feedback"
EXTRACTED_INTERACTIONS = "extracted_interactions"
GOLDEN_DATASET = "golden_dataset"
# The golden dataset's assets in pipeline order, and the one step that materializes them together.
GOLDEN_DATASET_ASSETS = (RAW_TASKS, NORMALIZED_FEEDBACK, EXTRACTED_INTERACTIONS, GOLDEN_DATASET)
GOLDEN_DATASET_STAGES = "golden_dataset_stages"
CANDIDATE_PROMPT = "candidate_prompt"
TRAFFIC_DECISION = "traffic_decision"

# --- asset checks -------------------------------------------------------------------------
# The golden dataset's checks, evaluated in the step that writes it (GOLDEN_DATASET_STAGES).
GOLDEN_DATASET_CHECKS = (
    "has_enough_examples",
    "scores_in_range",
    "no_duplicate_pairs",
    "no_pii",
    "shift",
)
# The offline gate's verdict on candidate_prompt, as a check a person sees pass or fail.
OFFLINE_GATE_CHECK = "offline_gate"

# --- jobs, schedules, sensors -------------------------------------------------------------
TRAINING_JOB = "training_job"
CANARY_JOB = "canary_job"
DAILY_TRAINING_SCHEDULE = "daily_training_schedule"
HOURLY_CANARY_SCHEDULE = "hourly_canary_schedule"
CANARY_SENSOR = "canary_sensor"
AGENT_DISCOVERY_SENSOR = "agent_discovery_sensor"

# --- resources ----------------------------------------------------------------------------
BINDU_DB = "bindu_db"
LANGUAGE_MODEL = "language_model"
PARQUET_IO_MANAGER = "parquet_io_manager"
# The golden dataset's one set of options, read by its step and its five checks.
GOLDEN_DATASET_OPTIONS = "golden_dataset_options"

# --- run config ---------------------------------------------------------------------------
RUN_CONFIG_OPS = "ops"
RUN_CONFIG_CONFIG = "config"
RUN_CONFIG_LOGGERS = "loggers"

# --- run tags -----------------------------------------------------------------------------
# dagster_home/dagster.yaml limits runs with these tags to one per value: one per agent.
TRAINING_AGENT_TAG = "bindu/training-agent"
CANARY_AGENT_TAG = "bindu/canary-agent"
STAGE_TAG = "bindu/stage"

# --- the offline demo model ---------------------------------------------------------------
OFFLINE_MODEL = "bindu/offline-demo"
# The optimizers `train` accepts (the CLI checks a name without importing DSPy).
OPTIMIZER_NAMES = ("simba", "gepa", "miprov2")

# --- candidate_prompt's materialization metadata (read back by train(), the CLI, the demo) -
class CandidateMeta:
    OUTCOME = "outcome"
    REASON = "reason"
    OPTIMIZER = "optimizer"
    GATE_VERDICT = "gate_verdict"
    ACTIVE_SCORE = "active_score"
    CANDIDATE_SCORE = "candidate_score"
    MEAN_DIFFERENCE = "mean_difference"
    LOWER_BOUND = "lower_bound"
    VALIDATION_EXAMPLES = "validation_examples"
    PROMPT_DIFF = "prompt_diff"
    CANDIDATE_PROMPT_ID = "candidate_prompt_id"
    LM_CALLS = "lm_calls"
    LM_TOKENS = "lm_tokens"
    LM_MODEL = "lm_model"
    # True when the candidate was written by the offline demo model (never a real model's work).
    LM_OFFLINE_DEMO = "lm_offline_demo"
    OPTIMIZER_SETTINGS = "optimizer_settings"
    DATASET_FINGERPRINT = "dataset_fingerprint"
    # The capped example sets (item "optimization sized for a real model").
    EXAMPLES_USED = "examples_used"
    ESTIMATE = "estimate"

    # What ``outcome_from_materialization`` hands back to a caller.
    READ_BACK = (
        OUTCOME, REASON, OPTIMIZER, GATE_VERDICT, ACTIVE_SCORE, CANDIDATE_SCORE, LOWER_BOUND,
        CANDIDATE_PROMPT_ID, LM_CALLS, LM_TOKENS, LM_MODEL, LM_OFFLINE_DEMO,
    )


# --- traffic_decision's metadata read back by the CLI -------------------------------------
class CanaryMeta:
    TRAFFIC_BEFORE = "traffic_before"
    TRAFFIC_AFTER = "traffic_after"
    DECISION = "decision"
    CANDIDATE_ID = "candidate_id"
    # The prompt the experiment is about: the candidate while it ramps, the promoted prompt (now
    # active) while the old one is held back — one id across both phases of one rollout.
    EXPERIMENT_ID = "experiment_id"
    PHASE = "phase"  # "experiment" or "holdback"
