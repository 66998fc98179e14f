"""Property-based tests of the spec models and the manifest loader.

Whatever a user writes, the models either accept it or raise a
ValidationError whose every problem names a field; never another exception.
Accepted specs survive a round trip through their wire form unchanged, and
the builders turn every accepted spec into Kubernetes objects.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as s
from pydantic import ValidationError

from sft_operator.api import KINDS, DatasetCurationSpec, SFTJobSpec, object_problems
from sft_operator.local_executor import LocalExecutor, ManifestError
from sft_operator.settings import OperatorSettings
from support import manifests

json_values = s.recursive(
    s.none() | s.booleans() | s.integers(-(2**40), 2**40) | s.floats(allow_nan=True) | s.text(max_size=20),
    lambda children: s.lists(children, max_size=4) | s.dictionaries(s.text(max_size=12), children, max_size=4),
    max_leaves=20,
)

VALID = {
    "SFTJob": manifests.sftjob(
        training={"method": "lora", "lora": {"r": 8}, "epochs": 2},
        resources={"gpusPerNode": 1, "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}]},
    )["spec"],
    "DatasetCuration": manifests.curation(curation={"dedup": {"threshold": 0.7}})["spec"],
}


def paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            found += paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += paths(value, (*prefix, index))
    return found


@s.composite
def mutated_specs(draw: s.DrawFn, kind: str) -> dict[str, Any]:
    """A valid spec with one field replaced by arbitrary JSON (or removed)."""
    spec = copy.deepcopy(VALID[kind])
    path = draw(s.sampled_from(paths(spec)))
    parent = spec
    for part in path[:-1]:
        parent = parent[part]
    if draw(s.booleans()) and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = draw(json_values)
    return spec


def check(model: type, data: Any) -> Any:
    """Accepted: returned, and its wire form parses back equal. Refused: every problem names where it is."""
    try:
        parsed = model.model_validate(data)
    except ValidationError as err:
        problems = err.errors()
        assert problems
        if not isinstance(data, dict):  # not an object at all: one problem, at the top, saying so
            assert [(p["loc"], p["type"]) for p in problems] == [((), "model_type")], problems
            return None
        for problem in problems:
            # A field's own problem carries its path; a rule across fields names them in its message.
            assert problem["loc"] or ": " in problem["msg"] or "exactly one of" in problem["msg"], problem
        return None
    again = model.model_validate(parsed.to_wire())
    assert again == parsed
    return parsed


@pytest.mark.parametrize("kind", sorted(VALID))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=s.data())
def test_arbitrary_json_validates_or_fails_cleanly(kind: str, data: s.DataObject) -> None:
    check(KINDS[kind].spec, data.draw(json_values))


@pytest.mark.parametrize("kind", sorted(VALID))
@settings(max_examples=400, deadline=None)
@given(data=s.data())
def test_mutated_specs_validate_or_fail_cleanly_and_build(kind: str, data: s.DataObject) -> None:
    spec = data.draw(mutated_specs(kind))
    parsed = check(KINDS[kind].spec, spec)
    if parsed is None:
        return
    body = {"kind": kind, "metadata": {"name": "fuzz", "namespace": "ns", "uid": "u"}, "spec": parsed.to_wire()}
    if isinstance(parsed, DatasetCurationSpec):
        children = manifests.children(body, OperatorSettings())
    else:
        assert isinstance(parsed, SFTJobSpec)
        if parsed.dataset.curation_ref is not None:
            curation = {"metadata": {"name": "cur"}, "spec": VALID["DatasetCuration"]}
            children = manifests.children(body, OperatorSettings(), curation=curation)
        else:
            children = manifests.children(body, OperatorSettings())
    assert children.job["kind"] == "Job" and yaml.safe_load(children.config_map["data"]["run.yaml"])


@s.composite
def mutated_manifests(draw: s.DrawFn) -> dict[str, Any]:
    kind = draw(s.sampled_from(sorted(VALID)))
    name = draw(s.sampled_from(["fuzz", "Fuzz", "fuzz.v2", "x" * 64, ""]))
    return {
        "apiVersion": "sft.trustdoc.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": name},
        "spec": draw(mutated_specs(kind)),
    }


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=s.text(max_size=300) | json_values.map(yaml.safe_dump) | mutated_manifests().map(yaml.safe_dump))
def test_the_manifest_loader_accepts_exactly_what_the_models_accept(tmp_path: Path, text: str) -> None:
    """Loaded: every resource is one the models (and the API server's name rules) accept. Refused: a
    ManifestError naming the file or the resource, never another exception."""
    path = tmp_path / "fuzz.yaml"
    path.write_text(text)
    try:
        resources = LocalExecutor.load(path)
    except ManifestError as err:
        assert str(path) in str(err) or any(f"{kind}/" in str(err) for kind in KINDS), err
        return
    for resource in resources:
        assert check(KINDS[resource.kind].spec, resource.body["spec"]) is not None
        assert object_problems(resource.kind, resource.body) == []


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(manifest=mutated_manifests())
def test_a_manifest_is_loaded_exactly_when_its_spec_and_name_are_valid(
    tmp_path: Path, manifest: dict[str, Any]
) -> None:
    path = tmp_path / "one.yaml"
    path.write_text(yaml.safe_dump(manifest))
    name = manifest["metadata"]["name"]
    valid = bool(name) and check(KINDS[manifest["kind"]].spec, manifest["spec"]) is not None
    valid = valid and object_problems(manifest["kind"], manifest) == []
    try:
        (loaded,) = LocalExecutor.load(path)
    except ManifestError:
        assert not valid, f"a valid manifest was refused: {manifest}"
        return
    assert valid, f"an invalid manifest was loaded: {manifest}"
    assert (loaded.kind, loaded.name) == (manifest["kind"], name)
