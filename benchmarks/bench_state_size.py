"""Bytes per record of the streaming engine's state after each phase: what one pod holds between phases.

    .venv/bin/python benchmarks/bench_state_size.py --records 6000 [--shard 2000] [--distinct N] [--json out.json]

Curates the first `--records` records of the perturbed-copies pool `bench_scale.py` builds (Alpaca, then
copies with one word in ten of each response replaced; `--distinct N` copies only the first N records, so
most of the pool is near duplicates) with the default judges, and after every phase
measures the saved `State` object by object: `sys.getsizeof` of every object reachable from it, counted
once (numpy arrays by their buffer: `getsizeof` of an array that owns its data includes it; a view's base
is reached and counted once). The figure per record divides by the input's records; the step states (the
steps' counters) are left out, as they do not grow with the records.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "trainer_image"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_scale import DATA, perturbed_copies  # noqa: E402

from sft_trainer.config.curation import CurationRunConfig  # noqa: E402
from sft_trainer.curation.resume import State  # noqa: E402
from sft_trainer.curation.shards import InputShards  # noqa: E402
from sft_trainer.curation.streaming import StreamingEngine, curate_in_shards  # noqa: E402


def deep_size(root: Any, seen: set[int]) -> int:
    """Bytes of every object reachable from `root` not in `seen` yet (each counted once; `seen` grows)."""
    stack = [root]
    total = 0
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, type):
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        if isinstance(obj, np.ndarray):
            if obj.base is not None:
                stack.append(obj.base)
            if obj.dtype != object:
                continue
        stack.extend(gc.get_referents(obj))
    return total


class Measured(StreamingEngine):
    sizes: list[dict[str, Any]] = []

    def save(self, state: State, finished: Any, seconds: float) -> None:
        super().save(state, finished, seconds)
        steps, state.step_states = state.step_states, []
        seen: set[int] = set()  # an object two fields share is counted once, in the first
        parts = {name: deep_size(getattr(state, name), seen) for name in vars(state)}
        state.step_states = steps
        total = sum(parts.values())
        entry = {
            "phase": f"{finished.index:02d}-{finished.name}",
            "alive": len(state.alive),
            "bytes_per_record": round(total / state.input_count, 1),
            "by_field": {k: round(v / state.input_count, 1) for k, v in parts.items() if v > 1000},
        }
        Measured.sizes.append(entry)
        print(json.dumps(entry), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=6000)
    parser.add_argument("--shard", type=int, default=2000)
    parser.add_argument(
        "--distinct", type=int, help="build the pool from the first N Alpaca records only (more copies)"
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    os.environ.setdefault("SFT_MODEL_CACHE", str(ROOT / ".cache" / "models"))
    alpaca = json.loads((DATA / "alpaca_data.json").read_text(encoding="utf-8"))
    work = Path(tempfile.mkdtemp(prefix="bench-state-"))
    pool = perturbed_copies(alpaca[: args.distinct], args.records, work / "pool.jsonl")
    cfg = CurationRunConfig(input=str(pool), output_dir=str(work / "out"))
    curate_in_shards(cfg, InputShards(str(pool), "auto", shard_records=args.shard), engine_class=Measured)
    if args.json:
        figures = {"records": args.records, "distinct": args.distinct, "phases": Measured.sizes}
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
