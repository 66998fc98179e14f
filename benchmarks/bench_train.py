"""Training throughput: our LoRA and full fine-tuning recipes against TRL's SFTTrainer, same run, same config.

    .venv/bin/python benchmarks/bench_train.py                 # CPU: small Llama, always works
    .venv/bin/python benchmarks/bench_train.py --size 1b       # GPU: 1B-class Llama (LoRA + full)
    .venv/bin/python benchmarks/bench_train.py --size 8b --methods lora   # GPU: 8B-class Llama, LoRA
    options: --steps 8 --warmup 2 --repeats 1 --seq 512 --batch 4 --skip-trl
             --json FIGURES.json (rewritten after every child) --profile DIR (one more step of ours, profiled)
             --tokenizer DIR (default .cache/models/smollm2-135m-instruct)

The model is a Llama built from a config (random weights, SmolLM2's tokenizer
and chat template), trained on Alpaca-GPT-4 records (../shared/data) with
packing and loss on responses only. Each contender runs in its own child
process (clean memory peaks), interleaved per repeat; figures are medians
over the timed steps (after --warmup steps) and over repeats.

Reported: non-pad tokens per second; MFU = FLOPs per token * tokens/s / peak
FLOP/s, where N counts the parameters that take part in matmuls (all but an
untied input embedding) and attention-score FLOPs are not counted. Two MFU
columns: "6N" counts 6 * N per token for both methods (the usual convention,
which overstates LoRA), "done" counts the matmul work each method really does:
6N for full fine-tuning (forward 2N, input gradients 2N, weight gradients 2N)
and 4N for LoRA (the frozen weights get no weight gradients; the adapters'
own FLOPs, under 1% of N at r=16, are left out). Gradient-checkpointing
recomputation is not counted. Peak = 989 TFLOP/s (H100/H200 SXM dense bf16)
unless --peak-tflops is given; on CPU MFU is not reported. Peak GPU memory is
torch.cuda.max_memory_allocated in the contender's own process.
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

DATA = (
    Path(os.environ.get("SFT_SHARED_DATA", REPO.parent / "shared" / "data")) / "alpaca_gpt4_en_demo_llamafactory.json"
)
TOKENIZER = REPO / ".cache" / "models" / "smollm2-135m-instruct"
# Matmul FLOPs per token and per matmul parameter: forward 2, input gradients 2, weight gradients 2 (full only).
FLOPS_PER_PARAMETER = {"full": 6, "lora": 4}


# ---------------------------------------------------------------------------
# Children: one contender, one process; prints one JSON line
# ---------------------------------------------------------------------------


class StepWatcher:
    """Our trainer's progress callback (no trainer hook): the peak GPU memory of the timed steps, taken before the
    final checkpoint and export add theirs, and optionally a torch.profiler table of the one step after them."""

    def __init__(self, last_timed_step: int, profile_table: Path | None) -> None:
        self.last_timed_step, self.profile_table = last_timed_step, profile_table
        self.peak_memory_gib: float | None = None
        self.profiler = None
        self.done = False

    def __call__(self, progress: dict) -> None:
        import torch
        from torch.profiler import ProfilerActivity, profile

        step, on_gpu = progress.get("step"), torch.cuda.is_available()
        if not self.done and step == self.last_timed_step:
            self.done = True  # the first update at this step comes right after it; later ones are not steps
            self.peak_memory_gib = torch.cuda.max_memory_allocated() / 2**30 if on_gpu else None
            if self.profile_table is not None:
                activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])
                self.profiler = profile(activities=activities, record_shapes=True)
                self.profiler.start()
        elif self.profiler is not None and step == self.last_timed_step + 1:
            self.profiler.stop()
            key = "self_device_time_total" if on_gpu else "self_cpu_time_total"
            assert self.profile_table is not None
            self.profile_table.write_text(self.profiler.key_averages().table(sort_by=key, row_limit=30) + "\n")
            self.profiler = None


def child_ours(args: argparse.Namespace, model_dir: Path) -> dict:
    from sft_trainer.config import TrainRunConfig
    from sft_trainer.training.entrypoint import run_from_config

    profiled = args.profile is not None
    if profiled:
        args.profile.mkdir(parents=True, exist_ok=True)
    watcher = StepWatcher(args.warmup + args.steps, args.profile / f"profile_{args.method}.txt" if profiled else None)
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
                    "maxSteps": args.warmup + args.steps + int(profiled),
                    "evalFraction": 0,
                    "checkpointEverySteps": 10_000,
                    "gradientCheckpointing": args.gradient_checkpointing,
                    "attention": "sdpa",
                    "refusal": {"enabled": False},
                    "probes": {"memorisationPrompts": 0},
                    "evaluation": {"enabled": False},
                },
            }
        )
        if run_from_config(cfg, watcher) != 0:
            raise SystemExit("our run failed")
        report = json.loads((Path(out) / "train_report.json").read_text())
    timed = report["training"]["history"][args.warmup : args.warmup + args.steps]
    return {
        "tokensPerSecond": statistics.median(h["tokensPerSecond"] for h in timed),
        "peakMemoryGiB": watcher.peak_memory_gib,
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
    if args.profile is not None and contender == "ours":
        command += ["--profile", str(args.profile)]
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
    parser.add_argument("--tokenizer", type=Path, default=TOKENIZER, help="a folder with SmolLM2's tokenizer")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here (after every child)")
    parser.add_argument("--profile", type=Path, default=None, help="profile one extra step of ours into DIR")
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
    if not (args.tokenizer / "tokenizer.json").is_file():
        raise SystemExit(f"{args.tokenizer} missing: run python -m sft_trainer.modelprep --out {args.tokenizer}")
    methods = [m for m in args.methods.split(",") if m]
    peak = peak_flops(args)
    with tempfile.TemporaryDirectory(prefix="bench-model-") as tmp:
        model_dir = build_model(Path(tmp) / size, size, args.tokenizer, bf16=torch.cuda.is_available())
        n_matmul = matmul_parameters(model_dir)
        setup = {"size": size, "matmulParameters": n_matmul, "seq": args.seq, "batch": args.batch}
        setup |= {"steps": args.steps, "warmup": args.warmup, "repeats": args.repeats, "device": device}
        setup |= {"peakTflops": peak / 1e12 if peak else None, "gradientCheckpointing": args.gradient_checkpointing}
        results: dict[tuple[str, str], list[dict]] = {}
        for _ in range(args.repeats):
            for method in methods:
                for contender in ["ours"] + ([] if args.skip_trl else ["trl"]):
                    results.setdefault((method, contender), []).append(run_child(args, contender, method, model_dir))
                    print(f"  {method} {contender}: {results[(method, contender)][-1]}", file=sys.stderr)
                    if args.json:
                        args.json.write_text(json.dumps(figures(setup, results, peak), indent=2) + "\n")

    print(
        f"\nFine-tuning throughput: Llama {size} ({n_matmul / 1e6:.0f}M matmul params), seq {args.seq}, "
        f"batch {args.batch}, packing, {args.steps} timed steps, {args.repeats} repeat(s), {device}\n"
    )
    print("| method | trainer | non-pad tokens/s | MFU (6N) | MFU (done) | peak GPU mem GiB | ours / TRL |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for row in figures(setup, results, peak)["rows"]:
        name = "ours" if row["trainer"] == "ours" else "TRL SFTTrainer"
        mfu = [f"{100 * row[k]:.1f}%" if row[k] is not None else "n/a (CPU)" for k in ("mfu6N", "mfuDone")]
        memory = f"{row['peakMemoryGiB']:.1f}" if row["peakMemoryGiB"] else "-"
        ratio = f"{row['oursOverTrl']:.2f}x" if row["oursOverTrl"] else ""
        print(
            f"| {row['method']} | {name} | {row['tokensPerSecond']:,.0f} | {mfu[0]} | {mfu[1]} | {memory} | {ratio} |"
        )


def figures(setup: dict, results: dict[tuple[str, str], list[dict]], peak: float | None) -> dict:
    """The run's figures as JSON: one row per (method, trainer) measured so far; medians over repeats."""
    n_matmul = setup["matmulParameters"]
    rows = []
    for (method, contender), runs in results.items():
        tps = statistics.median(r["tokensPerSecond"] for r in runs)
        ours = results.get((method, "ours"))
        ratio = statistics.median(r["tokensPerSecond"] for r in ours) / tps if ours and contender == "trl" else None
        rows.append(
            {
                "method": method,
                "trainer": contender,
                "tokensPerSecond": tps,
                "mfu6N": 6 * n_matmul * tps / peak if peak else None,
                "mfuDone": FLOPS_PER_PARAMETER[method] * n_matmul * tps / peak if peak else None,
                "peakMemoryGiB": runs[-1]["peakMemoryGiB"],
                "oursOverTrl": ratio,
            }
        )
    return {"setup": setup, "rows": rows}


if __name__ == "__main__":
    main()
