"""report.json (with the `status` block the operator copies into the CR) and a self-contained report.html."""

from __future__ import annotations

import html
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any, get_args

import numpy as np

from ..config import TaskType
from .pipeline import CurationResult

# The task types in the order the config declares them (one list, in config).
TASK_ORDER: tuple[str, ...] = get_args(TaskType)


def status_block(result: CurationResult) -> dict[str, Any]:
    """Exactly the camelCase shape of DatasetCurationStatus's curation fields."""
    rejected = len(result.rejected)
    selection = result.selection
    block: dict[str, Any] = {}
    if selection:
        block["selection"] = {
            "strategy": selection["strategy"],
            "budget": selection["budget"],
            "selected": selection["selected"],
            "control": selection["control"],
        }
    if result.notes:
        block["notes"] = [note[:300] for note in result.notes[:5]]
    return block | {
        "counts": {
            "input": result.input_count,
            "curated": len(result.curated),
            "rejected": rejected,
            "review": len(result.review),
        },
        "dropsByReason": dict(sorted(result.drops_by_reason().items())),
        "taskEntropyBefore": round(result.stats["task_entropy_before"], 4),
        "taskEntropyAfter": round(result.stats["task_entropy_after"], 4),
        "rejectedFraction": round(rejected / result.input_count, 6) if result.input_count else 0.0,
    }


def _histogram(values: Iterable[float], edges: list[float]) -> list[int]:
    counts = [0] * (len(edges) - 1)
    for v in values:
        for i in range(len(edges) - 1):
            if v < edges[i + 1] or i == len(edges) - 2:
                counts[i] += 1
                break
    return counts


LENGTH_EDGES = [0, 5, 10, 20, 40, 80, 160, 320, 640, 1280, float("inf")]
GPTISM_EDGES = [0, 0.001, 2, 5, 10, 15, 20, 30, 50, float("inf")]


def build_report(result: CurationResult, *, input_path: str, seconds: float, config: dict[str, Any]) -> dict[str, Any]:
    stats = result.stats
    per_step = [
        {
            "step": type(step).__name__,
            "name": step.name,
            "outcome": step.outcome,
            "seen": step.seen,
            "stopped": dict(step.drops),
            "seconds": round(step.seconds, 3),
            "recordsPerSecond": round(step.seen / step.seconds, 1) if step.seconds > 0 else None,
            **({"figures": step.report()} if step.report() else {}),
        }
        for step in result.steps
    ]
    return {
        "status": status_block(result),
        "input": input_path,
        "seconds": round(seconds, 3),
        "funnel": [{"stage": s, "records": n} for s, n in result.funnel],
        "reviewByReason": dict(Counter(r[0] for _, r in result.review)),
        "flagsByReason": dict(sorted(result.flags_by_reason().items())),
        "steps": per_step,
        "taskCountsBefore": {t: stats["task_counts_before"].get(t, 0) for t in TASK_ORDER},
        "taskCountsAfter": {t: stats["task_counts_after"].get(t, 0) for t in TASK_ORDER},
        "nearDuplicateClusters": stats.get("near_clusters", 0),
        "duplicateClusterExamples": stats["dup_clusters"],
        "examplesByReason": stats["examples"],
        "responseWords": {
            "edges": [e if e != float("inf") else None for e in LENGTH_EDGES],
            "before": _histogram(stats["response_words_before"], LENGTH_EDGES),
            "after": _histogram(stats["response_words_after"], LENGTH_EDGES),
        },
        "gptismDensity": {
            "edges": [e if e != float("inf") else None for e in GPTISM_EDGES],
            "before": _histogram(stats["gptism_before"], GPTISM_EDGES),
            "after": _histogram(stats["gptism_after"], GPTISM_EDGES),
            "meanBefore": _mean(stats["gptism_before"]),
            "meanAfter": _mean(stats["gptism_after"]),
        },
        "templateSkeletons": stats.get("skeletons", {}),
        "selection": result.selection,
        "scores": _score_histograms(stats["score_values"], _thresholds(result)),
        "notes": result.notes,
        "config": config,
    }


def _thresholds(result: CurationResult) -> dict[str, list[dict[str, Any]]]:
    """Score key -> the thresholds judges apply to it (from each step's `report()["thresholds"]`)."""
    found: dict[str, list[dict[str, Any]]] = {}
    for step in result.steps:
        for entry in step.report().get("thresholds", []):
            found.setdefault(entry["score"], []).append({"reason": entry["reason"], "value": entry["value"]})
    return found


def _score_histograms(
    values: dict[str, dict[str, np.ndarray]], thresholds: dict[str, list[dict[str, Any]]], bins: int = 12
) -> dict[str, Any]:
    """Per score: equal-width bins between the 1st and 99th percentile of the judged records, before and after."""
    out: dict[str, Any] = {}
    for key, groups in values.items():
        judged = sorted(v for v in groups["judged"] if math.isfinite(v))
        if len(judged) < 2:
            continue
        low, high = judged[int(0.01 * (len(judged) - 1))], judged[int(0.99 * (len(judged) - 1))]
        if high <= low:
            high = low + 1e-9
        edges = [low + (high - low) * i / bins for i in range(bins + 1)]
        edges[0], edges[-1] = float("-inf"), float("inf")
        out[key] = {
            "edges": [round(e, 4) if math.isfinite(e) else None for e in edges],
            "before": _histogram(judged, edges),
            "after": _histogram([v for v in groups["curated"] if math.isfinite(v)], edges),
            "thresholds": thresholds.get(key, []),
        }
    return out


def _mean(values: Sequence[float] | np.ndarray) -> float:
    return round(float(sum(values)) / len(values), 4) if len(values) else 0.0


# --------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:1100px;color:#1d2430;padding:0 1rem}
h1{font-size:1.6rem}h2{font-size:1.2rem;margin-top:2.2rem;border-bottom:1px solid #d6dbe3;padding-bottom:.3rem}
table{border-collapse:collapse;margin:.6rem 0;font-size:.9rem;width:100%}
th,td{border:1px solid #d6dbe3;padding:.3rem .5rem;text-align:left;vertical-align:top}th{background:#eef1f6}
td.n{text-align:right;font-variant-numeric:tabular-nums}.muted{color:#667085;font-size:.85rem}
.cards{display:flex;gap:1rem;flex-wrap:wrap}.card{border:1px solid #d6dbe3;border-radius:6px;padding:.6rem 1rem;min-width:9rem}
.card b{display:block;font-size:1.4rem}svg text{font-size:11px;fill:#1d2430}code{white-space:pre-wrap;word-break:break-word}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _hbar_svg(svg_id: str, rows: list[tuple[str, float]], color: str = "#3b6fd8", width: int = 760) -> str:
    bar_h, label_w = 22, 190
    top = max((v for _, v in rows), default=0) or 1
    height = bar_h * len(rows) + 10
    parts = [
        f'<svg id="{svg_id}" role="img" width="{width}" height="{height}" viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">'
    ]
    for i, (label, value) in enumerate(rows):
        y = 5 + i * bar_h
        w = (width - label_w - 80) * value / top
        parts.append(f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end">{_e(label)}</text>')
        parts.append(
            f'<rect x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{bar_h - 6}" fill="{color}"><title>{_e(label)}: {value:g}</title></rect>'
        )
        parts.append(f'<text x="{label_w + w + 5:.1f}" y="{y + 15}">{value:g}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _paired_svg(
    svg_id: str, labels: list[str], before: list[float], after: list[float], width: int = 760, as_share: bool = True
) -> str:
    """Grouped vertical bars: before (grey) and after (blue), as shares of each total."""
    height, bottom, left = 260, 60, 40
    tb, ta = (sum(before) or 1, sum(after) or 1) if as_share else (1, 1)
    b = [v / tb for v in before]
    a = [v / ta for v in after]
    top = max(b + a + [1e-9])
    slot = (width - left - 10) / max(1, len(labels))
    parts = [
        f'<svg id="{svg_id}" role="img" width="{width}" height="{height}" viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">'
    ]
    plot_h = height - bottom - 10
    for i, label in enumerate(labels):
        x = left + i * slot
        for j, (vals, color, name) in enumerate(((b, "#a3acb9", "before"), (a, "#3b6fd8", "after"))):
            h = plot_h * vals[i] / top
            parts.append(
                f'<rect x="{x + 4 + j * (slot - 8) / 2:.1f}" y="{10 + plot_h - h:.1f}" width="{(slot - 8) / 2:.1f}" height="{h:.1f}" fill="{color}">'
                f"<title>{_e(label)} {name}: {vals[i]:.1%}</title></rect>"
            )
        parts.append(
            f'<text x="{x + slot / 2:.1f}" y="{height - bottom + 16}" text-anchor="middle" transform="rotate(25 {x + slot / 2:.1f} {height - bottom + 16})">{_e(label)}</text>'
        )
    parts.append(f'<text x="{left}" y="{height - 4}">grey: before, blue: after (share of records)</text></svg>')
    return "".join(parts)


def _edge_labels(edges: list[float | None]) -> list[str]:
    out = []
    for lo, hi in zip(edges, edges[1:], strict=False):
        if lo is None:
            out.append(f"<{hi:g}")
        else:
            out.append(f"{lo:g}+" if hi is None else f"{lo:g}–{hi:g}")
    return out


def render_html(report: dict[str, Any]) -> str:
    status = report["status"]
    counts = status["counts"]
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>Curation report</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Curation report</h1><p class=muted>{_e(report['input'])} · {report['seconds']} s</p>",
        '<div class=cards id="summary">',
    ]
    for key in ("input", "curated", "rejected", "review"):
        parts.append(f"<div class=card>{key}<b>{counts[key]}</b></div>")
    parts.append(
        f"<div class=card>task entropy<b>{status['taskEntropyBefore']:.3f} → {status['taskEntropyAfter']:.3f}</b></div>"
        f"<div class=card>rejected<b>{status['rejectedFraction']:.1%}</b></div></div>"
    )
    # Funnel
    parts.append('<section id="funnel"><h2>Funnel</h2>')
    parts.append(_hbar_svg("funnel-chart", [(f["stage"], f["records"]) for f in report["funnel"]]))
    parts.append('<table id="funnel-table"><tr><th>stage</th><th>records</th></tr>')
    parts += [f"<tr><td>{_e(f['stage'])}</td><td class=n>{f['records']}</td></tr>" for f in report["funnel"]]
    parts.append("</table></section>")
    # Drops
    drops = sorted(status["dropsByReason"].items(), key=lambda kv: -kv[1])
    parts.append(
        '<section id="drops"><h2>Drops per reason</h2>'
        "<p class=muted>Counted by each record's first reason; every reason of every record is in rejected.jsonl.</p>"
    )
    parts.append(_hbar_svg("drops-chart", drops, color="#d0543c") + ("" if drops else "<p>No record was rejected.</p>"))
    parts.append('<table id="drops-table"><tr><th>reason</th><th>records</th><th>all flags</th><th>examples</th></tr>')
    for reason, n in drops:
        examples = "".join(
            f"<div><b>#{ex['source_index']}</b> <code>{_e(ex.get('prompt', ''))}</code>"
            + (f" → <code>{_e(ex.get('response', ''))}</code>" if ex.get("response") else "")
            + (f" <span class=muted>{_e(ex['detail'])}</span>" if ex.get("detail") else "")
            + "</div>"
            for ex in report["examplesByReason"].get(reason, [])
        )
        parts.append(
            f"<tr><td>{_e(reason)}</td><td class=n>{n}</td><td class=n>{report['flagsByReason'].get(reason, n)}</td><td>{examples}</td></tr>"
        )
    parts.append("</table></section>")
    if report["reviewByReason"]:
        parts.append('<h2>Held for review</h2><table id="review"><tr><th>reason</th><th>records</th></tr>')
        parts += [f"<tr><td>{_e(r)}</td><td class=n>{n}</td></tr>" for r, n in sorted(report["reviewByReason"].items())]
        parts.append("</table>")
    # Task mix
    before, after = report["taskCountsBefore"], report["taskCountsAfter"]
    labels = list(before)
    parts.append(
        f'<section id="task-mix"><h2>Task mix</h2><p>Normalised entropy {status["taskEntropyBefore"]:.3f} (validated input) → {status["taskEntropyAfter"]:.3f} (curated).</p>'
    )
    parts.append(_paired_svg("task-mix-chart", labels, [before[t] for t in labels], [after[t] for t in labels]))
    parts.append('<table id="task-mix-table"><tr><th>task</th><th>before</th><th>after</th></tr>')
    parts += [f"<tr><td>{_e(t)}</td><td class=n>{before[t]}</td><td class=n>{after[t]}</td></tr>" for t in labels]
    parts.append("</table></section>")
    # Lengths
    rw = report["responseWords"]
    parts.append('<section id="lengths"><h2>Response length (words)</h2>')
    parts.append(_paired_svg("lengths-chart", _edge_labels(rw["edges"]), rw["before"], rw["after"]))
    parts.append('<table id="lengths-table"><tr><th>words</th><th>before</th><th>after</th></tr>')
    parts += [
        f"<tr><td>{_e(label)}</td><td class=n>{b}</td><td class=n>{a}</td></tr>"
        for label, b, a in zip(_edge_labels(rw["edges"]), rw["before"], rw["after"], strict=True)
    ]
    parts.append("</table></section>")
    # GPT-isms
    g = report["gptismDensity"]
    parts.append(
        f'<section id="gptism"><h2>GPT-ism density</h2><p>Weighted hits per 1,000 words; mean {g["meanBefore"]} before → {g["meanAfter"]} after.</p>'
    )
    parts.append(_paired_svg("gptism-chart", _edge_labels(g["edges"]), g["before"], g["after"]))
    parts.append('<table id="gptism-table"><tr><th>density</th><th>before</th><th>after</th></tr>')
    parts += [
        f"<tr><td>{_e(label)}</td><td class=n>{b}</td><td class=n>{a}</td></tr>"
        for label, b, a in zip(_edge_labels(g["edges"]), g["before"], g["after"], strict=True)
    ]
    parts.append("</table></section>")
    # Duplicate clusters
    parts.append(
        f'<section id="dup-clusters"><h2>Near-duplicate clusters</h2><p>{report["nearDuplicateClusters"]} clusters found; the first ones:</p>'
    )
    parts.append('<table id="dup-clusters-table"><tr><th>cluster</th><th>members (source index: text)</th></tr>')
    for n, cluster in enumerate(report["duplicateClusterExamples"], start=1):
        members = "".join(
            f"<div><b>#{m['source_index']}</b> <code>{_e(m['prompt'])}</code> → <code>{_e(m['response'])}</code></div>"
            for m in cluster
        )
        parts.append(f"<tr><td class=n>{n}</td><td>{members}</td></tr>")
    parts.append("</table></section>")
    parts += _score_sections(report)
    parts += _selection_section(report)
    parts += _steps_section(report)
    if report["notes"]:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{_e(n)}</li>" for n in report["notes"]) + "</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _score_sections(report: dict[str, Any]) -> list[str]:
    scores = report.get("scores") or {}
    if not scores:
        return []
    parts = [
        '<section id="scores"><h2>Scores of the judges</h2><p class=muted>Per record: judged (passed validation, grey) '
        "and curated (blue). Each judge's threshold is named under its chart; examples of the records it "
        "stopped are in the drops table.</p>"
    ]
    for key, h in scores.items():
        labels = _edge_labels(h["edges"])
        parts.append(f"<h3>{_e(key)}</h3>")
        parts.append(_paired_svg(f"score-{key}-chart", labels, h["before"], h["after"]))
        if h["thresholds"]:
            lines = "; ".join(f"{_e(t['reason'])} at {t['value']:g}" for t in h["thresholds"])
            parts.append(f"<p>Threshold: {lines}.</p>")
    parts.append("</section>")
    return parts


def _selection_section(report: dict[str, Any]) -> list[str]:
    sel = report.get("selection")
    if not sel:
        return []
    rows = [
        ("strategy", sel["strategy"]),
        ("pool (passed hygiene)", sel["pool"]),
        ("budget", sel["budget"]),
        ("selected", sel["selected"]),
        ("random control (control.jsonl)", sel["control"]),
        ("control seed", sel["controlSeed"]),
    ]
    if sel.get("diversityThreshold") is not None:
        rows.append(("diversity threshold (cosine)", sel["diversityThreshold"]))
        rows.append(("passed over for diversity", sel["passedOverForDiversity"]))
    body = "".join(f"<tr><td>{_e(k)}</td><td class=n>{_e(v)}</td></tr>" for k, v in rows)
    return [
        '<section id="selection"><h2>Selection</h2>'
        "<p>The best records by the strategy's score, in the pool's task mix; the rest are rejected as "
        "<code>selection.not_selected</code> with their score and rank. Train on control.jsonl too: it is the "
        "random A/B that tells whether the selection beat chance on your model.</p>",
        f'<table id="selection-table">{body}</table></section>',
    ]


def _steps_section(report: dict[str, Any]) -> list[str]:
    rows = "".join(
        f"<tr><td>{_e(s['name'])}</td><td>{_e(s['step'])}</td><td class=n>{s['seen']}</td>"
        f"<td class=n>{sum(s['stopped'].values())}</td><td class=n>{s['seconds']}</td>"
        f"<td class=n>{s['recordsPerSecond'] if s['recordsPerSecond'] is not None else ''}</td></tr>"
        for s in report["steps"]
    )
    return [
        '<section id="steps"><h2>Steps</h2><table id="steps-table"><tr><th>name</th><th>step</th><th>seen</th>'
        f"<th>stopped</th><th>seconds</th><th>records/s</th></tr>{rows}</table>",
        *_engine_lines(report.get("engine")),
        "</section>",
    ]


def _engine_lines(engine: dict[str, Any] | None) -> list[str]:
    """Which engine ran (one pod streaming its input, or Ray) and what each of its phases cost."""
    if not engine:
        return []
    phases = "".join(
        f"<tr><td>{_e(name)}</td><td class=n>{seconds}</td></tr>" for name, seconds in engine["phaseSeconds"].items()
    )
    resumed = engine.get("resumedPhases") or []
    return [
        f"<p id=engine>Engine <b>{_e(engine['type'])}</b>, {engine['workers']} worker(s), "
        f"{engine['shards']} shard(s) of {engine['shardRecords']} records"
        + (f"; resumed after {_e(', '.join(resumed))}" if resumed else "")
        + "</p>",
        f"<table id=engine-phases><tr><th>phase</th><th>seconds</th></tr>{phases}</table>",
    ]
