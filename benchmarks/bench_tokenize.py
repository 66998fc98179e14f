"""Tokenisation and loss masking of all 52k raw Alpaca records: ours against TRL's own dataset preparation.

    .venv/bin/python benchmarks/bench_tokenize.py [--data ../shared/data/alpaca_data.json]
        [--model .cache/models/smollm2-135m-instruct] [--repeats 3] [--limit N]

Both sides start from the JSON file and end with input_ids + labels (loss on
the response only) for every record, with the model's own chat template
(SmolLM2's). Ours: formats.read_dataset + SampleBuilder.build_many (segment
tokenisation, verification of every sample). TRL: the same records as
conversational prompt/completion pairs through SFTTrainer._prepare_dataset
(completion_only_loss, which is how TRL masks prompts when the template has
no generation markers), single process as TRL defaults, and with
dataset_num_proc equal to the CPU count. Medians of --repeats runs, all in
this process, same machine, same run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "trainer_image"), str(REPO / "operator")]


def ours(data: Path, model: Path, limit: int | None) -> tuple[float, int, int]:
    """Seconds, samples built, trained tokens."""
    from transformers import AutoTokenizer

    from sft_trainer.formats import Conversation, read_dataset
    from sft_trainer.training.masking import Sample, SampleBuilder
    from sft_trainer.training.templates import resolve_template

    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(model)
    builder = SampleBuilder(tokenizer, resolve_template(tokenizer), max_seq_length=1_000_000)
    conversations = [c for c in read_dataset(data) if isinstance(c, Conversation)][:limit]
    built = trained = 0
    for item in builder.build_many(conversations):
        if isinstance(item, Sample):
            built += 1
            trained += item.num_trained
    return time.perf_counter() - start, built, trained


def trl(data: Path, model: Path, limit: int | None, num_proc: int | None) -> tuple[float, int, int]:
    import datasets
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    datasets.disable_progress_bars()
    datasets.disable_caching()
    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(model)
    records = json.loads(data.read_text(encoding="utf-8"))[:limit]
    rows = []
    for r in records:
        prompt = r["instruction"] + ("\n\n" + r["input"] if r.get("input") else "")
        rows.append(
            {
                "prompt": [{"role": "user", "content": prompt}],
                "completion": [{"role": "assistant", "content": r["output"]}],
            }
        )
    dataset = datasets.Dataset.from_list(rows)
    # TRL's own preparation code, without loading a model: the trainer state it reads is set by hand.
    trainer = SFTTrainer.__new__(SFTTrainer)
    trainer._tokenizer = tokenizer
    trainer.chat_template = None
    trainer.completion_only_loss = True
    args = SFTConfig(
        output_dir="/tmp/bench-trl-tokenize",
        completion_only_loss=True,
        max_length=None,
        dataset_num_proc=num_proc,
        report_to=[],
        bf16=False,
        use_cpu=True,
    )
    prepared = SFTTrainer._prepare_dataset(trainer, dataset, tokenizer, args, False, None, "train")
    trained = sum(sum(1 for t in labels if t != -100) for labels in prepared["labels"])
    return time.perf_counter() - start, len(prepared), trained


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "alpaca_data.json")
    parser.add_argument("--model", type=Path, default=REPO / ".cache" / "models" / "smollm2-135m-instruct")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--limit", type=int, default=None, help="only the first N records")
    args = parser.parse_args()
    if not (args.model / "tokenizer.json").is_file():
        sys.exit(f"{args.model} missing: run python -m sft_trainer.modelprep --out {args.model}")

    cpus = os.cpu_count() or 1
    contenders = {
        "ours (segment masks + verification)": lambda: ours(args.data, args.model, args.limit),
        "TRL SFTTrainer._prepare_dataset (1 proc)": lambda: trl(args.data, args.model, args.limit, None),
        f"TRL SFTTrainer._prepare_dataset ({cpus} procs)": lambda: trl(args.data, args.model, args.limit, cpus),
    }
    results: dict[str, list[tuple[float, int, int]]] = {name: [] for name in contenders}
    for repeat in range(args.repeats):
        for name, run in contenders.items():  # interleaved, so background load hits every contender alike
            results[name].append(run())
            seconds, built, trained = results[name][-1]
            print(
                f"  run {repeat + 1}: {name}: {seconds:.2f}s, {built} samples, {trained} trained tokens",
                file=sys.stderr,
            )

    base = statistics.median(s for s, _, _ in results[next(iter(contenders))])
    print(f"\nTokenisation + masking of {args.data.name} (medians of {args.repeats} runs, {cpus} CPUs)\n")
    print(
        f"| {'pipeline':<44} | {'seconds':>8} | {'records/s':>10} | {'samples':>8} | {'trained tokens':>14} | {'time / ours':>11} |"
    )
    print(f"|{'-' * 46}|{'-' * 10}|{'-' * 12}|{'-' * 10}|{'-' * 16}|{'-' * 13}|")
    for name, runs in results.items():
        seconds = statistics.median(s for s, _, _ in runs)
        _, built, trained = runs[-1]
        records = args.limit or built
        print(
            f"| {name:<44} | {seconds:>8.2f} | {records / seconds:>10.0f} | {built:>8} | {trained:>14} | "
            f"{seconds / base:>10.2f}x |"
        )


if __name__ == "__main__":
    main()
