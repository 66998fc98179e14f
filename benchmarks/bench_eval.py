"""IFEval generation speed: a subset of the 541 prompts at <= 256 new tokens, projected to all 541.

Goal (issue #11): 541 prompts in <= 10 min on 2 CPU cores with SmolLM2-135M.
Prints prompts/s, generated tokens/s, the projection, and the machine's load
average (the CPU is often shared: a loaded machine gives a pessimistic figure).

    python benchmarks/bench_eval.py --prompts 60 --threads 1 [--batch-size 16] [--precision bf16] [--json out.json]

`--precision bf16` generates in bfloat16 (as `training.precision: bf16` does for an SFTJob's evaluation):
about 1.6x faster on a CPU with native bf16 instructions (AVX512-BF16, AMX), and slower on one without.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

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
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)

    import torch

    from sft_trainer.evaluation.generation import load_eval_model
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
    started = time.monotonic()
    run = model.generator.run([[Message("user", p.prompt)] for p in chosen], args.max_new_tokens)
    seconds = time.monotonic() - started
    registry = instruction_registry()
    scoring_started = time.monotonic()
    strict = [all(score(p, r.text, registry).strict) for p, r in zip(chosen, run.replies, strict=True) if r]
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
        "generationSeconds": round(seconds, 1),
        "newTokens": run.new_tokens,
        "tokensPerSecond": round(run.new_tokens / seconds, 1),
        "hitTokenCap": run.hit_cap,
        "scoringSeconds": round(scoring, 2),
        "projectedSecondsFor541": round((seconds + scoring) * total / len(chosen), 0),
        "promptLevelStrictOnSubset": round(sum(strict) / max(len(strict), 1), 3),
    }
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
