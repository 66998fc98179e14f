"""The token steps: token bounds, template check and out-of-distribution token review.

All three need the target model's tokenizer, and all three read one batch
tokenisation of every turn's content (the `Tokenize` annotator), so the set is
tokenised once.

The template check is training's own sample builder (`training/masking.py`),
applied once per role sequence and to the records where an estimate is not
enough (see `TemplateCheck`): one implementation of the chat-template rules
for curation and training.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..formats import Conversation, Message
from ..runconfig import ConfigError
from ..training.masking import OVERLONG, Rejection, Sample
from .base import Annotator, Filter, SetStep
from .length import opening_request, prompt_minimum

# Records of each skeleton that are also built exactly, to prove the estimate right.
EXACT_BUILD_SAMPLE = 8
# A record's token count is estimated as markup plus contents; tokens can merge
# across a content's edges, so the estimate may be off by a token or two per message.
ESTIMATE_MARGIN_PER_MESSAGE = 4
# Content of the stand-in record built once per role sequence.
STAND_IN = "x"

# Zero-width and bidirectional-override characters: invisible, and a classic
# way to smuggle instructions or break tokenisation.
INVISIBLE = re.compile("[\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff\u00ad]")
_CONFUSABLE_SCRIPTS = ("CYRILLIC", "GREEK", "ARMENIAN", "CHEROKEE")
_NON_ASCII_WORD = re.compile(r"\w*[^\x00-\x7f]\w*")


def mixed_script_word(text: str) -> str | None:
    """A word that mixes Latin letters with look-alike letters of another script (e.g. Cyrillic 'а' in 'pаypal')."""
    if text.isascii():
        return None
    for word in _NON_ASCII_WORD.findall(text):
        has_ascii = any("a" <= ch.lower() <= "z" for ch in word)
        if not has_ascii:
            continue
        for ch in word:
            if ord(ch) > 127 and ch.isalpha():
                script = unicodedata.name(ch, "").split(" ")[0]
                if script in _CONFUSABLE_SCRIPTS:
                    return word
    return None


class OodText(Filter):
    """Review queue for invisible control characters and mixed-script words (no tokenizer needed)."""

    name = "ood"
    outcome = "review"

    def check(self, conv: Conversation) -> str | None:
        for message in conv.messages:
            if message.content.isascii():
                continue
            if INVISIBLE.search(message.content):
                return "control_sequence"
            if mixed_script_word(message.content):
                return "mixed_script"
        return None


@dataclass
class TokenizerView:
    """The parts of a Hugging Face tokenizer the checks need."""

    tokenizer: Any
    byte_fragment_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))

    @classmethod
    def load(cls, path: str) -> TokenizerView:
        try:
            from transformers import AutoTokenizer
        except ImportError as err:  # pragma: no cover - the trainer image has transformers
            raise RuntimeError(
                "token-based curation steps need transformers: pip install 'trustdoc-sft[trainer]'"
            ) from err
        view = cls(AutoTokenizer.from_pretrained(path))
        view.byte_fragment_ids = view._byte_fragments()
        return view

    def _byte_fragments(self) -> np.ndarray:
        """Token ids that stand for bytes, not text: `<0xNN>` byte fallback, or part of a UTF-8 character."""
        vocab = self.tokenizer.get_vocab()
        flags = np.zeros(max(vocab.values()) + 1, dtype=bool)
        byte_decoder = _gpt2_byte_decoder()
        for token, index in vocab.items():
            if re.fullmatch(r"<0x[0-9A-Fa-f]{2}>", token):
                flags[index] = True
            elif all(ch in byte_decoder for ch in token):
                try:
                    bytes(byte_decoder[ch] for ch in token).decode("utf-8")
                except UnicodeDecodeError:
                    flags[index] = True
        return flags

    @property
    def bos_id(self) -> int | None:
        return self.tokenizer.bos_token_id

    @property
    def eos_id(self) -> int | None:
        return self.tokenizer.eos_token_id

    def encode(self, texts: list[str]) -> list[list[int]]:
        if not texts:
            return []
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend is not None:
            # The Rust tokenizer directly: the Python wrapper's per-text conversion costs as much again.
            return [encoding.ids for encoding in backend.encode_batch(texts, add_special_tokens=False)]
        return self.tokenizer(texts, add_special_tokens=False)["input_ids"]


def _gpt2_byte_decoder() -> dict[str, int]:
    """The byte-level BPE alphabet (GPT-2): printable stand-ins for the 256 byte values."""
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, codes, strict=True)}


class Tokenize(Annotator):
    """Tokenises every turn once, for the three token steps after it (`conv.features["token_ids"]`)."""

    name = "tokens"
    batch_size = 4096

    def __init__(self, view: TokenizerView) -> None:
        super().__init__()
        self.view = view

    def annotate(self, convs: Sequence[Conversation]) -> None:
        contents = [m.content for c in convs for m in c.messages]
        # int32 arrays, not lists of Python ints: 52k records hold ~15M tokens.
        token_ids = [np.asarray(ids, dtype=np.int32) for ids in self.view.encode(contents)]
        k = 0
        for conv in convs:
            conv.features["token_ids"] = token_ids[k : k + len(conv.messages)]
            k += len(conv.messages)


def _token_ids(conv: Conversation) -> list[np.ndarray]:
    ids = conv.features.get("token_ids")
    if ids is None:
        raise RuntimeError("token steps need the Tokenize step before them")
    return ids  # type: ignore[no-any-return]


class TokenBounds(Filter):
    """Token counts per role within bounds (its reasons belong to the length step: `length.response_too_few_tokens`)."""

    name = "length"

    def __init__(self, bounds: dict[str, tuple[int | None, int | None]]) -> None:
        super().__init__()
        self.bounds = bounds

    def check(self, conv: Conversation) -> str | None:
        opening = opening_request(conv)
        for i, (message, message_ids) in enumerate(zip(conv.messages, _token_ids(conv), strict=True)):
            kind = {"user": "prompt", "assistant": "response"}.get(message.role)
            if kind is None:
                continue
            low, high = self.bounds.get(kind, (None, None))
            if kind == "prompt" and low is not None:
                low = prompt_minimum(low, follow_up=i != opening)
            if low is not None and len(message_ids) < low:
                return f"{kind}_too_few_tokens"
            if high is not None and len(message_ids) > high:
                return f"{kind}_too_many_tokens"
        return None


@dataclass
class Skeleton:
    """What the sample builder makes of one role sequence with stand-in contents."""

    problem: str | None
    """The builder's reason when it refuses this role sequence whatever the contents say."""
    overhead: int = 0
    """Tokens of the rendered record besides its contents' own (markup, BOS, end-of-turn tokens)."""
    exact: bool = False
    """The estimate disagreed with the builder on a record: build every record of these roles."""
    verified: int = 0
    """Records of this skeleton built exactly to check the estimate."""


class TemplateCheck(Filter):
    """The record as training will build it: training's own sample builder decides (chat template, one BOS,
    the end-of-turn token after every response, no special-token text in contents, the length limit), so
    curation rejects a record under the reason training would give. Writes `scores.tokens`.

    Building every record would tokenize the set a second time (as long again as `Tokenize`). The builder's
    verdict depends on the role sequence, not on the contents, for every template we know; so each role
    sequence is built once with stand-in contents ("the skeleton"), and a record's length is the skeleton's
    markup tokens plus its contents' tokens from `Tokenize`. That is checked, not trusted: the first records
    of every skeleton, and every record near the length limit, are built exactly; a skeleton whose estimate
    is off is abandoned for exact building.
    """

    name = "template"
    forkable = False  # the skeleton cache and its verification counts live in this object

    def __init__(self, view: TokenizerView, *, max_seq_length: int, template: str = "auto") -> None:
        from ..training.masking import SampleBuilder
        from ..training.templates import TemplateError, resolve_template

        super().__init__()
        try:
            chat_template = resolve_template(view.tokenizer, template)
        except TemplateError as err:
            raise ConfigError(f"curation.template.name: {err}") from err
        self.max_seq_length = max_seq_length
        self.builder = SampleBuilder(view.tokenizer, chat_template, max_seq_length=max_seq_length)
        self.stand_in_tokens = len(view.encode([STAND_IN])[0])
        self.skeletons: dict[tuple[str, ...], Skeleton] = {}

    def reason(self, code: str) -> str:
        return code  # the builder's reasons are full names already ("template.missing_end_of_turn")

    def report(self) -> dict[str, Any]:
        return {
            "skeletons": {"/".join(k): v.problem or ("exact" if v.exact else "ok") for k, v in self.skeletons.items()}
        }

    def check(self, conv: Conversation) -> str | None:
        problem = self.builder.content_problem(conv.messages)
        if problem:
            return problem[0]
        skeleton = self._skeleton(tuple(m.role for m in conv.messages))
        if skeleton.problem:
            return skeleton.problem
        estimate = skeleton.overhead + sum(len(ids) for ids in _token_ids(conv))
        margin = ESTIMATE_MARGIN_PER_MESSAGE * len(conv.messages)
        if skeleton.exact or skeleton.verified < EXACT_BUILD_SAMPLE or estimate > self.max_seq_length - margin:
            return self._build(conv, skeleton, estimate, margin)
        conv.meta.setdefault("scores", {})["tokens"] = estimate
        return None

    def _skeleton(self, roles: tuple[str, ...]) -> Skeleton:
        if roles not in self.skeletons:
            stand_in = Conversation([Message(role, STAND_IN) for role in roles], source_index=-1)
            built = self.builder.build(stand_in)
            if isinstance(built, Rejection):
                self.skeletons[roles] = Skeleton(built.reason)
            else:
                self.skeletons[roles] = Skeleton(None, len(built.input_ids) - self.stand_in_tokens * len(roles))
        return self.skeletons[roles]

    def _build(self, conv: Conversation, skeleton: Skeleton, estimate: int, margin: int) -> str | None:
        built = self.builder.build(conv)
        if not skeleton.exact and skeleton.verified < EXACT_BUILD_SAMPLE:
            skeleton.verified += 1
            length = len(built.input_ids) if isinstance(built, Sample) else None
            if (length is None and built.reason != OVERLONG) or (
                length is not None and abs(length - estimate) > margin
            ):
                skeleton.exact = True
                roles = "/".join(m.role for m in conv.messages)
                self.notes.append(f"token counts of {roles} records are not markup plus contents; building each")
        if isinstance(built, Rejection):
            return built.reason
        conv.meta.setdefault("scores", {})["tokens"] = len(built.input_ids)
        return None


class RareTokens(SetStep):
    """Review queue for responses whose tokens are unknown, byte fragments, or rare in this set."""

    name = "ood"
    outcome = "review"
    reads_features = ("token_ids",)

    def __init__(
        self,
        view: TokenizerView,
        *,
        max_rare_token_fraction: float = 0.1,
        rare_document_fraction: float = 5e-5,
        min_set_size_for_rarity: int = 20000,
    ) -> None:
        super().__init__()
        self.view = view
        self.max_rare_token_fraction = max_rare_token_fraction
        self.rare_document_fraction = rare_document_fraction
        self.min_set_size_for_rarity = min_set_size_for_rarity

    def select(self, convs: Sequence[Conversation]) -> dict[int, str]:
        """Vectorised over the set: token document frequencies, then per-response counts."""
        responses = [
            np.concatenate(
                [
                    ids
                    for message, ids in zip(conv.messages, _token_ids(conv), strict=True)
                    if message.role == "assistant"
                ]
                or [np.zeros(0, dtype=np.int32)]
            ).astype(np.int64)
            for conv in convs
        ]
        lengths = np.fromiter(map(len, responses), dtype=np.int64, count=len(responses))
        if not lengths.sum():
            return {}
        flat = np.concatenate(responses)
        doc = np.repeat(np.arange(len(responses)), lengths)
        starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
        nonempty = lengths > 0

        def per_response(mask: np.ndarray) -> np.ndarray:
            counts = np.zeros(len(responses), dtype=np.int64)
            counts[nonempty] = np.add.reduceat(mask.astype(np.int64), starts[nonempty])
            return counts

        unk = self.view.tokenizer.unk_token_id
        unknown = per_response(flat == unk) if unk is not None else np.zeros(len(responses), dtype=np.int64)
        fragments = self.view.byte_fragment_ids
        fragment = per_response(fragments[np.minimum(flat, len(fragments) - 1)] & (flat < len(fragments)))
        if len(convs) >= self.min_set_size_for_rarity:
            # Document frequency: in how many responses each token occurs.
            width = int(flat.max()) + 1
            pairs = np.sort(doc * width + flat)
            first = np.ones(len(pairs), dtype=bool)
            first[1:] = pairs[1:] != pairs[:-1]
            df = np.bincount(pairs[first] % width, minlength=width)
            rare_df = max(1, int(self.rare_document_fraction * len(convs)))
            rare = per_response(df[flat] <= rare_df)
        else:
            rare = np.zeros(len(responses), dtype=np.int64)
            self.notes.append(
                f"rare-token review skipped: {len(convs)} records are too few to know what is rare (needs {self.min_set_size_for_rarity})"
            )
        held: dict[int, str] = {}
        for i in np.nonzero(nonempty)[0]:
            if unknown[i]:
                held[int(i)] = "unknown_token"
            elif fragment[i] >= 3 and fragment[i] > 0.05 * lengths[i]:
                held[int(i)] = "byte_fallback"
            elif rare[i] >= 5 and rare[i] > self.max_rare_token_fraction * lengths[i]:
                held[int(i)] = "rare_tokens"
        return held
