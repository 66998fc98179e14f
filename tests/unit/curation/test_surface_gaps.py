"""Surface gaps: junk and loops planted in good answers are caught, ranked below the clean copy, and clean LIMA passes.

Scored on the held-out half only (`noise.calibration_half` False); the bounds
come from benchmarks/calibrate_surface.py on the other half.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from sft_trainer.config import CurationConfig
from sft_trainer.curation import noise
from sft_trainer.curation.artifacts import Artifacts
from sft_trainer.curation.base import Filter
from sft_trainer.curation.dedup import ExactDedup, NearDedup
from sft_trainer.curation.facts import Facts
from sft_trainer.curation.junk import Junk, junk_penalty, surface_calibration
from sft_trainer.curation.quality import quality_score
from sft_trainer.curation.repetition import Repetition
from sft_trainer.formats import Conversation


@pytest.fixture(scope="module")
def held_out(data_dir: Path) -> list[Conversation]:
    return [c for c in noise.load_lima(data_dir) if not noise.calibration_half(c)]


def repetition() -> Repetition:
    cfg = CurationConfig().repetition
    return Repetition(
        max_duplicate_line_fraction=cfg.max_duplicate_line_fraction,
        max_duplicate_ngram_fraction=cfg.max_duplicate_ngram_fraction,
        max_top_ngram_share=cfg.max_top_ngram_share,
    )


def test_ood_junk_is_caught_with_a_reason_naming_it(held_out: list[Conversation]) -> None:
    step = Junk()
    planted = noise.plant("ood_junk", held_out, random.Random(3))
    verdicts = [(c.meta["planted_detail"], step.check(c)) for c in planted]
    # Terminal escapes are control characters: validation rejects them before this step.
    judged = [(d, v) for d, v in verdicts if d != "ansi_codes"]
    assert sum(v is not None for _, v in judged) / len(judged) >= 0.8
    named = {"mojibake": "mojibake", "replacement_chars": "replacement_chars", "zero_width": "invisible_run"}
    named |= {"emoji_flood": "emoji_flood", "kaomoji_flood": "symbol_flood"}
    for detail, reason in named.items():
        found = [v for d, v in judged if d == detail]
        assert found.count(reason) / len(found) >= 0.8, (detail, found)


def test_repetition_loops_are_caught(held_out: list[Conversation]) -> None:
    step = repetition()
    planted = noise.plant("repetition_loop", held_out, random.Random(4))
    assert sum(step.check(c) == "looped_sentence" for c in planted) / len(planted) >= 0.8


def test_forms_repeating_their_options_per_question_are_not_duplicate_lists() -> None:
    poll = "\n".join(
        f"How clear was lesson {i}?\n* Only some parts were clear\n* Most of it was clear\n* All of it was clear\n* I knew the material"
        for i in range(4)
    )
    assert repetition().check_text(poll) is None
    same = "\n".join("* Buy fresh vegetables today" for _ in range(6))
    assert repetition().check_text(same) == "duplicate_list_items"


def test_parallel_steps_repeat_5_grams_and_pass_but_a_text_said_three_times_does_not() -> None:
    step = repetition()
    assert step.max_dup_ngrams == surface_calibration()["repetition"]["max_duplicate_ngram_fraction"] >= 0.2
    # Over Gopher's 0.2 (0.21 of the words are in repeated 5-grams), as in a clean calibration answer about git.
    parallel = "\n\n".join(
        f"To see {what}, you can use the following command in the terminal: {command}. {note}"
        for what, command, note in (
            (
                "the branch named main",
                "git checkout main",
                "Your working tree then matches the newest commit of that branch, and new commits go on top of it.",
            ),
            (
                "the tag named v1.2",
                "git checkout v1.2",
                "Git leaves you on a detached head, so make a branch first if you mean to commit anything there.",
            ),
            (
                "the remote branches",
                "git branch -r",
                "It lists what the last fetch saw; run git fetch before it when the list looks stale or short.",
            ),
        )
    )
    assert step.check_text(parallel) is None
    story = (
        "We walked along the river until the sun went down behind the old mill. Nobody said a word about the "
        "letter, but everyone knew what it meant for the farm and for the family that had worked it for a century. "
    )
    said_three_times = "\n\n".join(f"{story}{aside}" for aside in ("Then it rained.", "Later we ate.", "So it ended."))
    assert step.check_text(said_three_times) == "duplicate_ngrams"


def test_a_weekly_plan_repeats_lines_and_passes_but_half_its_lines_said_again_do_not() -> None:
    step = repetition()
    calibrated = surface_calibration()["repetition"]
    assert step.max_dup_lines == calibrated["max_duplicate_line_fraction"] >= 0.3
    assert step.max_top_share[2] == calibrated["max_top_ngram_share"] >= 0.2
    days = (
        (
            "Monday opens the week with the heaviest work for your legs",
            "Squats, 5 sets of 5 reps at 80% of your max, resting two minutes between the sets",
        ),
        (
            "Tuesday moves the load to the chest, shoulders and arms",
            "Bench press, 5 sets of 5 reps, then three sets of barbell rows for the upper back",
        ),
        (
            "Wednesday gives the muscles time to recover and grow back stronger",
            "Rest day, or an easy walk of about thirty minutes if your legs feel stiff",
        ),
        (
            "Thursday trains the back and hips, which carry most of the lifts",
            "Deadlifts, 3 sets of 5 reps, then walking lunges with light dumbbells in each hand",
        ),
        (
            "Friday ends the week with presses above the head and pulling",
            "Overhead press, 5 sets of 5 reps, then as many pull-ups as you can do with good form",
        ),
    )

    def plan(routine: str) -> str:
        return "Here is a weekly split for building strength.\n\n" + "\n\n".join(
            f"{day}\n{routine}\n{work}" for day, work in days
        )

    # 8 of 21 lines (0.38) repeat an earlier one, over Gopher's 0.3, as in OpenAssistant's training plans.
    assert step.check_text(plan("Warm up for ten minutes.\nCool down and stretch.")) is None
    # 12 of 26 (0.46): more than any clean calibration answer repeats.
    repeated = plan("Warm up for ten minutes.\nCool down and stretch.\nDrink some water.")
    assert step.check_text(repeated) == "duplicate_lines"


def test_clean_lima_is_rarely_judged_noisy(held_out: list[Conversation]) -> None:
    steps: list[Filter] = [repetition(), Artifacts(), Junk(), Facts()]
    flagged = [c.source_index for c in held_out if any(step.check(c) for step in steps)]
    assert len(flagged) / len(held_out) <= 0.01, flagged


def test_an_ai_self_description_answering_who_the_assistant_is_is_kept() -> None:
    from sft_trainer.formats import Message

    step = Artifacts()
    about = Conversation(
        [Message("user", "Who are you?"), Message("assistant", "I am an AI assistant, here to answer your questions.")],
        0,
    )
    task = Conversation(
        [
            Message("user", "Write a poem about rain."),
            Message("assistant", "As an AI language model, I cannot write poems."),
        ],
        1,
    )
    assert step.check(about) is None
    assert step.check(task) == "ai_disclaimer"


def test_junk_lowers_quality_and_dedup_keeps_the_clean_copy(held_out: list[Conversation]) -> None:
    clean = held_out[:40]
    for kind in ("ood_junk", "repetition_loop"):
        corrupted = noise.plant(kind, clean, random.Random(5))
        pairs = [(c, n) for c in clean for n in corrupted if n.meta["planted_from"] == c.source_index]
        for original, noisy in pairs:
            assert quality_score(noisy, 15.0) < quality_score(original, 15.0), kind
    junky = noise.plant("ood_junk", clean, random.Random(6))
    assert all(junk_penalty(n.messages[-1].content) > 0 for n in junky)
    # Near duplicates: the clean original and its junk copy form one cluster; the original survives.
    both = clean + junky
    for conv in both:
        conv.meta["scores"] = {"quality": quality_score(conv, 15.0)}
    stopped = NearDedup(threshold=0.5)(both)
    survivors = {i for i in range(len(both)) if i not in stopped}
    clusters = [
        (i, len(clean) + j)
        for j, n in enumerate(junky)
        for i, c in enumerate(clean)
        if n.meta["planted_from"] == c.source_index
    ]
    together = [(i, k) for i, k in clusters if (i in stopped) != (k in stopped)]
    assert len(together) >= 0.8 * len(clusters)
    assert all(i in survivors and k not in survivors for i, k in together)
    # Exact duplicates after normalisation (zero-width junk vanishes from the normalised text): the clean one survives.
    zero = [n for n in junky if n.meta["planted_detail"] in ("zero_width", "replacement_chars")]
    originals = [c for c in clean if any(n.meta["planted_from"] == c.source_index for n in zero)]
    pair_set = zero + originals
    stopped = ExactDedup()(pair_set)
    assert stopped and all("planted" in pair_set[i].meta for i in stopped)
