"""Run configurations: pure pydantic, no heavy imports.

The operator composes these into the `DatasetCuration` and `SFTJob` specs and
renders them into the pod's run config; the pod parses them with the same
classes. This package must never import torch, transformers or anything from
`sft_operator`.
"""

from .base import Rule, RuleSet, WireModel, exactly_one_of, field_rules, immutable, model_rules
from .curation import CurationConfig, CurationRunConfig, DatasetFormat, TaskType
from .training import (
    DEFAULT_LEARNING_RATE,
    LoraSettings,
    Method,
    TrainingConfig,
    TrainRunConfig,
)

__all__ = [
    "DEFAULT_LEARNING_RATE",
    "CurationConfig",
    "CurationRunConfig",
    "DatasetFormat",
    "LoraSettings",
    "Method",
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
