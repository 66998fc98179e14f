"""Stages: an SFTJob that starts from another SFTJob's result (`spec.model.sftJobRef`).

Pure functions over objects as the API returns them, shared by the operator
and `sftctl run` through `inputs.training_inputs`:

* `find_cycle` follows references by name and names the loop;
* `parent_readiness` says whether the referenced SFTJob can be started from:
  not yet (it does not exist, runs, or its evaluation is pending), never
  (it failed, exported nothing usable, failed a gate), or now;
* `lineage_of` is the child's `status.lineage`: the parent, then the parent's
  own lineage, down to the base model (a root SFTJob's lineage is its model);
* `start_of` turns a lineage into what the pod loads: a model folder and the
  adapters merged into it, in order (every `use: adapter` link since the last
  merged or fully fine-tuned export), and the claims that hold them.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from . import conditions as c
from .api import (
    MAX_LINEAGE,
    DatasetCurationSpec,
    LineageEntry,
    ModelSource,
    PvcLocation,
    SFTJobModelSource,
    SFTJobSpec,
)
from .readiness import NOT_YET, READY_TO_USE, UNUSABLE, Readiness

Obj = dict[str, Any]

REF_FIELD = "spec.model.sftJobRef"


def parent_of(body: Obj) -> str | None:
    """The name an SFTJob's spec.model.sftJobRef points at, or None (a base model, or no such field)."""
    ref = ((body.get("spec") or {}).get("model") or {}).get("sftJobRef") or {}
    name = ref.get("name")
    return str(name) if name else None


def find_cycle(name: str, first: str, read_parent: Callable[[str], str | None]) -> list[str] | None:
    """The loop `name -> first -> ... -> name` when following references comes back, else None.

    `read_parent(n)` is the name SFTJob `n` references (None when `n` does not
    exist or starts from a base model): the walk stops there.
    """
    path = [name]
    current: str | None = first
    while current is not None:
        if current in path:
            return [*path[path.index(current) :], current]
        path.append(current)
        current = read_parent(current)
    return None


def cycle_message(cycle: list[str]) -> str:
    return f"{REF_FIELD}: the stages reference each other in a cycle: SFTJob {' -> '.join(cycle)}"


def _conditions(obj: Obj) -> list[dict[str, Any]]:
    return list((obj.get("status") or {}).get("conditions") or [])


def parent_readiness(parent: Obj | None, model: SFTJobModelSource, seen_uid: str | None = None) -> Readiness:
    """Can this job start from the SFTJob its spec.model.sftJobRef names? (`seen_uid`: the one it waited for.)"""
    assert model.sft_job_ref is not None
    name, use = model.sft_job_ref.name, model.sft_job_ref.use
    if parent is None:
        if seen_uid:
            return Readiness(
                NOT_YET,
                c.PARENT_DELETED,
                f"SFTJob {name} was deleted while this job waited for it; waiting for an SFTJob {name} to be "
                "created and succeed",
            )
        return Readiness(NOT_YET, c.WAITING_FOR_MODEL, f"Waiting for SFTJob {name}: it does not exist yet")
    conds = _conditions(parent)
    if c.is_true(conds, c.FAILED):
        failure = c.get_condition(conds, c.FAILED) or {}
        detail = failure.get("message") or failure.get("reason")
        return Readiness(UNUSABLE, c.PARENT_FAILED, f"{REF_FIELD}: SFTJob {name} failed: {detail}")
    if not c.is_true(conds, c.SUCCEEDED):
        phase = (parent.get("status") or {}).get("phase") or c.PHASE_PENDING  # named for the reader only
        return Readiness(NOT_YET, c.WAITING_FOR_MODEL, f"Waiting for SFTJob {name} to succeed (it is {phase})")
    problem = _export_problem(parent, name, use) or _lineage_problem(parent, name)
    if problem:
        return Readiness(UNUSABLE, c.PARENT_UNUSABLE, problem)
    if model.gates is not None and model.gates.require_evaluation_passed:
        return _evaluation_gate(conds, name)
    return Readiness(READY_TO_USE, message=f"SFTJob {name} is Succeeded")


def _export_problem(parent: Obj, name: str, use: str) -> str | None:
    method = ((parent.get("spec") or {}).get("training") or {}).get("method", "lora")
    exports = list((parent.get("status") or {}).get("exports") or [])
    listed = ", ".join(exports) or "nothing"
    if use == "adapter" and method == "full":
        return (
            f"{REF_FIELD}.use: adapter: SFTJob {name} fine-tuned every weight and has no adapter; "
            "use: merged starts from its model"
        )
    needed = "adapter" if use == "adapter" else ("merged" if method == "lora" else "model")
    if needed in exports:
        return None
    if needed == "merged":
        return (
            f"{REF_FIELD}.use: merged: SFTJob {name} exported no merged model (it exported {listed}); "
            "set spec.training.exportMerged: true on it, or use: adapter"
        )
    return f"{REF_FIELD}.use: {use}: SFTJob {name} reported no {needed} export (it exported {listed})"


def _lineage_problem(parent: Obj, name: str) -> str | None:
    below = (parent.get("status") or {}).get("lineage") or []
    if parent_of(parent) is not None and not below:
        return f"{REF_FIELD}: SFTJob {name} starts from another stage but its status has no lineage to follow"
    if len(below) >= MAX_LINEAGE:
        return f"{REF_FIELD}: SFTJob {name} ends a chain of {len(below)} stages; at most {MAX_LINEAGE - 1} can follow a base model"
    return None


def _evaluation_gate(conds: list[dict[str, Any]], name: str) -> Readiness:
    gate = "spec.model.gates.requireEvaluationPassed"
    evaluation = c.get_condition(conds, c.EVALUATION_PASSED)
    if evaluation is None:
        return Readiness(
            UNUSABLE,
            c.MODEL_GATE_FAILED,
            f"{gate}: SFTJob {name} ran no evaluation (it has no {c.EVALUATION_PASSED} condition); "
            "give it spec.training.evaluation, or drop the gate",
        )
    if evaluation.get("status") == "True":
        return Readiness(READY_TO_USE, message=f"SFTJob {name} is Succeeded and passed its evaluation")
    detail = f"{evaluation.get('reason')}: {evaluation.get('message') or 'no detail'}"
    if evaluation.get("status") == "Unknown" or evaluation.get("reason") == c.EVALUATION_PENDING:
        return Readiness(NOT_YET, c.WAITING_FOR_MODEL, f"Waiting for the evaluation of SFTJob {name} ({detail})")
    return Readiness(UNUSABLE, c.MODEL_GATE_FAILED, f"{gate}: SFTJob {name} did not pass its evaluation ({detail})")


# --------------------------------------------------------------------------
# Lineage and what the pod loads
# --------------------------------------------------------------------------


def root_lineage(spec: SFTJobSpec) -> list[Obj]:
    """The lineage of an SFTJob that starts from a base model: that model."""
    model = ModelSource(pvc=spec.model.pvc, hugging_face=spec.model.hugging_face)
    return [LineageEntry(model=model).to_wire()]


def lineage_of(parent: Obj, use: Literal["merged", "adapter"]) -> list[Obj]:
    """A child's status.lineage: the parent (with its final eval loss), then the parent's own lineage."""
    spec = SFTJobSpec.model_validate(parent["spec"])
    status = parent.get("status") or {}
    entry = LineageEntry(
        sft_job=parent["metadata"]["name"],
        use=use,
        method=spec.training.method,
        final_eval_loss=(status.get("metrics") or {}).get("finalEvalLoss"),
        output=spec.output.pvc,
    ).to_wire()
    below = list(status.get("lineage") or []) if spec.model.sft_job_ref else root_lineage(spec)
    return [entry, *below]


@dataclass(frozen=True)
class Start:
    """What a chained run loads: `model` with `adapters` merged in (in order); `base` is the chain's first model."""

    model: ModelSource | PvcLocation
    adapters: list[PvcLocation]
    base: ModelSource
    parent_output: PvcLocation
    claims: list[str] = field(default_factory=list)
    """Claims the start reads (the parent's output claim always: its lineage.json and tokenizer are there)."""


def _inside(location: PvcLocation, folder: str) -> PvcLocation:
    path = folder if location.path in ("", ".") else posixpath.join(location.path, folder)
    return PvcLocation(claim_name=location.claim_name, path=path)


def start_of(lineage: list[Obj]) -> Start:
    """Walk a lineage from the parent down: adapters are collected until a merged export or the base model."""
    entries = [LineageEntry.model_validate(e) for e in lineage]
    base = entries[-1].model
    if base is None or entries[0].output is None:
        raise ValueError(f"{REF_FIELD}: the lineage does not end in a base model: {lineage}")
    adapters: list[PvcLocation] = []
    claims = {entries[0].output.claim_name}
    model: ModelSource | PvcLocation = base
    for entry in entries:
        if entry.model is not None:
            if entry.model.pvc is not None:
                claims.add(entry.model.pvc.claim_name)
            break
        assert entry.output is not None
        claims.add(entry.output.claim_name)
        if entry.use == "merged":
            model = _inside(entry.output, "merged" if entry.method == "lora" else "model")
            break
        adapters.insert(0, _inside(entry.output, "adapter"))
    return Start(model, adapters, base, entries[0].output, sorted(claims))


def describe(source: ModelSource) -> str:
    """`pvc://CLAIM/PATH` or `hf://REPO@REVISION[/FILE]`: how messages name a model."""
    if source.pvc is not None:
        path = source.pvc.path
        return f"pvc://{source.pvc.claim_name}" + ("" if path in ("", ".") else f"/{path}")
    assert source.hugging_face is not None
    repo = source.hugging_face
    return f"hf://{repo.repo}@{repo.revision}" + (f"/{repo.file}" if repo.file else "")


def base_model_mismatch(lineage: list[Obj], curation_name: str, curation: DatasetCurationSpec) -> str | None:
    """Why a chain cannot train on a curation measured with another model's tokenizer (None: it can)."""
    if curation.tokenizer is None:
        return None
    base = start_of(lineage).base
    tokenizer = ModelSource(pvc=curation.tokenizer.pvc, hugging_face=curation.tokenizer.hugging_face)
    if describe(tokenizer) == describe(base):
        return None
    stages = " -> ".join(str(e["sftJob"]) for e in lineage if e.get("sftJob"))
    return (
        f"{REF_FIELD}: the chain (SFTJob {stages}) starts from base model {describe(base)}, but "
        f"spec.dataset.curationRef {curation_name} measured its tokens with tokenizer {describe(tokenizer)}; "
        "curate with the chain's tokenizer, or start from that model"
    )
