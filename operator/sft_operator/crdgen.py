"""Generate the CustomResourceDefinitions in `crds/` from the pydantic models.

`python -m sft_operator.crdgen [--check] [DIR]` (what `make crds` runs) writes
one YAML file per kind. `--check` exits non-zero when a file on disk differs
from what the models produce, which the unit tests and CI use.

Pydantic emits JSON Schema 2020-12; Kubernetes wants a *structural* OpenAPI
v3.0 schema. The conversion below inlines `$ref`s, turns `Optional[X]` into
plain `X` (absent means unset), rewrites numeric exclusive bounds, drops what
structural schemas forbid, fills object defaults so that CEL rules and
`kubectl get -o yaml` see every defaulted field, and insists that every field
has a description.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from .api import API_VERSION, CATEGORIES, GROUP, KINDS, OBJECT_RULES, VERSION, KindInfo

# Keys of JSON Schema that have no place in a structural Kubernetes schema.
_DROPPED_KEYS = {"title", "$defs", "examples"}
_RULES = "x-kubernetes-validations"


class SchemaError(ValueError):
    """The models cannot be expressed as a valid structural schema."""


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    """Replace every `$ref` by a copy of its definition, recursively."""
    if isinstance(node, list):
        return [_inline(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = _inline(defs[node["$ref"].rsplit("/", 1)[-1]], defs)
        outer = {k: v for k, v in node.items() if k != "$ref"}
        # Rules on the model and rules on the field that uses it both apply.
        rules = target.get(_RULES, []) + outer.get(_RULES, [])
        merged = {**target, **outer}
        if rules:
            merged[_RULES] = rules
        return _inline(merged, defs)
    return {key: _inline(value, defs) for key, value in node.items()}


def _strip_null(node: dict[str, Any]) -> dict[str, Any]:
    """`anyOf: [X, null]` -> X, keeping the outer description and default."""
    options = node.get("anyOf")
    if not options:
        return node
    non_null = [o for o in options if o.get("type") != "null"]
    if len(non_null) != 1:
        raise SchemaError(f"unions other than Optional[X] are not supported: {options}")
    outer = {k: v for k, v in node.items() if k != "anyOf"}
    return {**non_null[0], **outer}


def _to_structural(node: dict[str, Any], path: str) -> dict[str, Any]:
    """Convert one (inlined) JSON Schema node and its children."""
    node = _strip_null(node)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED_KEYS:
            continue
        if key == "additionalProperties" and value is False:
            continue  # structural schemas prune unknown fields instead
        if key == "default" and value is None:
            continue
        if key == "const":
            out["enum"] = [value]
            continue
        if key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
            continue
        out[key] = value
    if "type" not in out:
        if "enum" in out:
            out["type"] = "string"
        else:
            raise SchemaError(f"{path}: no type in {node}")
    if out["type"] == "object" and "properties" in out:
        required = set(out.get("required", []))
        out["properties"] = {
            name: _field(child, f"{path}.{name}", name in required) for name, child in out["properties"].items()
        }
        if out.get("required") == []:
            del out["required"]
    if out["type"] == "object" and isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = _to_structural(out["additionalProperties"], f"{path}[*]")
    if out["type"] == "array":
        out["items"] = _to_structural(out["items"], f"{path}[*]")
    return out


def _field(node: dict[str, Any], path: str, required: bool) -> dict[str, Any]:
    # `X | None = None` in a model means "absent unless the user sets it"
    # (e.g. `lora` with method full); such a field never gets a default.
    unset_by_default = node.get("default", ...) is None
    converted = _to_structural(node, path)
    if not converted.get("description"):
        raise SchemaError(f"{path} has no description: add a docstring under the field")
    # An optional object whose own fields all have defaults gets `{}` as its
    # default, so the API server fills the nested defaults in (and CEL rules
    # can rely on them). A required object must stay absent when omitted.
    if (
        not required
        and not unset_by_default
        and converted["type"] == "object"
        and "properties" in converted
        and "default" not in converted
        and not converted.get("required")
        and _has_nested_default(converted)
    ):
        converted["default"] = {}
    return converted


def _has_nested_default(node: dict[str, Any]) -> bool:
    return any("default" in child for child in node.get("properties", {}).values())


def model_schema(model: type, path: str) -> dict[str, Any]:
    """The structural schema of one pydantic model."""
    raw = model.model_json_schema(by_alias=True, mode="validation")  # type: ignore[attr-defined]
    inlined = _inline(raw, raw.get("$defs", {}))
    inlined.pop("description", None)  # the class docstring describes the model, not the field
    return _to_structural(inlined, path)


def kind_schema(info: KindInfo) -> dict[str, Any]:
    spec = model_schema(info.spec, "spec")
    spec["description"] = f"Desired state of the {info.kind}."
    status = model_schema(info.status, "status")
    status["description"] = f"Observed state of the {info.kind}, written by the operator."
    return {
        "type": "object",
        "description": f"{info.kind} ({API_VERSION}).",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": "API version: " + API_VERSION},
            "kind": {"type": "string", "description": "Kind: " + info.kind},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
        # Rules that read metadata.name live at the root, the only place CEL sees it.
        _RULES: [rule.schema() for rule in OBJECT_RULES[info.kind]],
    }


def crd(info: KindInfo) -> dict[str, Any]:
    """The full CustomResourceDefinition of one kind."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{info.plural}.{GROUP}",
            "labels": {"app.kubernetes.io/part-of": "trustdoc-sft"},
        },
        "spec": {
            "group": GROUP,
            "names": {
                "kind": info.kind,
                "listKind": f"{info.kind}List",
                "plural": info.plural,
                "singular": info.singular,
                "shortNames": info.short_names,
                "categories": CATEGORIES,
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": info.printer_columns,
                    "schema": {"openAPIV3Schema": kind_schema(info)},
                }
            ],
        },
    }


# The Helm chart ships its own copy: a chart may only read files inside itself.
CHART_CRDS = Path("charts/trustdoc-sft/files/crds")
HEADER = "# Generated by `make crds` from operator/sft_operator/api.py. Do not edit.\n"


def render_all() -> dict[str, str]:
    """File name -> YAML text for every kind."""
    return {
        f"{GROUP}_{info.plural}.yaml": HEADER + yaml.safe_dump(crd(info), sort_keys=False, width=120)
        for info in KINDS.values()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "out_dirs", nargs="*", type=Path, default=[Path("crds"), CHART_CRDS], help="folders to write (default: both)"
    )
    parser.add_argument("--check", action="store_true", help="fail if the files on disk are stale")
    args = parser.parse_args(argv)
    stale = []
    for (name, text), out_dir in ((item, d) for d in args.out_dirs for item in render_all().items()):
        target = out_dir / name
        if args.check:
            if not target.exists() or target.read_text() != text:
                stale.append(str(target))
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        print(f"Wrote {target}")
    if stale:
        print("Stale CRDs (run `make crds`): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
