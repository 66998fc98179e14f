"""The completeness judge without a model: structural cues on real held-out LIMA and planted truncations.

The LM half of the judge (end-of-turn probability) is tested with the real
scorer in tests/trainer/test_scorer.py.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from sft_trainer.config.curation import CompletenessStep
from sft_trainer.curation import noise
from sft_trainer.curation.completeness import (
    Completeness,
    ends_mid_paragraph,
    ends_open,
    structurally_cut,
    unclosed_fence,
)
from sft_trainer.formats import Conversation, Message


@pytest.fixture(scope="module")
def held_out_lima(data_dir) -> list[Conversation]:
    """LIMA's held-out half: no threshold was calibrated on it."""
    return [c for c in noise.load_lima(data_dir) if not noise.calibration_half(c)]


def conversation(response: str, scores: dict | None = None) -> Conversation:
    meta = {"scores": scores} if scores is not None else {}
    return Conversation([Message("user", "Tell me about it."), Message("assistant", response)], 0, meta)


def test_structure_alone_catches_cut_code_blocks_and_flags_almost_no_clean_answer(held_out_lima) -> None:
    truncated = noise.plant("truncated", held_out_lima, random.Random(1))
    mid_code = [c for c in truncated if c.meta["planted_detail"] == "mid_code"]
    caught = [structurally_cut(noise._last_response(c)) for c in truncated]
    clean_flagged = sum(structurally_cut(noise._last_response(c)) for c in held_out_lima)
    print(
        f"\nstructure only: recall {sum(caught) / len(caught):.3f} on {len(caught)} truncated, "
        f"{clean_flagged}/{len(held_out_lima)} clean flagged"
    )
    # noise.py counts inline ```x``` as fences too, so a few "mid_code" cuts are really mid-sentence.
    open_blocks = sum(unclosed_fence(noise._last_response(c)) for c in mid_code)
    assert mid_code and open_blocks / len(mid_code) >= 0.9
    assert sum(caught) / len(caught) >= 0.4
    assert clean_flagged / len(held_out_lima) <= 0.01


def test_a_fence_line_may_carry_code_and_a_line_opening_with_inline_code_is_no_fence() -> None:
    # LIMA's StackExchange answers: code on the opening fence line, single backticks inside it, inline ```x```.
    closed = [
        "Run:\n```mysql> select host, user from mysql.user;\n```\nThen check the output.",
        "Set it:\n```host: `0.0.0.0`\n```\nRestart.",
        "Use this:\n````-(void)tableView:(UITableView *)tableView`\n```\nIt works.",
        "```open``` and ```start``` are shell things.\n```subprocess.run(['open', name])\n```",
    ]
    assert not any(unclosed_fence(text) for text in closed)
    assert unclosed_fence("```git``` has three modes:\n```git reset --soft HEAD~1\ngit reset --hard")
    assert unclosed_fence("Try:\n```host: `0.0.0.0`\nport: 3306")


def test_judge_without_scores_uses_structure_only() -> None:
    judge = Completeness(CompletenessStep(max_eos_prob=0.001))
    assert judge.check(conversation("Here is the code:\n```python\nprint(1)\n")) == "truncated"
    assert judge.check(conversation("The capital of France is Paris, and the")) == "truncated"
    assert judge.check(conversation("Apples, pears,")) == "truncated"
    # An open ending alone is no evidence without the model: kept.
    assert judge.check(conversation("The best known example is the Eiffel Tower in Paris")) is None
    assert judge.check(conversation("The best known example is the Eiffel Tower in Paris", {"eos_prob": None})) is None


def test_judge_reads_eos_prob_only_on_open_endings() -> None:
    judge = Completeness(CompletenessStep(max_eos_prob=0.001))
    open_end = "The best known example is the Eiffel Tower in Paris"
    assert judge.check(conversation(open_end, {"eos_prob": 1e-6})) == "truncated"
    assert judge.check(conversation(open_end, {"eos_prob": 0.2})) is None
    # Closing punctuation, a closed code block, a table row, a link: a low probability alone does not condemn them.
    links = "It is all explained.\n\nMore here: https://docs.example.org/guide/1iaX_nxas"
    for finished in ("It is in Paris.", "```python\nprint(1)\n```", "| a | b |", 'He said "yes"', links):
        assert not ends_open(finished)
        assert judge.check(conversation(finished, {"eos_prob": 1e-6})) is None


def assert_judged_finished(texts: list[str], cue: Callable[[str], bool]) -> None:
    """Neither `cue` nor the judge (whose end probability threshold is 0: only shape condemns) calls these cut."""
    judge = Completeness(CompletenessStep(max_end_prob=0.0))
    for text in texts:
        assert not cue(text), text
        assert judge.check(conversation(text, {"end_prob": 0.5})) is None, text


def test_a_paragraph_cut_after_a_closed_sentence_is_told_from_initials_numbers_and_abbreviations() -> None:
    judge = Completeness(CompletenessStep(max_end_prob=0.0))  # only the paragraph's shape can condemn
    cut = "Gauss proved it in 1796. The proof uses the"
    assert ends_mid_paragraph(cut) and judge.check(conversation(cut, {"end_prob": 0.5})) == "truncated"
    # Finished lines without a final full stop, whose inner full stops end no sentence.
    finished = [
        "― Roy T. Bennett, The Light in the Heart",
        "A Visit From St. Nicholas by Clement Clarke Moore",
        "1. Charades 2. Pictionary 3. Uno",
        "There are sites that show current values, ie. coinbase",
        "Use a list (e.g. a stack) as the store",
        "1. Werewolf 2. Who Am I?  3. Charades 4. Uno",
        '"I thought that no one but myself . . ." -C.S. Lewis',
        "\"One says to another, 'What! You too? I thought that no one but myself . . .'\" -C.S. Lewis",
        "Stick with it, and you'll improve over time. Best of luck! - Harry",
        "We are committed to doing better. Yours sincerely, [Your Name], CEO",
    ]
    assert_judged_finished(finished, ends_mid_paragraph)
    # A signature-like word after the break is still a sentence when it goes on.
    assert ends_mid_paragraph("We are committed to doing better. Best of all, the")


def test_letters_suffixes_and_hashtags_end_finished_texts() -> None:
    """Endings that look open or dangling but finish the text (human self-instruct outputs showed each)."""
    finished = [
        "Hi there,\n\nI'm inviting you over for dinner on Friday.\n\nLooking forward to seeing you,",
        "Thanks for the update.\n\nBest regards,",
        "Rating: Mature 17+",
        "Languages I know:\n1. Java\n2. Python\n3. C++",
        "Make lasting memories. #travel #Wanderlust140",
    ]
    assert_judged_finished(finished, structurally_cut)
    for cut in ("The total is 2 +", "Apples, pears,", "Best regards, and see you at the next meeting,"):
        assert structurally_cut(cut), cut


def test_reason_is_prefixed_and_counted() -> None:
    judge = Completeness(CompletenessStep(max_eos_prob=0.001))
    assert judge(conversation("Steps:\n1. Open the")) == "completeness.truncated"
    assert judge(conversation("Done.")) is None
    assert judge.seen == 2 and judge.drops["completeness.truncated"] == 1


def test_default_threshold_comes_from_the_shipped_calibration() -> None:
    from sft_trainer.curation.lm_scores import calibration

    judge = Completeness(CompletenessStep())
    assert judge.max_eos_prob == calibration()["completeness"]["max_eos_prob"]
    assert 0 < judge.max_eos_prob < 1
