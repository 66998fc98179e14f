"""Step 3, repetition: Gopher-style statistics on the prose of each response.

Rae et al. (2021, "Scaling Language Models", appendix A) drop documents whose
duplicated lines, duplicated n-grams or most frequent n-gram take too large a
share of the text. Responses are much shorter than web pages, so statistics
start at MIN_WORDS words, and code blocks and list items are measured apart
(code repeats tokens by nature; an extraction answer lists similar items).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from ..formats import Conversation
from .base import Filter
from .text import WORD_RE, prose_lines

# Below this many words the fractions are too coarse to mean anything
# ("Yes, yes." would be 100% duplicated).
MIN_WORDS = 12
# A list needs this many items before duplicated items count.
MIN_LIST_ITEMS = 3


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
    counts = Counter(zip(*(tokens[i:] for i in range(n))))
    gram, count = counts.most_common(1)[0]
    if count < 2:
        return 0.0
    total = sum(map(len, tokens))
    return min(1.0, count * sum(map(len, gram)) / total) if total else 0.0


def duplicate_ngram_fraction(tokens: list[str], n: int) -> float:
    """Characters of words inside an n-gram that already occurred / characters in all words."""
    if len(tokens) < n + 1:
        return 0.0
    seen: set[tuple[str, ...]] = set()
    covered = bytearray(len(tokens))
    for i, gram in enumerate(zip(*(tokens[j:] for j in range(n)))):
        if gram in seen:
            covered[i : i + n] = b"\x01" * n
        else:
            seen.add(gram)
    total = sum(map(len, tokens))
    dup = sum(len(t) for t, c in zip(tokens, covered) if c)
    return dup / total if total else 0.0


def list_items(text: str) -> list[str]:
    from .text import _LIST_ITEM  # the same notion of a list item as the exemption

    return [_LIST_ITEM.sub("", line).strip().lower() for line in text.splitlines() if _LIST_ITEM.match(line)]


class Repetition(Filter):
    """Reject responses whose prose repeats itself, and lists that repeat their items."""

    name = "repetition"

    def __init__(
        self,
        *,
        max_duplicate_line_fraction: float,
        max_duplicate_ngram_fraction: float,
        max_top_ngram_share: float,
        exempt_code_and_lists: bool = True,
    ) -> None:
        super().__init__()
        self.max_dup_lines = max_duplicate_line_fraction
        self.max_dup_ngrams = max_duplicate_ngram_fraction
        # Gopher lowers the bound by 0.02 per extra word of n-gram length.
        self.max_top_share = {2: max_top_ngram_share, 3: max_top_ngram_share - 0.02, 4: max_top_ngram_share - 0.04}
        self.exempt = exempt_code_and_lists

    def check(self, conv: Conversation) -> str | None:
        for message in conv.messages:
            if message.role == "assistant":
                code = self.check_text(message.content)
                if code:
                    return code
        return None

    def check_text(self, text: str) -> str | None:
        lines = prose_lines(text, exempt_code_and_lists=self.exempt)
        tokens = WORD_RE.findall(" ".join(lines).lower())
        if len(tokens) >= MIN_WORDS:
            if len(lines) > 1 and duplicate_line_fraction(lines) > self.max_dup_lines:
                return "duplicate_lines"
            for n, bound in self.max_top_share.items():
                if top_ngram_share(tokens, n) > bound:
                    return "top_ngram"
            if duplicate_ngram_fraction(tokens, 5) > self.max_dup_ngrams:
                return "duplicate_ngrams"
        if self.exempt:
            items = list_items(text)
            if len(items) >= MIN_LIST_ITEMS and duplicate_line_fraction(items) > self.max_dup_lines:
                return "duplicate_list_items"
        return None
