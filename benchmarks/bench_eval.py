"""IFEval generation speed: a subset of the 541 prompts at <= 256 new tokens, projected to all 541.

Goal (issue #11): 541 prompts in <= 10 min on 2 CPU cores with SmolLM2-135M.
Prints prompts/s, generated tokens/s, the projection, and the machine's load
average (the CPU is often shared: a loaded machine gives a pessimistic figure).
With `--baseline` it also decodes the same prompts in the same batches with
transformers' `model.generate` (the baseline our decoding loop replaced,
`sft_trainer/evaluation/decoding.py`), alternating the two `--repeats` times,
and prints a table with the median of each and their ratio, and how many
replies are the same.

    make bench-eval                           # 128 prompts, batch 64, bf16, 2 threads, against generate
    python benchmarks/bench_eval.py --prompts 60 --threads 1 [--batch-size 16] [--precision bf16] [--baseline] [--json out.json]

`--precision bf16` generates in bfloat16 (as `training.precision: bf16` does for an SFTJob's evaluation):
about 1.6x faster on a CPU with native bf16 instructions (AVX512-BF16, AMX), and slower on one without.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = REPO_ROOT / ".cache" / "models" / "smollm2-135m-instruct"
DEFAULT_DATA = Path(os.environ.get("SFT_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA / "eval" / "ifeval_input_data.jsonl")
    parser.add_argument("--prompts", type=int, default=60, help="prompts to time, spread over the file (default 60)")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto", help="as training.precision")
    parser.add_argument("--baseline", action="store_true", help="also time transformers' generate (the ratio)")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each decoder, alternating (median)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)

    import torch

    from sft_trainer.evaluation.generation import Generation, load_eval_model
    from sft_trainer.evaluation.ifeval import instruction_registry, load_prompts, score
    from sft_trainer.formats import Message

    if args.threads:
        torch.set_num_threads(args.threads)
    prompts, _ = load_prompts(args.data)
    total = len(prompts)
    step = max(1, total // args.prompts)
    chosen = prompts[::step][: args.prompts]  # spread: the file is not ordered by length, but be safe
    load_before = os.getloadavg()
    model = load_eval_model(args.model, batch_size=args.batch_size, precision=args.precision)
    messages = [[Message("user", p.prompt)] for p in chosen]
    timed: dict[str, list[float]] = {"ours": []}
    if args.baseline:
        timed["generate"] = []
    replies: dict[str, list[Generation | None]] = {}
    for _ in range(args.repeats):
        for decoder in timed:
            started = time.monotonic()
            if decoder == "ours":
                replies[decoder] = model.generator.run(messages, args.max_new_tokens).replies
            else:
                replies[decoder] = with_generate(model.generator, messages, args.max_new_tokens)
            timed[decoder].append(time.monotonic() - started)
    seconds = statistics.median(timed["ours"])
    ours = replies["ours"]
    new_tokens = sum(r.new_tokens for r in ours if r)
    registry = instruction_registry()
    scoring_started = time.monotonic()
    strict = [all(score(p, r.text, registry).strict) for p, r in zip(chosen, ours, strict=True) if r]
    scoring = time.monotonic() - scoring_started
    figures = {
        "device": str(model.generator.device),
        "threads": torch.get_num_threads(),
        "dtype": str(next(model.generator.model.parameters()).dtype),
        "cpuCount": os.cpu_count(),
        "loadAverageBefore": [round(x, 2) for x in load_before],
        "loadAverageAfter": [round(x, 2) for x in os.getloadavg()],
        "prompts": len(chosen),
        "batchSize": args.batch_size,
        "maxNewTokens": args.max_new_tokens,
        "repeats": args.repeats,
        "generationSeconds": round(seconds, 1),
        "newTokens": new_tokens,
        "tokensPerSecond": round(new_tokens / seconds, 1),
        "hitTokenCap": sum(1 for r in ours if r and r.hit_cap),
        "scoringSeconds": round(scoring, 2),
        "projectedSecondsFor541": round((seconds + scoring) * total / len(chosen), 0),
        "promptLevelStrictOnSubset": round(sum(strict) / max(len(strict), 1), 3),
    }
    if args.baseline:
        baseline = statistics.median(timed["generate"])
        same = sum(
            a is not None and b is not None and a.text == b.text for a, b in zip(ours, replies["generate"], strict=True)
        )
        figures |= {
            "baselineSeconds": round(baseline, 1),
            "baselineProjectedSecondsFor541": round((baseline + scoring) * total / len(chosen), 0),
            "speedupOverGenerate": round(baseline / seconds, 2),
            "sameRepliesAsGenerate": same,
        }
        print(f"{'decoder':<34} {'median s':>9} {'tokens/s':>9} {'541 prompts':>12} {'vs generate':>12}")
        for name, median in (("transformers generate (baseline)", baseline), ("ours (decoding.py)", seconds)):
            projected = (median + scoring) * total / len(chosen)
            print(f"{name:<34} {median:9.1f} {new_tokens / median:9.1f} {projected:11.0f}s {baseline / median:11.2f}x")
        print(f"same replies: {same} of {len(chosen)}; runs per decoder: {args.repeats}")
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return 0


def with_generate(generator: Any, messages: list[list[Any]], max_new_tokens: int) -> list[Any]:
    """The baseline: the same prompts in the same batches (by length), decoded by transformers' generate."""
    import torch

    encoded = [generator.prompt_ids(m) for m in messages]
    order = sorted(range(len(encoded)), key=lambda k: len(encoded[k]))
    stop = generator.stop_ids
    replies: list[Any] = [None] * len(encoded)
    for start in range(0, len(order), generator.batch_size):
        batch = order[start : start + generator.batch_size]
        input_ids, attention = generator.left_padded([encoded[k] for k in batch])
        with torch.no_grad():
            out = generator.model.generate(
                input_ids=input_ids,
                attention_mask=attention,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=stop,
                pad_token_id=generator.pad_id,
            )
        for k, row in zip(batch, out[:, input_ids.shape[1] :].tolist(), strict=True):
            replies[k] = generator.reply(row, stop)
    return replies


if __name__ == "__main__":
    sys.exit(main())
