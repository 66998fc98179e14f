"""Step 6, duplicates: exact (normalised text) and near (MinHash + LSH), best record of each cluster kept.

Word n-grams become 64-bit hashes with numpy (a random linear combination
of per-word random values); their MinHash signatures come from `rensa`
(Rust, R-MinHash, seeded, one thread per usable CPU), which replaced a
numpy multiply-shift implementation after `benchmarks/bench_minhash.py`
measured both against `datasketch` on the same shingles, 128 permutations,
threshold 0.8, 2 CPUs under a load of about 18 (the bench at commit d9b0909):

    52,002 Alpaca records (2.85M shingles)   signatures   removed
      numpy multiply-shift (ours before)       47.1 s        1
      rensa 0.5.0                               2.9 s        3
      datasketch 2.0.0                         16.1 s        3
    6,000 records with 2,000 planted near duplicates (300 true pairs)
                                           precision   recall
      numpy multiply-shift                   0.970      0.957
      rensa 0.5.0                            0.983      0.960
      datasketch 2.0.0                       0.976      0.953

Clusters of different hash families are never identical (a pair near the
threshold falls either side by chance); against the exact Jaccard of the
shingle sets rensa's are as good, and it is 16x faster. LSH bands follow datasketch's choice of
(bands, rows) minimising the weighted area of false positives and false
negatives around the threshold (misses weighted 4:1); every candidate pair is then confirmed by the
signatures' estimated Jaccard similarity, so a cluster holds records that
really are within the threshold of one another (through its members).
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import zlib
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache

import numpy as np

from ..cpus import usable_cpus
from ..formats import Conversation
from .base import FeatureColumns, SetStep, feature_matrix
from .text import normalise


def conversation_text(conv: Conversation) -> str:
    return "\n".join(m.content for m in conv.messages if m.role != "system")


def quality(conv: Conversation) -> float:
    return float(conv.meta.get("scores", {}).get("quality", 0.0))


def _mark_cluster(members: list[int], convs: Sequence[Conversation], kind: str, code: str) -> dict[int, str]:
    """Name the cluster in its members' meta and stop all but the best: highest quality, then earliest in the file.
    Each member is read once (compact records build a record at each read)."""
    read = [convs[i] for i in members]
    keeper = max(read, key=lambda conv: (quality(conv), -conv.source_index))
    cluster = f"{kind}-{keeper.source_index}"
    for conv in read:
        conv.meta["dup_cluster"] = cluster
        if conv is not keeper:
            conv.meta["duplicate_of"] = keeper.source_index
    return {i: code for i, conv in zip(members, read, strict=True) if conv is not keeper}


EXACT_KEY = "exact_key"
MINHASH = "minhash"
EXACT_KEY_BYTES = 16


def exact_key(conv: Conversation) -> bytes:
    """128-bit digest of the normalised turns: equal for exact duplicates, 16 bytes to keep instead of the text."""
    text = "\x1f".join(f"{m.role}:{normalise(m.content)}" for m in conv.messages if m.role != "system")
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=EXACT_KEY_BYTES).digest()


def exact_keys(convs: Sequence[Conversation]) -> np.ndarray:
    """Every record's exact key as a row of a (records x 16) uint8 matrix: compact records hand over the column
    they hold, a list of records is joined."""
    column = convs.feature_column(EXACT_KEY) if isinstance(convs, FeatureColumns) else None
    if column is not None:
        return column
    joined = b"".join(conv.features[EXACT_KEY] for conv in convs)
    return np.frombuffer(joined, dtype=np.uint8).reshape(len(convs), EXACT_KEY_BYTES)


def equal_key_groups(keys: np.ndarray) -> list[list[int]]:
    """Rows of `keys` (a uint8 matrix) that are equal, groups of 2+: members ascending, groups in the order of
    their first member (the one-pod way, by a sort as near dedup's buckets: a dict of lists over a large set held
    0.25 KB a record; the Ray engine groups by key on the cluster)."""
    if len(keys) < 2:
        return []
    rows = np.ascontiguousarray(keys).view(np.dtype((np.void, keys.shape[1]))).ravel()
    order = np.argsort(rows, kind="stable")  # equal keys side by side, each run in ascending rows
    ordered = rows[order]
    starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
    sizes = np.diff(np.append(starts, len(rows)))
    shared = sizes > 1
    starts, sizes = starts[shared], sizes[shared]  # only the runs of 2+ become lists (most keys are alone)
    by_first = np.argsort(order[starts], kind="stable")
    return [order[start : start + size].tolist() for start, size in zip(starts[by_first], sizes[by_first], strict=True)]


class ExactDedup(SetStep):
    """Records whose normalised text is identical; the best-scored one survives."""

    name = "dedup"
    reads_text = False
    reads_features = (EXACT_KEY,)

    def __init__(self) -> None:
        super().__init__()
        self.find_groups: Callable[[np.ndarray], list[list[int]]] = equal_key_groups
        """How groups of equal keys are found: here, or distributed (`ray_engine.py`); same groups either way."""

    def prepare(self, convs: Sequence[Conversation]) -> None:
        for conv in convs:
            if EXACT_KEY not in conv.features:
                conv.features[EXACT_KEY] = exact_key(conv)

    def select(self, convs: Sequence[Conversation]) -> dict[int, str]:
        self.prepare(convs)
        stopped: dict[int, str] = {}
        for members in self.find_groups(exact_keys(convs)):
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


def minhash_signatures(hashes: np.ndarray, offsets: np.ndarray, permutations: int, seed: int) -> np.ndarray:
    """(records x permutations) uint32 MinHash signatures of the records whose shingles start at `offsets`."""
    if not len(offsets):
        return np.empty((0, permutations), dtype=np.uint32)
    # rensa's worker pool is sized once, from RAYON_NUM_THREADS when set: follow the pod's CPU quota.
    os.environ.setdefault("RAYON_NUM_THREADS", str(usable_cpus()))
    from rensa import RMinHash

    bounds = np.append(offsets, len(hashes)).astype(np.uint64)
    matrix = RMinHash.digest_matrix_from_flat_token_hashes(np.ascontiguousarray(hashes), bounds, permutations, seed)
    # Rows come back as lists (the matrix has no buffer); flattening them is faster than np.asarray of nested lists.
    flat = itertools.chain.from_iterable(matrix.to_rows())
    return np.fromiter(flat, dtype=np.uint32, count=len(offsets) * permutations).reshape(len(offsets), permutations)


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


_CONFIRM_ROWS = 1 << 14
"""Candidate pairs compared at once (16,384 pairs of 128 × uint32 signatures: 16 MB)."""


def confirmed_pairs(signatures: np.ndarray, threshold: float) -> Iterable[tuple[int, int]]:
    """(row, leader) pairs: rows sharing an LSH band bucket with the bucket's first row, at estimated Jaccard >= threshold."""
    n, permutations = signatures.shape
    bands, rows = lsh_bands(threshold, permutations)
    for band in range(bands):
        block = np.ascontiguousarray(signatures[:, band * rows : (band + 1) * rows])
        keys = block.view(np.dtype((np.void, block.dtype.itemsize * rows))).ravel()
        _, first_of_key, inverse = np.unique(keys, return_index=True, return_inverse=True)
        leader = first_of_key[inverse.ravel()]
        others = np.nonzero(leader != np.arange(n))[0]
        # A slice of candidates at a time: on a set of copies most rows are candidates, and comparing them all
        # at once held two more copies of their signatures (~1 KB per record).
        for at in range(0, len(others), _CONFIRM_ROWS):
            chunk = others[at : at + _CONFIRM_ROWS]
            similarity = (signatures[chunk] == signatures[leader[chunk]]).mean(axis=1)
            for i in chunk[similarity >= threshold]:
                yield int(i), int(leader[i])


def near_duplicate_clusters(signatures: np.ndarray, threshold: float) -> list[list[int]]:
    """Clusters (lists of row numbers, 2+ members) of records joined by confirmed LSH candidate pairs."""
    return clusters_of_pairs(len(signatures), confirmed_pairs(signatures, threshold))


def clusters_of_pairs(n: int, pairs: Iterable[tuple[int, int]]) -> list[list[int]]:
    """Connected components (2+ members) of `pairs` over rows 0..n-1: each starts with its smallest row, then
    the others ascending; components ordered by their second-smallest row. The same list whatever the pairs' order."""
    union = _UnionFind(n)
    joined = False
    for i, j in pairs:
        union.union(i, j)
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
    reads_text = False
    reads_features = (MINHASH,)

    def __init__(self, *, ngram: int = 5, permutations: int = 128, threshold: float = 0.8, seed: int = 0) -> None:
        super().__init__()
        self.ngram, self.permutations, self.threshold, self.seed = ngram, permutations, threshold, seed
        self.find_clusters: Callable[[np.ndarray, float], list[list[int]]] = near_duplicate_clusters
        """How the LSH clusters are found: here, or distributed (`ray_engine.py`); same clusters either way."""
        self.clusters: list[list[int]] = []
        self.cluster_sources: list[list[int]] = []
        """Each cluster's members by source_index (positions mean nothing outside the set this step saw)."""

    def prepare(self, convs: Sequence[Conversation]) -> None:
        """Each record's MinHash signature; a record's signature does not depend on the batch it is computed in."""
        todo = [conv for conv in convs if MINHASH not in conv.features]
        if not todo:
            return
        hashes, offsets = shingle_hashes([conversation_text(c) for c in todo], self.ngram, self.seed)
        for conv, signature in zip(
            todo, minhash_signatures(hashes, offsets, self.permutations, self.seed), strict=True
        ):
            conv.features[MINHASH] = signature

    def select(self, convs: Sequence[Conversation]) -> dict[int, str]:
        if len(convs) < 2:
            return {}
        self.prepare(convs)
        signatures = feature_matrix(convs, MINHASH)
        self.clusters = self.find_clusters(signatures, self.threshold)
        self.cluster_sources = [[convs[i].source_index for i in members] for members in self.clusters]
        stopped: dict[int, str] = {}
        for members in self.clusters:
            stopped.update(_mark_cluster(members, convs, "near", "near_duplicate"))
        return stopped
