"""Curation at scale: time and peak memory of one pod (streaming) against the old in-memory pod, and Ray.

    .venv/bin/python benchmarks/bench_scale.py                       # 1x, 4x, 10x Alpaca and 2M records
    .venv/bin/python benchmarks/bench_scale.py --sizes 1,4 --ray-records 10000 --json out.json
    options: --sizes 1,4,10,2000000 (a multiple of Alpaca, or a record count when >= 1000; "" for none)
             --old-commit REV (the code to compare with; default: the last commit before streaming, in memory)
             --no-old   --ray-records N (0: no Ray figures)   --work DIR

Inputs are built in a temporary folder from `$SFT_SHARED_DATA/alpaca_data.json`:
copy k of the set is Alpaca with every response perturbed (one word in ten
replaced, seeded by k), so the copies are near, not exact, duplicates and
every judge and both dedups have work. Each run is a fresh process
(`python -m sft_trainer curate RUN.yaml`) with the default judges (on a CPU
the scorer LM is off and the MiniLM relevance judge skips sets above 5,000
records, as in a pod; the LM's pass over the borderline records is off too,
`LM_OFF`); its peak memory is the process's RSS high-water mark
(`wait4`'s ru_maxrss, children included for the forked filter workers:
the largest of them). The old figures run the same command on the code of
`--old-commit` (extracted with `git archive`, nothing checked out).

Ray: records/s with 1 and 2 workers on a local Ray cluster, and the one-pod
streaming run on the same records, so the difference is Ray's overhead.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SFT_SHARED_DATA", ROOT.parent / "shared" / "data"))
OLD_COMMIT = "038849d"
"""The last commit before the streaming engine: every record held in memory."""
LM_OFF = {"scorer": {"borderlineOnCpu": {"maxRecords": 0}}}
"""The new code's settings: on a CPU the scorer LM's borderline pass would time the LM (minutes for a few
hundred records), not the engine; the old code has no such pass."""
ALPACA_RECORDS = 52002


def perturbed_copies(records: list[dict[str, Any]], total: int, path: Path) -> Path:
    """`total` records: Alpaca as is, then copies with one word in ten of each response replaced (seeded per copy)."""
    with path.open("w", encoding="utf-8") as handle:
        written, copy = 0, 0
        while written < total:
            rng = random.Random(copy)
            for record in records:
                if written == total:
                    break
                if copy:
                    words = record["output"].split()
                    for k in range(0, len(words), 10):
                        words[k] = rng.choice(("also", "then", "thus", "still", "often", "really"))
                    record = {**record, "output": " ".join(words)}
                handle.write(json.dumps(record) + "\n")
                written += 1
            copy += 1
    return path


def run_curation(python_path: Path, input_path: Path, out: Path, curation: dict[str, Any]) -> dict[str, Any]:
    """One fresh `python -m sft_trainer curate` process: wall seconds, peak RSS (MB), counts from report.json."""
    import yaml

    run = {"input": str(input_path), "outputDir": str(out), "curation": curation}
    config = out.with_suffix(".yaml")
    config.write_text(yaml.safe_dump(run), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(python_path), "SFT_MODEL_CACHE": str(ROOT / ".cache" / "models")}
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "sft_trainer", "curate", str(config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"curation of {input_path} failed: {stderr[-2000:]}")
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    counts = report["status"]["counts"]
    return {
        "seconds": round(seconds, 1),
        # CPU seconds of the process and its forked workers: the cost that does not depend on the machine's load.
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "records_per_second": round(counts["input"] / seconds, 1),
        "counts": counts,
        "engine_report": report.get("engine"),
    }


def old_code(commit: str, work: Path) -> Path:
    """The trainer package of `commit`, extracted (git archive) into `work`; its import root."""
    target = work / f"old-{commit}"
    if not target.exists():
        target.mkdir(parents=True)
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", commit, "trainer_image"], check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target / "trainer_image"


def sizes_of(spec: str) -> list[int]:
    return [int(s) * ALPACA_RECORDS if int(s) < 1000 else int(s) for s in spec.split(",") if s.strip()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,4,10,2000000")
    parser.add_argument("--old-commit", default=OLD_COMMIT)
    parser.add_argument("--no-old", action="store_true")
    parser.add_argument("--ray-records", type=int, default=10000)
    parser.add_argument("--work", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    alpaca = json.loads((DATA / "alpaca_data.json").read_text(encoding="utf-8"))
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    new_code = ROOT / "trainer_image"
    figures: dict[str, Any] = {"load_average": os.getloadavg(), "cpus": os.cpu_count(), "runs": []}

    def record(entry: dict[str, Any]) -> None:
        figures["runs"].append(entry)
        print(json.dumps(entry), flush=True)
        if args.json:
            args.json.write_text(json.dumps(figures, indent=2), encoding="utf-8")

    for size in sizes_of(args.sizes):
        pool = perturbed_copies(alpaca, size, work / f"pool-{size}.jsonl")
        record({"records": size, "engine": "local", **run_curation(new_code, pool, work / f"new-{size}", LM_OFF)})
        if not args.no_old:
            old = old_code(args.old_commit, work)
            label = "in-memory" if args.old_commit == OLD_COMMIT else f"one pod @ {args.old_commit}"
            record({"records": size, "engine": label, **run_curation(old, pool, work / f"old-{size}", {})})
        pool.unlink()
    if args.ray_records:
        pool = perturbed_copies(alpaca, args.ray_records, work / "pool-ray.jsonl")
        n = args.ray_records
        record({"records": n, "engine": "local", **run_curation(new_code, pool, work / "ray-local", LM_OFF)})
        for workers in (1, 2):
            engine = {"type": "ray", "workers": workers, "cpusPerWorker": 1}
            result = run_curation(new_code, pool, work / f"ray-{workers}", {**LM_OFF, "engine": engine})
            record({"records": n, "engine": f"ray x{workers}", **result})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
