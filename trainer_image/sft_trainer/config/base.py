"""The base every configuration model shares with the Kubernetes API.

Field names are snake_case in Python and camelCase on the wire (YAML, JSON,
the CRD schema), exactly as Kubernetes users expect. Unknown fields are an
error, never silently ignored: a typo in a knob must not fall back to a
default.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

WIRE_CONFIG = ConfigDict(
    alias_generator=to_camel,
    populate_by_name=True,
    extra="forbid",
    validate_default=True,
    # Field docstrings become descriptions: in the CRD, in `kubectl explain`.
    use_attribute_docstrings=True,
)


class WireModel(BaseModel):
    """A model whose JSON/YAML form uses camelCase keys and forbids extras."""

    model_config = WIRE_CONFIG

    def to_wire(self) -> dict[str, Any]:
        """The camelCase dict the API server, a ConfigMap or a file holds."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def cel(rule: str, message: str, field_path: str | None = None) -> dict[str, Any]:
    """One `x-kubernetes-validations` entry for a model or a field.

    `field_path` makes the API server name the offending field rather than the
    object the rule is attached to.
    """
    entry = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    return entry


def rules(*entries: dict[str, Any]) -> dict[str, Any]:
    """`json_schema_extra` for a field carrying CEL rules."""
    return {"x-kubernetes-validations": list(entries)}


def model_rules(*entries: dict[str, Any]) -> ConfigDict:
    """`model_config` for a WireModel subclass with CEL rules on the object itself."""
    config = WIRE_CONFIG.copy()
    config["json_schema_extra"] = rules(*entries)
    return config


def immutable(what: str) -> dict[str, Any]:
    """A transition rule that freezes a field once the object exists."""
    return rules(cel("self == oldSelf", f"{what} is immutable"))
