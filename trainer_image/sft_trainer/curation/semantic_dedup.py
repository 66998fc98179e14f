"""Semantic duplicates: the same request reworded, found by the cosine similarity of prompt embeddings.

MinHash (`dedup.NearDedup`) finds records that share word n-grams; it misses
"Give me three tips for staying healthy." vs "What are 3 ways to stay
healthy?". `SemanticDedup` joins two records whose `prompt_emb` (written by
`embeddings.Embeddings`) have a cosine similarity at or above the threshold,
takes the connected groups as clusters (as `NearDedup` does) and keeps the
best-scored record of each (`dedup.quality`, then the earliest): the others
are rejected as `dedup.semantic_duplicate`, with `meta["dup_cluster"] =
"semantic-<keeper's source_index>"` and `meta["duplicate_of"]`.

Only the prompt is compared: a reworded request is a duplicate for training
whatever its two answers say (the set teaches the same instruction twice),
and LIMA-style long answers would dilute the signal.

Operands: two prompts that state different numbers or quote different text
ask different things, however close their embeddings ("Calculate the area
of a triangle with sides 8, 6, 4" vs "... 3, 4, 5"; "Generate a sentence
that begins with 'I remember when'" vs "... 'She had a dream'"). Alpaca
holds thousands of such template siblings, and an embedding, the static
model's above all, weighs a number or a quoted phrase like any other token.
The same holds for the material a request works on: the text after its
first paragraph (Alpaca's `input`), or after the first ": " of a one-paragraph
prompt ("Rearrange the words: do, why, you, like"). Two requests are
duplicates only if their materials are the same text (normalised) and their
instructions mean the same; the instructions are then compared on their own
embeddings, because a long shared material (an article asked about twice,
once for a title and once for a summary) would otherwise make any two
instructions look alike. A candidate pair whose operands (numbers, number
words up to twenty, quoted strings, the material) differ is not joined.

Search: exact, by blocked matrix products over the upper triangle (rows of
`BLOCK` against every later record), so the result does not depend on an
index's approximations or thread timing. On the 52,002 Alpaca records
(static model, 256 dimensions, 2 shared cores) the step takes about 25 s,
re-embedding the instructions included; SemHash (usearch index) took 49 s
on the same vectors (`benchmarks/bench_semantic_dedup.py`).

Threshold: `curation.dedup.semanticThreshold`, else `DEFAULT_THRESHOLDS`
for the packaged embedders, chosen by `benchmarks/bench_semantic_dedup.py`
on planted rewordings of calibration LIMA prompts and checked on real Alpaca
pairs (precision printed there).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from ..config.curation import DedupStep
from ..formats import Conversation
from ..models.embedder import STATIC, Embedder
from ..runconfig import ConfigError
from .base import SetStep
from .dedup import _mark_cluster, _UnionFind
from .embeddings import PROMPT
from .text import ONES_WORDS, normalise, prompt_text

BLOCK = 1024
"""Rows compared at once: 1,024 x 52,000 float32 similarities are 213 MB."""
DEFAULT_THRESHOLDS: dict[str, float] = {STATIC: 0.84}
"""The lowest cosine joining at most 0.5% of calibration LIMA prompts to another (benchmarks/bench_semantic_dedup.py):
it joins 91% of planted rewordings there. On random Alpaca pairs it finds, about 17 in 30 are the same request
reworded; most others are close siblings (Celsius to Fahrenheit vs the reverse), hence `dedup.semantic` is off by
default."""


_NUMBER_WORDS = {word: str(value) for value, word in enumerate((*ONES_WORDS, "twenty"))}
_OPERAND = re.compile(
    r"\d+(?:[.,]\d+)*|\b(?:" + "|".join(_NUMBER_WORDS) + r")\b|\"([^\"\n]{1,200})\"|“([^”\n]{1,200})”", re.IGNORECASE
)


def split_request(prompt: str) -> tuple[str, str]:
    """(instruction, material): the text after the first paragraph, else after the first ": ", is the material."""
    instruction, separator, material = prompt.strip().partition("\n\n")
    if not separator:
        instruction, separator, material = instruction.partition(": ")
    return (instruction, material) if separator and material.strip() else (prompt.strip(), "")


def operands(prompt: str) -> frozenset[str]:
    """The numbers (number words as digits), quoted strings and material a prompt states, normalised."""
    found = set()
    material = split_request(prompt)[1]
    if material:
        # Punctuation-only material (Morse code, symbols) normalises to nothing: compare it as written.
        found.add("material: " + (normalise(material) or " ".join(material.split())))
    for match in _OPERAND.finditer(prompt):
        quoted = match.group(1) or match.group(2)
        if quoted is not None:
            found.add(" ".join(quoted.lower().split()))
        else:
            token = match.group().lower()
            found.add(_NUMBER_WORDS.get(token, token.replace(",", "")))
    return frozenset(found)


def request_vectors(convs: Sequence[Conversation], embedder: Embedder) -> np.ndarray:
    """(n, dim) unit vectors of each request's instruction: the prompt embedding, re-embedded without its material.

    A record without `features["prompt_emb"]` means the embedder step did not run: a ValueError naming records.
    """
    missing = [conv.source_index for conv in convs if PROMPT not in conv.features]
    if missing:
        raise ValueError(
            f"semantic dedup needs features[{PROMPT!r}] (the embedder step); records {missing[:5]} lack it"
        )
    vectors = np.stack([np.asarray(conv.features[PROMPT], dtype=np.float32) for conv in convs])
    with_material = {}
    for i, conv in enumerate(convs):
        instruction, material = split_request(prompt_text(conv))
        if material:
            with_material[i] = instruction
    if with_material:
        vectors[list(with_material)] = embedder.encode(list(with_material.values()))
    return vectors


def similar_pairs(vectors: np.ndarray, threshold: float) -> np.ndarray:
    """(k, 2) array of row pairs i < j whose dot product is >= threshold (unit rows: cosine).

    Non-finite similarities never reach the threshold (NaN compares false).
    """
    n = len(vectors)
    found = []
    for start in range(0, n, BLOCK):
        stop = min(start + BLOCK, n)
        sims = vectors[start:stop] @ vectors[start:].T
        rows, cols = np.nonzero(sims >= threshold)
        cols = cols + start
        rows = rows + start
        later = cols > rows
        found.append(np.stack([rows[later], cols[later]], axis=1))
    return np.concatenate(found) if found else np.empty((0, 2), dtype=np.int64)


def same_operands(pairs: np.ndarray, prompts: Sequence[str]) -> np.ndarray:
    """The pairs whose prompts state the same operands (see the module docstring)."""
    cache: dict[int, frozenset[str]] = {}

    def of(i: int) -> frozenset[str]:
        if i not in cache:
            cache[i] = operands(prompts[i])
        return cache[i]

    keep = [k for k, (i, j) in enumerate(pairs) if of(int(i)) == of(int(j))]
    return pairs[keep] if len(pairs) else pairs


def clusters(n: int, pairs: np.ndarray) -> list[list[int]]:
    """Connected groups (2+ members, rows in order) of the graph the pairs draw."""
    union = _UnionFind(n)
    for i, j in pairs:
        union.union(int(i), int(j))
    groups: dict[int, list[int]] = {}
    for i in np.unique(pairs):
        groups.setdefault(union.find(int(i)), []).append(int(i))
    return [sorted(members) for members in groups.values() if len(members) > 1]


class SemanticDedup(SetStep):
    """Prompts whose embeddings are within the threshold; the best-scored record of each cluster survives."""

    name = "dedup"
    reads_features = (PROMPT,)

    def __init__(self, config: DedupStep, embedder: Embedder) -> None:
        super().__init__()
        self.embedder = embedder
        threshold = config.semantic_threshold
        if threshold is None:
            threshold = DEFAULT_THRESHOLDS.get(embedder.name)
            if threshold is None:
                raise ConfigError(
                    f"curation.dedup.semanticThreshold: no calibrated value for the embedder {embedder.name!r} "
                    f"(calibrated: {', '.join(sorted(DEFAULT_THRESHOLDS))}); set it"
                )
        self.threshold = float(threshold)
        self.clusters: list[list[int]] = []

    def select(self, convs: Sequence[Conversation]) -> dict[int, str]:
        if len(convs) < 2:
            return {}
        pairs = similar_pairs(request_vectors(convs, self.embedder), self.threshold)
        pairs = same_operands(pairs, [prompt_text(conv) for conv in convs])
        self.clusters = clusters(len(convs), pairs)
        stopped: dict[int, str] = {}
        for members in self.clusters:
            stopped.update(_mark_cluster(members, convs, "semantic", "semantic_duplicate"))
        return stopped
