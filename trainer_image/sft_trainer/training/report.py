"""train_report.json (the operator copies its `status` into the SFTJob) and a self-contained train_report.html.

The HTML has no script and loads nothing: curves are inline SVG, figures are
tables. Element ids are stable for tests and links: `loss-curve`,
`lr-curve`, `throughput-curve`, `metrics`, `probes`, `data`.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

from ..evaluation.report import spelled_out
from ..progress import utc_now
from .lineage import lineage_html
from .loop import progress_fields
from .result import RunResult

REPORT_JSON = "train_report.json"
REPORT_HTML = "train_report.html"


def final_metrics(result: RunResult) -> dict[str, float]:
    state = result.state
    metrics: dict[str, float] = {"optimizerSteps": float(state.step), "trainSeconds": round(state.train_seconds, 3)}
    if state.history:
        metrics["finalLoss"] = state.history[-1]["loss"]
        metrics["initialLoss"] = state.history[0]["loss"]
    if state.train_seconds > 0:
        metrics["tokensPerSecond"] = state.tokens_seen / state.train_seconds
    if state.eval_history:
        metrics["initialEvalLoss"] = state.eval_history[0]["evalLoss"]
        metrics["finalEvalLoss"] = state.eval_history[-1]["evalLoss"]
    if state.best_eval_loss is not None:
        metrics["bestEvalLoss"] = state.best_eval_loss
        metrics["bestStep"] = float(state.best_step or 0)
    metrics["stoppedEarly"] = float(state.stopped_early)
    metrics["rejectedRecords"] = float(result.data.get("rejected", 0))
    metrics["trainSamples"] = float(result.data.get("trainSamples", 0))
    metrics["refusalsMixed"] = float(result.data.get("refusalsMixed", 0))
    metrics.update(result.probes.get("metrics", {}))
    return {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}


def build_report(result: RunResult, config: dict[str, Any]) -> dict[str, Any]:
    state = result.state
    steps_per_epoch = (
        max(1, round(state.step / state.history[-1]["epoch"])) if state.history and state.history[-1]["epoch"] else 1
    )
    tps = state.tokens_seen / state.train_seconds if state.train_seconds > 0 else 0.0
    progress = progress_fields(state, steps_per_epoch, tps)
    progress["percent"] = 100.0  # finished (early stopping ends before total_steps)
    progress["etaSeconds"] = 0.0
    progress = {k: v for k, v in progress.items() if v is not None}
    probes = {k: v for k, v in result.probes.items() if k != "metrics"}
    return {
        # exports: the kinds only (the operator copies them into status; a later stage's sftJobRef checks them)
        "status": {"progress": progress, "metrics": final_metrics(result), "exports": sorted(result.exports)},
        "method": result.method,
        "finishedAt": utc_now(),
        "environment": result.environment,
        "data": result.data,
        "probes": probes,
        "exports": result.exports,
        "training": {
            "history": state.history,
            "evalHistory": state.eval_history,
            "bestStep": state.best_step,
            "stoppedEarly": state.stopped_early,
            "resumedFrom": state.resumed_from,
            "tokensSeen": state.tokens_seen,
        },
        "config": config,
    }


def write_reports(output_dir: Path, report: dict[str, Any]) -> None:
    (output_dir / REPORT_JSON).write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    (output_dir / REPORT_HTML).write_text(render_html(report), encoding="utf-8")


# ---------------------------------------------------------------------------
# HTML
# ---------------------------------------------------------------------------


def _svg_chart(element_id: str, title: str, series: list[tuple[str, str, list[tuple[float, float]]]]) -> str:
    """A line chart as inline SVG: series are (label, colour, [(x, y), ...])."""
    width, height, pad = 640, 240, 48
    points = [p for _, _, data in series for p in data]
    if not points:
        return f'<figure id="{element_id}"><figcaption>{html.escape(title)}</figcaption><p>No data.</p></figure>'
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1

    def sx(x: float) -> float:
        return pad + (x - x0) / (x1 - x0) * (width - 2 * pad)

    def sy(y: float) -> float:
        return height - pad + (y - y0) / (y1 - y0) * -(height - 2 * pad)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img">',
        f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="#888"/>',
        f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" stroke="#888"/>',
        f'<text x="{pad}" y="{pad - 8}" font-size="11">{y1:.4g}</text>',
        f'<text x="{pad}" y="{height - pad + 14}" font-size="11">{y0:.4g}</text>',
        f'<text x="{width - pad}" y="{height - pad + 28}" font-size="11" text-anchor="end">step {x1:.0f}</text>',
    ]
    for n, (label, colour, data) in enumerate(series):
        if not data:
            continue
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in data)
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{path}"/>')
        for x, y in data if len(data) <= 60 else []:
            parts.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="{colour}"/>')
        parts.append(
            f'<text x="{width - pad}" y="{pad + 14 * n}" font-size="12" fill="{colour}" text-anchor="end">{html.escape(label)}</text>'
        )
    parts.append("</svg>")
    return f'<figure id="{element_id}"><figcaption>{html.escape(title)}</figcaption>{"".join(parts)}</figure>'


def _table(element_id: str, rows: list[tuple[str, Any]], header: tuple[str, str] = ("figure", "value")) -> str:
    body = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(_fmt(v))}</td></tr>" for k, v in rows)
    return (
        f'<table id="{element_id}"><thead><tr><th>{header[0]}</th><th>{header[1]}</th></tr></thead>'
        f"<tbody>{body}</tbody></table>"
    )


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, default=str)
    return str(value)


# Labels a person reads, one per figure of status.metrics; a key missing here is spelled out from its camelCase.
METRIC_LABELS = {
    "optimizerSteps": "optimiser steps",
    "trainSeconds": "training time (s)",
    "initialLoss": "training loss, first step",
    "finalLoss": "training loss, last step",
    "tokensPerSecond": "tokens per second (non-pad)",
    "initialEvalLoss": "held-out loss before training",
    "finalEvalLoss": "held-out loss, last evaluation",
    "bestEvalLoss": "held-out loss, best evaluation",
    "bestStep": "step of the best evaluation (exported)",
    "stoppedEarly": "stopped early (1 = yes)",
    "rejectedRecords": "records rejected",
    "trainSamples": "training samples",
    "refusalsMixed": "refusal examples mixed in",
}
PROBE_LABELS = {
    "memorisationTrainExactMatch": "training prompts: reply equals the reference",
    "memorisationTrainLcsRatio": "training prompts: longest common substring / reference",
    "memorisationHeldOutExactMatch": "held-out prompts: reply equals the reference",
    "memorisationHeldOutLcsRatio": "held-out prompts: longest common substring / reference",
    "memorisationLcsGap": "gap, training minus held-out (memorising when large)",
}


def label(key: str) -> str:
    """The label of a status.metrics key (spelled out from camelCase when it has none)."""
    return METRIC_LABELS.get(key) or PROBE_LABELS.get(key) or spelled_out(key)


def _labelled(rows: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    return [(label(k), v) for k, v in rows]


def _evaluation_section(evaluation: dict[str, Any] | None) -> str:
    """Where the evaluation is (its figures live in one place: eval/eval_report.html) and its verdict."""
    if not evaluation:
        return "<p>No evaluation ran (training.evaluation.enabled is false).</p>"
    if evaluation.get("error"):
        verdict = f"could not run: {evaluation['error']}"
    elif evaluation.get("failedGates"):
        verdict = "a gate failed, the export is not promoted: " + "; ".join(evaluation["failedGates"])
    else:
        verdict = f"passed ({evaluation.get('gatesChecked', 0)} gates checked)"
    link = evaluation.get("report")
    anchor = (
        f' Base vs tuned, every figure with its interval: <a href="{html.escape(link)}">{html.escape(link)}</a>.'
        if link
        else ""
    )
    return f'<p id="evaluation">Evaluation {html.escape(verdict)}.{anchor}</p>'


def render_html(report: dict[str, Any]) -> str:
    training = report["training"]
    history, evals = training["history"], training["evalHistory"]
    status = report["status"]
    loss_chart = _svg_chart(
        "loss-curve",
        "Training and evaluation loss",
        [
            ("train loss", "#1f77b4", [(h["step"], h["loss"]) for h in history]),
            ("eval loss", "#d62728", [(e["step"], e["evalLoss"]) for e in evals]),
        ],
    )
    lr_chart = _svg_chart(
        "lr-curve", "Learning rate", [("learning rate", "#2ca02c", [(h["step"], h["learningRate"]) for h in history])]
    )
    tps_chart = _svg_chart(
        "throughput-curve",
        "Tokens per second (non-pad)",
        [("tokens/s", "#9467bd", [(h["step"], h["tokensPerSecond"]) for h in history])],
    )
    data = report["data"]
    data_rows = [(label(k), v) for k, v in data.items() if not isinstance(v, dict)]
    data_rows += [(f"training split: {label(k)}", v) for k, v in data.get("train", {}).items()]
    data_rows += [(f"rejected: {k}", v) for k, v in data.get("rejectedByReason", {}).items()]
    env_rows = _labelled(list(report.get("environment", {}).items())) + [
        (f"export {k}", v) for k, v in report.get("exports", {}).items()
    ]
    style = (
        "body{font-family:system-ui,sans-serif;margin:2em;max-width:60em;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}"
        "figure{margin:1em 0}figcaption{font-weight:600}"
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>Training report ({html.escape(report['method'])})</title><style>{style}</style></head><body>"
        f"<h1>Training report: {html.escape(report['method'])} fine-tuning</h1>"
        f"<p>Finished {html.escape(report['finishedAt'])}; {len(history)} optimiser steps"
        f"{' (stopped early)' if training['stoppedEarly'] else ''}"
        f"{'; resumed from steps ' + ', '.join(map(str, training['resumedFrom'])) if training['resumedFrom'] else ''}.</p>"
        f"{loss_chart}{lr_chart}{tps_chart}"
        "<h2>Final figures</h2>"
        + _table("metrics", _labelled([(k, v) for k, v in status["metrics"].items() if k not in PROBE_LABELS]))
        + "<h2>Memorisation probe</h2>"
        + _table(
            "probes",
            _labelled([(k, v) for k, v in status["metrics"].items() if k in PROBE_LABELS]) or [("probe", "off")],
        )
        + "<h2>Evaluation</h2>"
        + _evaluation_section(status.get("evaluation"))
        + lineage_html(report.get("lineage") or [])
        + "<h2>Data</h2>"
        + _table("data", data_rows)
        + "<h2>Environment and outputs</h2>"
        + _table("environment", env_rows)
        + "</body></html>\n"
    )
