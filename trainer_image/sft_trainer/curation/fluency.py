"""Fluency without a language model: a hashed word-bigram model, thousands of records/s on a CPU.

The scorer LM (`lm_scores.LmScores`) is the best judge of fluency and of
where a text may end, but a CPU scores well under one record/s, so large sets
skip it. `FluencyScores` is the fallback the judges read then, the way CCNet
filters web text by n-gram perplexity: word unigram and bigram counts from
human and model-written answers of the calibration half
(`benchmarks/train_fluency.py`, resources/classifiers/fluency.npz), hashed
into fixed arrays.

- `scores["fluency"]`: the mean pointwise mutual information of adjacent
  words in the prose of the response (code blocks, code lines and list
  markers left out, `text.prose_lines`), with sentence starts and ends as
  words: log P(w2 | w1) - log P(w2), the bigram smoothed towards the
  unigram. A fluent sentence pairs words that go together ("of the",
  "in order"); shuffled words mostly do not, so the mean drops sharply,
  and a mean does not grow with length. Texts with fewer than
  `MIN_PAIRS` pairs of known words are not judged (None): too little to
  measure (a one-line answer, a code-only answer, another script).
- `scores["end_prob"]`: how often the last word of the response ends a
  sentence or a line in the training text, P(end | last word), smoothed.
  A cut text usually stops on a word that goes on ("the", "system is");
  None for an empty response or one that ends on no word. Whether the text
  ends on closing punctuation is `completeness.ends_open`, which the judge
  checks first.

Unseen words (names, other languages) carry no evidence: a pair whose first
word the model never saw is skipped, so a rare name does not decide the mean.
All numbers are finite by construction (counts are smoothed).
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import numpy as np

from ..formats import Conversation
from .base import Annotator
from .text import last_response, prose_lines

MODEL_FILE = "fluency.npz"
CALIBRATION_FILE = "fluency.json"
UNIGRAM_BUCKETS = 1 << 20
BIGRAM_BUCKETS = 1 << 22
START, END = "<s>", "</s>"
MIN_PAIRS = 8
"""Fewer pairs of known words than this: no fluency score (a mean over a handful of pairs is noise)."""
PRIOR = 2.0
"""Dirichlet prior weight that smooths P(w2 | w1) towards P(w2): a first word seen once says little."""
_TOKEN = re.compile(r"\w+(?:['’]\w+)*|[.!?]+")
_WORD_CHAR = re.compile(r"\w")
LIST_MARKER = re.compile(r"^[ \t]*(?:[-*•+–]|\(?\d{1,3}[.)]|\(?[a-zA-Z][.)])[ \t]+", re.MULTILINE)
"""A bullet or a list number at the start of a line."""


def tokens(line: str) -> list[str]:
    """The lower-cased words of a line, with sentence starts and ends (at `.`, `!`, `?` and the line's end)."""
    out = [START]
    for token in _TOKEN.findall(line):
        if _WORD_CHAR.match(token):
            out.append(token)
        elif out[-1] != START:
            out += [END, START]
    if out[-1] == START:
        out.pop()
    else:
        out.append(END)
    return out


def fluency_lines(text: str) -> list[str]:
    """The prose lines of `text` (`text.prose_lines`: no code blocks, no code lines), list items included without their markers.

    A list item is prose for fluency ("- Preheat the oven to 200 degrees."): only its bullet or number is not.
    """
    return prose_lines(LIST_MARKER.sub("", text))


def word_hash(word: str) -> int:
    """A hash stable across processes and machines (Python's `hash` is salted per process)."""
    return zlib.crc32(word.encode("utf-8", "surrogatepass"))


def bigram_buckets(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    mixed = (first.astype(np.uint64) * np.uint64(0x9E3779B1)) ^ second.astype(np.uint64)
    return (mixed % np.uint64(BIGRAM_BUCKETS)).astype(np.int64)


def text_hashes(lines: Iterable[str]) -> list[np.ndarray]:
    """Per line, the word hashes of its tokens (with sentence boundaries)."""
    return [np.fromiter((word_hash(t) for t in tokens(line)), dtype=np.uint64) for line in lines]


@dataclass(frozen=True)
class BigramModel:
    """Hashed word counts: `unigram[h % UNIGRAM_BUCKETS]`, `bigram[bucket(h1, h2)]`, `ends[bucket(h1, h2)]`
    (how often the pair ends a sentence or line), `total` words."""

    unigram: np.ndarray
    bigram: np.ndarray
    ends: np.ndarray
    total: int

    @classmethod
    def count(cls, texts: Iterable[str]) -> BigramModel:
        """Counts over the prose lines of `texts` (what the scorer reads too)."""
        lines = [h for text in texts for h in text_hashes(fluency_lines(text)) if len(h) >= 2]
        words = np.concatenate(lines) if lines else np.empty(0, dtype=np.uint64)
        pairs = np.concatenate([bigram_buckets(h[:-1], h[1:]) for h in lines]) if lines else np.empty(0, np.int64)
        end = np.uint64(word_hash(END))
        before_end = [bigram_buckets(h[:-2], h[1:-1])[h[2:] == end] for h in lines if len(h) >= 3]
        unigram = np.bincount((words % UNIGRAM_BUCKETS).astype(np.int64), minlength=UNIGRAM_BUCKETS)
        bigram = np.bincount(pairs, minlength=BIGRAM_BUCKETS)
        ends = np.bincount(np.concatenate(before_end) if before_end else pairs[:0], minlength=BIGRAM_BUCKETS)
        return cls(unigram, bigram, ends, int(unigram.sum()))

    def __add__(self, other: BigramModel) -> BigramModel:
        return BigramModel(
            self.unigram + other.unigram, self.bigram + other.bigram, self.ends + other.ends, self.total + other.total
        )

    def save(self, path: Any) -> None:
        """Compressed; pair counts capped at 65,535 (uint16): beyond that a pair is certain either way."""
        np.savez_compressed(
            path,
            unigram=self.unigram.astype(np.uint32),
            bigram=np.minimum(self.bigram, 65535).astype(np.uint16),
            ends=np.minimum(self.ends, 65535).astype(np.uint16),
            total=np.int64(self.total),
        )

    @classmethod
    def load(cls, path: Any) -> BigramModel:
        with np.load(path) as data:
            unigram, bigram = data["unigram"].astype(np.float64), data["bigram"].astype(np.float64)
            ends = data["ends"].astype(np.float64)
            if unigram.shape != (UNIGRAM_BUCKETS,) or bigram.shape != ends.shape != (BIGRAM_BUCKETS,):
                raise ValueError(
                    f"{path}: fluency model arrays have shapes {unigram.shape}, {bigram.shape}, {ends.shape}"
                )
            return cls(unigram, bigram, ends, int(data["total"]))

    def _unigram_prob(self, counts: np.ndarray) -> np.ndarray:
        return (counts + 0.5) / (self.total + 0.5 * UNIGRAM_BUCKETS)

    def pair_pmi(self, hashes: np.ndarray) -> np.ndarray:
        """PMI of each adjacent pair whose first word the model has seen."""
        first, second = hashes[:-1], hashes[1:]
        first_counts = self.unigram[(first % UNIGRAM_BUCKETS).astype(np.int64)]
        seen = first_counts > 0
        first, second, first_counts = first[seen], second[seen], first_counts[seen]
        p_second = self._unigram_prob(self.unigram[(second % UNIGRAM_BUCKETS).astype(np.int64)])
        pair_counts = self.bigram[bigram_buckets(first, second)]
        p_given = (pair_counts + PRIOR * p_second) / (first_counts + PRIOR)
        return np.log(p_given) - np.log(p_second)

    def fluency(self, text: str) -> float | None:
        """Mean PMI of adjacent words over the prose of `text`; None with fewer than MIN_PAIRS measured pairs."""
        pmis = [self.pair_pmi(h) for h in text_hashes(fluency_lines(text)) if len(h) >= 2]
        values = np.concatenate(pmis) if pmis else np.empty(0)
        if len(values) < MIN_PAIRS:
            return None
        return float(values.mean())

    def end_prob(self, text: str) -> float | None:
        """P(a sentence or line ends | the last two words of `text`), smoothed towards P(end | last word).

        None when the text ends on no word.
        """
        words = [t for t in _TOKEN.findall(text[-300:]) if _WORD_CHAR.match(t)]
        if not words:
            return None
        end = np.uint64(word_hash(END))
        last = np.uint64(word_hash(words[-1]))
        last_count = self.unigram[int(last % UNIGRAM_BUCKETS)]
        p_end = self._unigram_prob(self.unigram[int(end % UNIGRAM_BUCKETS)])
        p_end_given_last = (self.bigram[self._bucket(last, end)] + PRIOR * p_end) / (last_count + PRIOR)
        if len(words) < 2:
            return float(p_end_given_last)
        pair = self._bucket(np.uint64(word_hash(words[-2])), last)
        return float((self.ends[pair] + PRIOR * p_end_given_last) / (self.bigram[pair] + PRIOR))

    @staticmethod
    def _bucket(first: np.uint64, second: np.uint64) -> int:
        return int(bigram_buckets(np.array([first]), np.array([second]))[0])


@cache
def fluency_calibration() -> dict[str, Any]:
    """The fallback thresholds `benchmarks/train_fluency.py` wrote (resources/calibration/fluency.json), with its figures."""
    path = resources.files("sft_trainer") / "resources" / "calibration" / CALIBRATION_FILE
    return json.loads(path.read_text(encoding="utf-8"))


@cache
def packaged_model() -> BigramModel:
    """The model `benchmarks/train_fluency.py` wrote (resources/classifiers/fluency.npz)."""
    path = resources.files("sft_trainer") / "resources" / "classifiers" / MODEL_FILE
    with resources.as_file(path) as file:
        return BigramModel.load(file)


class FluencyScores(Annotator):
    """Writes `fluency` and `end_prob` into `conv.meta["scores"]` (None where undefined), for the last assistant turn."""

    name = "fluency"
    batch_size = 1024
    forkable = True

    def __init__(self, model: BigramModel | None = None) -> None:
        super().__init__()
        self.model = model or packaged_model()

    def scores(self, text: str) -> dict[str, float | None]:
        fluency, end_prob = self.model.fluency(text), self.model.end_prob(text)
        return {
            "fluency": None if fluency is None else round(fluency, 4),
            "end_prob": None if end_prob is None else float(f"{end_prob:.4g}"),
        }

    def annotate(self, convs: Sequence[Conversation]) -> None:
        for conv in convs:
            conv.meta.setdefault("scores", {}).update(self.scores(last_response(conv)))
