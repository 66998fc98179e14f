"""Gates on the evaluation's figures, and the figures that regressed.

A gate compares one figure of the base-vs-tuned report with its limit
(`training.evaluation.gates`); the point estimate decides, the interval is
shown beside it. A gate whose figure is unavailable (its suite is off or
could not run) fails: a limit nobody could check must not let a model ship.
A figure regressed when its delta's 95% interval lies wholly on the worse
side of zero.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..config import EvaluationGates


@dataclass(frozen=True)
class Gate:
    name: str
    """camelCase, as in the spec."""
    suite: str
    key: str
    what: str
    """How the message names the checked quantity."""
    read: Callable[[dict[str, Any]], float | None]
    """The checked quantity from the figure's report row."""
    is_minimum: bool


def _delta(row: dict[str, Any]) -> float | None:
    return (row.get("delta") or {}).get("value")


def _tuned(row: dict[str, Any]) -> float | None:
    return (row.get("tuned") or {}).get("value")


def _perplexity_increase(row: dict[str, Any]) -> float | None:
    delta = _delta(row)  # in nats per token: perplexity ratio = e^delta
    return None if delta is None else math.exp(delta) - 1.0


GATES = {
    "min_ifeval_delta": Gate("minIFEvalDelta", "ifeval", "promptLevelStrict",
                             "IFEval prompt-level strict accuracy change (tuned - base)", _delta, True),
    "max_over_refusal": Gate("maxOverRefusal", "safety", "xstestSafeOverRefusal",
                             "over-refusal on XSTest safe prompts (tuned)", _tuned, False),
    "max_forgetting_increase": Gate("maxForgettingIncrease", "forgetting", "referenceTextNll",
                                    "relative increase of reference-text perplexity", _perplexity_increase, False),
    "max_style_increase": Gate("maxStyleIncrease", "style", "assistantStyle",
                               "change of the mean chatbot-style probability (tuned - base)", _delta, False),
}  # fmt: skip


def _row(report: dict[str, Any], suite: str, key: str) -> dict[str, Any] | None:
    entry = report.get("suites", {}).get(suite)
    if not entry:
        return None
    return next((row for row in entry.get("figures", []) if row["key"] == key), None)


def _unavailable(report: dict[str, Any], suite: str) -> str:
    entry = report.get("suites", {}).get(suite)
    if not entry:
        return f"the {suite} suite did not run"
    errors = entry.get("error") or {}
    return f"the {suite} suite could not run: " + "; ".join(f"{r}: {m}" for r, m in errors.items()) if errors else ""


def check_gates(gates: EvaluationGates, report: dict[str, Any]) -> dict[str, Any]:
    """{passed, results: [{gate, limit, value, margin, passed, message}]}; margin > 0 is room to spare."""
    results = []
    for field, gate in GATES.items():
        limit = getattr(gates, field)
        if limit is None:
            continue
        row = _row(report, gate.suite, gate.key)
        value = gate.read(row) if row else None
        if value is None:
            why = _unavailable(report, gate.suite) or "the figure has no value"
            results.append({"gate": gate.name, "limit": limit, "value": None, "margin": None, "passed": False,
                            "message": f"{gate.name}: {gate.what} is unavailable ({why})"})  # fmt: skip
            continue
        margin = value - limit if gate.is_minimum else limit - value
        passed = margin >= 0
        relation = (
            ("at least" if gate.is_minimum else "at most") if passed else ("below" if gate.is_minimum else "above")
        )
        message = f"{gate.name}: {gate.what} is {value:+.4f}, {relation} the limit {limit:+.4f}"
        message += f" (margin {margin:.4f})" if passed else f" by {-margin:.4f}"
        results.append({"gate": gate.name, "limit": limit, "value": round(value, 6), "margin": round(margin, 6),
                        "passed": passed, "message": message})  # fmt: skip
    return {"passed": all(r["passed"] for r in results), "results": results}


def regressions(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Figures whose tuned-minus-base interval lies wholly on the worse side of zero."""
    found = []
    for suite, entry in report.get("suites", {}).items():
        for row in entry.get("figures", []):
            delta = row.get("delta") or {}
            low, high = delta.get("low"), delta.get("high")
            if low is None or high is None:
                continue
            worse = high < 0 if row["higherIsBetter"] else low > 0
            if worse:
                found.append({"suite": suite, "key": row["key"], "label": row["label"], "unit": row["unit"],
                              "delta": delta["value"], "low": low, "high": high})  # fmt: skip
    return found
