"""Step 6, duplicates: exact (normalised text) and near (MinHash + LSH), best record of each cluster kept.

MinHash is vectorised with numpy: words become ids, word n-grams become
64-bit hashes by a random linear combination of per-word random values, and
each of the `permutations` hash functions is a multiply-shift hash (high 32
bits of a*x + b mod 2^64, a odd). LSH bands follow datasketch's choice of
(bands, rows) minimising the weighted area of false positives and false
negatives around the threshold (misses weighted 4:1); every candidate pair is then confirmed by the
signatures' estimated Jaccard similarity, so a cluster holds records that
really are within the threshold of one another (through its members).
"""

from __future__ import annotations

import os
import re
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

import numpy as np

from ..formats import Conversation
from .base import SetStep
from .text import normalise

# Rows of shingle x permutation hashes computed at once (bounds the memory: 32k x 128 x 8 B = 32 MB per thread).
_CHUNK_SHINGLES = 1 << 15


def conversation_text(conv: Conversation) -> str:
    return "\n".join(m.content for m in conv.messages if m.role != "system")


def quality(conv: Conversation) -> float:
    return float(conv.meta.get("scores", {}).get("quality", 0.0))


def _keep_best(members: list[int], convs: Sequence[Conversation]) -> int:
    """The cluster member to keep: highest quality, then earliest in the file."""
    return max(members, key=lambda i: (quality(convs[i]), -convs[i].source_index))


def _mark_cluster(members: list[int], convs: Sequence[Conversation], kind: str, code: str) -> dict[int, str]:
    keeper = _keep_best(members, convs)
    cluster = f"{kind}-{convs[keeper].source_index}"
    for i in members:
        convs[i].meta["dup_cluster"] = cluster
        if i != keeper:
            convs[i].meta["duplicate_of"] = convs[keeper].source_index
    return {i: code for i in members if i != keeper}


class ExactDedup(SetStep):
    """Records whose normalised text is identical; the best-scored one survives."""

    name = "dedup"

    def select(self, convs: Sequence[Conversation]) -> dict[int, str]:
        groups: dict[str, list[int]] = {}
        for i, conv in enumerate(convs):
            key = "\x1f".join(f"{m.role}:{normalise(m.content)}" for m in conv.messages if m.role != "system")
            groups.setdefault(key, []).append(i)
        stopped: dict[int, str] = {}
        for members in groups.values():
            if len(members) > 1:
                stopped.update(_mark_cluster(members, convs, "exact", "exact_duplicate"))
        return stopped


# Candidates are confirmed by their signatures afterwards, so a false positive
# costs only a comparison while a false negative is a duplicate kept: weigh
# misses four times as heavily when choosing the bands.
_FALSE_POSITIVE_WEIGHT = 0.2


@lru_cache(maxsize=32)
def lsh_bands(threshold: float, permutations: int) -> tuple[int, int]:
    """(bands, rows) minimising false-positive plus false-negative probability mass around `threshold`."""
    grid = np.linspace(0.0, 1.0, 401)
    best = (float("inf"), 1, permutations)
    for bands in range(1, permutations + 1):
        rows = permutations // bands
        p_candidate = 1.0 - (1.0 - grid**rows) ** bands
        below = grid <= threshold
        false_pos = np.trapezoid(p_candidate[below], grid[below])
        false_neg = np.trapezoid(1.0 - p_candidate[~below], grid[~below])
        error = _FALSE_POSITIVE_WEIGHT * false_pos + (1 - _FALSE_POSITIVE_WEIGHT) * false_neg
        if error < best[0]:
            best = (error, bands, rows)
    return best[1], best[2]


_SHINGLE_WORD = re.compile(r"\w+")


def shingle_hashes(texts: Sequence[str], ngram: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hashes of every word n-gram of every text, and each text's start offset into them.

    A word's value is its CRC-32 spread over 64 bits (deterministic across
    runs, unlike Python's salted `hash`); an n-gram's hash is a random linear
    combination of its words' values. A text shorter than `ngram` words gives
    one shingle (its words padded with zeros).
    """
    per_text = [_SHINGLE_WORD.findall(text.lower()) for text in texts]
    lengths = np.fromiter((max(len(w), ngram) for w in per_text), dtype=np.int64, count=len(texts))
    flat: list[str] = []
    for words_of_text in per_text:
        flat += words_of_text
        if len(words_of_text) < ngram:
            flat += [""] * (ngram - len(words_of_text))
    rng = np.random.default_rng(seed)
    spread = rng.integers(1, 2**63, size=2, dtype=np.uint64) | np.uint64(1)
    crc = np.fromiter(map(zlib.crc32, map(str.encode, flat)), dtype=np.uint64, count=len(flat))
    values = crc * spread[0]
    values ^= values >> np.uint64(29)
    values *= spread[1]
    values[crc == 0] = 0  # the padding ("" has CRC 0) adds nothing
    multipliers = rng.integers(1, 2**63, size=ngram, dtype=np.uint64) | np.uint64(1)
    span = len(values) - ngram + 1
    hashes = values[:span] * multipliers[0]
    for k in range(1, ngram):
        hashes += values[k : k + span] * multipliers[k]  # wraps mod 2^64 by design
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    counts = lengths - ngram + 1
    # Keep the n-grams that start inside a text and end inside it too.
    record_of = np.repeat(np.arange(len(texts)), lengths)[:span]
    valid = (np.arange(span) - starts[record_of]) < counts[record_of]
    offsets = np.concatenate(([0], np.cumsum(counts)[:-1]))
    return hashes[valid], offsets


def _signature_block(hashes: np.ndarray, starts: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    block = np.empty((len(hashes), len(a)), dtype=np.uint64)
    np.multiply(hashes[:, None], a, out=block)
    np.add(block, b, out=block)
    np.right_shift(block, np.uint64(32), out=block)  # multiply-shift: the high 32 bits
    return np.minimum.reduceat(block, starts, axis=0).astype(np.uint32)


def minhash_signatures(hashes: np.ndarray, offsets: np.ndarray, permutations: int, seed: int) -> np.ndarray:
    """(records x permutations) uint32 MinHash signatures."""
    rng = np.random.default_rng(seed + 1)
    a = rng.integers(1, 2**63, size=permutations, dtype=np.uint64) | np.uint64(1)
    b = rng.integers(0, 2**63, size=permutations, dtype=np.uint64)
    ends = np.append(offsets[1:], len(hashes))
    chunks = []
    first = 0
    while first < len(offsets):
        # Whole records per chunk, about _CHUNK_SHINGLES shingles each.
        last = max(int(np.searchsorted(offsets, offsets[first] + _CHUNK_SHINGLES, side="right")), first + 1)
        chunks.append((first, last))
        first = last

    def compute(chunk: tuple[int, int]) -> np.ndarray:
        lo, hi = offsets[chunk[0]], ends[chunk[1] - 1]
        return _signature_block(hashes[lo:hi], offsets[chunk[0] : chunk[1]] - lo, a, b)

    # numpy releases the GIL inside these loops: two threads use two cores.
    with ThreadPoolExecutor(max_workers=min(2, os.cpu_count() or 1)) as pool:
        blocks = list(pool.map(compute, chunks))
    if not blocks:
        return np.empty((0, permutations), dtype=np.uint32)
    return np.concatenate(blocks)


class _UnionFind:
    def __init__(self, size: int) -> None:
        self.parent = np.arange(size)

    def find(self, i: int) -> int:
        parent = self.parent
        root = i
        while parent[root] != root:
            root = parent[root]
        while parent[i] != root:
            parent[i], i = root, parent[i]
        return int(root)

    def union(self, i: int, j: int) -> None:
        ri, rj = self.find(i), self.find(j)
        if ri != rj:
            self.parent[max(ri, rj)] = min(ri, rj)


def near_duplicate_clusters(signatures: np.ndarray, threshold: float) -> list[list[int]]:
    """Clusters (lists of row numbers, 2+ members) of records joined by confirmed LSH candidate pairs."""
    n, permutations = signatures.shape
    bands, rows = lsh_bands(threshold, permutations)
    union = _UnionFind(n)
    joined = False
    for band in range(bands):
        block = np.ascontiguousarray(signatures[:, band * rows : (band + 1) * rows])
        keys = block.view(np.dtype((np.void, block.dtype.itemsize * rows))).ravel()
        _, first_of_key, inverse = np.unique(keys, return_index=True, return_inverse=True)
        leader = first_of_key[inverse.ravel()]
        others = np.nonzero(leader != np.arange(n))[0]
        if not len(others):
            continue
        similarity = (signatures[others] == signatures[leader[others]]).mean(axis=1)
        for i in others[similarity >= threshold]:
            union.union(int(i), int(leader[i]))
            joined = True
    if not joined:
        return []
    roots = np.array([union.find(i) for i in range(n)])
    clusters: dict[int, list[int]] = {}
    for i in np.nonzero(roots != np.arange(n))[0]:
        clusters.setdefault(int(roots[i]), [int(roots[i])]).append(int(i))
    return list(clusters.values())


class NearDedup(SetStep):
    """Near duplicates by MinHash + LSH over word n-grams; the best-scored record of each cluster survives."""

    name = "dedup"

    def __init__(self, *, ngram: int = 5, permutations: int = 128, threshold: float = 0.8, seed: int = 0) -> None:
        super().__init__()
        self.ngram, self.permutations, self.threshold, self.seed = ngram, permutations, threshold, seed
        self.clusters: list[list[int]] = []
        self.cluster_sources: list[list[int]] = []
        """Each cluster's members by source_index (positions mean nothing outside the set this step saw)."""

    def select(self, convs: Sequence[Conversation]) -> dict[int, str]:
        if len(convs) < 2:
            return {}
        hashes, offsets = shingle_hashes([conversation_text(c) for c in convs], self.ngram, self.seed)
        signatures = minhash_signatures(hashes, offsets, self.permutations, self.seed)
        self.clusters = near_duplicate_clusters(signatures, self.threshold)
        self.cluster_sources = [[convs[i].source_index for i in members] for members in self.clusters]
        stopped: dict[int, str] = {}
        for members in self.clusters:
            stopped.update(_mark_cluster(members, convs, "near", "near_duplicate"))
        return stopped
