"""Surface junk in a turn: broken encodings and floods of characters no answer is written with.

What it looks for, each under its own reason:

- `mojibake`: UTF-8 read as Windows-1252/Latin-1 ("cafÃ©", "â€™"), as ftfy's
  badness measure finds it (ftfy's authors tuned it to stay silent on real
  accented and typographic text);
- `replacement_chars`: U+FFFD, what a decoder writes for bytes it could not read;
- `invisible_run`: several zero-width or invisible characters in a row (one alone
  is legitimate: a joiner inside an emoji sequence, a non-joiner in Persian);
- `emoji_flood` / `symbol_flood`: a short stretch of text dense in pictographs,
  or in other non-ASCII symbols (kaomoji, box drawing), beyond what any clean
  human answer showed.

Control characters, terminal escape codes included, are validation's
(`validation.control_characters`). The bounds live in
`resources/calibration/surface.json`, written by `benchmarks/calibrate_surface.py`
from the calibration half of LIMA and planted junk.
"""

from __future__ import annotations

import json
import unicodedata
from collections import deque
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import regex
from ftfy.badness import badness

from ..formats import Conversation
from .base import Filter

CALIBRATION = "surface.json"


@cache
def surface_calibration() -> dict[str, Any]:
    """The bounds `benchmarks/calibrate_surface.py` wrote (resources/calibration/surface.json), with its figures."""
    path = resources.files("sft_trainer") / "resources" / "calibration" / CALIBRATION
    return json.loads(path.read_text(encoding="utf-8"))


_PICTOGRAPH = regex.compile(r"\p{Extended_Pictographic}")
_INVISIBLE_RUN_CHARS = "[\u200b-\u200f\u2060-\u2064\ufeff]"
# Non-ASCII punctuation every typeset text uses: quotes, dashes, ellipsis, bullets,
# the degree sign. They never count towards a flood.
_TYPOGRAPHIC = frozenset("‘’‚‛“”„‟«»‹›–—―‐‑‒…•·°§¶†‡′″©®™€£¥¢¡¿×÷±")
_SYMBOL_CATEGORIES = frozenset(("So", "Sk", "Sm", "Sc", "Po", "Ps", "Pe", "Pc", "Pd", "Pi", "Pf", "Lm"))


# Symbols that clean answers set densely on purpose: arrows and logic or set
# notation in formulas, box drawing and blocks in directory trees and tables,
# braille in answers about braille.
_STRUCTURAL = (("\u2190", "\u22ff"), ("\u2500", "\u259f"), ("\u2800", "\u28ff"))


def odd_char(char: str) -> bool:
    """A character of the kind junk floods are made of: a non-ASCII symbol, odd punctuation or modifier."""
    return (
        char > "\x7f"
        and char not in _TYPOGRAPHIC
        and not any(low <= char <= high for low, high in _STRUCTURAL)
        and unicodedata.category(char) in _SYMBOL_CATEGORIES
    )


def densest_window(text: str, width: int) -> tuple[int, int]:
    """Most odd characters in any `width` consecutive characters, and how many of those are pictographs."""
    window: deque[tuple[int, bool]] = deque()
    pictographs = best_odd = best_pictographs = 0
    for i, char in enumerate(text):
        if char <= "\x7f" or not odd_char(char):  # ASCII: most of every text, never odd
            continue
        is_pictograph = _PICTOGRAPH.match(char) is not None
        window.append((i, is_pictograph))
        pictographs += is_pictograph
        while window[0][0] <= i - width:
            pictographs -= window.popleft()[1]
        if len(window) > best_odd:
            best_odd, best_pictographs = len(window), pictographs
    return best_odd, best_pictographs


_DAMAGED = regex.compile(r"[\ufffd\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]|" + _INVISIBLE_RUN_CHARS)
JUNK_WEIGHT = 20
"""How hard junk pulls the quality score down: junk in 1 character of 20 halves it."""
MAX_JUNK_PENALTY = 0.5


def junk_penalty(text: str) -> float:
    """In [0, 0.5]: the share of the quality score that junk characters in `text` cost (0 for clean text).

    Junk characters are the odd ones floods are made of, replacement,
    control and invisible characters, and two per mojibake sequence; a
    copy with junk added always ranks below its clean original.
    """
    if not text or text.isascii() and not _DAMAGED.search(text):
        return 0.0
    junk = sum(1 for char in text if odd_char(char)) + len(_DAMAGED.findall(text)) + 2 * badness(text)
    return min(MAX_JUNK_PENALTY, JUNK_WEIGHT * junk / len(text))


@dataclass(frozen=True, slots=True)
class JunkBounds:
    """What clean text may contain; one more is junk. Calibrated (see the module docstring)."""

    max_mojibake: int
    """ftfy badness (count of mojibake sequences) a turn may have."""
    max_replacement_chars: int
    """U+FFFD characters a turn may have."""
    max_invisible_run: int
    """Longest run of zero-width / invisible characters."""
    window: int
    """Width, in characters, of the stretch in which floods are counted."""
    max_odd_chars: int
    """Odd characters (non-ASCII symbols, emoji, odd punctuation) in any window."""

    @classmethod
    def calibrated(cls) -> JunkBounds:
        return cls(**surface_calibration()["junk"])


class Junk(Filter):
    """Reject turns with mojibake, replacement characters, invisible runs, or emoji / symbol floods."""

    name = "junk"

    def __init__(self, bounds: JunkBounds | None = None) -> None:
        super().__init__()
        self.bounds = bounds = bounds or JunkBounds.calibrated()
        self._invisible_run = regex.compile(f"{_INVISIBLE_RUN_CHARS}{{{bounds.max_invisible_run + 1},}}")

    def check(self, conv: Conversation) -> str | None:
        for message in conv.messages:
            code = self.check_text(message.content)
            if code:
                return code
        return None

    def check_text(self, text: str) -> str | None:
        if text.isascii():  # nothing below can be in pure ASCII: the common case costs one C scan
            return None
        b = self.bounds
        if text.count("\ufffd") > b.max_replacement_chars:
            return "replacement_chars"
        if self._invisible_run.search(text):
            return "invisible_run"
        odd, pictographs = densest_window(text, b.window)
        if odd > b.max_odd_chars:
            return "emoji_flood" if 2 * pictographs >= odd else "symbol_flood"
        if badness(text) > b.max_mojibake:
            return "mojibake"
        return None
