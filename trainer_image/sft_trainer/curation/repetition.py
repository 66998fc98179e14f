"""Step 3, repetition: Gopher-style statistics on the prose of each response.

Rae et al. (2021, "Scaling Language Models", appendix A) drop documents whose
duplicated lines, duplicated n-grams or most frequent n-gram take too large a
share of the text. Responses are much shorter than web pages, so statistics
start at MIN_WORDS words, and code blocks, list items and table rows are
measured apart (code repeats tokens by nature; an extraction answer lists
similar items; a table repeats its cells). Each bound is the largest value
that clean text no test scores shows, never below Gopher's
(`benchmarks/calibrate_surface.py`, resources/calibration/surface.json).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from ..formats import Conversation
from .base import Filter
from .junk import surface_calibration
from .text import _LIST_ITEM, WORD_RE, prose_lines, without_code_blocks

# Gopher's statistics were made for web documents; below this many words of
# prose they flag ordinary style (a poem's refrain, a repeated term), as
# LIMA's human answers showed.
MIN_WORDS = 100
# The duplicate-line fraction needs a few lines to mean anything.
MIN_LINES = 4
# A list needs this many items before duplicated items count, and an item
# this many words: short options ("Yes", "No") legitimately repeat.
MIN_LIST_ITEMS = 4
MIN_ITEM_WORDS = 3
# Verse (songs, poems: many short lines) repeats by design (a chorus, a
# refrain); the audit sample showed every flagged song was fine. Verse gets
# bounds this many times looser.
VERSE_MIN_LINES = 8
VERSE_MAX_WORDS_PER_LINE = 10
VERSE_SLACK = 2.5


NGRAM = 5
"""The duplicated n-grams' length (Gopher's shortest: it measures 5- to 10-grams)."""
TOP_NGRAM_STEP = 0.02
"""How much Gopher lowers the top-n-gram bound per extra word of n-gram length."""


def is_verse(lines: list[str]) -> bool:
    short = sum(1 for line in lines if len(line.split()) <= VERSE_MAX_WORDS_PER_LINE)
    return len(lines) >= VERSE_MIN_LINES and short >= 0.8 * len(lines)


def measured_prose(text: str, exempt_code_and_lists: bool = True) -> tuple[list[str], list[str], float]:
    """(prose lines, their lower-cased words, the slack of their bounds): what the Gopher statistics read."""
    lines = prose_lines(text, exempt_code_and_lists=exempt_code_and_lists)
    return lines, WORD_RE.findall(" ".join(lines).lower()), VERSE_SLACK if is_verse(lines) else 1.0


@dataclass(slots=True)
class RepetitionStats:
    duplicate_line_fraction: float = 0.0
    duplicate_ngram_fraction: float = 0.0
    top_ngram_share: dict[int, float] | None = None
    duplicate_list_item_fraction: float = 0.0


def duplicate_line_fraction(lines: list[str]) -> float:
    if not lines:
        return 0.0
    seen: set[str] = set()
    duplicates = 0
    for line in lines:
        key = line.strip().lower()
        if key in seen:
            duplicates += 1
        seen.add(key)
    return duplicates / len(lines)


def top_ngram_share(tokens: list[str], n: int) -> float:
    """Characters in the most frequent n-gram's occurrences / characters in all words (0 if it occurs once)."""
    if len(tokens) < n + 1:
        return 0.0
    counts = Counter(zip(*(tokens[i:] for i in range(n)), strict=False))
    gram, count = counts.most_common(1)[0]
    if count < 2:
        return 0.0
    total = sum(map(len, tokens))
    return min(1.0, count * sum(map(len, gram)) / total) if total else 0.0


def top_ngram_bounds(two_gram_bound: float) -> dict[int, float]:
    """The bound of each n-gram length from the 2-gram's: Gopher lowers it by TOP_NGRAM_STEP per extra word."""
    return {n: two_gram_bound - TOP_NGRAM_STEP * (n - 2) for n in (2, 3, 4)}


def duplicate_ngram_fraction(tokens: list[str], n: int) -> float:
    """Characters of words inside an n-gram that already occurred / characters in all words."""
    if len(tokens) < n + 1:
        return 0.0
    seen: set[tuple[str, ...]] = set()
    covered = bytearray(len(tokens))
    for i, gram in enumerate(zip(*(tokens[j:] for j in range(n)), strict=False)):
        if gram in seen:
            covered[i : i + n] = b"\x01" * n
        else:
            seen.add(gram)
    total = sum(map(len, tokens))
    dup = sum(len(t) for t, c in zip(tokens, covered, strict=True) if c)
    return dup / total if total else 0.0


def list_blocks(text: str) -> list[list[str]]:
    """The items of each list, one list per run of item lines (blank lines allowed inside, any other line ends it).

    A form or a how-to repeats its options from one list to the next ("Yes" /
    "No" under every question); a degenerate list repeats items inside one list.
    """
    blocks: list[list[str]] = [[]]
    for line in text.splitlines():
        if _LIST_ITEM.match(line):  # the same notion of a list item as the exemption
            blocks[-1].append(_LIST_ITEM.sub("", line).strip().lower())
        elif line.strip() and blocks[-1]:
            blocks.append([])
    return [block for block in blocks if block]


# A sentence ends at . ! ? followed by space, or at a line end.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
LOOP_MIN_WORDS = 4
"""A looped sentence has at least this many words: "No." twice, or a refrain's "Oh oh", is not a loop."""


def distinct_words(text: str) -> int:
    """Words of the text, each repeated sentence counted once: a loop adds nothing."""
    seen: set[str] = set()
    count = 0
    for sentence in _SENTENCE_END.split(text):
        key = " ".join(sentence.lower().split())
        if key and key not in seen:
            seen.add(key)
            count += len(key.split())
    return count


LOOP_MAX_PERIOD = 3
"""A loop may cycle through up to this many sentences ("e.g." splits one sentence in two)."""


def longest_sentence_loop(text: str) -> int:
    """Most times a sentence, or a cycle of up to 3, follows itself in a row: what a decoder stuck in a loop writes.

    The cycle must hold LOOP_MIN_WORDS words. Fenced code blocks are left
    out (a program may repeat a statement), and so are list items
    (repeated items are `duplicate_list_items`).
    """
    lines = [line for line in without_code_blocks(text).splitlines() if not _LIST_ITEM.match(line)]
    keys = [k for k in (" ".join(s.lower().split()) for s in _SENTENCE_END.split("\n".join(lines))) if k]
    best = 1
    for period in range(1, LOOP_MAX_PERIOD + 1):
        for phase in range(period):
            run = 1
            for i in range(phase + period, len(keys) - period + 1, period):
                cycle = keys[i : i + period]
                if cycle == keys[i - period : i] and sum(len(k.split()) for k in cycle) >= LOOP_MIN_WORDS:
                    run += 1
                    best = max(best, run)
                else:
                    run = 1
    return best


class Repetition(Filter):
    """Reject responses whose prose repeats itself, and lists that repeat their items."""

    name = "repetition"

    def __init__(
        self,
        *,
        max_duplicate_line_fraction: float | None,
        max_duplicate_ngram_fraction: float | None,
        max_top_ngram_share: float | None,
        exempt_code_and_lists: bool = True,
        max_sentence_repeats: int | None = None,
    ) -> None:
        """Bounds left None are the calibrated ones (`junk.surface_calibration`)."""
        super().__init__()
        calibrated = surface_calibration()["repetition"]

        def given_or_calibrated(value: float | None, key: str) -> float:
            return value if value is not None else float(calibrated[key])

        self.max_sentence_repeats = int(given_or_calibrated(max_sentence_repeats, "max_sentence_repeats"))
        self.max_dup_lines = given_or_calibrated(max_duplicate_line_fraction, "max_duplicate_line_fraction")
        self.max_dup_ngrams = given_or_calibrated(max_duplicate_ngram_fraction, "max_duplicate_ngram_fraction")
        self.max_top_share = top_ngram_bounds(given_or_calibrated(max_top_ngram_share, "max_top_ngram_share"))
        self.exempt = exempt_code_and_lists

    def check(self, conv: Conversation) -> str | None:
        for message in conv.messages:
            if message.role == "assistant":
                code = self.check_text(message.content)
                if code:
                    return code
        return None

    def check_text(self, text: str) -> str | None:
        # A loop is judged before the word minimum: a short sentence repeated
        # ten times is often under it, and no clean answer repeats a sentence
        # back to back (calibrated).
        if longest_sentence_loop(text) > self.max_sentence_repeats:
            return "looped_sentence"
        lines, tokens, slack = measured_prose(text, self.exempt)
        if len(tokens) >= MIN_WORDS:
            if len(lines) >= MIN_LINES and duplicate_line_fraction(lines) > self.max_dup_lines * slack:
                return "duplicate_lines"
            for n, bound in self.max_top_share.items():
                if top_ngram_share(tokens, n) > bound * slack:
                    return "top_ngram"
            if duplicate_ngram_fraction(tokens, NGRAM) > self.max_dup_ngrams * slack:
                return "duplicate_ngrams"
        if self.exempt:
            for block in list_blocks(text):
                items = [item for item in block if len(item.split()) >= MIN_ITEM_WORDS]
                if len(items) >= MIN_LIST_ITEMS and duplicate_line_fraction(items) > self.max_dup_lines:
                    return "duplicate_list_items"
        return None
