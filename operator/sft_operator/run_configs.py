"""The run config each pod reads (`python -m sft_trainer <subcommand> run.yaml`), rendered from a spec.

The models are the trainer's own (`sft_trainer.config`); every path in them
comes from the `MountLayout`, so the same spec renders for a cluster's pod
and for `sftctl run` on this machine.
"""

from __future__ import annotations

from typing import Any

from sft_trainer.config import (
    CurationConfig,
    CurationRunConfig,
    LabelStudioTarget,
    ParentStage,
    ReviewApplyRunConfig,
    TrainRunConfig,
)

from .api import DatasetCurationSpec, SFTJobSpec
from .chain import Start
from .layout import MountLayout, source_path
from .settings import OperatorSettings

# What a curation writes for training: the trainer reads it with format `messages`.
CURATED_FILE = "curated.jsonl"


def curation_run_config(
    spec: DatasetCurationSpec, layout: MountLayout, settings: OperatorSettings
) -> CurationRunConfig:
    return CurationRunConfig(
        input=source_path(spec.source, layout),
        format=spec.source.format,
        output_dir=layout.path(spec.output.pvc),
        tokenizer=source_path(spec.tokenizer, layout) if spec.tokenizer else None,
        curation=pipeline_settings(spec),
        progress_port=settings.progress_port,
    )


def pipeline_settings(spec: DatasetCurationSpec) -> CurationConfig:
    """The run config's `curation` section: spec.curation, with spec.engine as its `engine`."""
    return CurationConfig.model_validate({**spec.curation.to_wire(), "engine": spec.engine.to_wire()})


def training_run_config(
    spec: SFTJobSpec,
    layout: MountLayout,
    settings: OperatorSettings,
    curation_spec: DatasetCurationSpec | None = None,
    start: Start | None = None,
    name: str | None = None,
) -> TrainRunConfig:
    """The trainer's run config; a curationRef reads the curation's curated.jsonl, an sftJobRef starts at `start`."""
    if spec.dataset.curation_ref is not None:
        if curation_spec is None:
            raise ValueError("dataset.curationRef needs the referenced DatasetCuration's spec")
        dataset, data_format = f"{layout.path(curation_spec.output.pvc)}/{CURATED_FILE}", "messages"
    else:
        dataset, data_format = source_path(spec.dataset, layout), spec.dataset.format
    parent = None
    if spec.model.sft_job_ref is not None:
        if start is None:
            raise ValueError("model.sftJobRef needs the lineage of the referenced SFTJob")
        parent = ParentStage(
            name=spec.model.sft_job_ref.name,
            output_dir=layout.path(start.parent_output),
            use=spec.model.sft_job_ref.use,
            adapters=[layout.path(adapter) for adapter in start.adapters],
            base_model=source_path(start.base, layout),
        )
    return TrainRunConfig(
        model=source_path(start.model, layout) if start else source_path(spec.model, layout),
        name=name,
        parent=parent,
        dataset=dataset,
        format=data_format,
        output_dir=layout.path(spec.output.pvc),
        training=spec.training,
        progress_port=settings.progress_port,
    )


def review_apply_run_config(
    spec: DatasetCurationSpec, layout: MountLayout, decisions: list[dict[str, Any]]
) -> ReviewApplyRunConfig:
    studio = spec.review.label_studio if spec.review else None
    return ReviewApplyRunConfig(
        output_dir=layout.path(spec.output.pvc),
        decisions=decisions,
        label_studio=LabelStudioTarget(url=studio.url, project=studio.project) if studio else None,
    )
