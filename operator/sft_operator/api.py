"""The `sft.trustdoc.io/v1alpha1` API: the one source of truth.

`crds/*.yaml` are generated from these models (`make crds`); the operator
validates and defaults specs with them; the run configs the pods read are the
`sft_trainer.config` models composed here. Field docstrings become the schema
descriptions that `kubectl explain` shows, so every field has one.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, model_validator
from pydantic.json_schema import SkipJsonSchema

from sft_trainer.config import (
    CurationConfig,
    DatasetFormat,
    EngineSettings,
    EvaluationSummary,
    Rule,
    TrainingConfig,
    WireModel,
    exactly_one_of,
    field_rules,
    immutable,
    model_rules,
)

GROUP = "sft.trustdoc.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# Kubernetes object names: DNS-1123 subdomain, as the API server checks them.
DNS1123_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# A path inside a volume: relative, no `..` segment, no empty segment.
RELATIVE_PATH = r"^[^/](.*[^/])?$"
SAFE_PATH_RULE = Rule(
    "!self.split('/').exists(s, s == '..')",
    "must not contain a '..' segment",
    check=lambda path: ".." not in path.split("/"),
)


# --------------------------------------------------------------------------
# Storage
# --------------------------------------------------------------------------


class SecretKeyRef(WireModel):
    name: str = Field(pattern=DNS1123_NAME, max_length=253)
    """Name of a Secret in the object's namespace."""
    key: str = Field(default="token", min_length=1, max_length=253)
    """Key inside the Secret."""


class PvcLocation(WireModel):
    claim_name: str = Field(pattern=DNS1123_NAME, max_length=253)
    """Name of a PersistentVolumeClaim in the object's namespace."""
    path: str = Field(
        default=".",
        pattern=RELATIVE_PATH,
        max_length=1024,
        json_schema_extra=field_rules(SAFE_PATH_RULE),
    )
    """Path inside the claim, relative to its root."""


class HuggingFaceRepo(WireModel):
    repo: str = Field(pattern=r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$", max_length=200)
    """Repository id, such as `HuggingFaceTB/SmolLM2-135M-Instruct`."""
    revision: str = Field(default="main", min_length=1, max_length=200)
    """Branch, tag or commit."""
    file: str | None = Field(default=None, max_length=1024)
    """One file inside the repository (a dataset file or a GGUF file); unset: the whole repository."""
    token_secret_ref: SecretKeyRef | None = None
    """Secret holding an access token for private repositories. Never copied into status or logs."""


class ModelSource(WireModel):
    model_config = model_rules(exactly_one_of("pvc", "huggingFace"))
    pvc: PvcLocation | None = None
    """The model's folder (or GGUF file) on a PersistentVolumeClaim."""
    hugging_face: HuggingFaceRepo | None = None
    """The model on the Hugging Face Hub."""


class SFTJobRef(WireModel):
    # No schema pattern: the API server would answer `namespace/name` with a bare pattern
    # mismatch; these two rules name the real problem first.
    name: str = Field(
        min_length=1,
        max_length=253,
        json_schema_extra=field_rules(
            Rule(
                "!self.contains('/')",
                "same namespace only: name an SFTJob of this namespace, without a namespace/ prefix",
                check=lambda name: "/" not in name,
            ),
            Rule(
                f"self.contains('/') || self.matches(r'{DNS1123_NAME}')",
                "must be a DNS-1123 name (lower-case letters, digits, '-' and '.')",
                check=lambda name: "/" in name or re.fullmatch(DNS1123_NAME, name) is not None,
            ),
        ),
    )
    """Name of an SFTJob in the same namespace (same namespace only: there is no namespace field, and a
    `namespace/name` form is refused). This job waits until that one is Succeeded."""
    use: Literal["merged", "adapter"]
    """`merged`: start from its merged export (or its whole model, if it fine-tuned fully); refused if it exported
    none. `adapter`: load its own starting model, merge its adapter in memory, and train from there."""


class ModelGates(WireModel):
    require_evaluation_passed: bool = False
    """Start only if the referenced SFTJob's evaluation passed (its EvaluationPassed condition is True);
    a failed evaluation, or none at all, fails this job with a condition naming it."""


class SFTJobModelSource(ModelSource):
    """An SFTJob's model: a base model (pvc or huggingFace), or another SFTJob's result (sftJobRef)."""

    model_config = model_rules(
        exactly_one_of("pvc", "huggingFace", "sftJobRef"),
        Rule(
            "!has(self.gates) || has(self.sftJobRef)",
            "gates apply only to an sftJobRef",
            ".gates",
            check=lambda m: m.gates is None or m.sft_job_ref is not None,
        ),
    )
    sft_job_ref: SFTJobRef | None = None
    """Another SFTJob's result: successive stages (general, then domain, then safety), each from the last."""
    gates: ModelGates | None = None
    """Conditions the referenced SFTJob must meet before this job starts from it."""


class CurationRef(WireModel):
    name: str = Field(pattern=DNS1123_NAME, max_length=253)
    """Name of a DatasetCuration in the same namespace; the job waits until it is Ready."""


class QualityGates(WireModel):
    min_task_entropy: float | None = Field(default=None, ge=0, le=1)
    """Fail unless the curated task mix has at least this normalised entropy."""
    max_rejected_fraction: float | None = Field(default=None, ge=0, le=1)
    """Fail if the curation rejected more than this fraction of its input."""
    min_curated_records: int | None = Field(default=None, ge=1)
    """Fail if the curation kept fewer records than this."""
    max_pending_review: int | None = Field(default=None, ge=0)
    """Wait (reason WaitingForReview) while more records than this wait for manual review; unset: do not wait."""


class DatasetSource(WireModel):
    model_config = model_rules(
        exactly_one_of("pvc", "huggingFace", "curationRef"),
        Rule(
            "!has(self.gates) || has(self.curationRef)",
            "gates apply only to a curationRef",
            ".gates",
            check=lambda d: d.gates is None or d.curation_ref is not None,
        ),
    )
    pvc: PvcLocation | None = None
    """A dataset file on a PersistentVolumeClaim."""
    hugging_face: HuggingFaceRepo | None = None
    """A dataset file on the Hugging Face Hub (set `file`)."""
    curation_ref: CurationRef | None = None
    """The curated output of a DatasetCuration."""
    format: DatasetFormat = "auto"
    """Record format: alpaca, sharegpt, messages, or auto-detect."""
    gates: QualityGates | None = None
    """Quality gates on the referenced curation's figures."""


class OutputLocation(WireModel):
    pvc: PvcLocation
    """Where outputs are written: a folder on a PersistentVolumeClaim (created if missing)."""


# --------------------------------------------------------------------------
# Scheduling and lifecycle (shared by both kinds)
# --------------------------------------------------------------------------


# Label keys and values, as the API server checks them on the pods these selectors and tolerations reach:
# a bad one passes the custom resource and fails every pod the Job creates.
QUALIFIED_NAME = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$"
MAX_NODE_SELECTOR = 32


class Toleration(WireModel):
    key: str | None = Field(default=None, pattern=QUALIFIED_NAME, max_length=316)
    """Taint key the toleration applies to; unset with operator Exists: all taints."""
    operator: Literal["Equal", "Exists"] = "Equal"
    """How key and value are compared."""
    value: str | None = Field(default=None, pattern=LABEL_VALUE, max_length=63)
    """Taint value to match (operator Equal)."""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    """Taint effect to match; unset: all effects."""


class Resources(WireModel):
    gpus_per_node: int = Field(default=1, ge=0, le=16)
    """GPUs requested by each pod (`nvidia.com/gpu`); 0 runs on CPU."""
    nodes: int = Field(default=1, ge=1, le=64)
    """Pods (nodes) in a multi-node run; more than one gives an Indexed Job with torchrun rendezvous."""
    cpu: str | None = Field(default=None, pattern=r"^[0-9]+(\.[0-9]+)?m?$")
    """CPU request and limit per pod, e.g. `8` or `500m`."""
    memory: str | None = Field(default=None, pattern=r"^[0-9]+(\.[0-9]+)?([EPTGMK]i?)?$")
    """Memory request and limit per pod, e.g. `64Gi`."""
    node_selector: dict[str, Annotated[str, Field(pattern=LABEL_VALUE, max_length=63)]] = Field(
        default_factory=dict,
        max_length=MAX_NODE_SELECTOR,
        json_schema_extra=field_rules(
            Rule(
                f"self.all(k, size(k) <= 316 && k.matches(r'{QUALIFIED_NAME}'))",
                "keys must be label keys (an optional DNS prefix and '/', then at most 63 letters, digits, '-', '_', '.')",
                check=lambda selector: all(len(k) <= 316 and re.fullmatch(QUALIFIED_NAME, k) for k in selector),
            )
        ),
    )
    """Node labels the pods must match (label keys and values, as on a Node)."""
    tolerations: list[Toleration] = Field(default_factory=list)
    """Taints the pods tolerate (GPU nodes are often tainted)."""


class CurationResources(Resources):
    gpus_per_node: int = Field(default=0, ge=0, le=16)
    """GPUs requested by the pod; curation needs none unless embedding-based labelling runs on GPU."""


class Lifecycle(WireModel):
    suspend: bool = False
    """Hold the Job suspended (maps to Job suspend, so Kueue can admit it)."""
    queue_name: str | None = Field(default=None, pattern=DNS1123_NAME, max_length=63)
    """Kueue LocalQueue name, passed to the Job as the kueue.x-k8s.io/queue-name label."""
    active_deadline_seconds: int | None = Field(default=None, ge=1)
    """Fail the run if it is still running after this many seconds."""
    ttl_seconds_after_finished: int | None = Field(default=None, ge=0)
    """Delete the Job and pods this long after they finish (the CR and its status stay)."""
    backoff_limit: int = Field(default=3, ge=0, le=100)
    """Retries after pod failures; retried pods resume from the newest checkpoint. Disruptions do not count."""


# --------------------------------------------------------------------------
# Status
# --------------------------------------------------------------------------


class Condition(WireModel):
    type: str
    """Condition type: Ready, Progressing, Succeeded or Failed."""
    status: Literal["True", "False", "Unknown"]
    """Whether the condition holds."""
    reason: str
    """CamelCase machine-readable reason."""
    message: str = ""
    """Human-readable detail."""
    observed_generation: int | None = None
    """The metadata.generation this condition was computed for."""
    last_transition_time: str | None = None
    """When status last changed (RFC 3339)."""


Phase = Literal["Pending", "Waiting", "Running", "Succeeded", "Failed", "Suspended"]


class CommonStatus(WireModel):
    phase: Phase | None = None
    """Summary derived from the conditions, for display only."""
    conditions: list[Condition] = Field(default_factory=list)
    """Current conditions (Ready, Progressing, Succeeded, Failed)."""
    observed_generation: int | None = None
    """The metadata.generation the operator last reconciled."""
    job_name: str | None = None
    """Name of the batch/v1 Job running this object."""
    output_location: str | None = None
    """Where the outputs are, as `pvc://CLAIM/PATH`."""
    start_time: str | None = None
    """When the Job started (RFC 3339)."""
    completion_time: str | None = None
    """When the Job finished (RFC 3339)."""


# --------------------------------------------------------------------------
# DatasetCuration
# --------------------------------------------------------------------------


class LabelStudioSpec(WireModel):
    url: str = Field(pattern=r"^https?://[^\s]+$", max_length=2048)
    """Base URL of the Label Studio server, as the operator and the pods reach it."""
    project: str = Field(min_length=1, max_length=50)
    """Title of the project the held records go to: created when missing, reused otherwise."""
    token_secret_ref: SecretKeyRef
    """Secret holding a Label Studio API token (legacy or personal access token). Never copied into status or logs."""


class ReviewSpec(WireModel):
    label_studio: LabelStudioSpec | None = None
    """Review the held records in Label Studio: tasks are created when the curation ends, annotations applied."""


class CurationSteps(CurationConfig):
    """spec.curation: the pipeline settings of a DatasetCuration.

    Where the pipeline runs is `spec.engine`, one level up (the operator builds
    a Job or a KubeRay RayJob from it), so `engine` is not part of this section:
    it is left out of the schema and refused here, and the operator writes
    spec.engine into the run config's `curation.engine`.
    """

    engine: SkipJsonSchema[EngineSettings] = Field(default_factory=EngineSettings, exclude=True)
    """Set by the operator from spec.engine; never by the user."""

    @model_validator(mode="before")
    @classmethod
    def _engine_is_spec_engine(cls, data: Any) -> Any:
        if isinstance(data, dict) and "engine" in data:
            raise ValueError("curation.engine is not a field of a DatasetCuration: set spec.engine instead")
        return data


class DatasetCurationSpec(WireModel):
    model_config = model_rules(
        Rule(
            "!has(self.source.curationRef)",
            "source.curationRef is only valid in an SFTJob",
            ".source.curationRef",
            check=lambda s: s.source.curation_ref is None,
        ),
        Rule(
            "!has(self.source.gates)",
            "source.gates is only valid in an SFTJob",
            ".source.gates",
            check=lambda s: s.source.gates is None,
        ),
        Rule(
            "self.resources.nodes == 1",
            "resources.nodes must be 1: curation runs in one pod",
            ".resources.nodes",
            check=lambda s: s.resources.nodes == 1,
        ),
    )

    source: DatasetSource = Field(json_schema_extra=immutable("source"))
    """The raw dataset (pvc or huggingFace; curationRef is not allowed here)."""
    output: OutputLocation
    """Where curated.jsonl, rejected.jsonl, review.jsonl and the reports go."""
    tokenizer: ModelSource | None = None
    """Target model whose tokenizer drives the token-based steps (lengths, OOD review, template check)."""
    curation: CurationSteps = Field(default_factory=CurationSteps)
    """What the pipeline does, step by step."""
    engine: EngineSettings = Field(default_factory=EngineSettings)
    """Where the pipeline runs: `local`, one pod (a Job); `ray`, Ray Data on a Ray cluster that a KubeRay RayJob starts for this curation (head and `workers` worker pods from the trainer image; needs KubeRay and the chart value ray.enabled)."""
    image: str | None = Field(default=None, max_length=512)
    """Trainer image override; unset: the operator's default."""
    resources: CurationResources = Field(default_factory=CurationResources)
    """Pod resources; curation needs no GPU by default."""
    lifecycle: Lifecycle = Field(default_factory=Lifecycle)
    """Suspend, deadlines, retries and cleanup."""
    review: ReviewSpec | None = None
    """Where the held records are reviewed besides `sftctl review` (Label Studio)."""


class CurationCounts(WireModel):
    input: int = 0
    """Records read."""
    curated: int = 0
    """Records kept."""
    rejected: int = 0
    """Records rejected, each with its reasons in rejected.jsonl."""
    review: int = 0
    """Records held for manual review."""


class SelectionFigures(WireModel):
    strategy: str
    """How the selected records were ranked (spec.curation.selection.strategy)."""
    budget: int
    """Records asked for (the budget, or the fraction of the pool), capped at the pool's size."""
    selected: int
    """Records selected into curated.jsonl."""
    control: int
    """Records in control.jsonl: the random control of the same size and task mix."""


class ReviewFigures(WireModel):
    pending: int = 0
    """Held records no reviewer has decided yet (still in review.jsonl)."""
    kept: int = 0
    """Held records a reviewer kept (as they were, or edited), now in curated.jsonl."""
    dropped: int = 0
    """Held records a reviewer dropped, now in rejected.jsonl with reason review.dropped."""


class LabelStudioStatus(WireModel):
    project: int | None = None
    """Id of the Label Studio project (unset until the first review-apply Job created it)."""
    decisions: int = 0
    """Finished annotations turned into decisions and handed to the newest review-apply Job."""
    digest: str | None = None
    """Fingerprint of those decisions: new annotations change it, and with it the Job's name."""
    apply_job: str | None = None
    """The newest review-apply Job (decisions in its ConfigMap; it appends, applies and exports the queue)."""
    attempt: int = 0
    """review-apply Jobs that failed for the current decisions (each retry gets a new Job)."""
    problems: list[str] = Field(default_factory=list, max_length=10)
    """Annotations not turned into decisions (unknown choice, empty edit, deleted tasks), one line each."""


class CurationProgress(WireModel):
    phase: str | None = None
    """Stage the pod is in: read, validate, label, filter, score, dedup, tokens, review, balance, select, write."""
    done: int | None = None
    """Records the stage has handled."""
    total: int | None = None
    """Records the stage handles in all."""
    percent: float | None = None
    """done / total of the stage, 0-100."""
    records_per_second: float | None = None
    """The stage's rate so far."""
    eta_seconds: float | None = None
    """Estimated seconds to the end of the stage."""
    elapsed_seconds: float | None = None
    """Seconds since the curation started."""
    updated_at: str | None = None
    """When the pod reported these figures (RFC 3339)."""


class DatasetCurationStatus(CommonStatus):
    progress: CurationProgress | None = None
    """Live curation progress read from the pod."""
    counts: CurationCounts | None = None
    """Where every input record ended up."""
    review: ReviewFigures | None = None
    """Manual review of the held records, once decisions were applied (sftctl review, Label Studio)."""
    label_studio: LabelStudioStatus | None = None
    """The Label Studio project the held records went to, and the newest review-apply Job."""
    selection: SelectionFigures | None = None
    """The best-N selection and its random control, when spec.curation.selection asks for one."""
    notes: list[str] = Field(default_factory=list, max_length=5)
    """What a reader must know about the run: judges skipped (too slow on CPU, no tokenizer), fallbacks taken."""
    drops_by_reason: dict[str, int] = Field(default_factory=dict)
    """Rejected records per reason."""
    task_entropy_before: float | None = None
    """Normalised task-mix entropy of the validated input."""
    task_entropy_after: float | None = None
    """Normalised task-mix entropy of the curated output."""
    rejected_fraction: float | None = None
    """rejected / input."""


# --------------------------------------------------------------------------
# SFTJob
# --------------------------------------------------------------------------


class SFTJobSpec(WireModel):
    model_config = model_rules(
        Rule(
            "!has(self.dataset.curationRef) || !has(self.dataset.format) || self.dataset.format == 'auto'",
            "dataset.format does not apply to a curationRef (curated output is always messages)",
            ".dataset.format",
            check=lambda s: s.dataset.curation_ref is None or s.dataset.format == "auto",
        ),
        Rule(
            "self.resources.nodes == 1 || self.resources.gpusPerNode > 0",
            "resources.nodes > 1 needs resources.gpusPerNode > 0",
            ".resources.nodes",
            check=lambda s: s.resources.nodes == 1 or s.resources.gpus_per_node > 0,
        ),
    )

    model: SFTJobModelSource = Field(json_schema_extra=immutable("model"))
    """The model to fine-tune: a base model, or another SFTJob's result (sftJobRef)."""
    dataset: DatasetSource = Field(json_schema_extra=immutable("dataset"))
    """Training data: a file, or the output of a DatasetCuration."""
    output: OutputLocation
    """Where checkpoints, the adapter or model, and reports go."""
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    """How the model is fine-tuned."""
    image: str | None = Field(default=None, max_length=512)
    """Trainer image override; unset: the operator's default."""
    resources: Resources = Field(default_factory=Resources)
    """GPUs, nodes, placement."""
    lifecycle: Lifecycle = Field(default_factory=Lifecycle)
    """Suspend, deadlines, retries and cleanup."""


class TrainingProgress(WireModel):
    percent: float | None = None
    """Share of optimiser steps done, 0-100."""
    step: int | None = None
    """Optimiser steps done."""
    total_steps: int | None = None
    """Optimiser steps planned."""
    epoch: float | None = None
    """Fractional epoch."""
    loss: float | None = None
    """Latest training loss."""
    eval_loss: float | None = None
    """Latest evaluation loss."""
    learning_rate: float | None = None
    """Current learning rate."""
    tokens_per_second: float | None = None
    """Non-pad tokens processed per second."""
    eta_seconds: float | None = None
    """Estimated seconds to completion."""
    updated_at: str | None = None
    """When the pod reported these figures (RFC 3339)."""


# Entries of status.lineage: the API server needs a bound to price the path rules inside them.
MAX_LINEAGE = 16


class LineageEntry(WireModel):
    sft_job: str | None = None
    """An SFTJob of the chain (unset on the last entry: the base model)."""
    use: Literal["merged", "adapter"] | None = None
    """How the stage above it took this stage's result."""
    method: Literal["lora", "full"] | None = None
    """How this stage trained."""
    final_eval_loss: float | None = None
    """This stage's final evaluation loss (its status.metrics.finalEvalLoss)."""
    output: PvcLocation | None = None
    """Where this stage's outputs are."""
    model: ModelSource | None = None
    """The base model the chain starts from (last entry only)."""


class SFTJobStatus(CommonStatus):
    progress: TrainingProgress | None = None
    """Live training progress read from the pod."""
    metrics: dict[str, float] = Field(default_factory=dict)
    """Final figures: losses and probe results."""
    curation_name: str | None = None
    """DatasetCuration the job trained on, if any."""
    evaluation: EvaluationSummary | None = None
    """Base vs tuned after training: figures with deltas and intervals, gates, promotion (condition EvaluationPassed)."""
    exports: list[str] = Field(default_factory=list)
    """What the run exported: adapter, merged (LoRA) or model (full); a later stage's sftJobRef checks it."""
    lineage: list[LineageEntry] = Field(default_factory=list, max_length=MAX_LINEAGE)
    """The chain this job starts from: its parent first, each stage with its final eval loss, down to the base model."""
    parent_uid: str | None = None
    """uid of the SFTJob spec.model.sftJobRef names, once seen: one deleted while this job waits is told apart
    from one not created yet."""


# --------------------------------------------------------------------------
# Rules on the whole object: its name, which flows into its children's names
# --------------------------------------------------------------------------

# Every child is labelled with the object's name, and a label value holds 63
# characters at most: a longer name (valid for the object itself) would make
# every Job and pod it creates fail.
MAX_NAME = 63
# A multi-node SFTJob's Job `<name>-train` also names its headless Service (a
# DNS-1035 label: no dot, a letter first) and its pods' hostnames
# `<name>-train-<index>` (63 characters at most, index up to 63).
DNS1035_LABEL = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
MAX_MULTI_NODE_NAME = MAX_NAME - len("-train") - len("-63")


def _name(body: dict[str, Any]) -> str:
    return str((body.get("metadata") or {}).get("name", ""))


def _nodes(body: dict[str, Any]) -> int:
    return int(((body.get("spec") or {}).get("resources") or {}).get("nodes", 1))


_NAME_LENGTH_RULE = Rule(
    f"size(self.metadata.name) <= {MAX_NAME}",
    f"metadata.name must be at most {MAX_NAME} characters: it labels every Job and pod the run creates",
    check=lambda body: len(_name(body)) <= MAX_NAME,
)
OBJECT_RULES: dict[str, tuple[Rule, ...]] = {
    "SFTJob": (
        _NAME_LENGTH_RULE,
        Rule(
            f"self.spec.resources.nodes == 1 || (size(self.metadata.name) <= {MAX_MULTI_NODE_NAME}"
            f" && self.metadata.name.matches(r'{DNS1035_LABEL}'))",
            f"metadata.name with spec.resources.nodes > 1 must be a DNS-1035 label of at most {MAX_MULTI_NODE_NAME} "
            "characters (lower-case letters, digits and '-', a letter first; no '.'): it names the run's headless "
            "Service and its pods' hostnames <name>-train-<index>",
            check=lambda body: (
                _nodes(body) == 1
                or (len(_name(body)) <= MAX_MULTI_NODE_NAME and re.fullmatch(DNS1035_LABEL, _name(body)) is not None)
            ),
        ),
    ),
    "DatasetCuration": (_NAME_LENGTH_RULE,),
}


def object_problems(kind: str, body: dict[str, Any]) -> list[str]:
    """What the CRD's rules on the whole object (name with spec) refuse, checked in Python; [] when none."""
    return [rule.message for rule in OBJECT_RULES[kind] if rule.check is not None and not rule.check(body)]


# --------------------------------------------------------------------------
# Resources as a whole (used for kinds, printer columns and the CRD generator)
# --------------------------------------------------------------------------


class KindInfo(WireModel):
    kind: str
    plural: str
    singular: str
    short_names: list[str]
    spec: type[WireModel]
    status: type[WireModel]
    printer_columns: list[dict[str, Any]]


# Not `sft`: kubectl expands a category before a short name, so a category
# `sft` would make `kubectl get sft my-job` fail ("you must specify only one
# resource"). `kubectl get trustdoc` lists both kinds.
CATEGORIES = ["trustdoc"]

KINDS: dict[str, KindInfo] = {
    "SFTJob": KindInfo(
        kind="SFTJob",
        plural="sftjobs",
        singular="sftjob",
        short_names=["sft"],
        spec=SFTJobSpec,
        status=SFTJobStatus,
        printer_columns=[
            {"name": "Status", "type": "string", "jsonPath": ".status.phase"},
            {"name": "Method", "type": "string", "jsonPath": ".spec.training.method"},
            {"name": "Parent", "type": "string", "jsonPath": ".spec.model.sftJobRef.name", "priority": 1},
            {"name": "Progress", "type": "number", "format": "float", "jsonPath": ".status.progress.percent"},
            {"name": "Loss", "type": "number", "format": "float", "jsonPath": ".status.progress.loss"},
            {
                "name": "Eval-Loss",
                "type": "number",
                "format": "float",
                "jsonPath": ".status.progress.evalLoss",
                "priority": 1,
            },
            {
                "name": "Tokens/s",
                "type": "number",
                "format": "float",
                "jsonPath": ".status.progress.tokensPerSecond",
                "priority": 1,
            },
            {
                "name": "IFEval",
                "type": "number",
                "format": "float",
                "description": "IFEval prompt-level strict accuracy of the tuned model",
                "jsonPath": ".status.evaluation.figures.ifevalPromptLevelStrict.tuned",
            },
            {"name": "Promoted", "type": "boolean", "jsonPath": ".status.evaluation.promoted", "priority": 1},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
    ),
    "DatasetCuration": KindInfo(
        kind="DatasetCuration",
        plural="datasetcurations",
        singular="datasetcuration",
        short_names=["dcur"],
        spec=DatasetCurationSpec,
        status=DatasetCurationStatus,
        printer_columns=[
            {"name": "Status", "type": "string", "jsonPath": ".status.phase"},
            {"name": "Kept", "type": "integer", "jsonPath": ".status.counts.curated"},
            {"name": "Total", "type": "integer", "jsonPath": ".status.counts.input"},
            {"name": "Review", "type": "integer", "jsonPath": ".status.counts.review", "priority": 1},
            {
                "name": "Entropy",
                "type": "number",
                "format": "float",
                "jsonPath": ".status.taskEntropyAfter",
                "priority": 1,
            },
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
    ),
}

Spec = SFTJobSpec | DatasetCurationSpec


def spec_of(kind: str, spec: Any) -> Spec:
    """A kind's wire spec as its model (ValidationError, a ValueError, names each field it refuses)."""
    parsed = KINDS[kind].spec.model_validate(spec)
    assert isinstance(parsed, SFTJobSpec | DatasetCurationSpec)
    return parsed


def spec_problems(err: ValueError) -> str:
    """What a spec's validation refused, each problem with its field (`spec.a.b: message`), for status and CLI."""
    if not isinstance(err, ValidationError):
        return str(err)
    return "; ".join(f"spec.{'.'.join(str(p) for p in problem['loc'])}: {problem['msg']}" for problem in err.errors())
