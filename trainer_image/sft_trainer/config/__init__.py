"""Run configurations: pure pydantic, no heavy imports.

The operator composes these into the `DatasetCuration` and `SFTJob` specs and
renders them into the pod's run config; the pod parses them with the same
classes. This package must never import torch, transformers or anything from
`sft_operator`.
"""

from .base import Rule, RuleSet, WireModel, exactly_one_of, field_rules, immutable, model_rules
from .curation import CurationConfig, CurationRunConfig, DatasetFormat, EngineSettings, TaskType
from .evaluation import EvaluationConfig, EvaluationGates, EvaluationSummary, FigureSummary
from .exit_codes import EXIT_CONFIG_ERROR
from .review import (
    CHOICES,
    DECISION_CONTROL,
    EDIT_CONTROL,
    LABEL_CONFIG,
    NOTE_CONTROL,
    TOKEN_ENV,
    LabelStudioClient,
    LabelStudioError,
    LabelStudioTarget,
    ReviewApplyRunConfig,
)
from .training import (
    DEFAULT_LEARNING_RATE,
    LoraSettings,
    Method,
    ParentStage,
    TrainingConfig,
    TrainRunConfig,
)

__all__ = [
    "CHOICES",
    "EXIT_CONFIG_ERROR",
    "DECISION_CONTROL",
    "EDIT_CONTROL",
    "LABEL_CONFIG",
    "NOTE_CONTROL",
    "TOKEN_ENV",
    "DEFAULT_LEARNING_RATE",
    "CurationConfig",
    "EngineSettings",
    "EvaluationConfig",
    "EvaluationGates",
    "EvaluationSummary",
    "FigureSummary",
    "CurationRunConfig",
    "DatasetFormat",
    "LabelStudioClient",
    "LabelStudioError",
    "LabelStudioTarget",
    "ReviewApplyRunConfig",
    "LoraSettings",
    "Method",
    "ParentStage",
    "TaskType",
    "TrainRunConfig",
    "TrainingConfig",
    "Rule",
    "RuleSet",
    "WireModel",
    "exactly_one_of",
    "field_rules",
    "immutable",
    "model_rules",
]
