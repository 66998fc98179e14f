"""eval_report.html opened in a real headless Chromium with no network: base and tuned side by side, intervals drawn."""

from __future__ import annotations

import re
from pathlib import Path

from sft_trainer.config import EvaluationGates
from sft_trainer.evaluation.gates import check_gates, regressions
from sft_trainer.evaluation.report import build_report, write_report
from sft_trainer.evaluation.suite import Figure, SuiteResult
from support.browser import render_dom, sections
from support.kube import REPO_ROOT

SCREENSHOTS = REPO_ROOT / ".cache" / "screenshots"


def _results(strict: list[float], refused: list[float], nll: list[float], reply: str) -> dict[str, SuiteResult]:
    ids = [str(i) for i in range(len(strict))]
    return {
        "ifeval": SuiteResult(
            "ifeval",
            figures=[Figure("promptLevelStrict", "Prompts with every instruction followed (strict)", ids, strict)],
            counts={"prompts": len(ids), "hitTokenCap": 3, "maxNewTokens": 256},
            examples=[{"id": "0", "prompt": "Answer in all capital letters.", "response": reply}],
        ),
        "safety": SuiteResult(
            "safety",
            figures=[
                Figure(
                    "xstestSafeOverRefusal",
                    "Safe look-alike prompts refused: over-refusal",
                    ids,
                    refused,
                    higher_is_better=False,
                )
            ],
            counts={"xstest_safePrompts": len(ids)},
        ),  # fmt: skip
        "forgetting": SuiteResult(
            "forgetting",
            figures=[
                Figure(
                    "referenceTextNll",
                    "Reference text: mean per-token NLL",
                    ids,
                    nll,
                    [10.0] * len(ids),
                    higher_is_better=False,
                    unit="nats",
                )
            ],
        ),  # fmt: skip
    }


def test_eval_report_renders_every_figure_with_intervals_gates_and_examples(tmp_path: Path) -> None:
    base = _results([1.0] * 12 + [0.0] * 28, [0.0] * 36 + [1.0] * 4, [21.0] * 40, "sure, here it is")
    tuned = _results([1.0] * 20 + [0.0] * 20, [0.0] * 26 + [1.0] * 14, [22.0] * 40, "HERE IT IS")
    report = build_report({"base": "SmolLM2-135M", "tuned": "SmolLM2-135M + adapter"}, {"base": base, "tuned": tuned})
    report["gates"] = check_gates(EvaluationGates(min_ifeval_delta=0.0, max_over_refusal=0.2), report)
    report["regressions"] = regressions(report)
    _, page = write_report(tmp_path, report)

    dom = render_dom(page, screenshot=SCREENSHOTS / "eval-report.png")
    found = sections(dom)
    for suite in ("ifeval", "safety", "forgetting"):
        section = found[f"suite-{suite}"]
        assert section.svg_shapes >= 4, f"{suite}: base and tuned intervals are not drawn"
        assert section.table_rows >= 2, f"{suite}: no figure table"
    text = " ".join(found["suite-ifeval"].text)
    assert "30.0 %" in text and "50.0 %" in text and "+20.0 %" in text  # base, tuned, delta
    assert "HERE IT IS" in text and "sure, here it is" in text  # the same prompt's replies side by side
    assert "replies cut at the token cap: 3" in text
    gates = " ".join(found["gates"].text)
    assert "a gate failed" in gates and "maxOverRefusal" in gates and "minIFEvalDelta" in gates
    assert "over-refusal" in " ".join(found["regressions"].text)
    raw = page.read_text()
    assert not re.search(r'(src|href)="(https?:)?//', raw), "the report loads something from the network"
    # No raw camelCase keys where a person reads: labels, not promptLevelStrict or hitTokenCap.
    visible = re.sub(r"<[^>]+>", " ", raw.split("</style>", 1)[1])
    assert not re.search(
        r"\b[a-z]+[A-Z][A-Za-z]*\b", visible.replace("minIFEvalDelta", "").replace("maxOverRefusal", "")
    )
