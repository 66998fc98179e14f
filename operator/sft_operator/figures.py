"""A run's figures: the part of its report (or its /progress) that the custom resource's status carries, validated.

The curation pod writes report.json, the trainer train_report.json; each
holds a `status` block in the shape of its kind's status. Only what the
report sets is taken, so merging figures into a status never wipes what
the operator wrote there (conditions, lineage).
"""

from __future__ import annotations

from typing import Any

from .api import (
    CommonStatus,
    CurationCounts,
    CurationProgress,
    DatasetCurationStatus,
    SFTJobStatus,
    TrainingProgress,
)

# The status keys whose presence shows a run's figures arrived.
FIGURE_KEYS = {"DatasetCuration": ("counts",), "SFTJob": ("metrics", "progress")}

# Keys every status has (conditions, times...): a figures dict never carries
# them, so merging figures into a status cannot wipe its conditions.
_COMMON_KEYS = frozenset(field.alias or name for name, field in CommonStatus.model_fields.items())


def curation_figures(report: dict[str, Any]) -> dict[str, Any]:
    """The part of report.json's `status` that DatasetCuration.status carries, validated."""
    figures = report.get("status", {})
    validated = DatasetCurationStatus(
        counts=CurationCounts.model_validate(figures.get("counts", {})),
        drops_by_reason=figures.get("dropsByReason", {}),
        task_entropy_before=figures.get("taskEntropyBefore"),
        task_entropy_after=figures.get("taskEntropyAfter"),
        rejected_fraction=figures.get("rejectedFraction"),
        selection=figures.get("selection"),
        notes=figures.get("notes", []),
        # A curation that nobody reviewed yet: every held record is pending.
        review=figures.get("review") or {"pending": figures.get("counts", {}).get("review", 0)},
    )
    return _figures_only(validated.to_wire())


def training_figures(report: dict[str, Any]) -> dict[str, Any]:
    """The part of train_report.json's `status` that SFTJob.status carries, validated."""
    figures = report.get("status", {})
    metrics = {k: float(v) for k, v in (figures.get("metrics") or {}).items() if isinstance(v, int | float)}
    validated = SFTJobStatus(
        progress=TrainingProgress.model_validate(figures.get("progress") or {}),
        metrics=metrics,
        exports=figures.get("exports") or [],
        evaluation=figures.get("evaluation"),
    )
    # Only what the report sets: an empty default (lineage, written from the spec) must not overwrite status.
    return _figures_only(validated.model_dump(mode="json", by_alias=True, exclude_none=True, exclude_unset=True))


def _figures_only(wire: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in wire.items() if key not in _COMMON_KEYS}


def figures(kind: str, report: dict[str, Any]) -> dict[str, Any]:
    """The kind's figures from a report; a report that does not fit the kind's status raises ValueError."""
    return curation_figures(report) if kind == "DatasetCuration" else training_figures(report)


def has_figures(kind: str, status: dict[str, Any]) -> bool:
    return any(status.get(key) for key in FIGURE_KEYS[kind])


def progress_figures(payload: dict[str, Any], kind: str) -> dict[str, Any]:
    """A pod's /progress JSON reduced to the kind's progress fields (unknown keys ignored)."""
    model: type[TrainingProgress] | type[CurationProgress] = (
        CurationProgress if kind == "DatasetCuration" else TrainingProgress
    )
    known = {field.alias or name for name, field in model.model_fields.items()}
    return model.model_validate({k: v for k, v in payload.items() if k in known}).to_wire()
