"""The base every configuration model shares with the Kubernetes API.

Field names are snake_case in Python and camelCase on the wire (YAML, JSON,
the CRD schema), exactly as Kubernetes users expect. Unknown fields are an
error, never silently ignored: a typo in a knob must not fall back to a
default.

Cross-field rules are written once, as a `Rule`: its CEL expression goes
into the CRD (the API server enforces it at `kubectl apply`) and its Python
`check` runs when the model validates (so `sftctl run`, the operator and the
pods refuse exactly what the API server refuses).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator
from pydantic.alias_generators import to_camel

# Chat templates training can use (training/templates.py); curation checks records against the same one.
TemplateName = Literal["auto", "chatml", "llama3", "alpaca"]

WIRE_CONFIG = ConfigDict(
    alias_generator=to_camel,
    populate_by_name=True,
    extra="forbid",
    validate_default=True,
    # Types as the API server sees them: "yes" is not a boolean, "3" is not a number.
    strict=True,
    # Field docstrings become descriptions: in the CRD, in `kubectl explain`.
    use_attribute_docstrings=True,
)

RULES_KEY = "x-kubernetes-validations"


@dataclass(frozen=True)
class Rule:
    """One validation rule, enforced by the API server (CEL) and by Python (`check`)."""

    cel: str
    message: str
    field_path: str | None = None
    """Makes the API server name the offending field instead of the object."""
    check: Callable[[Any], bool] | None = None
    """The same rule on the Python value; None only for transition rules (they need the old object)."""

    def schema(self) -> dict[str, Any]:
        entry = {"rule": self.cel, "message": self.message}
        if self.field_path:
            entry["fieldPath"] = self.field_path
        return entry


class RuleSet:
    """`json_schema_extra` hook: writes the CEL rules into the schema, keeps the checks."""

    def __init__(self, *rules: Rule) -> None:
        self.rules = rules

    def __call__(self, schema: dict[str, Any], model: Any = None) -> None:
        schema.setdefault(RULES_KEY, []).extend(rule.schema() for rule in self.rules)

    def broken(self, value: Any) -> list[Rule]:
        return [rule for rule in self.rules if rule.check is not None and not rule.check(value)]


class WireModel(BaseModel):
    """A model whose JSON/YAML form uses camelCase keys, forbids extras and enforces its rules."""

    model_config = WIRE_CONFIG

    def to_wire(self) -> dict[str, Any]:
        """The camelCase dict the API server, a ConfigMap or a file holds."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    @model_validator(mode="after")
    def _enforce_rules(self) -> WireModel:
        problems: list[str] = []
        own = type(self).model_config.get("json_schema_extra")
        if isinstance(own, RuleSet):
            problems += [_describe(rule.field_path, rule.message) for rule in own.broken(self)]
        for name, field in type(self).model_fields.items():
            value = getattr(self, name)
            if isinstance(field.json_schema_extra, RuleSet) and value is not None:
                alias = field.alias or name
                problems += [_describe("." + alias, rule.message) for rule in field.json_schema_extra.broken(value)]
        if problems:
            raise ValueError("; ".join(problems))
        return self


def _describe(field_path: str | None, message: str) -> str:
    return f"{field_path.lstrip('.')}: {message}" if field_path else message


def field_rules(*rules: Rule) -> RuleSet:
    """`json_schema_extra` for a field carrying rules."""
    return RuleSet(*rules)


def model_rules(*rules: Rule) -> ConfigDict:
    """`model_config` for a WireModel subclass with rules on the object itself."""
    config = WIRE_CONFIG.copy()
    config["json_schema_extra"] = RuleSet(*rules)
    return config


def immutable(what: str) -> RuleSet:
    """A transition rule that freezes a field once the object exists (API server only)."""
    return RuleSet(Rule("self == oldSelf", f"{what} is immutable"))


def exactly_one_of(*fields: str) -> Rule:
    """Exactly one of the given (camelCase) fields is set."""
    count = " + ".join(f"(has(self.{f}) ? 1 : 0)" for f in fields)
    names = ", ".join(fields)

    def check(model: Any) -> bool:
        values = model.to_wire()
        return sum(1 for f in fields if values.get(f) is not None) == 1

    return Rule(f"{count} == 1", f"exactly one of {names} must be set", check=check)
