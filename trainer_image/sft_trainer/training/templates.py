"""Chat templates, rendered into segments whose boundaries are known exactly.

The loss mask is built from segment boundaries, never by searching the token
stream for a response marker. To get the boundaries we render each
conversation with the *same* Jinja template (and the same sandboxed
environment) that serving uses, but with every message's content replaced by
a unique sentinel. Splitting the rendered text on the sentinels yields an
alternation of template markup (role headers, end-of-turn tokens, a default
system prompt ...) and message contents, each tagged with the message it
belongs to. Put the contents back and you have the serving rendering, split
at the exact places where trained and masked text meet.

A template may transform content (Llama 3's trims it); `resolve_template`
detects that on probe conversations and then strips contents before
rendering, so that the sentinel rendering still equals the real one. A
template that does anything else to content is refused at start-up.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from ..formats import Message

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

SegmentKind = Literal["markup", "content"]

# Built-in templates for models without one of their own. Each is what the
# exported tokenizer carries as its chat template, so serving matches training.
CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
LLAMA3 = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
# Alpaca for base models: the response header belongs to the user turn, so a
# prompt for generation is the same text with or without add_generation_prompt.
# The tokenizer's own EOS closes every response.
ALPACA = (
    "{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] + '\n\n' }}"
    "{% else %}{{ 'Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n' }}{% endif %}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ '### Instruction:\n' + message['content'] + '\n\n### Response:\n' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token + '\n\n' }}{% endif %}"
    "{% endfor %}"
)
BUILTIN_TEMPLATES: dict[str, tuple[str, str | None]] = {
    # name: (jinja source, end-of-turn token; None = the tokenizer's EOS)
    "chatml": (CHATML, "<|im_end|>"),
    "llama3": (LLAMA3, "<|eot_id|>"),
    "alpaca": (ALPACA, None),
}

# Private-use code points: never in real text, untouched by any template filter we accept.
_SENTINEL = "\ue000{}\ue001"
_SENTINEL_RE = re.compile("\ue000(\\d+)\ue001")


class TemplateError(ValueError):
    """The chat template cannot be used for training (a configuration problem)."""


class RenderError(ValueError):
    """One conversation cannot be rendered; `reason` is the counted rejection reason."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Segment:
    """A run of rendered text: template markup, or one message's content.

    `message` is the index of the message the segment belongs to: a content
    segment's own message; for markup, the message whose content came last
    before it (-1 for markup before the first content).
    """

    text: str
    kind: SegmentKind
    message: int


@dataclass(frozen=True)
class ChatTemplate:
    """A usable chat template: its source, what closes an assistant turn, and how content is passed."""

    name: str
    """`auto` (the model's own) or a built-in name."""
    source: str
    """Jinja source; exported as the tokenizer's chat template."""
    end_of_turn: str
    """Token text that closes every assistant turn; trained, and an EOS for generation."""
    strips_content: bool
    """The template trims message content, so contents are stripped before rendering."""
    tokenizer: PreTrainedTokenizerBase = field(compare=False, repr=False)
    """Renders the template; its special-token strings are what the template reads."""

    def render(self, messages: list[Message], add_generation_prompt: bool = False) -> str:
        """The text serving would produce for these messages."""
        as_dicts = [{"role": m.role, "content": self._content(m.content)} for m in messages]
        return self._apply(as_dicts, add_generation_prompt)

    def _apply(self, messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
        # The tokenizer's public rendering (the sandboxed Jinja environment and the
        # special-token variables serving uses) with this template's source, so
        # training renders exactly what serving renders.
        text = self.tokenizer.apply_chat_template(
            messages, chat_template=self.source, add_generation_prompt=add_generation_prompt, tokenize=False
        )
        return str(text)

    def segments(self, messages: list[Message]) -> list[Segment]:
        """Render `messages` split into markup and content segments (see the module docstring).

        Raises RenderError when the template fails, drops a message or reorders them.
        """
        stand_ins = [{"role": m.role, "content": _SENTINEL.format(i)} for i, m in enumerate(messages)]
        try:
            text = self._apply(stand_ins, add_generation_prompt=False)
        except Exception as err:  # a template's raise_exception, or any Jinja error
            raise RenderError("template.render_failed", str(err)) from err
        parts = _SENTINEL_RE.split(text)
        # parts alternates: markup, index, markup, index, ..., markup
        indices = [int(p) for p in parts[1::2]]
        if indices != list(range(len(messages))):
            missing = sorted(set(range(len(messages))) - set(indices))
            detail = f"messages {missing} not rendered" if missing else f"messages rendered in order {indices}"
            raise RenderError("template.dropped_message", detail)
        segments: list[Segment] = []
        for position, markup in enumerate(parts[0::2]):
            if markup:
                segments.append(Segment(markup, "markup", position - 1))
            if position < len(messages):
                segments.append(Segment(self._content(messages[position].content), "content", position))
        return segments

    def _content(self, content: str) -> str:
        return content.strip() if self.strips_content else content


_PROBES = [
    [Message("user", "Hello there"), Message("assistant", "Hi! How can I help?")],
    [
        Message("system", "Be brief."),
        Message("user", "  padded question \n"),
        Message("assistant", "\n padded answer  "),
        Message("user", "second"),
        Message("assistant", "reply"),
    ],
]


def resolve_template(tokenizer: PreTrainedTokenizerBase, name: str = "auto") -> ChatTemplate:
    """The chat template to train with, checked on probe conversations.

    `auto` takes the model tokenizer's own template. Raises TemplateError (a
    configuration error) when there is none, when its end-of-turn token cannot
    be found, when the tokenizer lacks the template's special tokens, or when
    the template transforms content in a way segments cannot follow.
    """
    if name == "auto":
        source = tokenizer.chat_template
        if not isinstance(source, str) or not source:
            raise TemplateError(
                "the model's tokenizer has no chat template; set training.template.name to chatml, llama3 or alpaca"
            )
        end_of_turn = None
    elif name in BUILTIN_TEMPLATES:
        source, end_of_turn = BUILTIN_TEMPLATES[name]
    else:
        raise TemplateError(f"unknown template {name!r}; expected auto, {', '.join(BUILTIN_TEMPLATES)}")

    if end_of_turn is None and name != "auto":
        end_of_turn = tokenizer.eos_token
        if not end_of_turn:
            raise TemplateError(f"template {name!r} ends responses with the tokenizer's EOS, and it has none")
    _require_special_tokens(tokenizer, name, source, end_of_turn)

    for strips in (False, True):
        candidate = ChatTemplate(name, source, end_of_turn or "", strips, tokenizer)
        if all(_sentinel_rendering_matches(candidate, probe) for probe in _PROBES):
            break
    else:
        raise TemplateError(
            f"the {name} chat template changes message content in a way other than trimming it; "
            "training could not match serving. Choose a built-in template with training.template.name"
        )
    if end_of_turn is None:
        end_of_turn = _detect_end_of_turn(candidate, tokenizer)
        candidate = ChatTemplate(name, source, end_of_turn, candidate.strips_content, tokenizer)
    return candidate


def _sentinel_rendering_matches(template: ChatTemplate, messages: list[Message]) -> bool:
    try:
        segments = template.segments(messages)
        real = template.render(messages)
    except RenderError as err:
        raise TemplateError(f"the {template.name} chat template cannot render a plain conversation: {err}") from err
    return "".join(s.text for s in segments) == real


def _require_special_tokens(
    tokenizer: PreTrainedTokenizerBase, name: str, source: str, end_of_turn: str | None
) -> None:
    """Built-in templates need their marker tokens to be single special tokens of this tokenizer."""
    if name == "auto":
        return
    markers = set(re.findall(r"<\|[a-z_]+\|>", source))
    if end_of_turn:
        markers.add(end_of_turn)
    vocab = tokenizer.get_vocab()
    missing = sorted(m for m in markers if m not in vocab)
    if missing:
        raise TemplateError(
            f"template {name!r} needs the special tokens {missing}, which this tokenizer does not have; "
            "use the model's own template (auto) or alpaca"
        )


def _detect_end_of_turn(template: ChatTemplate, tokenizer: PreTrainedTokenizerBase) -> str:
    """The first special token the template writes after an assistant turn's content."""
    segments = template.segments(_PROBES[0])
    after_assistant = [
        s
        for prev, s in zip(segments, segments[1:], strict=False)
        if prev.kind == "content" and prev.message == 1 and s.kind == "markup"
    ]
    special = set(tokenizer.all_special_ids) | {
        token_id for token_id, token in tokenizer.added_tokens_decoder.items() if token.special
    }
    if after_assistant:
        for token_id in tokenizer(after_assistant[0].text, add_special_tokens=False).input_ids:
            if token_id in special:
                return str(tokenizer.convert_ids_to_tokens(token_id))
    raise TemplateError(
        "the model's chat template writes no special end-of-turn token after an assistant turn, "
        "so the model could never learn to stop; set training.template.name (e.g. alpaca, which appends EOS)"
    )
