"""Run a curation from its run config: read, curate, write the five outputs, prove nothing was lost.

Outputs in `output_dir`: curated.jsonl (canonical records with source_index,
task and scores), rejected.jsonl (source_index, reasons, the original
record), review.jsonl (canonical records held for review, with reasons),
report.json (its `status` block is what the operator copies into the
DatasetCuration status) and report.html; with a selection also control.jsonl
(the random control of the same size and task mix; not part of the partition).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from ..config import EXIT_CONFIG_ERROR
from ..config.curation import CurationRunConfig
from ..cpus import usable_cpus
from ..formats import DatasetReadError
from ..paths import check_run_paths
from ..progress import ProgressServer
from ..runconfig import ConfigError
from ..termination import write_termination_summary
from .allocator import map_large_blocks
from .report import build_report, render_html
from .runner import AccountingError
from .shards import InputShards
from .streaming import StreamingEngine, curate_in_shards

# The accounting check failed: a bug, not a configuration problem.
EXIT_ACCOUNTING_ERROR = 3

OUTPUT_FILES = ("curated.jsonl", "rejected.jsonl", "review.jsonl", "report.json", "report.html")


def verify_accounting(out: Path, input_count: int) -> None:
    """Read the written files back: every source_index 0..input_count-1 in exactly one of them."""
    where: dict[int, str] = {}
    problems: list[str] = []
    for name in ("curated.jsonl", "rejected.jsonl", "review.jsonl"):
        with (out / name).open(encoding="utf-8") as handle:
            for line_no, line in enumerate(handle, start=1):
                index = json.loads(line)["source_index"]
                if index in where:
                    problems.append(f"source_index {index} is in both {where[index]} and {name} (line {line_no})")
                where[index] = name
    missing = sorted(set(range(input_count)) - set(where))
    extra = sorted(set(where) - set(range(input_count)))
    if missing:
        problems.append(f"{len(missing)} input records are in no output, first source_index {missing[:5]}")
    if extra:
        problems.append(f"outputs hold source_index values that were never read: {extra[:5]}")
    if problems:
        raise AccountingError("; ".join(problems[:5]))


def run_from_config(
    cfg: CurationRunConfig, on_progress: Callable[[str, int, int], None] | None = None, workers: int | None = None
) -> int:
    """Curate `cfg.input` into `cfg.output_dir`; returns the process exit code.

    `workers`: processes for the per-record steps; by default every CPU this process may use.
    """
    started = time.perf_counter()
    map_large_blocks()  # freed shard arrays go back to the OS: the peak follows the compact state
    server = _progress_server(cfg.progress_port)
    progress = _reporting(on_progress, server, started)
    try:
        code = _run(cfg, progress, workers, started)
    finally:
        if server is not None:
            server.update(phase="finished")
            server.stop()
    return code


def _progress_server(port: int | None) -> ProgressServer | None:
    """The pod's /progress and /metrics (the operator polls the first, Prometheus scrapes the second)."""
    if port is None:
        return None
    return ProgressServer(prefix="sft_curation", port=port).start()


def _reporting(
    on_progress: Callable[[str, int, int], None] | None, server: ProgressServer | None, started: float
) -> Callable[[str, int, int], None]:
    """The progress callback, also published on the pod's progress server with a rate and an ETA for the stage."""
    stage_started: dict[str, float] = {}

    def report(stage: str, done: int, total: int) -> None:
        if on_progress is not None:
            on_progress(stage, done, total)
        if server is None:
            return
        now = time.perf_counter()
        begun = stage_started.setdefault(stage, now)
        rate = done / (now - begun) if done and now > begun else None
        server.update(
            phase=stage,
            done=done,
            total=total,
            percent=round(100.0 * done / total, 1) if total else None,
            recordsPerSecond=round(rate, 1) if rate else None,
            etaSeconds=round((total - done) / rate, 1) if rate else None,
            elapsedSeconds=round(now - started, 1),
        )

    return report


def _run(cfg: CurationRunConfig, progress: Callable[[str, int, int], None], workers: int | None, started: float) -> int:
    out = Path(cfg.output_dir)
    try:
        check_run_paths({"input": cfg.input, "tokenizer": cfg.tokenizer}, "outputDir", cfg.output_dir)
    except ConfigError as err:
        print(f"Configuration error: {err}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    try:
        progress("read", 0, 1)
        shards = InputShards(cfg.input, cfg.format, max_records=cfg.curation.max_records)
        progress("read", 1, 1)
    except (DatasetReadError, ValueError) as err:
        print(f"Cannot read the dataset: {err}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    tokenizer = None
    if cfg.tokenizer:
        from .tokens import TokenizerView

        try:
            tokenizer = TokenizerView.load(cfg.tokenizer)
        except (OSError, ValueError) as err:
            print(f"Cannot load the tokenizer from tokenizer={cfg.tokenizer!r}: {err}", file=sys.stderr)
            return EXIT_CONFIG_ERROR
    try:
        result, engine = curate_in_shards(
            cfg, shards, tokenizer, progress, workers=workers or usable_cpus(), engine_class=_engine_class(cfg)
        )
        verify_accounting(out, result.input_count)
    except ConfigError as err:  # a model folder of the spec that cannot be loaded
        print(f"Configuration error: {err}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    except AccountingError as err:
        print(f"Curation lost or duplicated records, outputs in {out} are not trustworthy: {err}", file=sys.stderr)
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.json").write_text(json.dumps({"error": str(err)}, indent=2), encoding="utf-8")
        return EXIT_ACCOUNTING_ERROR
    report = build_report(
        result, input_path=cfg.input, seconds=time.perf_counter() - started, config=cfg.curation.to_wire()
    )
    report["engine"] = engine.describe()
    (out / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
    (out / "report.html").write_text(render_html(report), encoding="utf-8")
    write_termination_summary(report["status"])  # how the operator gets the figures (it cannot read the volume)
    engine.clean_up()
    progress("write", 1, 1)
    return 0


def _engine_class(cfg: CurationRunConfig) -> type[StreamingEngine]:
    """One pod streams the input in shards; `engine.type: ray` runs the same phases on a Ray cluster."""
    if cfg.curation.engine.type == "ray":
        from .ray_engine import RayEngine

        return RayEngine
    return StreamingEngine
