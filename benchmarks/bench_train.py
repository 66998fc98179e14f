"""Training throughput: our LoRA and full fine-tuning recipes against TRL's SFTTrainer, same run, same config.

    .venv/bin/python benchmarks/bench_train.py                 # CPU: small Llama, always works
    .venv/bin/python benchmarks/bench_train.py --size 1b       # GPU: 1B-class Llama (LoRA + full)
    .venv/bin/python benchmarks/bench_train.py --size 8b --methods lora   # GPU: 8B-class Llama, LoRA
    options: --steps 8 --warmup 2 --repeats 1 --seq 512 --batch 4 --skip-trl

The model is a Llama built from a config (random weights, SmolLM2's tokenizer
and chat template), trained on Alpaca-GPT-4 records (../shared/data) with
packing and loss on responses only. Each contender runs in its own child
process (clean memory peaks), interleaved per repeat; figures are medians
over the timed steps (after --warmup steps) and over repeats.

Reported: non-pad tokens per second; MFU = 6 * N * tokens/s / peak FLOP/s,
where N counts the parameters that take part in matmuls (all but an untied
input embedding) and is the *same N for LoRA and full fine-tuning* (LoRA's
backward skips the frozen weights' gradients, so its true utilisation is
lower than this counts; we count it the same way as TRL users do); attention
score FLOPs are not counted. Peak = 989 TFLOP/s (H100/H200 dense bf16) unless
--peak-tflops is given; on CPU MFU is not reported. Peak GPU memory is
torch.cuda.max_memory_allocated.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "trainer_image"), str(REPO / "operator"), str(Path(__file__).parent)]

from train_models import SIZES, build_model, matmul_parameters  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "alpaca_gpt4_en_demo_llamafactory.json"
TOKENIZER = REPO / ".cache" / "models" / "smollm2-135m-instruct"


# ---------------------------------------------------------------------------
# Children: one contender, one process; prints one JSON line
# ---------------------------------------------------------------------------


def child_ours(args: argparse.Namespace, model_dir: Path) -> dict:
    import torch

    from sft_trainer.config import TrainRunConfig
    from sft_trainer.training.entrypoint import run_from_config

    with tempfile.TemporaryDirectory(prefix="bench-ours-") as out:
        cfg = TrainRunConfig.model_validate(
            {
                "model": str(model_dir),
                "dataset": str(DATA),
                "outputDir": out,
                "training": {
                    "method": args.method,
                    "packing": True,
                    "maxSeqLength": args.seq,
                    "batchSize": args.batch,
                    "maxSteps": args.warmup + args.steps,
                    "evalFraction": 0,
                    "checkpointEverySteps": 10_000,
                    "gradientCheckpointing": args.gradient_checkpointing,
                    "attention": "sdpa",
                    "refusal": {"enabled": False},
                    "probes": {"memorisationPrompts": 0, "forgetting": False, "safety": False},
                },
            }
        )
        if run_from_config(cfg) != 0:
            raise SystemExit("our run failed")
        report = json.loads((Path(out) / "train_report.json").read_text())
    timed = report["training"]["history"][args.warmup :]
    return {
        "tokensPerSecond": statistics.median(h["tokensPerSecond"] for h in timed),
        "peakMemoryGiB": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None,
    }


def child_trl(args: argparse.Namespace, model_dir: Path) -> dict:
    import datasets
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    datasets.disable_progress_bars()
    on_gpu = torch.cuda.is_available()
    records = json.loads(DATA.read_text(encoding="utf-8"))
    rows = [
        {
            "prompt": [{"role": "user", "content": r["instruction"] + ("\n\n" + r["input"] if r.get("input") else "")}],
            "completion": [{"role": "assistant", "content": r["output"]}],
        }
        for r in records
    ]
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(
        model_dir,
        dtype=torch.bfloat16 if on_gpu and args.method == "lora" else torch.float32,
        attn_implementation="sdpa",
    )
    peft_config = None
    if args.method == "lora":
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM"
        )
    config = SFTConfig(
        output_dir=tempfile.mkdtemp(prefix="bench-trl-"),
        max_length=args.seq,
        packing=True,
        completion_only_loss=True,
        per_device_train_batch_size=args.batch,
        gradient_accumulation_steps=1,
        learning_rate=2e-4 if args.method == "lora" else 1e-5,
        lr_scheduler_type="cosine",
        warmup_steps=0.03,  # a float is a ratio (transformers 5)
        max_steps=args.warmup + args.steps,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        bf16=on_gpu,
        use_cpu=not on_gpu,
        gradient_checkpointing=args.gradient_checkpointing,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=datasets.Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    tokens: list[int] = []
    collate = trainer.data_collator

    def counting_collator(features):  # type: ignore[no-untyped-def]
        batch = collate(features)
        mask = batch.get("attention_mask")
        tokens.append(int(mask.sum()) if mask is not None else int(batch["input_ids"].numel()))
        return batch

    trainer.data_collator = counting_collator
    seconds: list[float] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *a, **k):  # type: ignore[no-untyped-def]
            if on_gpu:
                torch.cuda.synchronize()
            self.start = time.perf_counter()

        def on_step_end(self, *a, **k):  # type: ignore[no-untyped-def]
            if on_gpu:
                torch.cuda.synchronize()
            seconds.append(time.perf_counter() - self.start)

    trainer.add_callback(StepTimer())
    trainer.train()
    # The collator runs when the dataloader yields a batch, just before its step (GA = 1, no workers);
    # the dataloader may collate one batch past the last step, hence strict=False.
    rates = [t / s for t, s in list(zip(tokens, seconds, strict=False))[args.warmup :]]
    return {
        "tokensPerSecond": statistics.median(rates),
        "peakMemoryGiB": torch.cuda.max_memory_allocated() / 2**30 if on_gpu else None,
    }


# ---------------------------------------------------------------------------
# Parent
# ---------------------------------------------------------------------------


def run_child(args: argparse.Namespace, contender: str, method: str, model_dir: Path) -> dict:
    command = [
        sys.executable,
        __file__,
        "--child",
        contender,
        "--method",
        method,
        "--model-dir",
        str(model_dir),
        "--seq",
        str(args.seq),
        "--batch",
        str(args.batch),
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
    ] + (["--gradient-checkpointing"] if args.gradient_checkpointing else [])
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{contender} {method} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def peak_flops(args: argparse.Namespace) -> float | None:
    import torch

    if args.peak_tflops:
        return args.peak_tflops * 1e12
    if torch.cuda.is_available():
        return 989.4e12  # H100/H200 SXM, dense bf16
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--size", choices=sorted(SIZES), default=None, help="model size; default: small on CPU, 1b on GPU"
    )
    parser.add_argument("--methods", default="lora,full")
    parser.add_argument("--steps", type=int, default=8, help="timed optimiser steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed first steps")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--seq", type=int, default=None)
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--skip-trl", action="store_true")
    parser.add_argument("--peak-tflops", type=float, default=None)
    parser.add_argument("--child", choices=["ours", "trl"], help=argparse.SUPPRESS)
    parser.add_argument("--method", default="lora", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        result = (child_ours if args.child == "ours" else child_trl)(args, args.model_dir)
        print(json.dumps(result))
        return

    import torch

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    size = args.size or ("1b" if torch.cuda.is_available() else "small")
    spec = SIZES[size]
    args.seq = args.seq or spec["seq"]
    args.batch = args.batch or spec["batch"]
    if not (TOKENIZER / "tokenizer.json").is_file():
        raise SystemExit(f"{TOKENIZER} missing: run python -m sft_trainer.modelprep --out {TOKENIZER}")
    methods = [m for m in args.methods.split(",") if m]
    peak = peak_flops(args)
    with tempfile.TemporaryDirectory(prefix="bench-model-") as tmp:
        model_dir = build_model(Path(tmp) / size, size, TOKENIZER, bf16=torch.cuda.is_available())
        n_matmul = matmul_parameters(model_dir)
        results: dict[tuple[str, str], list[dict]] = {}
        for _ in range(args.repeats):
            for method in methods:
                for contender in ["ours"] + ([] if args.skip_trl else ["trl"]):
                    results.setdefault((method, contender), []).append(run_child(args, contender, method, model_dir))
                    print(f"  {method} {contender}: {results[(method, contender)][-1]}", file=sys.stderr)

    print(
        f"\nFine-tuning throughput: Llama {size} ({n_matmul / 1e6:.0f}M matmul params), seq {args.seq}, "
        f"batch {args.batch}, packing, {args.steps} timed steps, {args.repeats} repeat(s), {device}\n"
    )
    print("| method | trainer | non-pad tokens/s | MFU (6N) | peak GPU mem GiB | ours / TRL |")
    print("|---|---|---:|---:|---:|---:|")
    for method in methods:
        ours_tps = statistics.median(r["tokensPerSecond"] for r in results[(method, "ours")])
        for contender in ["ours"] + ([] if args.skip_trl else ["trl"]):
            runs = results[(method, contender)]
            tps = statistics.median(r["tokensPerSecond"] for r in runs)
            mfu = f"{100 * 6 * n_matmul * tps / peak:.1f}%" if peak else "n/a (CPU)"
            memory = runs[-1]["peakMemoryGiB"]
            ratio = f"{ours_tps / tps:.2f}x" if contender == "trl" else ""
            name = "ours" if contender == "ours" else "TRL SFTTrainer"
            print(f"| {method} | {name} | {tps:,.0f} | {mfu} | {f'{memory:.1f}' if memory else '-'} | {ratio} |")


if __name__ == "__main__":
    main()
