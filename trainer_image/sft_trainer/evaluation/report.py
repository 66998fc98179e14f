"""eval_report.json and eval_report.html: every figure per model with its interval, and base-vs-tuned deltas.

One model (`sftctl eval --model M`) gives one column ("model"); a base and a
tuned model give two columns and a delta per figure, computed by the paired
bootstrap over the prompts both models were scored on. Each figure appears
once, with a label a person reads, its 95% interval, the prompts behind it,
and (in the HTML) the interval drawn on a common axis. Skips, token-cap hits
and a suite that could not run are shown where they apply.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

from .stats import Estimate, paired_delta, ratio_estimate
from .suite import Figure, SuiteResult

REPORT_JSON = "eval_report.json"
REPORT_HTML = "eval_report.html"


def build_report(models: dict[str, str], results: dict[str, dict[str, SuiteResult]]) -> dict[str, Any]:
    """`models`: role (model, or base and tuned) -> label; `results`: role -> suite -> result."""
    roles = list(models)
    compare = roles == ["base", "tuned"]
    suites: dict[str, Any] = {}
    summary: dict[str, float] = {}
    for suite in _suite_names(results, roles):
        per_role = {role: results[role].get(suite) for role in roles}
        entry: dict[str, Any] = {
            "error": {role: r.error for role, r in per_role.items() if r is not None and r.error} or None,
            "skipped": {role: dict(r.skipped) for role, r in per_role.items() if r is not None},
            "counts": {role: r.counts for role, r in per_role.items() if r is not None},
            "figures": [],
            "examples": _examples(per_role),
        }
        figures = {role: {f.key: f for f in (r.figures if r else [])} for role, r in per_role.items()}
        for key in dict.fromkeys(k for role in roles for k in figures[role]):
            first = next(figures[role][key] for role in roles if key in figures[role])
            row: dict[str, Any] = {
                "key": key,
                "label": first.label,
                "unit": first.unit,
                "higherIsBetter": first.higher_is_better,
            }
            for role in roles:
                figure = figures[role].get(key)
                row[role] = _estimate(figure).to_json() if figure else None
            if compare and key in figures["base"] and key in figures["tuned"]:
                row["delta"] = _delta(figures["base"][key], figures["tuned"][key]).to_json()
                if row["delta"]["value"] is not None:
                    summary[f"{suite}{key[0].upper()}{key[1:]}Delta"] = row["delta"]["value"]
            for role in roles:
                if row[role] and row[role]["value"] is not None:
                    suffix = "" if role == "model" else role.capitalize()
                    summary[f"{suite}{key[0].upper()}{key[1:]}{suffix}"] = row[role]["value"]
            entry["figures"].append(row)
        suites[suite] = entry
    return {"models": models, "suites": suites, "summary": summary}


def _suite_names(results: dict[str, dict[str, SuiteResult]], roles: list[str]) -> list[str]:
    return list(dict.fromkeys(s for role in roles for s in results.get(role, {})))


def _estimate(figure: Figure) -> Estimate:
    return ratio_estimate(figure.numerators, figure.denominators)


def _delta(base: Figure, tuned: Figure) -> Estimate:
    common = [pid for pid in base.ids if pid in set(tuned.ids)]
    return paired_delta(base.pick(common), tuned.pick(common))


def _examples(per_role: dict[str, SuiteResult | None]) -> list[dict[str, Any]]:
    """Examples side by side: the same prompts' replies from each model."""
    roles = [role for role, r in per_role.items() if r is not None]
    if not roles:
        return []
    first = per_role[roles[0]]
    assert first is not None
    rows = []
    for example in first.examples:
        row = {k: v for k, v in example.items() if k != "response"}
        for role in roles:
            result = per_role[role]
            match = next((e for e in result.examples if e["id"] == example["id"]), None) if result else None
            row[role] = match["response"] if match else None
        rows.append(row)
    return rows


def write_report(out_dir: Path, report: dict[str, Any]) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / REPORT_JSON
    json_path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    html_path = out_dir / REPORT_HTML
    html_path.write_text(render_html(report), encoding="utf-8")
    return json_path, html_path


# ---------------------------------------------------------------------------
# HTML
# ---------------------------------------------------------------------------

SUITE_TITLES = {
    "ifeval": "Instruction following (IFEval)",
    "safety": "Safety: refusal and over-refusal",
    "reference": "Held-out human answers (reference NLL)",
    "style": "Chatbot style of the model's own replies",
    "forgetting": "Forgetting: general reference text",
}
# Counts and skip reasons a person reads; anything else is spelled out from its camelCase or snake_case.
WORDS = {
    "hitTokenCap": "replies cut at the token cap",
    "maxNewTokens": "token cap",
    "newTokens": "tokens generated",
    "generationSeconds": "generation time (s)",
    "prompt_too_long": "prompt longer than the context",
    "non_finite_nll": "likelihood not finite",
    "empty_answer": "empty answer",
}


def spelled_out(key: str) -> str:
    """`hitTokenCap` -> its label; `advbench_heldoutPrompts` -> "advbench heldout prompts"."""
    if key in WORDS:
        return WORDS[key]
    for known, words in WORDS.items():
        if key.endswith(known[0].upper() + known[1:]):
            return f"{spelled_out(key[: -len(known)])} {words}"
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", key).replace("_", " ").replace(".", ": ").lower()


def _verdict_html(report: dict[str, Any]) -> str:
    """Gates and regressions first: what decides whether the tuned model ships."""
    esc = html.escape
    parts = []
    gates = report.get("gates")
    if gates is not None:
        if not gates["results"]:
            parts.append("<p id='gates'>No gates set (training.evaluation.gates).</p>")
        else:
            verdict = "every gate passed" if gates["passed"] else "a gate failed: the export is not promoted"
            items = "".join(
                f"<li class='{'better' if r['passed'] else 'worse'}'>{esc(r['message'])}</li>" for r in gates["results"]
            )
            parts.append(f"<div id='gates'><h2>Gates: {verdict}</h2><ul>{items}</ul></div>")
    found = report.get("regressions")
    if found:
        items = "".join(
            f"<li>{esc(r['label'])}: {esc(_fmt({'value': r['delta'], 'low': r['low'], 'high': r['high']}, r['unit'], signed=True))}</li>"
            for r in found
        )
        parts.append(
            f"<div id='regressions'><h2>Regressed (interval wholly on the worse side)</h2><ul class='worse'>{items}</ul></div>"
        )
    return "".join(parts)


_COLOURS = {"model": "#1f77b4", "base": "#7f7f7f", "tuned": "#1f77b4"}
_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:75em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{padding:.3em .7em;border-bottom:1px solid #ddd;
text-align:left;vertical-align:top}th{background:#f4f4f4}.num{font-variant-numeric:tabular-nums;white-space:nowrap}
.better{color:#1a7f37}.worse{color:#cf222e}.note{color:#666;font-size:.9em}pre{white-space:pre-wrap;margin:0;
font-size:.85em;max-height:14em;overflow:auto}.error{color:#cf222e}
"""


def _fmt(estimate: dict[str, Any] | None, unit: str, signed: bool = False) -> str:
    if not estimate or estimate["value"] is None:
        return "n/a"
    scale, suffix, digits = (100.0, " %", 1) if unit == "rate" else (1.0, "", 3)
    sign = "+" if signed else ""
    value = f"{estimate['value'] * scale:{sign}.{digits}f}{suffix}"
    if estimate["low"] is None:
        return value
    return f"{value} [{estimate['low'] * scale:{sign}.{digits}f}, {estimate['high'] * scale:{sign}.{digits}f}]"


def _axis(rows: list[dict[str, Any]], roles: list[str]) -> tuple[float, float]:
    if all(r["unit"] == "rate" for r in rows):
        return 0.0, 1.0
    points = [
        v for r in rows for role in roles if r.get(role) for v in (r[role]["low"], r[role]["high"]) if v is not None
    ]
    if not points:
        return 0.0, 1.0
    low, high = min(points), max(points)
    pad = (high - low) * 0.1 or 0.5
    return low - pad, high + pad


def _interval_svg(row: dict[str, Any], roles: list[str], axis: tuple[float, float]) -> str:
    """Each model's interval as a bar with a dot at the value, on the suite's common axis."""
    width, lane = 260, 12
    low, high = axis

    def x(v: float) -> float:
        return 5 + (width - 10) * (min(max(v, low), high) - low) / (high - low)

    height = lane * len(roles) + 16
    scale, digits = (100.0, 0) if row["unit"] == "rate" else (1.0, 2)
    parts = [
        f'<svg width="{width}" height="{height}" role="img">',
        f'<line x1="5" x2="{width - 5}" y1="{height - 12}" y2="{height - 12}" stroke="#bbb"/>',
        f'<text x="5" y="{height - 1}" font-size="9" fill="#666">{low * scale:.{digits}f}</text>',
        f'<text x="{width - 5}" y="{height - 1}" font-size="9" fill="#666" text-anchor="end">{high * scale:.{digits}f}</text>',
    ]
    for i, role in enumerate(roles):
        est = row.get(role)
        if not est or est["value"] is None:
            continue
        y = 8 + i * lane
        colour = _COLOURS.get(role, "#1f77b4")
        if est["low"] is not None:
            parts.append(
                f'<line x1="{x(est["low"]):.1f}" x2="{x(est["high"]):.1f}" y1="{y}" y2="{y}" '
                f'stroke="{colour}" stroke-width="3"><title>{role}</title></line>'
            )
        parts.append(f'<circle cx="{x(est["value"]):.1f}" cy="{y}" r="4" fill="{colour}"/>')
    parts.append("</svg>")
    return "".join(parts)


def render_html(report: dict[str, Any]) -> str:
    models: dict[str, str] = report["models"]
    roles = list(models)
    esc = html.escape
    out = [
        "<!doctype html><html><head><meta charset='utf-8'><title>Evaluation report</title>",
        f"<style>{_STYLE}</style></head><body><h1>Evaluation report</h1>",
        "<p>" + ", ".join(f"<b>{esc(role)}</b>: {esc(label)}" for role, label in models.items()) + "</p>",
        "<p class='note'>Every figure with its 95% bootstrap interval over prompts; deltas (tuned minus base) "
        "use the paired bootstrap over the prompts both models answered. Bars: grey = base, blue = tuned.</p>",
    ]
    out.append(_verdict_html(report))
    for suite, entry in report["suites"].items():
        out.append(f"<section id='suite-{esc(suite)}'><h2>{esc(SUITE_TITLES.get(suite, suite))}</h2>")
        if entry.get("error"):
            for role, message in entry["error"].items():
                out.append(f"<p class='error'>{esc(role)}: not run: {esc(message)}</p>")
        rows = entry["figures"]
        if rows:
            axis = _axis(rows, roles)
            head = "".join(f"<th>{esc(role)}</th>" for role in roles)
            delta_head = "<th>delta</th>" if "delta" in rows[0] else ""
            out.append(f"<table><tr><th>figure</th>{head}{delta_head}<th>interval</th></tr>")
            for row in rows:
                cells = "".join(f"<td class='num'>{_fmt(row.get(role), row['unit'])}</td>" for role in roles)
                if "delta" in row:
                    d = row["delta"]
                    tone = ""
                    if d["low"] is not None and (d["low"] > 0 or d["high"] < 0):
                        tone = "better" if (d["low"] > 0) == row["higherIsBetter"] else "worse"
                    cells += f"<td class='num {tone}'>{_fmt(d, row['unit'], signed=True)}</td>"
                direction = "higher is better" if row["higherIsBetter"] else "lower is better"
                out.append(
                    f"<tr><td>{esc(row['label'])}<br><span class='note'>{direction}</span></td>{cells}"
                    f"<td>{_interval_svg(row, roles, axis)}</td></tr>"
                )
            out.append("</table>")
        notes = []
        for role, counts in entry.get("counts", {}).items():
            if not counts and not entry.get("skipped", {}).get(role):
                continue  # a suite that did not run: its error says why
            facts = ", ".join(f"{spelled_out(k)}: {v}" for k, v in counts.items())
            skipped = entry.get("skipped", {}).get(role) or {}
            skips = ", ".join(f"{spelled_out(k)}: {v}" for k, v in skipped.items()) or "none"
            notes.append(f"<li>{esc(role)}: {esc(facts)}; not scored: {esc(skips)}</li>")
        if notes:
            out.append("<ul class='note'>" + "".join(notes) + "</ul>")
        if entry.get("examples"):
            out.append("<h3>Examples</h3><table><tr><th>prompt</th>")
            out.append("".join(f"<th>{esc(role)}</th>" for role in roles) + "</tr>")
            for example in entry["examples"]:
                cells = "".join(f"<td><pre>{esc(str(example.get(role) or ''))}</pre></td>" for role in roles)
                out.append(f"<tr><td><pre>{esc(example.get('prompt', ''))}</pre></td>{cells}</tr>")
            out.append("</table>")
        out.append("</section>")
    out.append("</body></html>")
    return "\n".join(out)
