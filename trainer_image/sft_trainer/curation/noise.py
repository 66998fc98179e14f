"""Planted noise: known-bad copies of clean records, to measure how much each judge catches.

A judge's recall is measured on records we spoiled on purpose, one kind of
damage at a time (`KINDS`); its false-positive rate on clean, human-written
records (LIMA). Thresholds are calibrated on one half of the records
(`calibration_half` True, by a hash of the prompt) and the tests score the
other half, so no threshold is ever tuned on the examples that judge it.

`plant(kind, clean, rng)` returns one noisy copy per clean record (fewer when
a record cannot carry that damage, e.g. a one-word answer cannot be cut
mid-sentence), each with `meta["planted"] = kind` and a new `source_index`.
Everything is drawn from the `random.Random` given, so a seed fixes the output.

The data comes from the shared data folder (env `SFT_SHARED_DATA`, by default
`../shared/data` beside the repository), read in place and never copied.
"""

from __future__ import annotations

import copy
import json
import os
import random
import re
import zlib
from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

from ..formats import Conversation, Message, RejectedRecord, read_dataset
from .semantic_dedup import split_request
from .text import ONES_WORDS, TENS_WORDS

KINDS: tuple[str, ...] = (
    "off_topic",
    "truncated",
    "word_salad",
    "prompt_echo",
    "wrong_arithmetic",
    "assistant_style",
    "ood_junk",
    "repetition_loop",
)

SHARED_DATA_ENV = "SFT_SHARED_DATA"
CHAT_MODELS: tuple[str, ...] = ("gpt4", "claude-2", "gpt-3.5-turbo-0301", "llama-2-70b-chat-hf")
"""AlpacaEval generators whose answers carry the chat-assistant style."""
MIN_CHAT_ANSWER_WORDS = 150
"""An assistant_style donor answer is long: the style shows in long answers."""

# Planted records get source indexes far above any real file position,
# one block per kind, so kinds can be mixed without collisions.
INDEX_BASE = 10_000_000
INDEX_BLOCK = 1_000_000


# --------------------------------------------------------------------------
# Data: where it is, and the loaders
# --------------------------------------------------------------------------


def shared_data_dir(shared_dir: str | Path | None = None) -> Path:
    """The shared data folder: the argument, else env SFT_SHARED_DATA, else ../shared/data beside the repository."""
    if shared_dir is None:
        env = os.environ.get(SHARED_DATA_ENV)
        shared_dir = Path(env) if env else Path(__file__).resolve().parents[3].parent / "shared" / "data"
    path = Path(shared_dir)
    if not path.is_dir():
        raise FileNotFoundError(f"shared data folder {path} does not exist (set {SHARED_DATA_ENV})")
    return path


def _conversations(path: Path) -> list[Conversation]:
    out: list[Conversation] = []
    for item in read_dataset(path):
        if isinstance(item, RejectedRecord):
            raise ValueError(f"{path}: record {item.source_index} is unreadable: {item.reasons} {item.detail}")
        out.append(item)
    return out


def load_lima(shared_dir: str | Path | None = None) -> list[Conversation]:
    """LIMA (1,029 human-written answers, 29 of them multi-turn): the clean reference set."""
    return _conversations(shared_data_dir(shared_dir) / "lima_llamafactory.json")


def load_alpaca(shared_dir: str | Path | None = None) -> list[Conversation]:
    """Raw Alpaca (52,002 text-davinci-003 records, known to be noisy)."""
    return _conversations(shared_data_dir(shared_dir) / "alpaca_data.json")


def load_chat_answers(shared_dir: str | Path | None = None, models: Sequence[str] = CHAT_MODELS) -> list[Conversation]:
    """AlpacaEval prompts answered by chat models; `meta["generator"]` names the model."""
    folder = shared_data_dir(shared_dir) / "alpaca_eval_outputs"
    out: list[Conversation] = []
    for model in models:
        rows = json.loads((folder / f"{model}.json").read_text(encoding="utf-8"))
        for i, row in enumerate(rows):
            if not (isinstance(row.get("instruction"), str) and isinstance(row.get("output"), str)):
                raise ValueError(f"{folder / model}.json: record {i} lacks a string instruction/output")
            messages = [Message("user", row["instruction"]), Message("assistant", row["output"])]
            out.append(Conversation(messages, i, {"generator": model}))
    return out


# --------------------------------------------------------------------------
# The split
# --------------------------------------------------------------------------


def prompt_of(conv: Conversation) -> str:
    return "\n\n".join(m.content for m in conv.messages if m.role == "user")


def calibration_half(conv: Conversation) -> bool:
    """True for the calibration half (scripts tune on it), False for the held-out half (tests score it).

    A CRC-32 of the prompt text: stable across runs, machines and Python
    versions (unlike `hash`), and a planted copy stays in its original's half
    (except for the kinds that replace the prompt).
    """
    return zlib.crc32(prompt_of(conv).encode("utf-8", "surrogatepass")) % 2 == 0


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def _last_response(conv: Conversation) -> str:
    for message in reversed(conv.messages):
        if message.role == "assistant":
            return message.content
    return ""


def _with_response(conv: Conversation, response: str) -> Conversation:
    """A copy of `conv` whose last assistant turn says `response`."""
    messages = list(conv.messages)
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].role == "assistant":
            messages[i] = Message("assistant", response)
            break
    meta = {k: copy.deepcopy(v) for k, v in conv.meta.items() if k != "scores"}
    meta["planted_from"] = conv.source_index
    return Conversation(messages, conv.source_index, meta)


_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")
_FENCE = "```"


def sentences(text: str) -> list[str]:
    """The sentences of a prose text (lines are kept apart: a list item is its own sentence)."""
    out: list[str] = []
    for line in text.splitlines():
        out += [s.strip() for s in _SENTENCE_SPLIT.split(line.strip()) if s.strip()]
    return out


def _prose_line_mask(text: str) -> list[bool]:
    """For each line: True when it is outside fenced code."""
    mask, in_code = [], False
    for line in text.split("\n"):
        if line.strip().startswith(_FENCE):
            in_code = not in_code
            mask.append(False)
        else:
            mask.append(not in_code)
    return mask


# --------------------------------------------------------------------------
# The kinds
# --------------------------------------------------------------------------


def _off_topic(clean: Sequence[Conversation], rng: random.Random, **_: Any) -> list[Conversation]:
    out = []
    prompts = [prompt_of(c) for c in clean]
    for i, conv in enumerate(clean):
        others = [j for j in range(len(clean)) if prompts[j] != prompts[i]]
        if not others:
            continue
        out.append(_with_response(conv, _last_response(clean[rng.choice(others)])))
    return out


_SENTENCE_END = re.compile(r"[.!?:;]['\")\]*_]*$")


def truncation_points(text: str) -> list[int]:
    """Where a cut leaves an unfinished sentence: after a word, 30-80% in, never at a sentence or line end."""
    points = []
    low, high = int(0.3 * len(text)), int(0.8 * len(text))
    for match in re.finditer(r"(?<=\S) (?=\S)", text):
        pos = match.start()
        if low <= pos <= high and not _SENTENCE_END.search(text[:pos]):
            points.append(pos)
    return points


def _truncated(clean: Sequence[Conversation], rng: random.Random, **_: Any) -> list[Conversation]:
    out = []
    for conv in clean:
        text = _last_response(conv)
        points = truncation_points(text)
        if not points:
            continue
        cut = rng.choice(points)
        noisy = _with_response(conv, text[:cut])
        before = text[:cut]
        in_code = before.count(_FENCE) % 2 == 1
        line = before.rsplit("\n", 1)[-1]
        noisy.meta["planted_detail"] = (
            "mid_code" if in_code else "mid_list" if re.match(r"\s*(?:[-*•+]|\d{1,3}[.)])\s", line) else "mid_sentence"
        )
        out.append(noisy)
    return out


def shuffle_sentence(sentence: str, rng: random.Random) -> str:
    """The words of a sentence in a new order; the end punctuation stays at the end."""
    end = re.search(r"[.!?]+$", sentence)
    body = sentence[: end.start()] if end else sentence
    words = body.split()
    if len(words) < 3:
        return sentence
    original = list(words)
    for _ in range(10):
        rng.shuffle(words)
        if words != original:
            break
    return " ".join(words) + (end.group() if end else "")


def _word_salad(clean: Sequence[Conversation], rng: random.Random, **_: Any) -> list[Conversation]:
    out = []
    for conv in clean:
        text = _last_response(conv)
        lines = text.split("\n")
        mask = _prose_line_mask(text)
        salad = []
        for line, prose in zip(lines, mask, strict=True):
            if not prose or not line.strip():
                salad.append(line)
                continue
            indent = line[: len(line) - len(line.lstrip())]
            parts = _SENTENCE_SPLIT.split(line.strip())
            salad.append(indent + " ".join(shuffle_sentence(p, rng) for p in parts))
        noisy_text = "\n".join(salad)
        if noisy_text != text:
            out.append(_with_response(conv, noisy_text))
    return out


_ECHO_TEMPLATES: tuple[str, ...] = (
    "{p}",
    "You asked: {p}",
    "Your question is: {p}",
    "So the question is: {p}",
    "In other words, you want to know: {p}",
    "To restate your request: {p}",
    "{p} That is what you are asking.",
    "Let me repeat the question. {p}",
)


def echo(prompt: str, rng: random.Random) -> str:
    """The prompt restated: copied, reordered, or wrapped in a template, and nothing more."""
    parts = sentences(prompt)
    if len(parts) > 1 and rng.random() < 0.4:
        rng.shuffle(parts)
        prompt = " ".join(parts)
    return rng.choice(_ECHO_TEMPLATES).format(p=prompt.strip())


def _prompt_echo(clean: Sequence[Conversation], rng: random.Random, **_: Any) -> list[Conversation]:
    out = []
    for conv in clean:
        prompt = next((m.content for m in reversed(conv.messages) if m.role == "user"), "")
        if prompt.strip():
            out.append(_with_response(conv, echo(prompt, rng)))
    return out


# ---- arithmetic -----------------------------------------------------------

_ONES, _TENS = ONES_WORDS, TENS_WORDS


def number_words(n: int) -> str:
    """English words for 0 <= n < 1,000,000 ("three hundred forty-two"), for prompts that spell numbers."""
    if not 0 <= n < 1_000_000:
        raise ValueError(f"number_words covers 0..999,999, not {n}")
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else "-" + _ONES[n % 10])
    if n < 1000:
        rest = n % 100
        return _ONES[n // 100] + " hundred" + ("" if rest == 0 else " " + number_words(rest))
    rest = n % 1000
    return number_words(n // 1000) + " thousand" + ("" if rest == 0 else " " + number_words(rest))


def format_number(value: Fraction) -> str:
    """A digit string: an integer, or a decimal with up to 4 places (exact for our draws)."""
    if value.denominator == 1:
        return f"{value.numerator:,}" if abs(value) >= 10_000 else str(value.numerator)
    return f"{float(value):.4f}".rstrip("0").rstrip(".")


_OPS: dict[str, tuple[str, ...]] = {
    "add": ("plus", "+", "added to"),
    "sub": ("minus", "-", "subtract"),
    "mul": ("times", "*", "x", "×", "multiplied by"),
    "div": ("divided by", "/", "÷"),
}


def _draw_problem(rng: random.Random) -> tuple[str, str, Fraction]:
    """(prompt, worked expression, exact result) for one random arithmetic question."""
    op = rng.choice(("add", "sub", "mul", "div", "pow", "percent"))
    spell = rng.random() < 0.3

    def num(n: int) -> str:
        return number_words(n) if spell and n < 100 else str(n)

    if op == "percent":
        p = rng.choice((5, 10, 12, 15, 20, 25, 30, 40, 50, 60, 75, 80))
        x = rng.randrange(20, 1000, 20)
        result = Fraction(p, 100) * x
        prompt = rng.choice(("What is {p}% of {x}?", "Calculate {p} percent of {x}.", "Find {p}% of {x}."))
        return prompt.format(p=p, x=num(x)), f"{p}% of {x}", result
    if op == "pow":
        base, exp = rng.randint(2, 12), rng.choice((2, 2, 3, 3, 4))
        result = Fraction(base) ** exp
        word = {2: "squared", 3: "cubed"}.get(exp)
        if word and rng.random() < 0.5:
            prompt = rng.choice(("What is {b} {w}?", "Calculate {b} {w}."))
            return prompt.format(b=num(base), w=word), f"{base}^{exp}", result
        prompt = rng.choice(
            ("What is {b} to the power of {e}?", "Compute {b}^{e}.", "What is {b} raised to the {e}th power?")
        )
        if "th power" in prompt:
            prompt = prompt.replace("{e}th", {2: "second", 3: "third", 4: "fourth"}[exp])
        return prompt.format(b=num(base), e=exp), f"{base}^{exp}", result
    a, b = rng.randint(2, 99), rng.randint(2, 99)
    if op == "add":
        a, b = rng.randint(2, 999), rng.randint(2, 999)
        result = Fraction(a + b)
    elif op == "sub":
        a, b = max(a, b) + rng.randint(1, 50), min(a, b)
        result = Fraction(a - b)
    elif op == "mul":
        result = Fraction(a * b)
    else:  # exact division: a is a multiple of b
        a = a * b
        result = Fraction(a // b)
    symbol = {"add": "+", "sub": "-", "mul": "×", "div": "÷"}[op]
    word = rng.choice(_OPS[op])
    if word == "subtract":
        prompt = rng.choice(("What do you get if you subtract {b} from {a}?", "Subtract {b} from {a}."))
    elif word == "added to":
        prompt = rng.choice(("What is {b} added to {a}?", "Calculate {b} added to {a}."))
    else:
        prompt = rng.choice(
            ("What is {a} {w} {b}?", "Calculate {a} {w} {b}.", "Compute {a} {w} {b}.", "{a} {w} {b} = ?")
        )
    return prompt.format(a=num(a), b=num(b), w=word), f"{a} {symbol} {b}", result


def wrong_result(correct: Fraction, rng: random.Random) -> Fraction:
    """A plausible mistake: off by a little, a digit slip, or a factor of ten; never the right value."""
    for _ in range(20):
        how = rng.choice(("near", "near", "digit", "digit", "scale"))
        if how == "near":
            wrong = correct + rng.choice((-1, 1)) * rng.randint(1, max(2, int(abs(correct) * 0.2) or 2))
        elif how == "digit" and correct.denominator == 1 and abs(correct) >= 10:
            digits = list(str(abs(correct.numerator)))
            i = rng.randrange(len(digits))
            digits[i] = str((int(digits[i]) + rng.randint(1, 9)) % 10)
            wrong = Fraction(int("".join(digits)) * (1 if correct >= 0 else -1))
        else:
            wrong = correct * rng.choice((10, Fraction(1, 10)))
        if wrong != correct and wrong >= 0:
            return wrong
    return correct + 1


_ANSWERS: tuple[str, ...] = (
    "{expr} = {r}.",
    "The answer is {r}.",
    "{Expr} is {r}.",
    "{r}",
    "The result of {expr} is {r}.",
    "Sure! {expr} equals {r}.",
    "That comes to {r}.",
    "Working it out, {expr} gives {r}. So the answer is {r}.",
)


def arithmetic_records(n: int, rng: random.Random, *, wrong: bool = False) -> list[Conversation]:
    """`n` arithmetic questions with a fluent answer, correct or (wrong=True) with a wrong result."""
    out = []
    for i in range(n):
        prompt, expr, result = _draw_problem(rng)
        shown = wrong_result(result, rng) if wrong else result
        answer = rng.choice(_ANSWERS).format(expr=expr, Expr=expr[0].upper() + expr[1:], r=format_number(shown))
        meta: dict[str, Any] = {"arithmetic": {"expression": expr, "result": str(result)}}
        out.append(Conversation([Message("user", prompt), Message("assistant", answer)], i, meta))
    return out


def _wrong_arithmetic(clean: Sequence[Conversation], rng: random.Random, **_: Any) -> list[Conversation]:
    return arithmetic_records(len(clean), rng, wrong=True)


# ---- donors ---------------------------------------------------------------


def _assistant_style(
    clean: Sequence[Conversation],
    rng: random.Random,
    chat_answers: Sequence[Conversation] | None = None,
    shared_dir: str | Path | None = None,
    **_: Any,
) -> list[Conversation]:
    """Long chat-model answers, each with its own prompt (one per distinct prompt)."""
    donors = list(chat_answers) if chat_answers is not None else load_chat_answers(shared_dir)
    long = [c for c in donors if len(_last_response(c).split()) >= MIN_CHAT_ANSWER_WORDS]
    rng.shuffle(long)
    picked, seen = [], set()
    for conv in long:
        prompt = prompt_of(conv)
        if prompt not in seen:
            seen.add(prompt)
            picked.append(conv)
        if len(picked) == len(clean):
            break
    return [_with_response(c, _last_response(c)) for c in picked]


# ---- junk -----------------------------------------------------------------

_MOJIBAKE_WORDS = ("cafÃ©", "naÃ¯ve", "rÃ©sumÃ©", "dÃ©jÃ  vu", "faÃ§ade", "Ã¼ber", "seÃ±or", "piÃ±ata", "coÃ¶perate")
_MOJIBAKE_RUNS = ("Ã©Ã¨", "Ã¢â‚¬â„¢", "â€œ", "â€\x9d", "â€™", "Ã‚Â", "Ã¯Â»Â¿", "Ã¤Ã¶Ã¼", "Ã Â¤")
_ZERO_WIDTH = ("\u200b", "\u200c", "\u200d", "\u2060", "\ufeff")
_EMOJI = "😀😂🤣😍😎🙏🔥💯✨🎉👍👀💀🚀🌈❤️🥺😭🤔🙌"
_KAOMOJI = ("(╯°□°)╯︵ ┻━┻", "ヽ(°〇°)ﾉ", "(｡◕‿◕｡)", "¯\\_(ツ)_/¯", "(ᵔᴥᵔ)", "ಠ_ಠ", "(づ｡◕‿‿◕｡)づ", "♪┏(・o･)┛♪")
_ANSI = ("\x1b[31m", "\x1b[0m", "\x1b[1;32m", "\x1b[2K", "\x1b[33;1m", "\x1b[4m", "\x1b[38;5;208m", "\x1b]0;title\x07")


def _mojibake(rng: random.Random) -> str:
    parts = [rng.choice(_MOJIBAKE_RUNS + _MOJIBAKE_WORDS) for _ in range(rng.randint(3, 8))]
    return "".join(parts) if rng.random() < 0.5 else " ".join(parts)


def _zero_width(rng: random.Random) -> str:
    return "".join(rng.choice(_ZERO_WIDTH) for _ in range(rng.randint(5, 40)))


def _emoji_flood(rng: random.Random) -> str:
    emoji = [c for c in _EMOJI if c != "\ufe0f"]
    return "".join(rng.choice(emoji) for _ in range(rng.randint(10, 40)))


def _kaomoji_flood(rng: random.Random) -> str:
    return " ".join(rng.choice(_KAOMOJI) for _ in range(rng.randint(4, 10)))


def _replacement_chars(rng: random.Random) -> str:
    return "\ufffd" * rng.randint(3, 20)


def _ansi_codes(rng: random.Random) -> str:
    return "".join(rng.choice(_ANSI) + rng.choice(("", "ERROR", "  ", "[OK]")) for _ in range(rng.randint(2, 6)))


JUNK_MAKERS: dict[str, Callable[[random.Random], str]] = {
    "mojibake": _mojibake,
    "zero_width": _zero_width,
    "emoji_flood": _emoji_flood,
    "kaomoji_flood": _kaomoji_flood,
    "replacement_chars": _replacement_chars,
    "ansi_codes": _ansi_codes,
}


def insert_junk(text: str, junk: Callable[[random.Random], str], rng: random.Random) -> str:
    """`text` with 1-3 runs of junk inserted at word boundaries."""
    gaps = [m.start() for m in re.finditer(r" ", text)] or [len(text)]
    for pos in sorted(rng.sample(gaps, min(len(gaps), rng.randint(1, 3))), reverse=True):
        text = text[:pos] + " " + junk(rng) + text[pos:]
    return text


def _ood_junk(clean: Sequence[Conversation], rng: random.Random, **_: Any) -> list[Conversation]:
    out = []
    for conv in clean:
        sub = rng.choice(sorted(JUNK_MAKERS))
        noisy = _with_response(conv, insert_junk(_last_response(conv), JUNK_MAKERS[sub], rng))
        noisy.meta["planted_detail"] = sub
        out.append(noisy)
    return out


_LOOPABLE = re.compile(r"^[A-Z][^\n]*[.!?]$")


def _repetition_loop(clean: Sequence[Conversation], rng: random.Random, **_: Any) -> list[Conversation]:
    """The response's first 1-3 sentences, then one of its sentences 8-12 times (a degenerate decoder loop)."""
    out = []
    for conv in clean:
        text = _last_response(conv)
        ends = [m.end() for m in re.finditer(r"[.!?](?=\s|$)", text)]
        loopable = [s for s in sentences(text) if _LOOPABLE.match(s) and len(s.split()) >= 4][:5]
        if not ends or not loopable:
            continue
        opening = text[: ends[rng.randint(0, min(3, len(ends)) - 1)]]
        sep = rng.choice((" ", "\n"))
        loop = sep.join([rng.choice(loopable)] * rng.randint(8, 12))
        out.append(_with_response(conv, opening + sep + loop))
    return out


_PLANTERS: dict[str, Callable[..., list[Conversation]]] = {
    "off_topic": _off_topic,
    "truncated": _truncated,
    "word_salad": _word_salad,
    "prompt_echo": _prompt_echo,
    "wrong_arithmetic": _wrong_arithmetic,
    "assistant_style": _assistant_style,
    "ood_junk": _ood_junk,
    "repetition_loop": _repetition_loop,
}
assert tuple(_PLANTERS) == KINDS


def plant(kind: str, clean: Sequence[Conversation], rng: random.Random, **sources: Any) -> list[Conversation]:
    """Noisy copies of `clean` (one per record where the damage applies), `meta["planted"] = kind`.

    `sources`: `chat_answers` (assistant_style donors; loaded from
    `shared_dir` or SFT_SHARED_DATA when not given).
    """
    if kind not in _PLANTERS:
        raise ValueError(f"unknown noise kind {kind!r}; expected one of {', '.join(KINDS)}")
    noisy = _PLANTERS[kind](clean, rng, **sources)
    base = INDEX_BASE + KINDS.index(kind) * INDEX_BLOCK
    for i, conv in enumerate(noisy):
        conv.source_index = base + i
        conv.meta["planted"] = kind
    return noisy


# ---- the whole pipeline, measured -------------------------------------------

CLEAN = "clean"
NOT_JUDGEMENTS = ("balance.", "selection.")
"""Reasons that are choices about the mix or the budget, not verdicts on a record's quality."""


def judged_mix(
    half: str = "test",
    *,
    clean_count: int = 300,
    per_kind: int | None = 40,
    seed: int = 0,
    shared_dir: str | Path | None = None,
) -> tuple[list[Conversation], list[str]]:
    """Clean LIMA records plus `per_kind` planted records of every kind, shuffled, indexed 0..n-1.

    `per_kind` None: one planted record per donor (every record of the half that is not among the clean ones).

    `half` is "test" (the held-out half: what tests score) or "calibration".
    The noisy copies are made from other LIMA records than the clean ones,
    so deduplication cannot catch a copy by its original: what catches it is
    a judge. Returns the records and, position by position, their kind
    (`CLEAN` or a noise kind).
    """
    if half not in ("test", "calibration"):
        raise ValueError(f"half must be 'test' or 'calibration', not {half!r}")
    rng = random.Random(seed)
    lima = [c for c in load_lima(shared_dir) if calibration_half(c) == (half == "calibration")]
    rng.shuffle(lima)
    clean, donors = lima[:clean_count], lima[clean_count:]
    chat = [c for c in load_chat_answers(shared_dir) if calibration_half(c) == (half == "calibration")]
    records: list[tuple[Conversation, str]] = [(c, CLEAN) for c in clean]
    for kind in KINDS:
        wanted = len(donors) if per_kind is None else per_kind
        pool = rng.sample(donors, min(len(donors), wanted * 2))
        records += [(c, kind) for c in plant(kind, pool, rng, chat_answers=chat)[:wanted]]
    rng.shuffle(records)
    convs, kinds = [], []
    for index, (conv, kind) in enumerate(records):
        conv.source_index = index
        convs.append(conv)
        kinds.append(kind)
    return convs, kinds


def judgement_table(
    kinds: Sequence[str], rejected: dict[int, list[str]], held: dict[int, list[str]]
) -> dict[str, dict[str, Any]]:
    """Per kind: records, how many a judge rejected, how many were held for review, and by which reasons.

    `rejected` / `held`: source_index -> reasons. `caught` counts both (for
    noise, either is a catch); for clean records `rejected` is what "judged
    noisy" means and `held` is a person's second look. Drops by balance or
    selection are choices about the mix, counted apart (`dropped_for_mix`).
    """
    table: dict[str, dict[str, Any]] = {}
    for index, kind in enumerate(kinds):
        row = table.setdefault(
            kind, {"records": 0, "caught": 0, "rejected": 0, "held": 0, "dropped_for_mix": 0, "reasons": {}}
        )
        row["records"] += 1
        judged = [r for r in rejected.get(index, []) if not r.startswith(NOT_JUDGEMENTS)]
        if judged:
            row["rejected"] += 1
        elif index in held:
            row["held"] += 1
            judged = held[index]
        elif index in rejected:
            row["dropped_for_mix"] += 1
        if judged:
            row["caught"] += 1
            row["reasons"][judged[0]] = row["reasons"].get(judged[0], 0) + 1
    for row in table.values():
        row["rate"] = round(row["caught"] / row["records"], 4) if row["records"] else 0.0
        row["rejected_rate"] = round(row["rejected"] / row["records"], 4) if row["records"] else 0.0
    return table


# -- Rewordings (semantic dedup's planted duplicates)

_SYNONYMS = {
    "give": "provide",
    "list": "name",
    "describe": "explain",
    "explain": "describe",
    "generate": "create",
    "write": "compose",
    "make": "create",
    "suggest": "recommend",
    "find": "identify",
    "tell": "let me know",
    "short": "brief",
    "example": "instance",
    "ways": "methods",
    "tips": "pieces of advice",
    "important": "significant",
    "big": "large",
    "help": "assist",
    "use": "utilize",
    "show": "demonstrate",
    "good": "great",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "what's": "what is",
    "how": "in what way",
}
_PREFIXES = ("", "Please ", "Could you ", "Can you ", "I would like you to ", "I need you to ", "Hey, ")
_SUFFIXES = ("", " Thanks!", " Please answer briefly.", " Thank you.", " I'd appreciate it.")


def reword(prompt: str, rng: random.Random) -> str:
    """The same request in other words: synonyms for some words, a polite frame around it.

    A rule-based stand-in for "the same request reworded" (no paraphrase model
    is at hand): what semantic dedup must catch, in its calibration and tests.
    """

    def swap(match: re.Match[str]) -> str:
        word = match.group()
        other = _SYNONYMS.get(word.lower())
        if other is None or rng.random() < 0.3:
            return word
        return other.capitalize() if word[0].isupper() else other

    # The instruction is reworded; the material it works on (later paragraphs) stays as it is.
    instruction, material = split_request(prompt)
    text = re.sub(r"[A-Za-z']+", swap, instruction)
    prefix = rng.choice(_PREFIXES)
    if prefix and text:
        text = prefix + text[0].lower() + text[1:]
    if material:
        return text.rstrip(".") + ": " + material if ": " in prompt.split("\n\n")[0] else text + "\n\n" + material
    return text + rng.choice(_SUFFIXES)
