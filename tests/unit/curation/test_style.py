"""The shipped style classifier: real weights, held-out data only (calibration_half False)."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest

from sft_trainer.config.curation import ScorerStep, StyleStep
from sft_trainer.curation import noise
from sft_trainer.curation.linear import sigmoid
from sft_trainer.curation.lm_scores import default_scorer
from sft_trainer.curation.style import (
    ECHO_FEATURES,
    MAX_SHIFT,
    ROUNDING_SLACK,
    STYLE_WEIGHTS,
    WORD_WEIGHTS,
    StyleClassifier,
    StyleJudge,
    StyleScore,
    WordModel,
    echo_features,
)
from sft_trainer.formats import Conversation, Message

SAMPLE = 200
AUC_TOLERANCE = 0.04
"""A 200 + 200 sample's AUC scatters around the whole held-out half's figure by a hundredth or two."""
RATE_TOLERANCE = 0.1
"""About three binomial standard deviations of a share measured on 200 records."""


@pytest.fixture(scope="module")
def whole_held_out(data_dir: Path) -> tuple[list[Conversation], list[Conversation]]:
    """(clean LIMA, planted assistant_style) records of the held-out half: all of them."""
    lima = [c for c in noise.load_lima(data_dir) if not noise.calibration_half(c)]
    planted = [
        c
        for c in noise.plant("assistant_style", lima * 4, random.Random(7), shared_dir=data_dir)
        if not noise.calibration_half(c)
    ]
    return lima, planted


@pytest.fixture(scope="module")
def held_out(whole_held_out) -> tuple[list[Conversation], list[Conversation]]:
    """SAMPLE of each of `whole_held_out`."""
    lima, planted = whole_held_out
    rng = random.Random(0)
    return rng.sample(lima, SAMPLE), rng.sample(planted, SAMPLE)


def _scores(convs: list[Conversation]) -> list[float]:
    """Every response's score, however short (the separation is reported over all lengths)."""
    StyleScore(StyleStep(min_words=0))(convs)
    return [c.meta["scores"]["style"] for c in convs]


@pytest.fixture(scope="module")
def scored(held_out) -> tuple[list[Conversation], list[Conversation]]:
    """The held-out sample with `scores["style"]` set by the real annotator."""
    for convs in held_out:
        _scores(convs)
    return held_out


def _auc(positives: list[float], negatives: list[float]) -> float:
    wins = sum((p > n) + 0.5 * (p == n) for p in positives for n in negatives)
    return wins / (len(positives) * len(negatives))


def test_shipped_weights_reproduce_the_held_out_separation(scored) -> None:
    human, chat = scored
    human_scores = [c.meta["scores"]["style"] for c in human]
    chat_scores = [c.meta["scores"]["style"] for c in chat]
    reported = float(StyleClassifier().model.meta["meta_noise_kit_auc"])
    auc = _auc(chat_scores, human_scores)
    print(f"held-out sample AUC {auc:.3f} (reported on the whole held-out half: {reported:.3f})")
    assert auc == pytest.approx(reported, abs=AUC_TOLERANCE)
    assert np.mean(chat_scores) > np.mean(human_scores)
    assert np.median(chat_scores) > np.quantile(human_scores, 0.9)


def _flagged(convs: list[Conversation]) -> float:
    judge = StyleJudge(StyleStep())
    return sum(judge(c) == "style.assistant" for c in convs) / len(convs)


def test_judge_reproduces_the_reported_recall_and_false_positives(scored) -> None:
    human, chat = scored
    reported = json.loads(StyleClassifier().model.meta["meta_report"])["noise_kit"]
    recall, false_positives = _flagged(chat), _flagged(human)
    print(f"sample: assistant_style recall {recall:.3f}, clean LIMA flagged {false_positives:.3f}; reported {reported}")
    assert recall == pytest.approx(reported["assistant_style_recall"], abs=RATE_TOLERANCE)
    assert false_positives <= reported["lima_flagged"] + 0.02


@pytest.mark.xfail(
    strict=True,
    reason="goal not reached yet: the shipped classifier's held-out recall is about 0.77 with 1.2% of LIMA flagged",
)
def test_goal_recall_at_one_percent_of_lima(whole_held_out) -> None:
    """On the whole held-out half: a 200-record sample moves by more than the gap to the goal."""
    human, chat = whole_held_out
    for convs in whole_held_out:
        _scores(convs)
    assert _flagged(chat) >= 0.8 and _flagged(human) <= 0.01


def test_numpy_trees_score_like_the_shipped_report(held_out) -> None:
    """Scores are probabilities, identical for identical texts, and each batch is scored independently of the others."""
    convs = held_out[1][:6]
    alone = [_scores([Conversation(list(c.messages), c.source_index)])[0] for c in convs]
    together = _scores([Conversation(list(c.messages), c.source_index) for c in convs])
    assert together == pytest.approx(alone, abs=1e-4)
    assert all(0.0 <= p <= 1.0 for p in together)


def test_a_score_that_is_not_a_number_makes_the_judge_abstain() -> None:
    conv = Conversation([Message("user", "Hi"), Message("assistant", "Hello there.")], 0)
    for score in (None, math.nan, math.inf):
        conv.meta["scores"] = {"style": score}
        assert StyleJudge(StyleStep())(conv) is None


def test_empty_and_odd_responses_are_scored() -> None:
    convs = [
        Conversation([Message("user", "Hi"), Message("assistant", text)], i)
        for i, text in enumerate(["", " ", "ok", "\u200b" * 5, "1.\n2.\n3.", "x" * 5000])
    ]
    StyleScore(StyleStep(min_words=0))(convs)
    assert all(0.0 <= c.meta["scores"]["style"] <= 1.0 for c in convs)


def test_missing_inputs_are_clear_errors(tmp_path: Path) -> None:
    conv = Conversation([Message("user", "Hi"), Message("assistant", "Hello.")], 5)
    with pytest.raises(KeyError, match="record 5 has no scores"):
        StyleJudge(StyleStep())(conv)
    with pytest.raises(FileNotFoundError, match="make classifiers"):
        StyleClassifier(tmp_path / "style.npz")
    with pytest.raises(FileNotFoundError, match="make classifiers"):
        StyleClassifier(words=tmp_path / "style_words.npz")
    with pytest.raises(ValueError, match="features per row"):
        StyleClassifier().model.raw_scores(np.zeros((1, 7)))


def test_threshold_and_length_from_config_override_the_shipped_ones() -> None:
    shipped = StyleClassifier()
    assert 0 < shipped.threshold < 1 and math.isfinite(shipped.threshold)
    assert shipped.min_words >= 0
    assert StyleJudge(StyleStep()).threshold == shipped.threshold
    assert StyleJudge(StyleStep()).min_words == shipped.min_words
    assert StyleJudge(StyleStep(threshold=0.99)).threshold == 0.99
    assert StyleJudge(StyleStep(min_words=7)).min_words == 7
    assert StyleJudge(StyleStep(threshold=0.5, min_words=0)).report() == {"threshold": 0.5, "minWords": 0}
    assert STYLE_WEIGHTS.stat().st_size < 400_000
    assert WORD_WEIGHTS.stat().st_size < 600_000


def test_word_model_reads_how_a_text_is_written() -> None:
    """The cased n-grams tell a chat opening and closing from the same content typed plainly."""
    words = WordModel()
    chat = "Sure! Here are some tips:\n\n1. **Plan ahead**: Make a list.\n\nI hope this helps!"
    typed = "i usually just make a list the night before, works for me"
    logits = words.logits([chat, typed])
    assert logits.shape == (2,) and np.isfinite(logits).all()
    assert logits[0] > logits[1]


def _scored_reply(prompt: str, reply: str, min_words: int) -> Conversation:
    conv = Conversation([Message("user", prompt), Message("assistant", reply)], 3)
    StyleScore(StyleStep(min_words=min_words))([conv])
    return conv


def test_a_reply_shorter_than_min_words_is_neither_scored_nor_judged() -> None:
    """The score is left empty below `min_words` and the judge decides only from `min_words` on."""
    reply = "Sure! Here are some tips:\n\n1. **Plan ahead**: Make a list.\n\nI hope this helps!"
    words = len(reply.split())
    short = _scored_reply("Give me tips for packing.", reply, min_words=words + 1)
    assert short.meta["scores"]["style"] is None
    assert StyleJudge(StyleStep(threshold=0.0, min_words=words + 1))(short) is None
    scored = _scored_reply("Give me tips for packing.", reply, min_words=words)
    assert 0.0 <= scored.meta["scores"]["style"] <= 1.0
    assert StyleJudge(StyleStep(threshold=0.0, min_words=words + 1))(scored) is None
    assert StyleJudge(StyleStep(threshold=0.0, min_words=words))(scored) == "style.assistant"
    shipped = StyleClassifier()
    assert not shipped.judged(reply, 1.0) or words >= shipped.min_words


def test_echo_features_read_how_a_reply_leans_on_its_prompt() -> None:
    """A reply that opens by restating the request and closes by summing it up echoes its prompt; a direct one does not."""
    prompt = "Write a program that counts the words in a text file."
    restating = (
        "Here's a program that counts the words in a text file:\n\nwc = len(open(path).read().split())\n\n"
        "This program counts the words in a text file by splitting it on whitespace."
    )
    direct = (
        "wc = len(open(path).read().split())\n\nSplitting on whitespace is enough unless you need punctuation rules."
    )
    echo = dict(zip(ECHO_FEATURES, echo_features(prompt, restating), strict=True))
    plain = dict(zip(ECHO_FEATURES, echo_features(prompt, direct), strict=True))
    for name in (
        "opening_prompt_bigram_share",
        "closing_prompt_bigram_share",
        "prompt_bigram_coverage",
        "echoing_sentence_share",
    ):
        assert echo[name] > plain[name], name
    assert all(math.isfinite(v) for v in echo_features("", "")), "empty prompt and reply still give finite features"


def test_the_scorers_perplexity_moves_the_score_only_when_the_step_reads_it() -> None:
    """A lower perplexity given the prompt (text the LM finds predictable) raises the style score; a missing,
    non-finite or impossible (< 1) perplexity leaves the score as it is without the LM."""
    blend = StyleClassifier().blend
    assert blend is not None and blend.weight > 0 and blend.scale > 0
    for unusable in (None, math.nan, math.inf, 0.5):
        assert blend.shift(unusable) == 0.0
    assert blend.shift(3.0) > blend.shift(30.0)
    reply = "Sure! Here are some tips:\n\n1. **Plan ahead**: Make a list.\n\nI hope this helps!"

    def score(perplexity: float | None, read: bool) -> float:
        conv = Conversation([Message("user", "Give me tips for packing."), Message("assistant", reply)], 3)
        conv.meta["scores"] = {} if perplexity is None else {"cond_ppl": perplexity}
        step = StyleScore(StyleStep(min_words=0), read_perplexity=read)
        step([conv])
        assert step.report() == {"readsScorerPerplexity": read}
        return conv.meta["scores"]["style"]

    plain = score(None, read=False)
    assert score(None, read=True) == plain == score(3.0, read=False)
    assert score(3.0, read=True) > score(30.0, read=True)
    assert score(math.nan, read=True) == plain


def test_only_the_packaged_scorer_at_its_default_windows_feeds_the_blend() -> None:
    """The blend was calibrated on that model's perplexities: another model or window is on another scale."""
    assert default_scorer(ScorerStep())
    assert default_scorer(ScorerStep(max_records_on_cpu=None, batch_size=8))
    assert not default_scorer(ScorerStep(model="/models/my-base"))
    assert not default_scorer(ScorerStep(max_response_tokens=128))
    assert not default_scorer(ScorerStep(max_prompt_tokens=32))


def test_the_perplexity_term_is_bounded_and_the_band_it_can_cross_is_known_before_the_lm_runs() -> None:
    """However low or high the perplexity, the term moves the logit by at most MAX_SHIFT (plus the offset); so a
    score without the LM has another verdict with it exactly where `could_change` says (the CPU scores those)."""
    classifier = StyleClassifier()
    blend, threshold = classifier.blend, classifier.threshold
    assert blend is not None
    lowest, highest = blend.shift(1e12), blend.shift(1.0)
    assert lowest == pytest.approx(blend.offset - MAX_SHIFT) and highest == pytest.approx(blend.offset + MAX_SHIFT)

    def flagged(probability: float, shift: float) -> bool:
        return float(sigmoid(np.array([np.log(probability / (1 - probability)) + shift]))[0]) > threshold

    probabilities = np.linspace(0.001, 0.999, 999)
    changeable = [flagged(p, lowest) != flagged(p, highest) for p in probabilities]
    assert [blend.could_change(float(p), threshold) for p in probabilities] == changeable
    assert 0 < sum(changeable) < len(probabilities)
    outside = [p for p, c in zip(probabilities, changeable, strict=True) if not c]
    assert all(flagged(p, 0.0) == flagged(p, lowest) for p in outside), "outside the band: the verdict without the LM"

    long_reply = " ".join(["Here is a plan."] * 60)
    conv = Conversation([Message("user", "Plan my week."), Message("assistant", long_reply)], 0)
    step = StyleScore()
    step([conv])
    score = conv.meta["scores"]["style"]
    assert step.borderline(conv) == blend.could_change(score, threshold, slack=ROUNDING_SLACK)
    conv.meta["scores"]["style"] = None
    assert not step.borderline(conv), "a reply too short to score is never judged for style, with or without the LM"
