"""Text helpers shared by the steps: words, prose without code or lists, normalisation."""

from __future__ import annotations

import re

from ..formats import Conversation

WORD_RE = re.compile(r"\w+(?:['’]\w+)*")

FENCE_LINE = re.compile(r"^[ \t]*(`{3,}|~{3,})(?:(?!```)[^\n])*$")
"""A code fence: a line opening with three backticks (or tildes) and no second three backticks on it.

What follows the opening fence is an info string or, in LIMA's StackExchange answers, code
(```mysql> select ...;, ```host: `0.0.0.0`: single backticks included). A line with a second three
backticks opens with an inline span (LIMA writes inline code as ```x```), not a fence.
"""
# A list item: bullets, "1." / "1)" / "a)" numbering, or a "Key: value" line.
_LIST_ITEM = re.compile(r"^\s*(?:[-*•+–]|\(?\d{1,3}[.)]|\(?[a-zA-Z][.)]|[A-Z][\w ]{0,30}:)\s+")
# A line that reads as code: indented, or dense in symbols programs use and prose does not. A bracket
# counts when it calls (`f(`, `)(`) or is empty (`()`), never when it opens a parenthetical after a space:
# half of LIMA's answers have a line such as "(Imitola et al., 2004)" or "(also called the index)".
_CODE_HINT = re.compile(
    r"[{};=<>\[\]#$]|(?<=[\w)(])\(|\(\)"
    r"|^\s*(def|class|import|from|return|for|foreach|while|with|if|else|elif|print|echo|var|let|const|function|public"
    r"|private|int|SELECT|FROM|WHERE)\b"
)


_TABLE_ROW = re.compile(r"\|[^|\n]*\|")
"""A table row: cells between pipes ("| 2011 | 1:00 PM | Ravens vs. Bengals |", "a | b | c"); prose has no two pipes."""


def words(text: str) -> list[str]:
    return WORD_RE.findall(text.lower())


def is_code_line(line: str) -> bool:
    if line.startswith(("    ", "\t")):
        return True
    hints = len(_CODE_HINT.findall(line))
    return hints >= 2 or (hints >= 1 and len(line.split()) <= 4)


def prose_lines(text: str, *, exempt_code_and_lists: bool = True) -> list[str]:
    """The non-empty lines of `text`, without code blocks, code lines, list items and table rows.

    Repetition statistics are meant for prose: code repeats tokens by nature,
    an extraction answer lists similar items and a table repeats its cells
    ("| 2011 | 1:00 PM |" on every row), none of them is degenerate text.
    """
    if exempt_code_and_lists:
        text = without_code_blocks(text)
    lines = [line for line in text.splitlines() if line.strip()]
    if not exempt_code_and_lists:
        return lines
    return [
        line for line in lines if not _LIST_ITEM.match(line) and not is_code_line(line) and not _TABLE_ROW.search(line)
    ]


def split_code_blocks(text: str) -> tuple[str, bool]:
    """(`text` without its fenced code blocks, fence lines included; whether the last block is left open).

    A block closes at the next fence line of the same character, or runs to the end of the text. Inline
    code (```x``` or `x` inside a line) stays: it is part of its sentence, and cutting it out would join
    the words around it.
    """
    kept: list[str] = []
    fence: str | None = None
    for line in text.split("\n"):
        opening = FENCE_LINE.match(line)
        if fence is None and opening is None:
            kept.append(line)
        elif fence is None and opening is not None:
            fence = opening.group(1)[0]
        elif opening is not None and opening.group(1)[0] == fence:
            fence = None
    return "\n".join(kept), fence is not None


def without_code_blocks(text: str) -> str:
    return split_code_blocks(text)[0]


def looks_like_code(text: str) -> bool:
    """Fenced code, or at least three lines (and a third of the lines) that read as code."""
    if "```" in text:
        return True
    lines = [line for line in text.splitlines() if line.strip()]
    code = sum(1 for line in lines if is_code_line(line))
    return code >= 3 and code * 3 >= len(lines)


_PUNCT = re.compile(r"[^\w\s]")


def normalise(text: str) -> str:
    """Lower case, punctuation removed, whitespace collapsed: what "the same text" means for exact dedup."""
    # str.split() splits on exactly what \s matches (str.isspace) and is a C loop, unlike a second regex.
    return " ".join(_PUNCT.sub(" ", text.lower()).split())


def prompt_text(conv: Conversation) -> str:
    return "\n\n".join(m.content for m in conv.messages if m.role == "user")


def response_text(conv: Conversation) -> str:
    return "\n\n".join(m.content for m in conv.messages if m.role == "assistant")


def last_user_turn(conv: Conversation) -> str:
    for message in reversed(conv.messages):
        if message.role == "user":
            return message.content
    return ""


def last_response(conv: Conversation) -> str:
    for message in reversed(conv.messages):
        if message.role == "assistant":
            return message.content
    return ""


# Number words below twenty, and the tens: planted arithmetic writes them, semantic dedup reads them.
ONES_WORDS: tuple[str, ...] = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen",
)  # fmt: skip
TENS_WORDS: tuple[str, ...] = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
