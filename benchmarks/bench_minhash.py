"""MinHash signatures on 52k Alpaca: dedup's (rensa) against datasketch, in the same run.

    SFT_SHARED_DATA=../shared/data .venv/bin/python benchmarks/bench_minhash.py [--limit N] [--json PATH]

Every method signs the same input: the 64-bit word 5-gram hashes of each
record (`dedup.shingle_hashes`, timed once), 128 permutations. Then:

* dedup: `dedup.minhash_signatures`, what curation runs (rensa's R-MinHash,
  Rust, on the flat shingle buffer and offsets);
* datasketch: `MinHash.bulk` with the shingle hash as its hash function
  (its affine permutations mod 2^61-1, numpy per record).

Until commit d9b0909 dedup signed with a numpy multiply-shift
implementation, and this benchmark measured it beside both libraries; its
figures are in dedup.py's docstring.

Two sets: the 52,002 Alpaca records as they are (few near duplicates), and
a planted set, where the agreement has numbers to stand on: 4,000 Alpaca
records plus a copy of 2,000 of them with a seeded share of words replaced
(0-30%), so true Jaccard similarities spread across the threshold.

Each signature matrix goes through the same clustering (`dedup`'s LSH bands,
candidate pairs confirmed by estimated Jaccard >= 0.8, connected
components). Agreement with dedup's: records removed (Jaccard of the
removed sets) and joined pairs. Truth: the exact Jaccard of the two
records' shingle sets, for every pair any method joined and every planted
pair; `precision` is the share of a method's joined pairs at exact Jaccard
>= threshold, `recall` its share of all such true pairs. Times are the best
of two runs.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "trainer_image"))

from sft_trainer.cpus import usable_cpus  # noqa: E402
from sft_trainer.curation.dedup import (  # noqa: E402
    conversation_text,
    minhash_signatures,
    near_duplicate_clusters,
    shingle_hashes,
)
from sft_trainer.curation.noise import load_alpaca  # noqa: E402

NGRAM, PERMUTATIONS, THRESHOLD, SEED = 5, 128, 0.8, 0


def timed(work: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    result = work()
    return result, time.perf_counter() - started


def dedup(hashes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    return minhash_signatures(hashes, offsets, PERMUTATIONS, SEED)


def datasketch(hashes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    from datasketch import MinHash

    bounds = np.append(offsets, len(hashes))
    # The shingle hashes are already hashes: datasketch keeps their low 32 bits, as its own hashes are.
    per_record = (hashes[lo:hi].tolist() for lo, hi in itertools.pairwise(bounds))
    sketches = MinHash.bulk(per_record, num_perm=PERMUTATIONS, seed=SEED, hashfunc=lambda value: value & 0xFFFFFFFF)
    return np.stack([sketch.hashvalues for sketch in sketches]).astype(np.uint32)


METHODS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "dedup (rensa 0.5.0)": dedup,
    "datasketch 2.0.0": datasketch,
}


def pairs_of(clusters: list[list[int]]) -> set[tuple[int, int]]:
    return {(a, b) for members in clusters for a, b in itertools.combinations(sorted(members), 2)}


def removed_by(clusters: list[list[int]]) -> set[int]:
    """Everyone but the first member of each cluster (the keeper choice does not matter for agreement)."""
    return {i for members in clusters for i in sorted(members)[1:]}


def exact_jaccard(hashes: np.ndarray, offsets: np.ndarray, a: int, b: int) -> float:
    bounds = np.append(offsets, len(hashes))
    first, second = set(hashes[bounds[a] : bounds[a + 1]].tolist()), set(hashes[bounds[b] : bounds[b + 1]].tolist())
    return len(first & second) / len(first | second)


def share(part: set[Any], whole: set[Any]) -> float | None:
    return round(len(part & whole) / len(whole), 4) if whole else None


def planted(texts: list[str], seed: int = SEED) -> tuple[list[str], set[tuple[int, int]]]:
    """The first 4,000 texts, then copies of 2,000 of them with 0-30% of their words replaced; and the planted pairs."""
    rng = random.Random(seed)
    base = texts[:4000]
    vocabulary = sorted({word for text in base[:500] for word in text.split()})
    copies, pairs = [], set()
    for original in rng.sample(range(len(base)), 2000):
        words, rate = base[original].split(), rng.uniform(0.0, 0.3)
        copies.append(" ".join(rng.choice(vocabulary) if rng.random() < rate else word for word in words))
        pairs.add((original, len(base) + len(copies) - 1))
    return base + copies, pairs


def fastest(work: Callable[[], Any], repeats: int = 2) -> tuple[Any, float]:
    """The result and the best time of `repeats` runs (the machine is shared: the best is the least disturbed)."""
    runs = [timed(work) for _ in range(repeats)]
    return runs[0][0], min(seconds for _, seconds in runs)


def compare(texts: list[str], known: set[tuple[int, int]] = frozenset()) -> dict[str, Any]:  # type: ignore[assignment]
    """Every method on `texts`: times, clusters, agreement with dedup's, precision and recall against exact Jaccard.

    The truth is every pair some method joined, plus the `known` (planted) pairs, at exact Jaccard >= threshold.
    """
    (hashes, offsets), shingling = timed(lambda: shingle_hashes(texts, NGRAM, SEED))
    results: dict[str, dict[str, Any]] = {}
    clusters: dict[str, list[list[int]]] = {}
    for name, sign in METHODS.items():
        signatures, seconds = fastest(lambda sign=sign: sign(hashes, offsets))  # type: ignore[misc]
        assert signatures.shape == (len(texts), PERMUTATIONS), signatures.shape
        clusters[name], clustering = timed(lambda s=signatures: near_duplicate_clusters(s, THRESHOLD))  # type: ignore[misc]
        results[name] = {"signatureSeconds": round(seconds, 3), "clusteringSeconds": round(clustering, 3)}
    reference = "dedup (rensa 0.5.0)"
    joined = {name: pairs_of(found) for name, found in clusters.items()}
    candidates = set().union(*joined.values(), known)
    true_pairs = {pair for pair in candidates if exact_jaccard(hashes, offsets, *pair) >= THRESHOLD}
    for name, found in clusters.items():
        removed, ref_removed = removed_by(found), removed_by(clusters[reference])
        results[name].update(
            clusters=len(found),
            removed=len(removed),
            removedJaccardWithDedup=round(len(removed & ref_removed) / len(removed | ref_removed), 4)
            if removed | ref_removed
            else 1.0,
            pairs=len(joined[name]),
            pairsAlsoDedup=share(joined[reference], joined[name]),
            dedupAlsoFound=share(joined[name], joined[reference]),
            precision=share(true_pairs, joined[name]),
            recall=share(joined[name], true_pairs),
        )
    return {
        "records": len(texts),
        "shingles": int(len(hashes)),
        "shinglingSeconds": round(shingling, 3),
        "truePairs": len(true_pairs),
        "methods": results,
    }


def show(title: str, summary: dict[str, Any]) -> None:
    print(
        f"\n{title}: {summary['records']} records, {summary['shingles']} shingles "
        f"(shingling {summary['shinglingSeconds']:.2f} s); true pairs (exact Jaccard >= {THRESHOLD}, among those "
        f"planted or joined by any method): {summary['truePairs']}"
    )
    print(
        f"{'method':18} {'sign s':>7} {'cluster s':>9} {'pairs':>6} {'removed':>7} {'same as dedup':>13} "
        f"{'precision':>9} {'recall':>6}"
    )
    for name, row in summary["methods"].items():
        print(
            f"{name:18} {row['signatureSeconds']:7.2f} {row['clusteringSeconds']:9.2f} {row['pairs']:6d} "
            f"{row['removed']:7d} {row['removedJaccardWithDedup']:13.3f} {row['precision'] or 0:9.3f} "
            f"{row['recall'] or 0:6.3f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=None, help="first N records only")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here too")
    args = parser.parse_args()

    texts = [conversation_text(c) for c in load_alpaca()[: args.limit]]
    print(f"{usable_cpus()} usable CPUs")
    summary = {"usableCpus": usable_cpus(), "alpaca": compare(texts), "planted": compare(*planted(texts))}
    show("Alpaca as it is", summary["alpaca"])
    show("Planted near duplicates", summary["planted"])
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
