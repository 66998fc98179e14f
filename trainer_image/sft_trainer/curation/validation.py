"""Step 1, validation: is the record a well-formed conversation the model can learn from?"""

from __future__ import annotations

import re

from ..formats import Conversation
from .base import Filter

_SURROGATE = re.compile(r"[\ud800-\udfff]")
# C0 controls except tab, newline and carriage return; DEL; C1 controls.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")

# Whole-turn placeholders left by dataset generators instead of real content.
PLACEHOLDERS = frozenset(
    {
        "noinput",
        "no input",
        "nooutput",
        "no output",
        "none",
        "n a",
        "na",
        "null",
        "nil",
        "nan",
        "not applicable",
        "input",
        "output",
        "empty",
        "blank",
        "nothing",
        "no response",
        "no answer",
        "no output required",
        "no input required",
        "no input needed",
        "no input necessary",
        "not available",
        "insert input here",
        "insert text here",
        "your input here",
        "placeholder",
        "todo",
        "tbd",
    }
)
_PLACEHOLDER_NORMALISE = re.compile(r"[^a-z0-9 ]+")
_ONLY_PUNCTUATION = re.compile(r"[-_.,;:!?*/\\|~`'\"()\[\]<>{}\s]+")
# Placeholder markup that is wrong anywhere in a turn.
_PLACEHOLDER_TAG = re.compile(r"<\s*(?:no\s*input|no\s*output|noinput|nooutput)\s*>", re.I)

# --- prompts that need something the model cannot see -------------------
_URL = re.compile(r"\bhttps?://\S+|\bwww\.\w[\w.-]*\.\w{2,}\S*", re.I)
# Tasks about the URL string itself are fine ("extract the domain").
_URL_AS_TEXT = re.compile(
    r"\b(extract|parse|validat\w*|shorten\w*|encode|decode|domain|regex|regular expression|href|html|markdown|hyperlink|anchor)\b",
    re.I,
)
_MEDIA = r"(?:image|picture|photo|photograph|painting|artwork|drawing|sketch|diagram|chart|graph|figure|screenshot|video|audio|sound|recording|clip|map|illustration|visuali[sz]ation|scan)"
# "[Image provided]", "<image of a cat>", "(photo)", markdown images.
_MEDIA_PLACEHOLDER = re.compile(
    rf"[<\[(]\s*(?:an?\s+|the\s+|insert\s+|attach\s+)?(?:\w+\s+){{0,2}}{_MEDIA}s?\b[^\]>)\n]{{0,80}}[>\])]|!\[[^\]]*\]\([^)]*\)",
    re.I,
)
# "the painting below", "the attached photo", "this image"
_MEDIA_REFERENCE = re.compile(
    rf"\b(?:(?:this|the|following|given|attached|provided|above|below)\s+{_MEDIA}s?\b(?!\s+(?:of|about|that|which|called|titled|named|by)\b)(?:\s+(?:below|above|provided|attached|shown|here))?)",
    re.I,
)
_MEDIA_DEICTIC = re.compile(
    rf"\b{_MEDIA}s?\s+(?:below|above|provided|attached|shown)\b|\b(?:attached|provided|uploaded)\s+{_MEDIA}s?\b", re.I
)
_ATTACHMENT = re.compile(
    r"\b(?:see\s+attached|the\s+attachment|attached\s+(?:file|document|pdf|spreadsheet|csv|report|resume|cv|sheet)|uploaded\s+(?:file|document)|enclosed\s+(?:file|document))\b",
    re.I,
)


_URL_ONLY_LINE = re.compile(r"^\s*(?:[\w ]{0,20}:\s*)?<?(?:https?://|www\.)\S+>?\s*$", re.I | re.M)
_ACCESS_CUE = re.compile(
    r"\b(?:summari[sz]\w*|read|watch|listen|visit|review|rate|analy[sz]\w*|describe|based on|referring|according to|classify|what does|explain|evaluate|critique|check out|open)\b",
    re.I,
)
_CONTENT_NOUN = re.compile(
    r"\b(?:article|page|webpage|website|site|link|url|blog|post|video|audio|sound|song|podcast|paper|document|source|story|news|tweet|image|picture|photo|painting|figure|chart|content|report)\b",
    re.I,
)
# A long prompt carries its own content; a URL in it is a reference, not the task.
_SELF_CONTAINED_CHARS = 600


def _url_is_the_content(prompt: str) -> bool:
    """The URL stands for content the model is meant to read: it is the whole input, or the prompt asks to read what it points to."""
    if _URL_ONLY_LINE.search(prompt):
        return True
    if len(prompt) > _SELF_CONTAINED_CHARS:
        return False
    return bool(_ACCESS_CUE.search(prompt) and _CONTENT_NOUN.search(prompt))


def is_placeholder(text: str) -> bool:
    """A turn that stands for missing content: "<noinput>", "N/A", "None", "-", "..." and the like."""
    if _ONLY_PUNCTUATION.fullmatch(text):
        return True
    return " ".join(_PLACEHOLDER_NORMALISE.sub(" ", text.lower()).split()) in PLACEHOLDERS


def unseeable_input(prompt: str) -> str | None:
    """Why a prompt needs something outside the text ('url', 'media', 'attachment'), or None."""
    if _ATTACHMENT.search(prompt):
        return "attachment"
    if _MEDIA_PLACEHOLDER.search(prompt):
        return "media"
    if _URL.search(prompt) and not _URL_AS_TEXT.search(prompt) and _url_is_the_content(prompt):
        return "url"
    # "Describe the painting below." with nothing after it: the picture was never given.
    if _MEDIA_DEICTIC.search(prompt) and "\n" not in prompt.strip():
        return "media"
    return None


class Validation(Filter):
    """Structure, encoding and placeholder checks on every turn."""

    name = "validation"
    gate = True  # a malformed record is not shown to the quality filters

    def __init__(self, *, reject_placeholders: bool = True, reject_unseeable_inputs: bool = True) -> None:
        super().__init__()
        self.reject_placeholders = reject_placeholders
        self.reject_unseeable_inputs = reject_unseeable_inputs

    def check(self, conv: Conversation) -> str | None:
        messages = conv.messages
        if not messages:
            return "empty_conversation"
        for message in messages:
            if _SURROGATE.search(message.content):
                return "invalid_utf8"
            if _CONTROL.search(message.content):
                return "control_characters"
        turns = [m for m in messages if m.role != "system"]
        if any(m.role == "system" for m in messages[1:]):
            return "role_order"
        if not turns or turns[-1].role != "assistant" or not any(m.role == "user" for m in turns):
            return "missing_turn" if len({m.role for m in turns}) < 2 else "role_order"
        for i, message in enumerate(turns):
            if message.role != ("user" if i % 2 == 0 else "assistant"):
                return "role_order"
        for message in turns:
            if not message.content.strip():
                return "empty_turn"
        if self.reject_placeholders:
            code = self._placeholder(turns)
            if code:
                return code
        if self.reject_unseeable_inputs:
            for message in turns:
                if message.role == "user":
                    why = unseeable_input(message.content)
                    if why:
                        return f"unseeable_{why}"
        return None

    @staticmethod
    def _placeholder(turns: list) -> str | None:
        for message in turns:
            text = message.content
            if message.role == "assistant":
                if is_placeholder(text) or _PLACEHOLDER_TAG.search(text):
                    return "placeholder_output"
                continue
            # An Alpaca input is joined to the instruction as the last paragraph.
            paragraphs = text.strip().split("\n\n")
            if is_placeholder(paragraphs[0]) or (len(paragraphs) > 1 and is_placeholder(paragraphs[-1])):
                return "placeholder_input"
            if _PLACEHOLDER_TAG.search(text):
                return "placeholder_input"
        return None
