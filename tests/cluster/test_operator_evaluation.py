"""An SFTJob's evaluation on the real API server: the pod's summary lands in status, condition, column, metrics, Events.

The summaries are made by the trainer's own code (report -> gates -> summary)
from per-prompt results, exactly as a pod makes them, and reach the operator
the way a pod's do: in the termination message of the succeeded container.
"""

from __future__ import annotations

from typing import Any

import pytest
from operator_support import Api, Node, RunningOperator, condition, eventually, sftjob_manifest

from sft_trainer.config import EvaluationConfig
from sft_trainer.evaluation.after_training import summarise
from sft_trainer.evaluation.gates import check_gates, regressions
from sft_trainer.evaluation.report import build_report
from sft_trainer.evaluation.suite import Figure, SuiteResult
from sft_trainer.termination import compact
from support.kube import Kubectl

pytestmark = pytest.mark.cluster


def _results(strict: list[float], over_refusal: list[float]) -> dict[str, SuiteResult]:
    ids = [str(i) for i in range(len(strict))]
    safe_ids = [f"xstest:{i}" for i in range(len(over_refusal))]
    return {
        "ifeval": SuiteResult(
            "ifeval", figures=[Figure("promptLevelStrict", "Prompts followed (strict)", ids, strict)]
        ),
        "safety": SuiteResult(
            "safety",
            figures=[Figure("xstestSafeOverRefusal", "Over-refusal", safe_ids, over_refusal, higher_is_better=False)],
        ),
    }


def pod_summary(gates: dict[str, float], tuned_strict: list[float], tuned_over_refusal: list[float]) -> dict[str, Any]:
    """status.evaluation as the pod writes it: base 30% IFEval strict and 10% over-refusal on 50 prompts each."""
    base = _results([1.0] * 15 + [0.0] * 35, [1.0] * 5 + [0.0] * 45)
    report = build_report(
        {"base": "smol", "tuned": "smol+lora"}, {"base": base, "tuned": _results(tuned_strict, tuned_over_refusal)}
    )
    config = EvaluationConfig.model_validate({"gates": gates})
    report["gates"] = check_gates(config.gates, report)
    report["regressions"] = regressions(report)
    return summarise(report, config).to_wire()


def table_rows(lines: list[str]) -> list[dict[str, str]]:
    """kubectl's table by the header's column offsets (empty cells, e.g. no eval loss, would shift a split())."""
    header = lines[0]
    starts = [i for i, ch in enumerate(header) if ch != " " and (i == 0 or header[i - 1] == " ")]
    bounds = list(zip(starts, [*starts[1:], None], strict=True))
    return [{header[a:b].strip(): line[a:b].strip() for a, b in bounds} for line in lines[1:]]


def finish_with(node: Node, namespace: str, name: str, evaluation: dict[str, Any]) -> None:
    (pod,) = node.wait_pending(namespace, f"{name}-train")
    final = {
        "progress": {"step": 10, "totalSteps": 10, "percent": 100.0, "loss": 1.1},
        "metrics": {"finalEvalLoss": 1.3},
        "evaluation": evaluation,
    }
    node.finish(pod, 0, compact(final))


def test_pod_reported_evaluation_lands_in_status_condition_column_metrics_and_events(
    operator: RunningOperator, namespace: str, api: Api, node: Node, kubectl: Kubectl
) -> None:
    # "good": IFEval strict 30% -> 50%, over-refusal unchanged; both gates pass.
    api.create(sftjob_manifest(namespace, "good"))
    good = pod_summary({"minIFEvalDelta": 0.0, "maxOverRefusal": 0.2}, [1.0] * 25 + [0.0] * 25, [1.0] * 5 + [0.0] * 45)
    finish_with(node, namespace, "good", good)
    done = eventually(lambda: (s := api.status("SFTJob", namespace, "good")).get("phase") == "Succeeded" and s)
    passed = condition(done, "EvaluationPassed")
    assert passed["status"] == "True" and passed["reason"] == "GatesPassed" and "2 gates passed" in passed["message"]
    figure = done["evaluation"]["figures"]["ifevalPromptLevelStrict"]
    assert figure["base"] == 0.3 and figure["tuned"] == 0.5 and figure["low"] <= 0.2 <= figure["high"]
    assert done["evaluation"]["promoted"] is True

    # "bad": IFEval strict 30% -> 10% and over-refusal 10% -> 60%: both gates fail, both figures regressed.
    api.create(sftjob_manifest(namespace, "bad"))
    bad = pod_summary({"minIFEvalDelta": 0.0, "maxOverRefusal": 0.2}, [1.0] * 5 + [0.0] * 45, [1.0] * 30 + [0.0] * 20)
    finish_with(node, namespace, "bad", bad)
    failed = eventually(lambda: (s := api.status("SFTJob", namespace, "bad")).get("phase") == "Succeeded" and s)
    gate = condition(failed, "EvaluationPassed")
    assert gate["status"] == "False" and gate["reason"] == "EvaluationGateFailed"
    assert "minIFEvalDelta" in gate["message"] and "below the limit +0.0000 by 0.2000" in gate["message"]
    assert "maxOverRefusal" in gate["message"] and "above the limit +0.2000 by 0.4000" in gate["message"]
    assert failed["evaluation"]["promoted"] is False
    assert set(failed["evaluation"]["regressed"]) == {"ifevalPromptLevelStrict", "safetyXstestSafeOverRefusal"}
    assert condition(failed, "Succeeded")["status"] == "True"  # the run trained; only its promotion is refused

    # The printer column: IFEval strict prompt-level accuracy of the tuned model.
    lines = kubectl.run("get", "sft", "-n", namespace, "-o", "wide", check=True).stdout.splitlines()
    rows = {row["NAME"]: row for row in table_rows(lines)}
    assert rows["good"]["IFEVAL"] == "0.5" and rows["bad"]["IFEVAL"] == "0.1"
    assert rows["good"]["PROMOTED"] == "true" and rows["bad"]["PROMOTED"] == "false"

    # Events: each regressed figure, and the failed gates.
    events = eventually(
        lambda: (
            (found := api.event_messages(namespace, "bad"))
            and any(r == "EvaluationGateFailed" for _, r, _ in found)
            and found
        ),
        what="evaluation Events",
    )
    regressed = [m for t, r, m in events if r == "FigureRegressed" and t == "Warning"]
    assert len(regressed) == 2 and any(
        "ifevalPromptLevelStrict regressed" in m and "delta -0.2000" in m for m in regressed
    )
    assert not [r for _, r, _ in api.event_messages(namespace, "good") if r == "FigureRegressed"]

    # Gauges at scrape time.
    labels = {"namespace": namespace, "name": "bad"}
    assert operator.sample("trustdoc_sft_evaluation_passed", **labels) == 0
    assert operator.sample("trustdoc_sft_evaluation_passed", namespace=namespace, name="good") == 1
    assert (
        operator.sample("trustdoc_sft_evaluation_figure", figure="ifevalPromptLevelStrict", model="tuned", **labels)
        == 0.1
    )
    assert operator.sample(
        "trustdoc_sft_evaluation_figure", figure="ifevalPromptLevelStrict", model="delta", **labels
    ) == pytest.approx(-0.2)
