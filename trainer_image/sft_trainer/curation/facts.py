"""Facts we can check exactly: the arithmetic a prompt asks for, against the result the answer gives.

Only a prompt that is plainly an arithmetic question is judged: once its
lead-in ("What is", "Calculate", "Subtract 5 from") is set aside, what remains
must parse in full as an expression of numbers (digits or words), + − × ÷,
powers and percentages. The expression is computed exactly with
`fractions.Fraction` by a small parser (never `eval`). The answer's result is
the number after its last "=" / "is" / "equals" / "gives" / "comes to", or the
last number of a short answer. A result that disagrees beyond the answer's own
rounding is `facts.wrong_arithmetic`; anything unclear (a word problem, no
result found, a division by zero, a huge power) is left alone.

Number words become digits with text2num's `alpha2digit` ("twelve times 35"
-> "12 times 35").
"""

from __future__ import annotations

import re
from fractions import Fraction

from text_to_num import alpha2digit

from ..config.curation import FactsStep
from ..formats import Conversation
from .base import Filter

NUMBER = r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+"
_NUMBER_RE = re.compile(NUMBER)
MAX_EXPONENT = 64
"""Larger powers are not what an arithmetic question asks, and would cost time to compute."""
MAX_SHORT_ANSWER_WORDS = 12
"""An answer this short may state its result as its last number, without "is" or "="."""

# Operator words and symbols -> the parser's symbols. Order matters: longer phrases first.
_OPERATORS: tuple[tuple[str, str], ...] = (
    (r"\b(?:raised )?to the power of\b|\*\*|\^", " ^ "),
    (r"\braised to the (?:2nd|second) power\b|\bsquared\b", " ^ 2 "),
    (r"\braised to the 3rd power\b|\bcubed\b", " ^ 3 "),
    (r"\braised to the (\d+)(?:st|nd|rd|th) power\b", r" ^ \1 "),
    (r"\bmultiplied by\b|\btimes\b|×|\*|(?<=\d)\s*x\s*(?=\d)", " * "),
    (r"\bdivided by\b|÷|/", " / "),
    (r"\bplus\b|\+", " + "),
    (r"\bminus\b|−|–|(?<=\d)\s*-\s*(?=\d)", " - "),
    (r"\s*(?:%|\bpercent)\s+of\b", " %of "),
)
# Lead-ins of a plain arithmetic question; what follows must be the whole expression.
_LEAD_IN = re.compile(
    r"^(?:please\s+)?(?:(?:what|how much)(?:'s| is| are| does| do)?|calculate|compute|evaluate|find|solve|work out|"
    r"determine|tell me|give me|simplify)?\s*(?:the\s+(?:value|result|answer|product|sum)\s+of\s*|the\s+answer\s+to\s*)?[:\s]*"
)
_TRAILER = re.compile(r"[\s?.!=:]*(?:equal\w*|=)?[\s?.!]*$")
# Binary questions in words: (pattern, template of the expression).
_WORDED: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(rf"^(?:what do you get (?:if|when) you |please |can you )?{p}[\s?.!]*$"), t)
    for p, t in (
        (rf"subtract ({NUMBER}) from ({NUMBER})", "{1} - {0}"),
        (rf"add ({NUMBER}) (?:and|to) ({NUMBER})", "{0} + {1}"),
        (rf"multiply ({NUMBER}) (?:by|and|with) ({NUMBER})", "{0} * {1}"),
        (rf"divide ({NUMBER}) by ({NUMBER})", "{0} / {1}"),
        (rf"(?:what is |find |calculate |compute )?(?:the )?sum of ({NUMBER}) and ({NUMBER})", "{0} + {1}"),
        (rf"(?:what is |find |calculate |compute )?(?:the )?product of ({NUMBER}) and ({NUMBER})", "{0} * {1}"),
        (rf"(?:what is |find |calculate |compute )?(?:the )?quotient of ({NUMBER}) (?:and|by) ({NUMBER})", "{0} / {1}"),
        (rf"(?:what is |calculate |compute )?({NUMBER}) added to ({NUMBER})", "{1} + {0}"),
    )
)
_TOKEN = re.compile(rf"\s*({NUMBER}|%of|[-+*/^()])")
# Where an answer states its result: the number after these words (the last such statement wins).
_RESULT_AFTER = re.compile(
    rf"(?:=|\bequals?\b|\bis\b|\bgives\b|\bcomes to\b|\bmakes\b|\bresults? in\b)\s*(?:equal to\s+|about\s+|approximately\s+|roughly\s+|:\s*)?\$?({NUMBER})"
)


# alpha2digit leaves a lone small number as a word ("two squared"); in an
# arithmetic question it is a number all the same.
_SMALL = {
    w: str(i)
    for i, w in enumerate(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"])
}
_SMALL_RE = re.compile(rf"\b(?:{'|'.join(_SMALL)})\b")


def digits(text: str) -> str:
    """Lower-cased, spaces collapsed, every number word as digits."""
    text = alpha2digit(" ".join(text.lower().split()), "en")
    return _SMALL_RE.sub(lambda m: _SMALL[m.group()], text)


def with_operators(text: str) -> str:
    for pattern, symbol in _OPERATORS:
        text = re.sub(pattern, symbol, text)
    return text


# Signs that a short answer restates the question rather than giving a result.
_RESTATED = re.compile(r"[-+*/^]|%of|\b(?:sum|product|difference|quotient) of\b|(?:\bis|equals?|equal to|=|:)\W*$")


def to_number(text: str) -> Fraction:
    return Fraction(text.replace(",", ""))


class _Parser:
    """Recursive descent over + - * / ^ %of and parentheses, exact in Fraction. Raises ValueError when unsure."""

    def __init__(self, text: str) -> None:
        self.tokens: list[str] = []
        pos = 0
        text = text.strip()
        while pos < len(text):
            match = _TOKEN.match(text, pos)
            if not match:
                raise ValueError(f"not an expression at {text[pos:]!r}")
            self.tokens.append(match.group(1))
            pos = match.end()
            while pos < len(text) and text[pos].isspace():
                pos += 1
        self.pos = 0

    def parse(self) -> Fraction:
        if not any(_NUMBER_RE.fullmatch(t) for t in self.tokens) or len(self.tokens) < 3:
            raise ValueError("a bare number is not a computation")
        value = self.sum()
        if self.pos != len(self.tokens):
            raise ValueError("trailing tokens")
        return value

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str:
        token = self.peek()
        if token is None:
            raise ValueError("unexpected end")
        self.pos += 1
        return token

    def sum(self) -> Fraction:
        value = self.product()
        while self.peek() in ("+", "-"):
            value = value + self.product() if self.take() == "+" else value - self.product()
        return value

    def product(self) -> Fraction:
        value = self.power()
        while self.peek() in ("*", "/", "%of"):
            op, right = self.take(), self.power()
            if op == "/" and right == 0:
                raise ValueError("division by zero")
            value = value * right if op == "*" else value / right if op == "/" else value / 100 * right
        return value

    def power(self) -> Fraction:
        base = self.atom()
        if self.peek() == "^":
            self.take()
            exponent = self.power()
            if exponent.denominator != 1 or abs(exponent) > MAX_EXPONENT or (base == 0 and exponent < 0):
                raise ValueError("exponent out of range")
            return base**exponent.numerator
        return base

    def atom(self) -> Fraction:
        token = self.take()
        if token == "(":
            value = self.sum()
            if self.take() != ")":
                raise ValueError("unbalanced parentheses")
            return value
        if token == "-":
            return -self.atom()
        if not _NUMBER_RE.fullmatch(token):
            raise ValueError(f"expected a number, got {token!r}")
        return to_number(token)


def asked_value(prompt: str) -> Fraction | None:
    """The exact value of the arithmetic the prompt asks for, or None when the prompt is not plainly that."""
    text = digits(prompt)
    for pattern, template in _WORDED:
        match = pattern.match(text)
        if match:
            text = template.format(*match.groups())
            break
    else:
        text = with_operators(_TRAILER.sub("", _LEAD_IN.sub("", text, count=1)))
    try:
        return _Parser(text).parse()
    except (ValueError, ZeroDivisionError, OverflowError):
        return None


def stated_result(answer: str) -> tuple[Fraction, int] | None:
    """(the result the answer states, its decimal places), or None when no result is clear."""
    text = digits(answer)
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)  # 1,234 -> 1234
    stated = _RESULT_AFTER.findall(text)
    if stated:
        number = stated[-1]
    elif (
        len(text.split()) <= MAX_SHORT_ANSWER_WORDS
        and _NUMBER_RE.search(text)
        and not _RESTATED.search(with_operators(text.lstrip("-")))
    ):
        # A short answer without any operation ("50", "It's 50."): its last number is the result.
        # One that restates the question and stops ("4 multiplied by 5 is equal to") states none.
        number = _NUMBER_RE.findall(text)[-1]
    else:
        return None
    number = number.rstrip(".")
    places = len(number.split(".")[1]) if "." in number else 0
    return to_number(number), places


def agrees(exact: Fraction, stated: Fraction, places: int) -> bool:
    """The stated result is the exact value, or the exact value rounded (or cut) to the places it shows."""
    step = Fraction(1, 10**places)
    return abs(stated - exact) < step


class Facts(Filter):
    """Reject an answer whose arithmetic result disagrees with the exact value of what the prompt asks."""

    name = "facts"

    def __init__(self, config: FactsStep | None = None) -> None:
        super().__init__()
        self.config = config or FactsStep()

    def check(self, conv: Conversation) -> str | None:
        prompt = answer = None
        for message in conv.messages:  # judge each exchange: the user turn and the answer after it
            if message.role == "user":
                prompt = message.content
            elif message.role == "assistant" and prompt is not None:
                answer = message.content
                if self.wrong(prompt, answer):
                    return "wrong_arithmetic"
                prompt = None
        return None

    @staticmethod
    def wrong(prompt: str, answer: str) -> bool:
        exact = asked_value(prompt)
        if exact is None:
            return False
        stated = stated_result(answer)
        return stated is not None and not agrees(exact, *stated)
