"""The planted-noise kit: each kind does the damage it names, a seed fixes it, and the halves split cleanly."""

from __future__ import annotations

import random
import re
from fractions import Fraction
from pathlib import Path

import pytest

from sft_trainer.curation import noise
from sft_trainer.curation.text import WORD_RE, last_response, prompt_text
from sft_trainer.formats import Conversation


@pytest.fixture(scope="module")
def lima(data_dir: Path) -> list[Conversation]:
    return noise.load_lima(data_dir)


@pytest.fixture(scope="module")
def sample(lima: list[Conversation]) -> list[Conversation]:
    return [c for c in lima if not noise.calibration_half(c)][:120]


@pytest.fixture(scope="module")
def chat_answers(data_dir: Path) -> list[Conversation]:
    return noise.load_chat_answers(data_dir)


def planted(
    kind: str, sample: list[Conversation], chat_answers: list[Conversation], seed: int = 7
) -> list[Conversation]:
    return noise.plant(kind, sample, random.Random(seed), chat_answers=chat_answers)


def originals(sample: list[Conversation]) -> dict[int, Conversation]:
    return {c.source_index: c for c in sample}


def test_loaders_read_the_shared_data(lima: list[Conversation], chat_answers: list[Conversation]) -> None:
    assert len(lima) == 1029
    assert sum(1 for c in lima if len(c.messages) > 2) == 29
    assert {c.meta["generator"] for c in chat_answers} == set(noise.CHAT_MODELS)
    assert all(last_response(c).strip() for c in chat_answers)


def test_missing_shared_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does-not-exist"):
        noise.load_lima(tmp_path / "does-not-exist")


def test_halves_are_stable_disjoint_and_balanced(lima: list[Conversation]) -> None:
    first = [noise.calibration_half(c) for c in lima]
    again = [noise.calibration_half(c) for c in noise.load_lima()]
    assert first == again
    calibration = {prompt_text(c) for c, half in zip(lima, first, strict=True) if half}
    held_out = {prompt_text(c) for c, half in zip(lima, first, strict=True) if not half}
    assert not calibration & held_out
    assert 0.4 < len(calibration) / len(lima) < 0.6


def test_every_kind_is_deterministic_labelled_and_reindexed(
    sample: list[Conversation], chat_answers: list[Conversation]
) -> None:
    seen_indexes: set[int] = set()
    for kind in noise.KINDS:
        first = planted(kind, sample, chat_answers)
        again = planted(kind, sample, chat_answers)
        other = planted(kind, sample, chat_answers, seed=8)
        assert [c.to_record() for c in first] == [c.to_record() for c in again], kind
        assert [c.to_record() for c in first] != [c.to_record() for c in other], kind
        assert len(first) >= 0.9 * len(sample), kind
        assert all(c.meta["planted"] == kind for c in first)
        indexes = {c.source_index for c in first}
        assert len(indexes) == len(first) and not indexes & seen_indexes
        assert not indexes & {c.source_index for c in sample}
        seen_indexes |= indexes


def test_unknown_kind_is_refused(sample: list[Conversation]) -> None:
    with pytest.raises(ValueError, match="unknown noise kind 'gibberish'"):
        noise.plant("gibberish", sample, random.Random(0))


def test_off_topic_answers_another_prompt(sample: list[Conversation], chat_answers: list[Conversation]) -> None:
    source = originals(sample)
    answers = {last_response(c): prompt_text(c) for c in sample}
    for conv in planted("off_topic", sample, chat_answers):
        original = source[conv.meta["planted_from"]]
        assert prompt_text(conv) == prompt_text(original)
        assert answers[last_response(conv)] != prompt_text(conv)


def test_truncated_stops_mid_sentence(sample: list[Conversation], chat_answers: list[Conversation]) -> None:
    source = originals(sample)
    details = set()
    for conv in planted("truncated", sample, chat_answers):
        full = last_response(source[conv.meta["planted_from"]])
        cut = last_response(conv)
        assert full.startswith(cut) and 0.3 * len(full) <= len(cut) <= 0.8 * len(full)
        assert full[len(cut)] == " " and not cut.endswith(" ")  # a word boundary
        assert not re.search(r"[.!?:;]['\")\]*_]*$", cut)  # never at a sentence end
        details.add(conv.meta["planted_detail"])
    assert {"mid_sentence", "mid_list"} <= details


def test_word_salad_keeps_the_words_and_breaks_the_order(
    sample: list[Conversation], chat_answers: list[Conversation]
) -> None:
    source = originals(sample)
    for conv in planted("word_salad", sample, chat_answers):
        before, after = last_response(source[conv.meta["planted_from"]]), last_response(conv)
        assert sorted(WORD_RE.findall(before)) == sorted(WORD_RE.findall(after))
        assert before != after


def test_prompt_echo_says_only_the_prompt(sample: list[Conversation], chat_answers: list[Conversation]) -> None:
    for conv in planted("prompt_echo", sample, chat_answers):
        prompt_words = set(WORD_RE.findall(conv.messages[-2].content.lower()))
        frame = {"you", "asked", "your", "question", "is", "so", "the", "in", "other", "words", "want", "to", "know"}
        frame |= {"restate", "request", "that", "what", "are", "asking", "let", "me", "repeat"}
        assert set(WORD_RE.findall(last_response(conv).lower())) <= prompt_words | frame


def _expected(expression: str) -> Fraction:
    """The worked expression's value, computed from the metadata the planter wrote."""
    if "% of " in expression:
        p, x = expression.split("% of ")
        return Fraction(int(p), 100) * int(x)
    if "^" in expression:
        base, exp = expression.split("^")
        return Fraction(int(base)) ** int(exp)
    a, op, b = expression.split()
    x, y = Fraction(int(a)), Fraction(int(b))
    return {"+": x + y, "-": x - y, "×": x * y, "÷": x / y}[op]


def _numbers(text: str) -> list[Fraction]:
    return [Fraction(n.replace(",", "")) for n in re.findall(r"\d[\d,]*(?:\.\d+)?", text)]


def test_arithmetic_records_are_right_or_wrong_as_asked() -> None:
    right = noise.arithmetic_records(200, random.Random(1))
    wrong = noise.plant("wrong_arithmetic", right, random.Random(2))
    kinds = set()
    for conv in right:
        expected = _expected(conv.meta["arithmetic"]["expression"])
        assert Fraction(conv.meta["arithmetic"]["result"]) == expected
        assert _numbers(last_response(conv))[-1] == expected
        kinds.add(re.sub(r"\d+", "N", conv.meta["arithmetic"]["expression"]))
    assert {"N + N", "N - N", "N × N", "N ÷ N", "N^N", "N% of N"} <= kinds
    assert any(
        re.search(r"\b(?:twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety|twelve)\b", prompt_text(c))
        for c in right
    )
    for conv in wrong:
        assert _numbers(last_response(conv))[-1] != _expected(conv.meta["arithmetic"]["expression"])


def test_number_words() -> None:
    assert noise.number_words(0) == "zero"
    assert noise.number_words(35) == "thirty-five"
    assert noise.number_words(342) == "three hundred forty-two"
    assert noise.number_words(12_005) == "twelve thousand five"
    with pytest.raises(ValueError, match="not -1"):
        noise.number_words(-1)


def test_assistant_style_is_a_long_chat_answer_to_its_own_prompt(
    sample: list[Conversation], chat_answers: list[Conversation]
) -> None:
    pairs = {(prompt_text(c), last_response(c)) for c in chat_answers}
    out = planted("assistant_style", sample, chat_answers)
    assert len(out) == len(sample)
    assert len({prompt_text(c) for c in out}) == len(out)
    for conv in out:
        assert (prompt_text(conv), last_response(conv)) in pairs
        assert len(last_response(conv).split()) >= noise.MIN_CHAT_ANSWER_WORDS
        assert conv.meta["generator"] in noise.CHAT_MODELS


_JUNK = {
    "mojibake": re.compile(r"Ã|â€"),
    "zero_width": re.compile(r"[\u200b\u200c\u200d\u2060\ufeff]{5,}"),
    "emoji_flood": re.compile(r"[\U0001F300-\U0001FAFF\u2728\u2764]{10,}"),
    "kaomoji_flood": re.compile(r"[◕ツಠᵔ・┻ﾉ]"),
    "replacement_chars": re.compile("\ufffd{3,}"),
    "ansi_codes": re.compile(r"\x1b[\[\]]"),
}


def test_ood_junk_inserts_each_kind_into_the_good_response(
    sample: list[Conversation], chat_answers: list[Conversation]
) -> None:
    source = originals(sample)
    details = set()
    for conv in planted("ood_junk", sample, chat_answers):
        detail = conv.meta["planted_detail"]
        details.add(detail)
        original = last_response(source[conv.meta["planted_from"]])
        after = last_response(conv)
        assert _JUNK[detail].search(after) and not _JUNK[detail].search(original)
        assert set(original.split()) <= set(after.split())  # the good text is all still there
    assert details == set(noise.JUNK_MAKERS)


def test_repetition_loop_repeats_one_sentence_after_an_opening(
    sample: list[Conversation], chat_answers: list[Conversation]
) -> None:
    source = originals(sample)
    for conv in planted("repetition_loop", sample, chat_answers):
        original = last_response(source[conv.meta["planted_from"]])
        parts = noise.sentences(last_response(conv))
        looped = max(set(parts), key=parts.count)
        assert 8 <= parts.count(looped) <= 13  # the loop, and maybe the same sentence once in the opening
        assert last_response(conv).startswith(original[:20]) and looped in original
