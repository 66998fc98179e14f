"""Step 11, decontamination: drop records that share a word n-gram (13 by default) with an evaluation set.

Evaluation files are read as datasets when they are one (Alpaca, ShareGPT,
messages), otherwise every string field of every JSON / JSONL record, or
every cell of a CSV, counts as evaluation text. Texts shorter than n words
cannot share an n-gram and are ignored (reported as such).
"""

from __future__ import annotations

import contextlib
import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..formats import Conversation, read_dataset
from .base import Filter
from .text import WORD_RE


def ngrams(text: str, n: int) -> Iterator[str]:
    tokens = WORD_RE.findall(text.lower())
    for i in range(len(tokens) - n + 1):
        yield " ".join(tokens[i : i + n])


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def eval_texts(path: str | Path) -> list[str]:
    path = Path(path)
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8") as handle:
            return [cell for row in csv.reader(handle) for cell in row]
    texts: list[str] = []
    for item in read_dataset(path):
        if isinstance(item, Conversation):
            texts += [m.content for m in item.messages]
        else:
            raw = item.raw
            if isinstance(raw, str):
                with contextlib.suppress(json.JSONDecodeError):  # an unparsable line is scanned as text
                    raw = json.loads(raw)
            texts += list(_strings(raw))
    return texts


class Decontamination(Filter):
    name = "decontamination"

    def __init__(self, eval_sets: list[str], *, ngram: int = 13) -> None:
        super().__init__()
        self.n = ngram
        self.grams: set[str] = set()
        self.eval_texts = 0
        self.short_texts = 0
        for path in eval_sets:
            for text in eval_texts(path):
                grams = set(ngrams(text, ngram))
                self.eval_texts += 1
                self.short_texts += not grams
                self.grams |= grams

    def check(self, conv: Conversation) -> str | None:
        if not self.grams:
            return None
        for message in conv.messages:
            if any(g in self.grams for g in ngrams(message.content, self.n)):
                return "eval_overlap"
        return None
