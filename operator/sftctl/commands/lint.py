"""`sftctl lint DATASET --model PATH [-n 5]`: the preflight before training.

Builds every record exactly as training would (chat template, segment-based
masks, verification), prints N samples with trained tokens highlighted and
masked tokens dimmed, and a summary: token counts, fraction trained,
truncations, BOS/EOS violations, rejections by reason, template used.
Exit code 1 when nothing at all would be trained.
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("lint", help="preflight a dataset against a model's tokenizer and chat template")
    parser.add_argument("dataset", help="dataset file (Alpaca, ShareGPT or messages; JSON, JSONL or Parquet)")
    parser.add_argument("--model", required=True, help="model folder (its tokenizer and chat template are used)")
    parser.add_argument("-n", "--samples", type=int, default=5, help="rendered samples to show (default 5)")
    parser.add_argument("--format", default="auto", choices=["auto", "alpaca", "sharegpt", "messages"])
    parser.add_argument("--template", default="auto", choices=["auto", "chatml", "llama3", "alpaca"])
    parser.add_argument("--loss-on", default="assistant", choices=["assistant", "all", "last"])
    parser.add_argument("--max-seq-length", type=int, default=2048)
    parser.add_argument("--overlong", default="reject", choices=["reject", "truncate_prompt"])
    parser.add_argument("--json", action="store_true", help="print the summary as JSON only")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    import json

    from rich.console import Console
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    from sft_trainer.runconfig import ConfigError
    from sft_trainer.training.lint import lint_dataset, token_pieces
    from sft_trainer.training.templates import TemplateError

    console = Console()
    try:
        report = lint_dataset(
            args.dataset,
            args.model,
            format=args.format,
            template=args.template,
            loss_on=args.loss_on,
            max_seq_length=args.max_seq_length,
            overlong=args.overlong,
            show=args.samples,
        )
    except (ConfigError, TemplateError, OSError) as err:
        console.print(f"[bold red]error:[/] {err}")
        return 2
    summary = report.summary()
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0 if report.trained_tokens else 1

    legend = Text.assemble(("trained", "bold black on green"), "  ", ("masked", "dim"), "  (↵ is a newline)")
    console.print(legend)
    for sample in report.samples:
        text = Text()
        for piece, trained in token_pieces(report.tokenizer, sample):
            shown = piece.replace("\n", "↵\n")
            text.append(shown, style="bold black on green" if trained else "dim")
        title = f"record {sample.source_index}: {len(sample.input_ids)} tokens, {sample.num_trained} trained"
        console.print(
            Panel(text, title=title + (" (prompt truncated)" if sample.truncated else ""), title_align="left")
        )
    for rejection in report.rejected_examples:
        console.print(
            f"[yellow]rejected[/] record {rejection.source_index}: [bold]{rejection.reason}[/] {rejection.detail}"
        )

    table = Table(title="Summary", show_header=False)
    rows = [
        ("template", f"{summary['template']} (end of turn {summary['endOfTurn']!r}, BOS {summary['bosToken']!r})"),
        ("records", summary["records"]),
        ("samples built", summary["samples"]),
        ("tokens (mean / longest)", f"{summary['tokens']} ({summary['meanTokens']} / {summary['longest']})"),
        ("trained tokens", f"{summary['trainedTokens']} ({100 * summary['trainedFraction']:.1f}%)"),
        ("truncated (prompt side)", summary["truncated"]),
        ("BOS violations", summary["bosViolations"]),
        ("EOS violations", summary["eosViolations"]),
        ("rejected", summary["rejected"]),
    ]
    rows += [(f"  {reason}", count) for reason, count in summary["rejectedByReason"].items()]
    for key, value in rows:
        table.add_row(key, str(value))
    console.print(table)
    return 0 if report.trained_tokens else 1
