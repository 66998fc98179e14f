"""status.evaluation on the operator side: validation, EvaluationPassed, Events, gauges; the gates that decide it."""

from __future__ import annotations

import math

import pytest

from sft_operator import conditions as c
from sft_operator.events import evaluation_transitions
from sft_operator.figures import training_figures
from sft_operator.metrics import StatusCollector
from sft_operator.run_status import with_evaluation_condition
from sft_trainer.config import EvaluationConfig, EvaluationGates, EvaluationSummary
from sft_trainer.evaluation.gates import check_gates, regressions

FIGURES = {
    "ifevalPromptLevelStrict": {"base": 0.3, "tuned": 0.25, "delta": -0.05, "low": -0.09, "high": -0.01},
    "safetyXstestSafeOverRefusal": {"base": 0.1, "tuned": 0.12, "delta": 0.02, "low": -0.02, "high": 0.06},
}


def summary(**fields: object) -> dict:
    return EvaluationSummary.model_validate({"passed": True, "promoted": True, "figures": FIGURES, **fields}).to_wire()


def test_training_figures_carry_the_evaluation_and_refuse_a_malformed_one() -> None:
    evaluation = summary(gatesChecked=1, report="eval/eval_report.html")
    status = training_figures({"status": {"metrics": {"finalLoss": 1.0}, "evaluation": evaluation}})
    assert status["evaluation"] == evaluation
    with pytest.raises(ValueError, match="evaluation"):
        training_figures({"status": {"evaluation": {**evaluation, "figuresTypo": {}}}})
    with pytest.raises(ValueError):
        training_figures({"status": {"evaluation": {**evaluation, "passed": "yes"}}})


@pytest.mark.parametrize(
    ("evaluation", "status", "reason", "words"),
    [
        (summary(gatesChecked=2), "True", c.GATES_PASSED, "2 gates passed"),
        (summary(), "True", c.GATES_PASSED, "no gates set"),
        (summary(notRun={"style": "no held-out prompts"}), "True", c.GATES_PASSED, "not run: style"),
        (
            summary(passed=False, promoted=False, gatesChecked=1, failedGates=["minIFEvalDelta: ... below by 0.05"]),
            "False",
            c.EVALUATION_GATE_FAILED,
            "not promoted: minIFEvalDelta",
        ),
        (
            summary(passed=False, promoted=False, error="ConfigError: evaluation.ifeval.data: /x does not exist"),
            "False",
            c.EVALUATION_ERROR,
            "(the trained artifacts are intact): ConfigError: evaluation.ifeval.data",
        ),
    ],
)
def test_evaluation_passed_condition(evaluation: dict, status: str, reason: str, words: str) -> None:
    updated = with_evaluation_condition({"conditions": [], "evaluation": evaluation}, generation=3)
    (cond,) = [x for x in updated["conditions"] if x["type"] == c.EVALUATION_PASSED]
    assert (cond["status"], cond["reason"], cond["observedGeneration"]) == (status, reason, 3)
    assert words in cond["message"]
    assert with_evaluation_condition({"conditions": []}, 3) == {"conditions": []}  # no evaluation, no condition


def test_events_once_when_the_evaluation_lands_one_per_regressed_figure() -> None:
    evaluation = summary(
        passed=False, promoted=False, failedGates=["maxOverRefusal: ..."], regressed=["ifevalPromptLevelStrict"]
    )
    after = with_evaluation_condition({"conditions": [], "evaluation": evaluation}, 1)
    events = evaluation_transitions({}, after)
    assert [(e.type, e.reason) for e in events] == [
        ("Warning", c.FIGURE_REGRESSED),
        ("Warning", c.EVALUATION_GATE_FAILED),
    ]
    assert "base 0.3, tuned 0.25, delta -0.0500" in events[0].message
    assert evaluation_transitions(after, after) == []  # a later status write posts nothing again


def test_gauges_per_figure_model_and_verdict() -> None:
    index = {("ns", "job"): [{"phase": "Succeeded", "evaluation": summary(passed=False, promoted=False)}]}
    families = {f.name: f for f in StatusCollector(index, {}).collect()}  # type: ignore[arg-type]
    samples = {
        (s.labels.get("figure"), s.labels.get("model")): s.value
        for s in families["trustdoc_sft_evaluation_figure"].samples
    }
    assert samples[("ifevalPromptLevelStrict", "tuned")] == 0.25
    assert samples[("ifevalPromptLevelStrict", "delta")] == -0.05
    assert [s.value for s in families["trustdoc_sft_evaluation_passed"].samples] == [0.0]


def _report(rows: dict[str, list[dict]]) -> dict:
    return {"suites": {suite: {"figures": figures, "error": None} for suite, figures in rows.items()}}


def _row(key: str, base: float, tuned: float, low: float, high: float, higher: bool = True, unit: str = "rate") -> dict:
    def est(v: float) -> dict:
        return {"value": v, "low": v, "high": v, "n": 50}

    delta = {"value": tuned - base, "low": low, "high": high, "n": 50}
    return {
        "key": key,
        "label": key,
        "unit": unit,
        "higherIsBetter": higher,
        "base": est(base),
        "tuned": est(tuned),
        "delta": delta,
    }


def test_gates_pass_fail_with_margin_and_fail_when_the_figure_is_missing() -> None:
    report = _report(
        {
            "ifeval": [_row("promptLevelStrict", 0.30, 0.26, -0.08, 0.0)],
            "safety": [_row("xstestSafeOverRefusal", 0.10, 0.12, -0.02, 0.06, higher=False)],
            "forgetting": [_row("referenceTextNll", 2.0, 2.0953, 0.09, 0.1, higher=False, unit="nats")],
        }
    )
    gates = EvaluationGates(
        min_ifeval_delta=-0.02, max_over_refusal=0.2, max_forgetting_increase=0.05, max_style_increase=0.0
    )
    verdict = check_gates(gates, report)
    by_gate = {r["gate"]: r for r in verdict["results"]}
    assert not verdict["passed"]
    assert not by_gate["minIFEvalDelta"]["passed"] and by_gate["minIFEvalDelta"]["margin"] == pytest.approx(-0.02)
    assert "below the limit -0.0200 by 0.0200" in by_gate["minIFEvalDelta"]["message"]
    assert by_gate["maxOverRefusal"]["passed"] and by_gate["maxOverRefusal"]["margin"] == pytest.approx(0.08)
    # +0.0953 nats per token is 10% higher perplexity: above the 5% allowed.
    assert by_gate["maxForgettingIncrease"]["value"] == pytest.approx(math.exp(0.0953) - 1, abs=1e-4)
    assert not by_gate["maxForgettingIncrease"]["passed"]
    assert not by_gate["maxStyleIncrease"]["passed"] and "unavailable" in by_gate["maxStyleIncrease"]["message"]
    assert check_gates(EvaluationGates(), report) == {"passed": True, "results": []}
    # Regressed: the interval wholly on the worse side (IFEval's high end is 0.0, not below it: not regressed).
    assert [r["key"] for r in regressions(report)] == ["referenceTextNll"]


def test_gate_limits_are_validated_by_name() -> None:
    with pytest.raises(ValueError, match="maxOverRefusal"):
        EvaluationConfig.model_validate({"gates": {"maxOverRefusal": 1.5}})
    with pytest.raises(ValueError, match="minIfevalDelta|Extra inputs"):
        EvaluationConfig.model_validate({"gates": {"minIfevalDelta": 0.1}})  # the spelling is minIFEvalDelta
