"""Curation throughput against DataTrove, and how the cost grows with the data.

    .venv/bin/python benchmarks/bench_curation.py [--repeats 3] [--sizes 1 4 10] [--tokenizer DIR] [--quick]

1. The full curation pipeline on alpaca_data.json (52,002 records), without
   and with the target tokenizer (token bounds, template check, token review),
   and, in the same run, DataTrove's nearest equivalent on the same records:
   GopherRepetitionFilter + GopherQualityFilter + MinHash deduplication
   (signatures, buckets, clusters, filter; 5-grams, 12 buckets x 10 hashes =
   our 120 of 128 permutations used by LSH). Records per second, medians of
   --repeats runs, and the ratio.
2. Scaling: the pipeline (no tokenizer) on 1x, 4x and 10x the Alpaca records,
   the copies perturbed (a few words changed per record) so they are near
   duplicates, not exact ones: time and peak memory per size.

The per-record steps run on every CPU (forked workers; see
sft_trainer/curation/runner.py); a row with one process shows the same
pipeline single-threaded, as DataTrove runs here.

Every measurement runs in a fresh child process so peak memory (ru_maxrss)
belongs to that run alone: the run's own peak plus its largest worker's (the
workers share the parent's pages copy-on-write, so the sum overstates). Our timing includes reading the file and writing
all five outputs; DataTrove's includes reading the same file and building its
Documents. Ours runs its defaults as a CPU pod does: the static embedder for
learned task labels, the n-gram and tree judges; the scorer LM off and the
MiniLM relevance judge skipped above its CPU limit (both say so in the report).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from curation_corpora import DATA  # noqa: E402

ALPACA = DATA / "alpaca_data.json"
DEFAULT_TOKENIZER = ROOT / ".cache" / "models" / "smollm2-135m-instruct"


# -- child measurements ---------------------------------------------------------


def _ours(input_path: str, tokenizer: str | None, workers: int | None = None) -> dict:
    from sft_trainer.config import CurationRunConfig
    from sft_trainer.curation.entrypoint import run_from_config

    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        code = run_from_config(
            CurationRunConfig(input=input_path, output_dir=out, tokenizer=tokenizer), workers=workers
        )
        seconds = time.perf_counter() - started
        status = json.loads((Path(out) / "report.json").read_text())["status"]
        report = json.loads((Path(out) / "report.json").read_text())
    assert code == 0, f"curation exited {code}"
    return {
        "seconds": seconds,
        "records": status["counts"]["input"],
        "status": status,
        "near_clusters": report["nearDuplicateClusters"],
    }


def _datatrove(input_path: str) -> dict:
    # The installed xxhash no longer hashes str; DataTrove's wrapper passes str.
    # Encode first so DataTrove keeps its own (fast) hash function.
    import xxhash
    from datatrove.data import Document
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.filters import GopherQualityFilter, GopherRepetitionFilter
    from datatrove.utils.hashes import xxhash as datatrove_xxhash

    datatrove_xxhash.xxhash64 = lambda data: xxhash.xxh64_intdigest(
        data.encode("utf-8") if isinstance(data, str) else data
    )
    datatrove_xxhash.xxhash32 = lambda data: xxhash.xxh32_intdigest(
        data.encode("utf-8") if isinstance(data, str) else data
    )

    started = time.perf_counter()
    records = json.loads(Path(input_path).read_text(encoding="utf-8"))
    docs = [
        Document(
            text="\n".join(filter(None, (r.get("instruction", ""), r.get("input", ""), r.get("output", "")))), id=str(i)
        )
        for i, r in enumerate(records)
    ]
    with tempfile.TemporaryDirectory() as work:
        config = MinhashConfig(n_grams=5, num_buckets=12, hashes_per_bucket=10)
        kept = list(GopherQualityFilter().run(GopherRepetitionFilter().run(iter(docs))))
        MinhashDedupSignature(output_folder=f"{work}/sigs", config=config).run(iter(kept))
        for bucket in range(config.num_buckets):
            MinhashDedupBuckets(input_folder=f"{work}/sigs", output_folder=f"{work}/buckets", config=config).run(
                rank=bucket, world_size=config.num_buckets
            )
        MinhashDedupCluster(input_folder=f"{work}/buckets", output_folder=f"{work}/remove_ids", config=config).run()
        final = list(MinhashDedupFilter(input_folder=f"{work}/remove_ids").run(iter(kept)))
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "records": len(records), "kept": len(final), "after_gopher": len(kept)}


def _child(kind: str, input_path: str, tokenizer: str | None) -> None:
    if kind == "datatrove":
        result = _datatrove(input_path)
    else:
        result = _ours(input_path, tokenizer, workers=1 if kind == "ours-1" else None)
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    largest_worker = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    result["peak_mb"] = (own + largest_worker) / 1024
    print("RESULT " + json.dumps(result))


def measure(kind: str, input_path: Path, tokenizer: str | None = None) -> dict:
    command = [sys.executable, __file__, "--child", kind, str(input_path), "--tokenizer", tokenizer or ""]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    line = next((out for out in done.stdout.splitlines() if out.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"{kind} run failed:\n{done.stderr[-3000:]}")
    return json.loads(line[len("RESULT ") :])


# -- scaled inputs ---------------------------------------------------------------


def perturbed_copies(records: list[dict], factor: int, seed: int = 0) -> list[dict]:
    """The records, then factor-1 copies in which about one word in 20 is changed (near, not exact, duplicates)."""
    rng = random.Random(seed)
    out = list(records)
    for copy in range(1, factor):
        for r in records:
            words = r["output"].split(" ")
            for _ in range(max(1, len(words) // 20)):
                words[rng.randrange(len(words))] = f"w{copy}{rng.randrange(1000)}"
            out.append({**r, "output": " ".join(words)})
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", nargs=2, metavar=("KIND", "INPUT"), help=argparse.SUPPRESS)
    parser.add_argument("--tokenizer", default=str(DEFAULT_TOKENIZER) if DEFAULT_TOKENIZER.exists() else None)
    parser.add_argument("--repeats", type=int, default=3, help="runs per configuration; medians are reported")
    parser.add_argument(
        "--sizes", type=int, nargs="*", default=[1, 4, 10], help="multiples of Alpaca for the scaling table"
    )
    parser.add_argument("--quick", action="store_true", help="one repeat, sizes 1 and 4")
    args = parser.parse_args()
    if args.child:
        _child(args.child[0], args.child[1], args.tokenizer or None)  # "" = no tokenizer
        return 0
    if args.quick:
        args.repeats, args.sizes = 1, [1, 4]

    from sft_trainer.cpus import usable_cpus

    runs: dict[str, list[dict]] = {"ours": [], "ours-1": [], "ours+tokenizer": [], "datatrove": []}
    for _ in range(args.repeats):
        runs["ours"].append(measure("ours", ALPACA))
        runs["ours-1"].append(measure("ours-1", ALPACA))
        if args.tokenizer:
            runs["ours+tokenizer"].append(measure("ours", ALPACA, args.tokenizer))
        runs["datatrove"].append(measure("datatrove", ALPACA))
    dt = statistics.median(r["seconds"] for r in runs["datatrove"])
    print(
        f"\nalpaca_data.json, {runs['ours'][0]['records']} records, medians of {args.repeats} runs, {os.cpu_count()} CPUs"
    )
    print(f"{'pipeline':42} {'seconds':>8} {'records/s':>10} {'peak MB':>8} {'vs DataTrove':>13}")
    for name, label in (
        ("ours", f"TrustDoc curation ({usable_cpus()} processes)"),
        ("ours-1", "TrustDoc curation (1 process)"),
        ("ours+tokenizer", "TrustDoc curation (+ tokenizer steps)"),
        ("datatrove", "DataTrove Gopher rep+quality + MinHash (1)"),
    ):
        if not runs[name]:
            continue
        seconds = statistics.median(r["seconds"] for r in runs[name])
        peak = max(r["peak_mb"] for r in runs[name])
        n = runs[name][0]["records"]
        print(f"{label:42} {seconds:8.2f} {n / seconds:10.0f} {peak:8.0f} {dt / seconds:12.2f}x")
    status = runs["ours"][0]["status"]
    print(
        f"our near-duplicate clusters: {runs['ours'][0]['near_clusters']}; rejected {status['counts']['rejected']}, review {status['counts']['review']}; "
        f"DataTrove kept {runs['datatrove'][0]['kept']} (after Gopher filters {runs['datatrove'][0]['after_gopher']})"
    )

    records = json.loads(ALPACA.read_text(encoding="utf-8"))
    print("\nscaling (no tokenizer), near-duplicate copies")
    print(
        f"{'size':>5} {'records':>8} {'seconds':>8} {'records/s':>10} {'s per 1x':>9} {'peak MB':>8} {'near clusters':>14}"
    )
    base = None
    with tempfile.TemporaryDirectory() as work:
        for factor in args.sizes:
            path = Path(work) / f"alpaca_x{factor}.json"
            path.write_text(json.dumps(perturbed_copies(records, factor)), encoding="utf-8")
            r = measure("ours", path)
            base = base or r["seconds"] / factor
            print(
                f"{factor:4}x {r['records']:8d} {r['seconds']:8.2f} {r['records'] / r['seconds']:10.0f} {r['seconds'] / factor:9.2f} {r['peak_mb']:8.0f} {r['near_clusters']:14d}"
            )
            path.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
