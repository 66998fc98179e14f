"""The LM-free fallback of coherence and completeness: the shipped word-bigram model on held-out LIMA.

Held-out half only (no count and no threshold came from it); the shipped
model and calibration are read as the pipeline reads them.
"""

from __future__ import annotations

import math
import random
import time

import pytest

from sft_trainer.config.curation import CoherenceStep, CompletenessStep
from sft_trainer.curation import noise
from sft_trainer.curation.coherence import Coherence
from sft_trainer.curation.completeness import Completeness
from sft_trainer.curation.fluency import BIGRAM_BUCKETS, FluencyScores, fluency_calibration, packaged_model
from sft_trainer.formats import Conversation, Message
from sft_trainer.models.scorer import shuffled_words


@pytest.fixture(scope="module")
def held_out_lima(data_dir) -> list[Conversation]:
    return [c for c in noise.load_lima(data_dir) if not noise.calibration_half(c)]


@pytest.fixture(scope="module")
def scorer() -> FluencyScores:
    return FluencyScores()


def conversation(response: str) -> Conversation:
    return Conversation([Message("user", "Tell me about it."), Message("assistant", response)], 0, {})


def annotated(scorer: FluencyScores, convs: list[Conversation]) -> list[Conversation]:
    scorer.annotate(convs)
    return convs


def flagged(judge: Coherence | Completeness, convs: list[Conversation]) -> int:
    return sum(judge.check(c) is not None for c in convs)


def test_shipped_model_and_calibration_load() -> None:
    model = packaged_model()
    assert model.bigram.shape == (BIGRAM_BUCKETS,) and model.total > 1_000_000
    calibration = fluency_calibration()
    assert math.isfinite(calibration["coherence"]["min_fluency"])
    assert 0 < calibration["completeness"]["max_end_prob"] < 1
    assert Coherence(CoherenceStep()).min_fluency == calibration["coherence"]["min_fluency"]
    assert Completeness(CompletenessStep()).max_end_prob == calibration["completeness"]["max_end_prob"]


def test_held_out_recall_and_clean_flags_without_the_lm(held_out_lima, scorer) -> None:
    rng = random.Random(7)
    clean = annotated(scorer, [noise._with_response(c, noise._last_response(c)) for c in held_out_lima])
    salad = annotated(scorer, noise.plant("word_salad", rng.sample(held_out_lima, 150), rng))
    truncated = annotated(scorer, noise.plant("truncated", rng.sample(held_out_lima, 150), rng))
    coherence, completeness = Coherence(CoherenceStep()), Completeness(CompletenessStep())
    salad_recall = flagged(coherence, salad) / len(salad)
    truncated_recall = flagged(completeness, truncated) / len(truncated)
    clean_flagged = sum(coherence.check(c) is not None or completeness.check(c) is not None for c in clean)
    print(
        f"\nno LM: word_salad recall {salad_recall:.3f} ({len(salad)}), truncated recall {truncated_recall:.3f} "
        f"({len(truncated)}), clean flagged {clean_flagged}/{len(clean)}"
    )
    assert salad_recall >= 0.8
    # The goal. benchmarks/train_fluency.py on 200 held-out truncations: 0.860 (calibration half 0.880).
    assert truncated_recall >= 0.8
    # Budgets on calibration LIMA: 0.5% (coherence) + 0.4% (completeness, structure included); held out the two
    # flag 1.2% (train_fluency.py: 6/508, mostly structural cues, which no threshold sets).
    assert clean_flagged / len(clean) <= 0.015


def test_code_and_non_english_answers_are_kept(scorer) -> None:
    answers = [
        "```python\nimport numpy as np\n\ndef mean(values):\n    return np.mean(values)\n```\n"
        "This function returns the mean of the values you pass in.",
        "Der Rhein ist einer der längsten Flüsse Europas. Er entspringt in den Alpen und mündet in die Nordsee.",
        "El agua cubre la mayor parte de la superficie de la Tierra. Casi toda es agua salada de los océanos.",
        "水是生命之源。地球表面大约百分之七十被水覆盖，其中大部分是海水。",
        "SELECT name, COUNT(*) FROM users GROUP BY name HAVING COUNT(*) > 1;",
    ]
    convs = annotated(scorer, [conversation(a) for a in answers])
    coherence, completeness = Coherence(CoherenceStep()), Completeness(CompletenessStep())
    for conv in convs:
        assert coherence.check(conv) is None, conv.messages[-1].content
        assert completeness.check(conv) is None, conv.messages[-1].content


def test_odd_inputs_go_through_with_finite_or_no_scores(scorer) -> None:
    huge = "The river flows to the sea, and the sea feeds the clouds. " * 1700  # ~100k characters
    odd = ["", "   \n\n", "ok", "```\n```", "\x00\ufffd\u200b", "😀" * 50, huge, "word " * 20_000]
    convs = [conversation(text) for text in odd]
    started = time.perf_counter()
    scorer.annotate(convs)
    assert time.perf_counter() - started < 5
    for conv in convs:
        scores = conv.meta["scores"]
        assert set(scores) == {"fluency", "end_prob"}
        assert all(v is None or math.isfinite(v) for v in scores.values())
    assert convs[0].meta["scores"] == {"fluency": None, "end_prob": None}
    assert convs[6].meta["scores"]["fluency"] is not None


def test_fluency_drops_when_words_are_shuffled(scorer) -> None:
    text = (
        "The river flows from the mountains to the sea. Along the way it feeds farms and towns, "
        "and in spring it often floods the low fields near its banks."
    )
    shuffled = noise.shuffle_sentence(text, random.Random(0))
    fluent, salad = annotated(scorer, [conversation(text), conversation(shuffled)])
    assert fluent.meta["scores"]["fluency"] > salad.meta["scores"]["fluency"] + 1


def test_lm_scores_take_precedence_over_the_fallback() -> None:
    coherence = Coherence(CoherenceStep(max_perplexity=100, min_fluency=0.0))
    completeness = Completeness(CompletenessStep(max_eos_prob=0.001, max_end_prob=0.5))
    conv = conversation("The best known example of this style is the tower that stands in the middle of Paris")
    conv.meta["scores"] = {"cond_ppl": 20.0, "fluency": -5.0, "eos_prob": 0.2, "end_prob": 0.01}
    assert coherence.check(conv) is None and completeness.check(conv) is None
    conv.meta["scores"] = {"cond_ppl": None, "fluency": -5.0, "eos_prob": None, "end_prob": 0.01}
    assert coherence.check(conv) == "incoherent" and completeness.check(conv) == "truncated"


def test_the_order_test_shuffles_words_on_their_lines_the_same_way_every_time() -> None:
    text = "one two three four five\nsix seven eight\nnine"
    shuffled = shuffled_words(text)
    assert shuffled == shuffled_words(text) and shuffled != text
    assert [sorted(line.split()) for line in shuffled.split("\n")] == [
        sorted(line.split()) for line in text.split("\n")
    ]
    assert shuffled_words("我的家乡有着美丽的自然风景") is None  # no spaces: no word order to test
    assert shuffled_words("one\ntwo") is None


def test_above_the_perplexity_floor_the_word_order_decides() -> None:
    """A response the LM finds hard is incoherent only when shuffling its words barely raises its perplexity;
    where the order could not be tested (no `order_gain`), the n-gram fluency decides."""
    coherence = Coherence(CoherenceStep(max_perplexity=100, min_order_gain=2.0, min_fluency=0.0))
    conv = conversation("Roses bloom where winter slept, and the thaw runs quick beneath the old stone wall")
    verdicts = {}
    for gain, fluency in ((8.0, -5.0), (1.2, 5.0), (None, 5.0), (None, -5.0)):
        conv.meta["scores"] = {"cond_ppl": 300.0, "order_gain": gain, "fluency": fluency}
        verdicts[(gain, fluency)] = coherence.check(conv)
    assert verdicts == {(8.0, -5.0): None, (1.2, 5.0): "incoherent", (None, 5.0): None, (None, -5.0): "incoherent"}
    assert coherence.order_check_above == 100
    assert Coherence(CoherenceStep(), calibrated_scorer=False).order_check_above is None


def test_another_scorers_lm_scores_are_read_only_against_thresholds_set_for_it() -> None:
    """The shipped `max_cond_ppl` and `max_eos_prob` were calibrated on the packaged scorer at its default windows:
    with another model (`calibrated_scorer=False`) the judges fall back to the n-gram scores unless the config sets
    the LM thresholds for that model."""
    fluent_but_unlikely = Conversation(
        [Message("user", "Describe the view."), Message("assistant", "The hills roll gently down to a quiet harbour")],
        0,
        {"scores": {"cond_ppl": 5000.0, "order_gain": 1.1, "eos_prob": 1e-9, "fluency": 10.0, "end_prob": 0.9}},
    )
    assert Coherence(CoherenceStep()).check(fluent_but_unlikely) == "incoherent"
    assert Completeness(CompletenessStep()).check(fluent_but_unlikely) == "truncated"
    assert Coherence(CoherenceStep(), calibrated_scorer=False).check(fluent_but_unlikely) is None
    assert Completeness(CompletenessStep(), calibrated_scorer=False).check(fluent_but_unlikely) is None
    set_for_it = Coherence(CoherenceStep(max_perplexity=1000.0), calibrated_scorer=False)
    assert set_for_it.check(fluent_but_unlikely) == "incoherent"
    ending_set = Completeness(CompletenessStep(max_eos_prob=1e-6), calibrated_scorer=False)
    assert ending_set.check(fluent_but_unlikely) == "truncated"
