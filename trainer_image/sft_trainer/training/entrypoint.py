"""`run_from_config`: what `python -m sft_trainer train CONFIG` and `sftctl train` call.

Returns the process exit code: 0 on success, EXIT_CONFIG_ERROR (42) for a
configuration that can never work (the Job fails at once instead of
retrying), 1 for anything else (the Job retries, and the retry resumes from
the newest checkpoint).
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config import EXIT_CONFIG_ERROR, TrainRunConfig
from ..paths import check_run_paths
from ..runconfig import ConfigError
from .parallel import launched_as_rank_zero
from .session import Reporter

log = logging.getLogger("sft_trainer.training")


def _configure_logging() -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)


def run_from_config(cfg: TrainRunConfig, on_progress: Callable[[dict[str, Any]], None] | None = None) -> int:
    """Train as configured, write the outputs and reports into cfg.output_dir; returns the exit code."""
    _configure_logging()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    server = None
    if cfg.progress_port is not None and launched_as_rank_zero():
        from ..progress import ProgressServer

        server = ProgressServer(prefix="sft_train", port=cfg.progress_port).start()
        log.info("Serving /progress and /metrics on %s:%d", server.host, server.port)
    reporter = Reporter(server, on_progress)
    try:
        check_run_paths(
            {"model": cfg.model, "dataset": cfg.dataset, "training.refusal.dataset": cfg.training.refusal.dataset},
            "outputDir",
            cfg.output_dir,
        )
        if cfg.training.method == "lora":
            from .lora import run
        else:
            from .full import run
        result = run(cfg, reporter)
        from ..evaluation.after_training import evaluate_after_training
        from ..termination import write_termination_summary
        from .lineage import build_lineage, write_lineage
        from .report import build_report, write_reports

        report = build_report(result, cfg.to_wire())
        if result.exports:  # what the next stage of a chain checks and builds on, and the report's lineage
            lineage = build_lineage(cfg, report)
            report["lineage"] = lineage["stages"]
            write_lineage(Path(cfg.output_dir), lineage)
        if result.exports:  # the main process (the only one that exports) writes the reports
            write_reports(Path(cfg.output_dir), report)  # the artifacts and their report are safe before evaluating
            if cfg.training.evaluation.enabled:
                reporter.phase("evaluating")
                report["status"]["evaluation"] = evaluate_after_training(
                    cfg, Path(result.model_folder), result.exports, result.held_out
                )
                write_reports(Path(cfg.output_dir), report)
            write_termination_summary(report["status"])  # the operator reads it from the pod
        reporter.update(phase="succeeded", **report["status"]["progress"])
        log.info("Finished: %s", ", ".join(f"{k}={v:.4g}" for k, v in sorted(report["status"]["metrics"].items())))
        return 0
    except ConfigError as err:
        reporter.update(phase="failed", error=str(err))
        print(f"Configuration error: {err}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    except Exception as err:  # any other failure: the Job retries and resumes from the newest checkpoint
        reporter.update(phase="failed", error=f"{type(err).__name__}: {err}")
        traceback.print_exc()
        return 1
    finally:
        if server is not None:
            server.stop()
