"""Step 2, length bounds per role, in characters (token bounds run in `tokens`, with the tokenizer)."""

from __future__ import annotations

from ..formats import Conversation
from .base import Filter

FOLLOW_UP_MINIMUM = 1
"""A user turn after the opening request only has to say something: in a dialogue "No", "Ok" or "?" is a
whole turn (LIMA's game of 20 Questions answers "No" and "Yes"). The configured minimum is for the request."""


def prompt_minimum(low: int, follow_up: bool) -> int:
    """The lower bound of a user turn: the configured one for the opening request, at most one unit after it."""
    return min(low, FOLLOW_UP_MINIMUM) if follow_up else low


def opening_request(conv: Conversation) -> int:
    """The position of the conversation's first user turn (-1 without one): the turn `prompt_minimum` bounds fully."""
    return next((i for i, message in enumerate(conv.messages) if message.role == "user"), -1)


class Length(Filter):
    """Every user turn and every assistant turn within its character bounds (a follow-up user turn: see
    `prompt_minimum`)."""

    name = "length"

    def __init__(
        self, *, min_prompt_chars: int, max_prompt_chars: int, min_response_chars: int, max_response_chars: int
    ) -> None:
        super().__init__()
        self.prompt_bounds = (min_prompt_chars, max_prompt_chars)
        self.response_bounds = (min_response_chars, max_response_chars)

    def check(self, conv: Conversation) -> str | None:
        opening = opening_request(conv)
        for i, message in enumerate(conv.messages):
            if message.role == "system":
                continue
            low, high = self.prompt_bounds if message.role == "user" else self.response_bounds
            kind = "prompt" if message.role == "user" else "response"
            if kind == "prompt":
                low = prompt_minimum(low, follow_up=i != opening)
            size = len(message.content.strip())
            if size < low:
                return f"{kind}_too_short"
            if size > high:
                return f"{kind}_too_long"
        return None


class Overlength(Length):
    """The upper bounds alone, as a gate in front of every other filter.

    Every other filter scans the whole text, and one 100 MB record took 45 s
    and 3 GB of memory in them: an over-long record stops here, unread.
    """

    gate = True

    def check(self, conv: Conversation) -> str | None:
        for message in conv.messages:
            if message.role == "system":
                continue
            kind, high = (
                ("prompt", self.prompt_bounds[1]) if message.role == "user" else ("response", self.response_bounds[1])
            )
            # len() first: stripping a 100 MB turn copies it, and most turns are short.
            if len(message.content) > high and len(message.content.strip()) > high:
                return f"{kind}_too_long"
        return None
