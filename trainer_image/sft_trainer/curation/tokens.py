"""The token steps: token bounds, template check and out-of-distribution token review.

All three need the target model's tokenizer, and all three read one batch
tokenisation of every turn's content (the `Tokenize` annotator), so the set is
tokenised once.

Template check without rendering 50,000 Jinja templates: a chat template's
output depends on the sequence of roles, not on the contents, for every
template we know. So each distinct role sequence is rendered once with
sentinel contents ("the skeleton"), the skeleton is checked (BOS, EOS after
every assistant turn), and each record is its skeleton with its contents put
back. That assumption is verified, not trusted: the first records of every
skeleton are also rendered exactly, and a skeleton whose exact render
differs is abandoned for exact per-record rendering.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..formats import Conversation
from .base import Annotator, Filter, SetStep

# Records of each skeleton that are also rendered exactly, to prove the skeleton right.
EXACT_RENDER_SAMPLE = 8
_SENTINEL = "\ue000{}\ue001"
_SENTINEL_RE = re.compile("\ue000(\\d+)\ue001")

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
    special_strings: list[str] = field(default_factory=list)
    byte_fragment_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))

    @classmethod
    def load(cls, path: str) -> TokenizerView:
        try:
            from transformers import AutoTokenizer
        except ImportError as err:  # pragma: no cover - the trainer image has transformers
            raise RuntimeError(
                "token-based curation steps need transformers: pip install 'trustdoc-sft[trainer]'"
            ) from err
        tokenizer = AutoTokenizer.from_pretrained(path)
        specials = set(tokenizer.all_special_tokens)
        specials.update(t.content for t in tokenizer.added_tokens_decoder.values() if t.special)
        view = cls(tokenizer, sorted((s for s in specials if s), key=len, reverse=True))
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

    def render(self, messages: list[dict[str, str]]) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False)


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


@dataclass
class Skeleton:
    """The rendered template of one role sequence, split around the contents."""

    pieces: list[str]
    problem: str | None
    exact: bool = False
    token_overhead: int = 0
    verified: int = 0
    """Records of this skeleton whose exact render was compared with the skeleton fill."""


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
        for message, message_ids in zip(conv.messages, _token_ids(conv), strict=True):
            kind = {"user": "prompt", "assistant": "response"}.get(message.role)
            if kind is None:
                continue
            low, high = self.bounds.get(kind, (None, None))
            if low is not None and len(message_ids) < low:
                return f"{kind}_too_few_tokens"
            if high is not None and len(message_ids) > high:
                return f"{kind}_too_many_tokens"
        return None


class TemplateCheck(Filter):
    """The record rendered with the target chat template: one BOS, an EOS after every assistant turn, no
    special-token text in the contents, and no longer than training accepts. Writes `scores.tokens`."""

    name = "template"
    forkable = False  # the skeleton cache and its verification counts live in this object

    def __init__(self, view: TokenizerView, *, max_seq_length: int) -> None:
        super().__init__()
        self.view = view
        self.max_seq_length = max_seq_length
        self.skeletons: dict[tuple[str, ...], Skeleton] = {}

    def report(self) -> dict[str, Any]:
        return {
            "skeletons": {"/".join(k): v.problem or ("exact" if v.exact else "ok") for k, v in self.skeletons.items()}
        }

    def _skeleton(self, roles: tuple[str, ...]) -> Skeleton:
        if roles in self.skeletons:
            return self.skeletons[roles]
        messages = [{"role": r, "content": _SENTINEL.format(i)} for i, r in enumerate(roles)]
        rendered = self.view.render(messages)
        parts = _SENTINEL_RE.split(rendered)
        pieces, order = parts[0::2], [int(x) for x in parts[1::2]]
        if order != list(range(len(roles))):
            skeleton = Skeleton([], None, exact=True)  # the template rewrites contents: render each record
        else:
            skeleton = Skeleton(pieces, self._check_skeleton(roles, pieces))
            skeleton.token_overhead = len(self.view.encode(["".join(pieces)])[0])
        self.skeletons[roles] = skeleton
        return skeleton

    def _check_skeleton(self, roles: tuple[str, ...], pieces: list[str]) -> str | None:
        tok = self.view.tokenizer
        ids = self.view.encode(["x".join(pieces)])[0]
        bos, eos = self.view.bos_id, self.view.eos_id
        if bos is not None and tok.bos_token in "".join(pieces):
            # One BOS opening the sequence, never doubled; a template that also
            # opens every turn with the same token (ChatML models) may repeat
            # it, but only where the template itself writes it.
            if ids[:1] != [bos] or ids[1:2] == [bos] or ids.count(bos) != "".join(pieces).count(tok.bos_token):
                return "bos"
            with_specials = tok("x".join(pieces), add_special_tokens=True)["input_ids"]
            note = "the tokenizer adds a BOS to text the template already starts with one: tokenize rendered text with add_special_tokens=False"
            if with_specials[:2] == [bos, bos] and note not in self.notes:
                self.notes.append(note)
        if eos is not None:
            for i, role in enumerate(roles):
                if role == "assistant" and not pieces[i + 1].startswith(tok.eos_token):
                    return "missing_eos"
        return None

    def _fill(self, skeleton: Skeleton, conv: Conversation) -> str:
        out = [skeleton.pieces[0]]
        for message, piece in zip(conv.messages, skeleton.pieces[1:], strict=False):
            out += [message.content, piece]
        return "".join(out)

    def check(self, conv: Conversation) -> str | None:
        for message in conv.messages:
            for special in self.view.special_strings:
                if special in message.content:
                    return "special_token_in_content"
        roles = tuple(m.role for m in conv.messages)
        skeleton = self._skeleton(roles)
        messages = [{"role": m.role, "content": m.content} for m in conv.messages]
        if not skeleton.exact and skeleton.problem is None and skeleton.verified < EXACT_RENDER_SAMPLE:
            skeleton.verified += 1
            if self.view.render(messages) != self._fill(skeleton, conv):
                skeleton.exact = True
                self.notes.append(f"template output depends on content for roles {roles}; rendering each record")
        if skeleton.exact:
            rendered_ids = self.view.encode([self.view.render(messages)])[0]
            total = len(rendered_ids)
            bos, eos = self.view.bos_id, self.view.eos_id
            if bos is not None and (rendered_ids[:1] != [bos] or rendered_ids[1:2] == [bos]):
                return "bos"
            if eos is not None and rendered_ids.count(eos) < sum(1 for m in conv.messages if m.role == "assistant"):
                return "missing_eos"
        else:
            if skeleton.problem:
                return skeleton.problem
            total = skeleton.token_overhead + sum(len(ids) for ids in _token_ids(conv))
        if total > self.max_seq_length:
            return "exceeds_max_seq_length"
        conv.meta.setdefault("scores", {})["tokens"] = total
        return None


class RareTokens(SetStep):
    """Review queue for responses whose tokens are unknown, byte fragments, or rare in this set."""

    name = "ood"
    outcome = "review"

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
