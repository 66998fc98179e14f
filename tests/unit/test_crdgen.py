"""CRD generation: fresh on disk, structural, described, and consistent with the models."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from sft_operator import crdgen
from sft_operator.api import KINDS, SFTJobSpec
from support.kube import REPO_ROOT


def walk(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    """Every (path, node) of a schema's properties, recursively."""
    found = []
    for name, child in schema.get("properties", {}).items():
        child_path = f"{path}.{name}" if path else name
        found.append((child_path, child))
        found += walk(child, child_path)
    if "items" in schema:
        found += walk(schema["items"], f"{path}[*]")
    return found


def generated() -> dict[str, dict[str, Any]]:
    return {name: yaml.safe_load(text) for name, text in crdgen.render_all().items()}


def test_crds_on_disk_are_fresh() -> None:
    folders = [str(REPO_ROOT / "crds"), str(REPO_ROOT / crdgen.CHART_CRDS)]
    assert crdgen.main(["--check", *folders]) == 0, "crds/ or the chart's copy is stale: run `make crds`"


@pytest.mark.parametrize("name", sorted(generated()))
def test_every_spec_and_status_field_has_a_description(name: str) -> None:
    root = generated()[name]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for section in ("spec", "status"):
        for path, node in walk(root["properties"][section], section):
            assert node.get("description"), f"{name}: {path} has no description"


@pytest.mark.parametrize("name", sorted(generated()))
def test_schema_is_structural(name: str) -> None:
    root = generated()[name]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in walk(root):
        assert "type" in node, f"{path} has no type"
        for forbidden in ("$ref", "anyOf", "allOf", "oneOf", "title", "const"):
            assert forbidden not in node, f"{path} uses {forbidden}"
        if node.get("additionalProperties") is False:
            pytest.fail(f"{path}: additionalProperties: false is not structural")


def test_status_subresource_printer_columns_and_names() -> None:
    crds = {doc["spec"]["names"]["kind"]: doc for doc in generated().values()}
    assert set(crds) == {"SFTJob", "DatasetCuration"}
    sft = crds["SFTJob"]["spec"]
    assert sft["names"]["shortNames"] == ["sft"] and sft["names"]["categories"] == ["trustdoc"]
    assert crds["DatasetCuration"]["spec"]["names"]["shortNames"] == ["dcur"]
    version = sft["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = {c["name"] for c in version["additionalPrinterColumns"]}
    assert {"Status", "Progress", "Loss", "Age"} <= columns


def test_exclusive_bounds_use_openapi_v3_form() -> None:
    crd = generated()[f"sft.trustdoc.io_{KINDS['SFTJob'].plural}.yaml"]
    lr = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["training"][
        "properties"
    ]["learningRate"]
    assert lr["minimum"] == 0 and lr["exclusiveMinimum"] is True


def test_schema_defaults_match_model_defaults() -> None:
    """What the API server fills in is what the Python models would use."""
    crd = generated()["sft.trustdoc.io_sftjobs.yaml"]
    training = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["training"]
    model_defaults = SFTJobSpec.model_fields["training"].default_factory().to_wire()  # type: ignore[misc]
    for key, node in training["properties"].items():
        if "default" in node and not isinstance(node["default"], dict):
            assert model_defaults[key] == node["default"], key


def test_a_field_without_description_is_refused() -> None:
    from sft_trainer.config import WireModel

    class Undocumented(WireModel):
        knob: int = 1

    with pytest.raises(crdgen.SchemaError, match="knob has no description"):
        crdgen.model_schema(Undocumented, "spec")


def test_every_cel_rule_but_transitions_has_a_python_check() -> None:
    """A rule enforced only by the API server would let `sftctl run` accept what the cluster refuses."""
    from pydantic import BaseModel

    from sft_trainer.config import RuleSet

    def models(root: type[BaseModel], seen: set[type]) -> None:
        if root in seen:
            return
        seen.add(root)
        for field in root.model_fields.values():
            for arg in [field.annotation, *getattr(field.annotation, "__args__", ())]:
                if isinstance(arg, type) and issubclass(arg, BaseModel):
                    models(arg, seen)

    seen: set[type] = set()
    for info in KINDS.values():
        models(info.spec, seen)
    checked = 0
    for model in seen:
        rule_sets = [model.model_config.get("json_schema_extra")] + [
            f.json_schema_extra for f in model.model_fields.values()
        ]
        for rule_set in rule_sets:
            if isinstance(rule_set, RuleSet):
                for rule in rule_set.rules:
                    assert rule.check is not None or "oldSelf" in rule.cel, f"{model.__name__}: {rule.cel}"
                    checked += 1
    assert checked >= 10
