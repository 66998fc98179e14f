"""Events: one per transition of a status's headline condition, and one per figure an evaluation finds regressed.

Whoever writes a status posts the Events of that write (see
`reconciler.write_status`), so each transition gets exactly one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import conditions as c
from .pod_reports import clip


@dataclass(frozen=True)
class Transition:
    """A Kubernetes Event to post: type (Normal or Warning), reason, message."""

    type: str
    reason: str
    message: str


def _headline(status: dict[str, Any]) -> dict[str, Any] | None:
    conds = status.get("conditions", []) or []
    for type_ in (c.FAILED, c.SUCCEEDED):
        if c.is_true(conds, type_):
            return c.get_condition(conds, type_)
    return c.get_condition(conds, c.PROGRESSING)


def transition(before: dict[str, Any], after: dict[str, Any]) -> Transition | None:
    """The Event for a status change, or None when nothing a person cares about changed."""
    new = _headline(after)
    if new is None:
        return None
    old = _headline(before)
    if old is not None and (old.get("type"), old.get("reason"), old.get("message")) == (
        new.get("type"),
        new.get("reason"),
        new.get("message"),
    ):
        return None
    reason = str(new.get("reason", ""))
    return Transition("Warning" if reason in c.WARNING_REASONS else "Normal", reason, str(new.get("message", "")))


def evaluation_transitions(before: dict[str, Any], after: dict[str, Any]) -> list[Transition]:
    """Events when an evaluation lands: one per regressed figure, one for a failed gate or evaluation."""
    evaluation = after.get("evaluation") or {}
    if not evaluation or before.get("evaluation"):
        return []
    events = [
        Transition("Warning", c.FIGURE_REGRESSED, clip(_regression_message(name, evaluation)))
        for name in evaluation.get("regressed") or []
    ]
    condition = c.get_condition(after.get("conditions", []) or [], c.EVALUATION_PASSED)
    if condition is not None:
        reason = str(condition.get("reason", ""))
        kind = "Warning" if reason in c.WARNING_REASONS else "Normal"
        events.append(Transition(kind, reason, str(condition.get("message", ""))))
    return events


def _regression_message(name: str, evaluation: dict[str, Any]) -> str:
    figure = (evaluation.get("figures") or {}).get(name) or {}
    if figure.get("delta") is None:
        return f"{name} regressed after fine-tuning"
    return (
        f"{name} regressed after fine-tuning: base {figure.get('base')}, tuned {figure.get('tuned')}, "
        f"delta {figure['delta']:+.4f} (95% interval {figure.get('low')} to {figure.get('high')})"
    )
