"""lineage.json: what a stage started from and what it trained, so the next stage can check and build on it.

Every run writes it next to its exports when it finishes:

    {"stage": "domain", "baseModel": "/mnt/volumes/models/smollm2", "method": "lora",
     "exports": ["adapter", "merged"], "template": "auto", "endOfTurn": "<|im_end|>", "endOfTurnId": 2,
     "stages": [{"baseModel": "/mnt/volumes/models/smollm2"},
                {"stage": "general", "method": "lora", "finalEvalLoss": 1.41, ...},
                {"stage": "domain", "use": "adapter", "method": "lora", "finalEvalLoss": 1.22, ...}]}

A chained run (run config `parent`) reads its parent's lineage.json before it
loads a single weight (`read_parent`): it must be the lineage of the stage the
operator resolved, from the same base model, with the export `use` needs. The
tokenizer and chat template come from that export (`tokenizer_folder`), and the
end of turn of the template this run trains with must be the one the parent
trained (`check_end_of_turn`): otherwise the model would stop where it never
learned to.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from ..config import ParentStage, TrainRunConfig
from ..runconfig import ConfigError

LINEAGE_FILE = "lineage.json"
REF_FIELD = "model.sftJobRef"
# The figures each stage shows side by side in the report (train_report.json status.metrics names).
STAGE_FIGURES = ("initialEvalLoss", "finalEvalLoss", "bestEvalLoss", "finalLoss", "optimizerSteps", "trainSamples")


def needed_export(use: str, method: str) -> str:
    """The export folder a `use` starts from: the adapter, or the merged (LoRA) / whole (full) model."""
    if use == "adapter":
        return "adapter"
    return "merged" if method == "lora" else "model"


def read_parent(parent: ParentStage) -> dict[str, Any]:
    """The parent's lineage.json, checked against what the operator resolved; ConfigError naming the field."""
    path = Path(parent.output_dir) / LINEAGE_FILE
    where = f"{REF_FIELD} (SFTJob {parent.name})"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise ConfigError(
            f"{where}: {path} does not exist: the stage did not finish there, or its output was removed"
        ) from err
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"{where}: {path} cannot be read: {err}") from err
    if not isinstance(record, dict):
        raise ConfigError(f"{where}: {path} is not a JSON object")
    if record.get("stage") != parent.name:
        raise ConfigError(
            f"{where}: {path} is the lineage of stage {record.get('stage')!r}: another run wrote that output folder"
        )
    if record.get("baseModel") != parent.base_model:
        raise ConfigError(
            f"{where}: that stage trained from base model {record.get('baseModel')!r}, "
            f"not {parent.base_model!r} as its chain says: nothing is trained on the wrong weights"
        )
    export = needed_export(parent.use, str(record.get("method")))
    if export not in (record.get("exports") or []) or not (Path(parent.output_dir) / export).is_dir():
        raise ConfigError(
            f"{where}: use {parent.use} needs its {export}/ export, which it did not write "
            f"(it exported {', '.join(record.get('exports') or []) or 'nothing'})"
        )
    for adapter in parent.adapters:
        if not (Path(adapter) / "adapter_config.json").is_file():
            raise ConfigError(f"{where}: adapter {adapter} of the chain has no adapter_config.json")
    return record


def tokenizer_folder(parent: ParentStage, record: dict[str, Any]) -> Path:
    """The export this run starts from: it carries the tokenizer with the template the parent trained with."""
    return Path(parent.output_dir) / needed_export(parent.use, str(record.get("method")))


def check_end_of_turn(parent: ParentStage, record: dict[str, Any], end_of_turn: str, end_of_turn_id: int) -> None:
    """The masking preflight of a chained run: its template ends turns with the token the parent trained."""
    trained = (record.get("endOfTurn"), record.get("endOfTurnId"))
    if trained != (end_of_turn, end_of_turn_id):
        raise ConfigError(
            f"training.template: this run's template ends turns with {end_of_turn!r} (id {end_of_turn_id}), "
            f"but SFTJob {parent.name} ({REF_FIELD}) trained {trained[0]!r} (id {trained[1]}): keep its template "
            "(name: auto) or choose one with the same end of turn"
        )


def build_lineage(cfg: TrainRunConfig, report: dict[str, Any]) -> dict[str, Any]:
    """This run's lineage.json: the parent's stages (re-read: it is on a read-only claim), then this one."""
    metrics = report["status"]["metrics"]
    stage: dict[str, Any] = {"stage": cfg.name, "method": report["method"]}
    if cfg.parent is not None:
        stage["use"] = cfg.parent.use
    stage.update({name: metrics[name] for name in STAGE_FIGURES if name in metrics})
    if cfg.parent is not None:
        base_model = cfg.parent.base_model
        below = list(read_parent(cfg.parent).get("stages") or [])
    else:
        base_model, below = cfg.model, [{"baseModel": cfg.model}]
    environment = report.get("environment") or {}
    return {
        "stage": cfg.name,
        "baseModel": base_model,
        "method": report["method"],
        "exports": sorted(report.get("exports") or {}),
        "template": environment.get("template"),
        "endOfTurn": environment.get("endOfTurn"),
        "endOfTurnId": environment.get("endOfTurnId"),
        "stages": [*below, stage],
    }


def write_lineage(output_dir: Path, record: dict[str, Any]) -> Path:
    path = output_dir / LINEAGE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)  # a later stage never reads half a file
    return path


def lineage_html(stages: list[dict[str, Any]]) -> str:
    """The report's `#lineage` table: the base model, then each stage, side by side, one row per figure."""
    if len(stages) < 2:
        return ""
    names = [html.escape(str(s.get("stage") or "base model")) for s in stages]
    head = "".join(f"<th>{name}</th>" for name in names)
    rows = [("base model", [html.escape(str(s.get("baseModel", ""))) for s in stages])]
    rows.append(("started from", ["", *(html.escape(str(s.get("use") or "base model")) for s in stages[1:])]))
    rows.append(("method", ["", *(html.escape(str(s.get("method", ""))) for s in stages[1:])]))
    for figure in STAGE_FIGURES:
        rows.append((figure, ["", *(_number(s.get(figure)) for s in stages[1:])]))
    body = "".join(
        f"<tr><td>{html.escape(label)}</td>{''.join(f'<td>{cell}</td>' for cell in cells)}</tr>"
        for label, cells in rows
    )
    return (
        "<h2>Lineage</h2><p>The stages this model was trained through, the base model first; "
        "each stage's figures on its own held-out split.</p>"
        f'<table id="lineage"><thead><tr><th>figure</th>{head}</tr></thead><tbody>{body}</tbody></table>'
    )


def _number(value: Any) -> str:
    if value is None:
        return ""
    return f"{value:.4g}" if isinstance(value, float) else html.escape(str(value))
