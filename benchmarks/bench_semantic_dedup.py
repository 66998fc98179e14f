"""Semantic dedup: the threshold from planted rewordings, our exact search vs SemHash on Alpaca, pairs to inspect.

    SFT_SHARED_DATA=../shared/data .venv/bin/python benchmarks/bench_semantic_dedup.py [--limit N] [--model NAME]

1. Threshold: the calibration half of LIMA (clean, human-written, almost no
   duplicates) plus a reworded copy of each prompt (synonyms, a polite
   prefix or a closing phrase, number words as digits: a rule-based stand-in
   for "the same request reworded", since no paraphrase model is at hand).
   For each cosine threshold: recall (reworded copies joined to their
   original) and false joins (clean records joined to another clean one).
   The chosen threshold is the lowest with at most 0.5% false joins.
2. Alpaca (52,002 records, or --limit): embedding time, our exact blocked
   search and clustering (with the operand check), and SemHash (its default
   usearch index, fed our embeddings and our static model; no operand
   check) on the same vectors: time, records removed, and the agreement of
   the two removed sets (Jaccard).
3. `--pairs K`: K random Alpaca pairs at or above the threshold, printed
   for a person to judge (the precision in docs/curation.md comes from that
   reading).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "trainer_image"))

from sft_trainer.config.curation import DedupStep, EmbedderStep  # noqa: E402
from sft_trainer.curation.embeddings import Embeddings  # noqa: E402
from sft_trainer.curation.noise import calibration_half, load_alpaca, load_lima, reword  # noqa: E402
from sft_trainer.curation.semantic_dedup import (  # noqa: E402
    SemanticDedup,
    operands,
    request_vectors,
    same_operands,
    similar_pairs,
    split_request,
)
from sft_trainer.curation.text import prompt_text  # noqa: E402
from sft_trainer.models.embedder import STATIC, load_embedder  # noqa: E402

MAX_FALSE_JOINS = 0.005
GRID = [round(x, 2) for x in np.arange(0.70, 0.991, 0.02)]


def choose_threshold(embedder_name: str) -> float:
    lima = [c for c in load_lima() if calibration_half(c)]
    rng = random.Random(0)
    prompts = [prompt_text(c) for c in lima]
    reworded = [reword(p, rng) for p in prompts]
    embedder = load_embedder(embedder_name)
    # What the step compares: each request's instruction (its material must match exactly).
    clean = embedder.encode([split_request(p)[0] for p in prompts])
    copies = embedder.encode([split_request(p)[0] for p in reworded])
    # The step joins only pairs that state the same operands: measure what it does.
    ops = [operands(p) for p in prompts]
    same_as_copy = np.array([a == operands(r) for a, r in zip(ops, reworded, strict=True)])
    joined_to_original = np.where(same_as_copy, np.einsum("ij,ij->i", clean, copies), -1.0)
    clean_sims = clean @ clean.T
    clean_sims[np.array([[a != b for b in ops] for a in ops])] = -1.0
    np.fill_diagonal(clean_sims, -1.0)
    best_other = clean_sims.max(axis=1)
    print(f"\n== Threshold on calibration LIMA ({len(lima)} prompts + one rewording each), {embedder.name}")
    print(f"{'cosine':>7} {'recall':>7} {'false joins':>12}")
    chosen = None
    for t in GRID:
        recall = float((joined_to_original >= t).mean())
        false = float((best_other >= t).mean())
        print(f"{t:7.2f} {recall:7.3f} {false:12.4f}")
        if chosen is None and false <= MAX_FALSE_JOINS:
            chosen = t
    chosen = chosen if chosen is not None else GRID[-1]
    print(f"lowest threshold with <= {MAX_FALSE_JOINS:.1%} false joins: {chosen}")
    return chosen


def removed_by_semhash(
    vectors: np.ndarray, texts: list[str], threshold: float, model: object
) -> tuple[set[int], float]:
    from semhash import SemHash

    records = [{"id": str(i), "text": t} for i, t in enumerate(texts)]
    started = time.perf_counter()
    semhash = SemHash.from_embeddings(vectors, records, model=model, columns=["text"])  # type: ignore[arg-type]
    result = semhash.self_deduplicate(threshold=threshold)
    seconds = time.perf_counter() - started
    kept = {int(r["id"]) for r in result.selected}
    return set(range(len(texts))) - kept, seconds


def compare_on_alpaca(embedder_name: str, threshold: float, limit: int | None, pairs_to_show: int) -> None:
    alpaca = load_alpaca()[:limit] if limit else load_alpaca()
    embedder = load_embedder(embedder_name)
    started, cpu_started = time.perf_counter(), time.process_time()
    Embeddings(EmbedderStep(model=embedder_name), embedder)(alpaca)
    embed_s, embed_cpu = time.perf_counter() - started, time.process_time() - cpu_started
    step = SemanticDedup(DedupStep(semantic_threshold=threshold), embedder)
    started = time.perf_counter()
    ours = set(step(alpaca))
    ours_s = time.perf_counter() - started
    vectors = request_vectors(alpaca, embedder)
    texts = [prompt_text(c) for c in alpaca]
    static_model = getattr(embedder, "model", None)
    # SemHash as its users run it: one embedding of the whole prompt (the features the embedder step wrote).
    prompts = np.stack([c.features["prompt_emb"] for c in alpaca])
    theirs, theirs_s = removed_by_semhash(prompts, texts, threshold, static_model)
    both = len(ours & theirs)
    union = len(ours | theirs) or 1
    n = len(alpaca)
    print(f"\n== Alpaca, {n} records, {embedder.name}, cosine >= {threshold}")
    # CPU seconds too: on a machine shared with other work, wall time says more about the neighbours.
    print(
        f"embedding prompts and responses: {embed_s:.1f} s wall ({n / embed_s:.0f} records/s), "
        f"{embed_cpu:.1f} s CPU ({n / embed_cpu:.0f} records per CPU-second)"
    )
    print(f"{'method':<28} {'seconds':>8} {'removed':>8} {'clusters':>9}")
    print(f"{'ours (exact, blocked)':<28} {ours_s:8.1f} {len(ours):8d} {len(step.clusters):9d}")
    print(f"{'SemHash (usearch index)':<28} {theirs_s:8.1f} {len(theirs):8d} {'':>9}")
    print(
        f"agreement on removed records: Jaccard {both / union:.3f} ({both} both, {len(ours - theirs)} ours only, "
        f"{len(theirs - ours)} SemHash only)"
    )
    if pairs_to_show:
        found = same_operands(similar_pairs(vectors, threshold), texts)
        rng = random.Random(1)
        sample = rng.sample(range(len(found)), min(pairs_to_show, len(found)))
        print(f"\n== {len(sample)} random pairs of {len(found)} at cosine >= {threshold} (judge each)")
        for k in sample:
            i, j = found[k]
            print(f"[{float(vectors[i] @ vectors[j]):.3f}] {texts[i][:110]!r}\n        {texts[j][:110]!r}")


def speed(records: int) -> None:
    """Records/s (prompt and response each embedded) of both packaged embedders on the first Alpaca records."""
    from sft_trainer.models.embedder import MINILM, StaticEmbedder, TransformerEmbedder

    alpaca = load_alpaca()[:records]
    texts = [text for c in alpaca for text in (prompt_text(c), c.messages[-1].content)]
    print(f"\n== Speed on the first {records} Alpaca records (prompt + response each)")
    print(f"{'model':<26} {'batch':>6} {'records/s':>10} {'per CPU-s':>10}")
    for name, batches in ((STATIC, (512, 2048, 8192)), (MINILM, (16, 32, 64))):
        embedder = load_embedder(name, "cpu")
        embedder.encode(texts[:64])  # warm up
        for batch in batches:
            assert isinstance(embedder, (StaticEmbedder, TransformerEmbedder))
            embedder.batch_size = batch
            chosen = texts if name == STATIC else texts[: len(texts) // 8]  # MiniLM: an eighth, same mix
            started, cpu = time.perf_counter(), time.process_time()
            embedder.encode(chosen)
            wall, cpu = time.perf_counter() - started, time.process_time() - cpu
            n = len(chosen) / 2
            print(f"{name:<26} {batch:6d} {n / wall:10.0f} {n / cpu:10.0f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=STATIC, help="embedder name or folder (default: the static model)")
    parser.add_argument("--limit", type=int, default=None, help="first N Alpaca records only")
    parser.add_argument("--pairs", type=int, default=30, help="random found pairs to print for inspection")
    parser.add_argument("--threshold", type=float, default=None, help="compare on Alpaca at this cosine instead")
    parser.add_argument("--speed", type=int, default=0, help="only measure embedding speed on N Alpaca records")
    args = parser.parse_args()
    if args.speed:
        speed(args.speed)
        return 0
    chosen = choose_threshold(args.model)
    compare_on_alpaca(args.model, args.threshold or chosen, args.limit, args.pairs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
