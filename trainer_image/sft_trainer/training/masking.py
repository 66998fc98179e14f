"""Conversations -> (input_ids, labels), built from segment boundaries and verified.

How a sample is built (and why each pitfall cannot happen):

* The conversation is rendered with the chat template into segments
  (templates.py); contiguous segments are grouped into *runs* that are either
  trained or masked. Each run is tokenized on its own, so no token can
  straddle a prompt/response boundary (BPE merges across it are impossible)
  and the mask is a per-run flag, never the result of searching the token
  stream for a marker.
* A trained assistant run is the response text followed by the template's
  end-of-turn token, which is appended as an id and labelled: the EOS is
  always trained, whatever the pad token is. Padding is masked later by
  position (collate.py), never by token id.
* Runs are tokenized without the tokenizer's automatic special tokens; the
  builder adds the BOS itself only when the model expects one and the
  template did not write it. So there is exactly one leading BOS.
* Masked runs (system, user turns, template markup, earlier assistant turns
  when only the last is trained) are tokenized as one string each, exactly as
  serving tokenizes a prompt.
* Message content that contains the text of a special token is rejected:
  it would turn into a real control token (a fake end of turn, a second BOS).
* Over-long records are rejected, or (setting `truncate_prompt`) lose their
  earliest turns and then the start of the last prompt; the response is
  never cut. If it cannot fit, the record is rejected.
* `verify_sample` re-checks every built sample independently (BOS count,
  end-of-turn after every trained response, something trained, response
  complete, length) and a violation rejects the record with its reason.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from ..formats import Conversation, Message
from .templates import ChatTemplate, RenderError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

IGNORE_INDEX = -100
LossOn = Literal["assistant", "all", "last"]
Overlong = Literal["reject", "truncate_prompt"]

# Rejection reasons: stable, counted, written to rejected_samples.jsonl.
# Curation's template step runs this builder too (curation/tokens.py), so a
# record is rejected there under the name training would give it.
NO_ASSISTANT_TURN = "tokens.no_assistant_turn"
LAST_TURN_NOT_ASSISTANT = "tokens.last_turn_not_assistant"
SPECIAL_TOKEN_TEXT = "template.special_token_text_in_content"
MISSING_END_OF_TURN = "template.missing_end_of_turn"
OVERLONG = "template.overlong"
RESPONSE_TOO_LONG = "tokens.response_too_long"
DOUBLE_BOS = "template.double_bos"
MISSING_BOS = "template.missing_bos"
NOTHING_TRAINED = "tokens.nothing_trained"
RESPONSE_TRUNCATED = "tokens.response_truncated"
INVALID_UTF8 = "tokens.invalid_utf8"

# Invalid UTF-8 in the input survives reading as lone surrogates
# (formats._decode); the Rust tokenizer cannot encode them and would fail the
# whole batch, so such a record is rejected before tokenizing.
_SURROGATE = re.compile(r"[\ud800-\udfff]")

# Batch size for the Rust tokenizer (which parallelises within a batch).
_TOKENIZE_BATCH = 2048


@dataclass(slots=True)
class Sample:
    """One verified training sequence."""

    input_ids: list[int]
    labels: list[int]
    """Same length as input_ids; IGNORE_INDEX where no loss is taken."""
    source_index: int
    truncated: bool = False
    """The prompt side was shortened to fit max_seq_length."""

    @property
    def num_trained(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)


@dataclass(slots=True)
class Rejection:
    """A record the trainer will not train on, with the counted reason."""

    source_index: int
    reason: str
    detail: str
    raw: Any = field(default=None, repr=False)


@dataclass(slots=True)
class _Run:
    text: str
    trained: bool
    closes_turn: bool = False
    """A response run: the end-of-turn id follows it and is trained with it."""


@dataclass(slots=True)
class _Plan:
    """A conversation as runs, waiting for its runs to be tokenized."""

    conversation: Conversation
    messages: list[Message]
    runs: list[_Run]
    truncated: bool = False


class SampleBuilder:
    """Builds and verifies samples for one tokenizer, template and set of masking settings."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        template: ChatTemplate,
        *,
        loss_on: LossOn = "assistant",
        max_seq_length: int = 2048,
        overlong: Overlong = "reject",
    ) -> None:
        self.tokenizer = tokenizer
        self.template = template
        self.loss_on = loss_on
        self.max_seq_length = max_seq_length
        self.overlong = overlong
        self._backend = tokenizer.backend_tokenizer
        self.end_of_turn_id = _single_token_id(tokenizer, template.end_of_turn)
        self.bos_id: int | None = tokenizer.bos_token_id
        # Does this model expect a BOS in front of text? Ask the tokenizer
        # itself (its post-processor), rather than trusting a flag.
        probe = tokenizer("x", add_special_tokens=True).input_ids
        self.model_wants_bos = self.bos_id is not None and len(probe) > 0 and probe[0] == self.bos_id
        self.template_writes_bos = bool(tokenizer.bos_token) and template.render(
            [Message("user", "x"), Message("assistant", "y")]
        ).startswith(str(tokenizer.bos_token))
        self.uses_bos = self.model_wants_bos or self.template_writes_bos
        self._special_text = _special_text_pattern(tokenizer, template)
        # No token spans more characters than the longest vocabulary entry, so a
        # text longer than maxSeqLength times that is over-long whatever it says,
        # and is decided without tokenizing it (a 100 MB record would otherwise
        # cost the tokenizer minutes and gigabytes). Holds for every tokenizer
        # whose normalizer does not delete characters, which chat models' don't.
        longest_token = max((len(token) for token in tokenizer.get_vocab()), default=1)
        self.char_limit = max_seq_length * max(longest_token, 1)

    # ------------------------------------------------------------------ public

    def build(self, conversation: Conversation) -> Sample | Rejection:
        """One conversation -> a verified Sample, or the Rejection saying why not."""
        return next(iter(self.build_many([conversation])))

    def build_many(self, conversations: Iterable[Conversation]) -> Iterator[Sample | Rejection]:
        """Like `build`, in order, tokenizing in large batches (this is the fast path)."""
        batch: list[_Plan | Rejection] = []
        for conversation in conversations:
            batch.append(self._plan(conversation, conversation.messages))
            if len(batch) >= _TOKENIZE_BATCH:
                yield from self._finish(batch)
                batch = []
        if batch:
            yield from self._finish(batch)

    def content_problem(self, messages: list[Message]) -> tuple[str, str] | None:
        """(reason, detail) when a message's text cannot be tokenized as plain content."""
        for position, message in enumerate(messages):
            bad_text = _SURROGATE.search(message.content)
            if bad_text:
                return (
                    INVALID_UTF8,
                    f"message {position} ({message.role}) holds bytes that are not UTF-8 "
                    f"(at character {bad_text.start()})",
                )
            found = self._special_text.search(message.content)
            if found:
                return (
                    SPECIAL_TOKEN_TEXT,
                    f"message {position} ({message.role}) contains the special token text {found.group()!r}",
                )
        return None

    # ---------------------------------------------------------------- planning

    def _plan(self, conversation: Conversation, messages: list[Message], truncated: bool = False) -> _Plan | Rejection:
        roles = [m.role for m in messages]
        if "assistant" not in roles:
            return self._reject(conversation, NO_ASSISTANT_TURN, "the conversation has no assistant turn to train on")
        if roles[-1] != "assistant":
            return self._reject(
                conversation, LAST_TURN_NOT_ASSISTANT, f"the last turn is {roles[-1]!r}; nothing answers it"
            )
        sized = self._bound_size(conversation, messages)
        if isinstance(sized, Rejection):
            return sized
        messages, cut = sized
        truncated = truncated or cut
        problem = self.content_problem(messages)
        if problem:
            return self._reject(conversation, *problem)
        try:
            segments = self.template.segments(messages)
        except RenderError as err:
            return self._reject(conversation, err.reason, err.detail)

        last_assistant = len(messages) - 1
        trained_messages = {
            i
            for i, m in enumerate(messages)
            if m.role == "assistant" and (self.loss_on != "last" or i == last_assistant)
        }
        runs: list[_Run] = []
        masked = ""
        pending_close = False
        for segment in segments:
            if pending_close:
                # The markup after a trained response: everything up to the
                # end-of-turn token is part of the response, the rest is masked.
                cut = segment.text.find(self.template.end_of_turn)
                if segment.kind != "markup" or cut < 0:
                    return self._reject(
                        conversation,
                        MISSING_END_OF_TURN,
                        f"the template writes no {self.template.end_of_turn!r} after assistant message "
                        f"{segment.message}",
                    )
                runs[-1].text += segment.text[:cut]
                masked = segment.text[cut + len(self.template.end_of_turn) :]
                pending_close = False
                continue
            if segment.kind == "content" and segment.message in trained_messages:
                if masked:
                    runs.append(_Run(masked, self.loss_on == "all"))
                masked = ""
                runs.append(_Run(segment.text, True, closes_turn=True))
                pending_close = True
            else:
                masked += segment.text
        if pending_close:
            return self._reject(
                conversation,
                MISSING_END_OF_TURN,
                f"the template writes nothing after the last assistant message, so no {self.template.end_of_turn!r}",
            )
        if masked:
            # Markup after the final end-of-turn is never generated: masked in every mode.
            runs.append(_Run(masked, False))
        return _Plan(conversation, messages, runs, truncated)

    def _bound_size(
        self, conversation: Conversation, messages: list[Message]
    ) -> tuple[list[Message], bool] | Rejection:
        """Settle records far over maxSeqLength by their characters (see `char_limit`), before tokenizing.

        Returns the messages to plan with and whether any was cut, or the rejection.
        """
        limit = self.char_limit
        if self.overlong == "reject":
            chars = sum(len(m.content) for m in messages)
            if chars > limit:
                return self._reject(
                    conversation,
                    OVERLONG,
                    f"{chars} characters cannot fit in maxSeqLength {self.max_seq_length} tokens",
                )
            return messages, False
        if len(messages[-1].content) > limit:  # the final response is never cut
            return self._reject(
                conversation,
                RESPONSE_TOO_LONG,
                f"the response alone has {len(messages[-1].content)} characters, "
                f"more than maxSeqLength {self.max_seq_length} tokens can hold",
            )
        if all(len(m.content) <= limit for m in messages):
            return messages, False
        # Truncation cuts these turns from the start anyway; their last `limit`
        # characters are still at least maxSeqLength tokens, so `_fit` ends the
        # same way, on far less text.
        return [m if len(m.content) <= limit else Message(m.role, m.content[-limit:]) for m in messages], True

    # -------------------------------------------------------------- tokenizing

    def _finish(self, batch: list[_Plan | Rejection]) -> Iterator[Sample | Rejection]:
        plans = [p for p in batch if isinstance(p, _Plan)]
        token_runs = self._tokenize_runs(plans)
        results: dict[int, Sample | Rejection] = {}
        for plan, ids_per_run in zip(plans, token_runs, strict=True):
            results[id(plan)] = self._assemble(plan, ids_per_run)
        for item in batch:
            yield item if isinstance(item, Rejection) else results[id(item)]

    def _tokenize_runs(self, plans: list[_Plan]) -> list[list[list[int]]]:
        texts = [run.text for plan in plans for run in plan.runs]
        encoded = self._backend.encode_batch_fast(texts, add_special_tokens=False) if texts else []
        out: list[list[list[int]]] = []
        position = 0
        for plan in plans:
            out.append([encoded[position + i].ids for i in range(len(plan.runs))])
            position += len(plan.runs)
        return out

    def _assemble(self, plan: _Plan, ids_per_run: list[list[int]]) -> Sample | Rejection:
        input_ids: list[int] = []
        labels: list[int] = []
        if self.model_wants_bos and not self.template_writes_bos:
            input_ids.append(self.bos_id)  # type: ignore[arg-type]
            labels.append(IGNORE_INDEX)
        for run, ids in zip(plan.runs, ids_per_run, strict=True):
            if run.closes_turn:
                ids = [*ids, self.end_of_turn_id]
            input_ids.extend(ids)
            labels.extend(ids if run.trained else [IGNORE_INDEX] * len(ids))
        if labels:
            labels[0] = IGNORE_INDEX  # nothing predicts the first token
        if len(input_ids) > self.max_seq_length:
            return self._fit(plan, len(input_ids))
        sample = Sample(input_ids, labels, plan.conversation.source_index, plan.truncated)
        problem = verify_sample(
            sample,
            bos_id=self.bos_id if self.uses_bos else None,
            end_of_turn_id=self.end_of_turn_id,
            expected_responses=sum(run.closes_turn for run in plan.runs),
            max_seq_length=self.max_seq_length,
        )
        if problem:
            return self._reject(plan.conversation, *problem)
        return sample

    # ------------------------------------------------------------- overlength

    def _fit(self, plan: _Plan, length: int) -> Sample | Rejection:
        """An over-long record: reject it, or shorten its prompt side (never its response)."""
        conversation = plan.conversation
        if self.overlong == "reject":
            return self._reject(conversation, OVERLONG, f"{length} tokens > maxSeqLength {self.max_seq_length}")
        messages = plan.messages
        # 1. Drop whole earlier exchanges, keeping a system message and the last prompt + response.
        last_prompt = max((i for i, m in enumerate(messages[:-1]) if m.role != "assistant"), default=None)
        if last_prompt is not None:
            head = [messages[0]] if messages[0].role == "system" and last_prompt > 0 else []
            shorter = head + messages[last_prompt:]
            if len(shorter) < len(messages):
                return self._rebuild(conversation, shorter)
            # 2. Cut the start of the last prompt by exactly the excess. Re-tokenising
            # the decoded tail can come out a little longer; the rebuild then
            # comes back here and cuts that remainder, so no fixed slack is taken
            # (a slack overshoots when nearly the whole prompt must go).
            content = messages[last_prompt].content
            content_ids = self._backend.encode(content, add_special_tokens=False).ids
            excess = length - self.max_seq_length
            if excess < len(content_ids):
                keep = content_ids[excess:]
                tail = self.tokenizer.decode(keep)
                if tail and tail != content:
                    cut = list(messages)
                    cut[last_prompt] = Message(messages[last_prompt].role, tail)
                    return self._rebuild(conversation, cut)
        return self._reject(
            conversation,
            RESPONSE_TOO_LONG,
            f"{length} tokens > maxSeqLength {self.max_seq_length} even with the prompt shortened; "
            "the response alone does not fit",
        )

    def _rebuild(self, conversation: Conversation, messages: list[Message]) -> Sample | Rejection:
        plan = self._plan(conversation, messages, truncated=True)
        if isinstance(plan, Rejection):
            return plan
        return self._assemble(plan, self._tokenize_runs([plan])[0])

    @staticmethod
    def _reject(conversation: Conversation, reason: str, detail: str) -> Rejection:
        return Rejection(conversation.source_index, reason, detail, conversation.raw or conversation.to_record())


def verify_sample(
    sample: Sample,
    *,
    bos_id: int | None,
    end_of_turn_id: int,
    expected_responses: int,
    max_seq_length: int,
) -> tuple[str, str] | None:
    """Independent checks of a built sample; returns (reason, detail) for the first violation.

    Deliberately does not trust the builder: it looks only at the token arrays.
    """
    ids, labels = sample.input_ids, sample.labels
    if len(ids) != len(labels):
        raise AssertionError("input_ids and labels differ in length")  # a builder bug, not a data problem
    if len(ids) > max_seq_length:
        return OVERLONG, f"{len(ids)} tokens > maxSeqLength {max_seq_length}"
    if bos_id is not None:
        if not ids or ids[0] != bos_id:
            return MISSING_BOS, "the sequence does not start with BOS"
        if len(ids) > 1 and ids[1] == bos_id:
            return DOUBLE_BOS, "the sequence starts with two BOS tokens"
    trained = [i for i, label in enumerate(labels) if label != IGNORE_INDEX]
    if not trained:
        return NOTHING_TRAINED, "no token of this record is trained"
    if any(labels[i] != ids[i] for i in trained):
        raise AssertionError("a label differs from its input token")  # a builder bug
    # Every maximal trained stretch that is a response must end with the end-of-turn token.
    trained_eots = sum(1 for i in trained if ids[i] == end_of_turn_id)
    if trained_eots < expected_responses:
        return (
            MISSING_END_OF_TURN,
            f"{expected_responses} responses but only {trained_eots} trained end-of-turn tokens",
        )
    if ids[trained[-1]] != end_of_turn_id:
        return RESPONSE_TRUNCATED, "the last trained token is not the end-of-turn token"
    return None


def _special_text_pattern(tokenizer: PreTrainedTokenizerBase, template: ChatTemplate) -> re.Pattern[str]:
    """Text that the tokenizer would turn into a special token, or that the template writes as markup.

    Added special tokens count too (SmolLM2's `<filename>`, ...): the tokenizer
    matches them inside plain text, so content holding one would be trained as
    that token.
    """
    specials = set(tokenizer.all_special_tokens) | set(re.findall(r"<\|[A-Za-z_]+\|>", template.source))
    specials |= {token.content for token in tokenizer.added_tokens_decoder.values() if token.special}
    specials.add(template.end_of_turn)
    specials.discard("")
    return re.compile("|".join(re.escape(s) for s in sorted(specials, key=len, reverse=True)))


def _single_token_id(tokenizer: PreTrainedTokenizerBase, text: str) -> int:
    ids = tokenizer(text, add_special_tokens=False).input_ids
    if len(ids) != 1:
        raise ValueError(f"end-of-turn {text!r} is not a single token for this tokenizer (ids {ids})")
    return int(ids[0])
