"""Valid SFTJob and DatasetCuration manifests, the one place tests write them out.

Each builder returns a complete manifest that the API server and the models
accept; keyword arguments replace whole top-level spec fields (`training=`,
`resources=`, `dataset=`...), so a test spells out only what it is about.
Claims and paths: models/smollm2, datasets/train.jsonl and datasets/raw/alpaca.json
as inputs, outputs/sft/<name> and outputs/curation/<name> as outputs.
"""

from __future__ import annotations

from typing import Any

API_VERSION = "sft.trustdoc.io/v1alpha1"


def _manifest(kind: str, name: str, namespace: str | None, uid: str | None, spec: dict[str, Any]) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if namespace is not None:
        metadata["namespace"] = namespace
    if uid is not None:
        metadata["uid"] = uid  # what the API server adds: the builders' ownerReferences need it
    return {"apiVersion": API_VERSION, "kind": kind, "metadata": metadata, "spec": spec}


def sftjob(name: str = "sft", namespace: str | None = None, uid: str | None = None, **spec: Any) -> dict[str, Any]:
    """An SFTJob training the SmolLM2 folder on a JSONL file (LoRA, every other field defaulted)."""
    body: dict[str, Any] = {
        "model": {"pvc": {"claimName": "models", "path": "smollm2"}},
        "dataset": {"pvc": {"claimName": "datasets", "path": "train.jsonl"}},
        "output": {"pvc": {"claimName": "outputs", "path": f"sft/{name}"}},
    }
    return _manifest("SFTJob", name, namespace, uid, {**body, **spec})


def curation(name: str = "cur", namespace: str | None = None, uid: str | None = None, **spec: Any) -> dict[str, Any]:
    """A DatasetCuration of a raw Alpaca file with the default steps."""
    body: dict[str, Any] = {
        "source": {"pvc": {"claimName": "datasets", "path": "raw/alpaca.json"}},
        "output": {"pvc": {"claimName": "outputs", "path": f"curation/{name}"}},
    }
    return _manifest("DatasetCuration", name, namespace, uid, {**body, **spec})


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    """The condition of `type_` in an object's status ({} when it has none)."""
    return next((c for c in (status or {}).get("conditions", []) if c["type"] == type_), {})


def children(body: dict[str, Any], settings: Any, curation: dict[str, Any] | None = None, **kwargs: Any) -> Any:
    """The operator's children of a manifest, built as a reconcile does (identity and spec parsed once).

    `curation` is the referenced DatasetCuration's manifest (an SFTJob on a curationRef).
    """
    from sft_operator.api import DatasetCurationSpec, spec_of
    from sft_operator.children import curation_children, training_children
    from sft_operator.inputs import Curation
    from sft_operator.naming import ResourceRef

    ref, spec = ResourceRef.of(body), spec_of(body["kind"], body["spec"])
    if body["kind"] == "DatasetCuration":
        return curation_children(ref, spec, settings, **kwargs)
    if curation is not None:
        kwargs["curation"] = Curation(
            curation["metadata"]["name"], DatasetCurationSpec.model_validate(curation["spec"])
        )
    return training_children(ref, spec, settings, **kwargs)
