"""The arithmetic checker: exact values, the answer's stated result, and no verdict when unsure."""

from __future__ import annotations

import random
from fractions import Fraction
from pathlib import Path

import pytest

from sft_trainer.curation import noise
from sft_trainer.curation.facts import Facts, asked_value, stated_result
from sft_trainer.formats import Conversation, Message


def qa(prompt: str, answer: str) -> Conversation:
    return Conversation([Message("user", prompt), Message("assistant", answer)], 0)


@pytest.mark.parametrize(
    ("prompt", "value"),
    [
        ("What is twelve times 35?", Fraction(420)),
        ("What is 15% of 240?", Fraction(36)),
        ("Calculate 2 to the power of ten.", Fraction(1024)),
        ("What is seven squared?", Fraction(49)),
        ("Subtract 17 from 100.", Fraction(83)),
        ("How much is 4x3+3x2?", Fraction(18)),
        ("Compute (3 + 5) * 2 / 4", Fraction(4)),
        ("What is 10 divided by 4?", Fraction(5, 2)),
    ],
)
def test_asked_value_is_exact(prompt: str, value: Fraction) -> None:
    assert asked_value(prompt) == value


@pytest.mark.parametrize(
    "prompt",
    [
        "What is the capital of France?",
        "John has 5 apples and eats 2. How many are left?",  # a word problem: not judged
        "What is 5 divided by 0?",
        "Calculate 2 to the power of 1000.",
        "What is 42?",
        "Write a poem about the number 7 times.",
    ],
)
def test_unclear_prompts_are_not_judged(prompt: str) -> None:
    assert asked_value(prompt) is None


def test_stated_result_finds_the_final_number_and_stays_silent_on_restatements() -> None:
    assert stated_result("Working it out, 12 x 35 gives 420. So the answer is 420.") == (Fraction(420), 0)
    assert stated_result("That comes to 3.33.") == (Fraction(333, 100), 2)
    assert stated_result("Four hundred and twenty.") == (Fraction(420), 0)
    assert stated_result("4 multiplied by 5 is equal to") is None  # cut off: no result stated


def test_rounding_the_answer_shows_is_accepted() -> None:
    step = Facts()
    assert step.check(qa("What is 10 divided by 3?", "10 / 3 = 3.33")) is None
    assert step.check(qa("What is 10 divided by 3?", "10 / 3 = 3.5")) == "wrong_arithmetic"


def test_planted_wrong_arithmetic_is_caught_and_correct_kept() -> None:
    """Held-out half of the planted records: recall >= 0.8 and no false positive."""
    step = Facts()
    right = [c for c in noise.arithmetic_records(400, random.Random(11)) if not noise.calibration_half(c)]
    wrong = [c for c in noise.plant("wrong_arithmetic", right, random.Random(12)) if not noise.calibration_half(c)]
    assert len(right) > 100 and len(wrong) > 100
    assert sum(step.check(c) is not None for c in right) == 0
    assert sum(step.check(c) == "wrong_arithmetic" for c in wrong) / len(wrong) >= 0.8


def test_clean_lima_is_never_flagged(data_dir: Path) -> None:
    step = Facts()
    assert [c.source_index for c in noise.load_lima(data_dir) if step(c)] == []
    assert step.seen == 1029


def test_raw_alpaca_wrong_arithmetic_is_found(alpaca: list[dict]) -> None:
    """Raw Alpaca holds wrong sums (its README says so); two checked by hand."""
    step = Facts()
    record = alpaca[35603]  # 3*4*5*6*7*8*9 = 181,440, not 5,040
    assert step.check(qa(record["instruction"], record["output"])) == "wrong_arithmetic"
    record = alpaca[47777]  # 6 squared / 8 = 4.5, not 0.75
    assert step.check(qa(record["instruction"], record["output"])) == "wrong_arithmetic"
