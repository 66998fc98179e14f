"""Relevance judges with the real MiniLM on the held-out half: planted off-topic and echoed answers are caught."""

from __future__ import annotations

import math
import random
import re
from pathlib import Path

import pytest

from sft_trainer.config.curation import RelevanceStep
from sft_trainer.curation import noise
from sft_trainer.curation.relevance import (
    EchoScores,
    Relevance,
    RelevanceScores,
    calibration,
    echo_score,
    skip_note,
)
from sft_trainer.formats import Conversation, Message
from sft_trainer.models.embedder import MINILM, Embedder, load_embedder
from sft_trainer.runconfig import ConfigError

SAMPLE = 20
MAX_RESPONSE_CHARS = 800
"""Short held-out answers keep MiniLM's CPU time small (they are scored like any other)."""
REWRITING = re.compile(r"\s*(rewrite|paraphrase|rephrase|correct|edit)\b", re.IGNORECASE)


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return load_embedder(MINILM, "cpu")


@pytest.fixture(scope="module")
def judged(data_dir: Path, embedder: Embedder) -> dict[str, list[str | None]]:
    """Verdicts of the default-configured judges on SAMPLE held-out LIMA records of each kind."""
    lima = [
        c
        for c in noise.load_lima(data_dir)
        if not noise.calibration_half(c) and len(c.messages[-1].content) <= MAX_RESPONSE_CHARS
    ]
    clean = random.Random(0).sample(lima, SAMPLE)
    kinds = {
        "clean": clean,
        "off_topic": noise.plant("off_topic", clean, random.Random(1)),
        "prompt_echo": noise.plant("prompt_echo", clean, random.Random(2)),
    }
    scores, echoes = RelevanceScores(RelevanceStep(), embedder), EchoScores()
    judge = Relevance(RelevanceStep(), embedder.name)
    verdicts = {}
    for kind, convs in kinds.items():
        scores(convs)
        echoes(convs)
        verdicts[kind] = [judge(c) for c in convs]
    return verdicts


def test_planted_off_topic_and_echo_are_caught(judged) -> None:
    off = judged["off_topic"].count("relevance.off_topic") / SAMPLE
    echo = judged["prompt_echo"].count("relevance.prompt_echo") / SAMPLE
    flagged = [v for v in judged["clean"] if v is not None]
    print(
        f"\nheld-out sample of {SAMPLE}: off_topic recall {off:.2f}, prompt_echo recall {echo:.2f}, clean flagged {flagged}"
    )
    # The goal is recall >= 0.8 on the whole held-out half; a sample of 20 scatters by about 0.08.
    assert off >= 0.7 and echo >= 0.7
    assert len(flagged) <= 1


def test_rewriting_tasks_are_not_echoes(alpaca) -> None:
    rewriting = [
        r
        for r in alpaca
        if REWRITING.match(r["instruction"]) and r["input"] and r["output"] and len(r["output"]) < 2000
    ]
    sample = random.Random(0).sample(rewriting, 300)
    convs = [
        Conversation([Message("user", r["instruction"] + "\n\n" + r["input"]), Message("assistant", r["output"])], i)
        for i, r in enumerate(sample)
    ]
    convs = [c for c in convs if not noise.calibration_half(c)]
    threshold = calibration()["echo_threshold"]
    echoes = [c for c in convs if (echo_score(c.messages[0].content, c.messages[1].content) or 0) >= threshold]
    print(f"\n{len(echoes)} of {len(convs)} held-out Alpaca rewriting tasks score as echoes")
    assert len(echoes) <= 0.02 * len(convs) + 1


def test_hostile_records_go_through_and_undefined_scores_keep_the_record(embedder) -> None:
    records = {
        "empty_response": ("What is 2 + 2?", ""),
        "empty_prompt": ("", "Four."),
        "chinese": ("把这句话翻译成英文：我喜欢猫。", "I like cats."),
        "code_only": ("```python\nprint(1)\n```", "```\n1\n```"),
        "huge": ("Summarise this. " + "lorem ipsum dolor sit amet " * 4000, "It is filler text."),
    }
    convs = [
        Conversation([Message("user", p), Message("assistant", r)], i) for i, (p, r) in enumerate(records.values())
    ]
    RelevanceScores(RelevanceStep(), embedder)(convs)
    EchoScores()(convs)
    judge = Relevance(RelevanceStep(), embedder.name)
    verdicts = dict(zip(records, [judge(c) for c in convs], strict=True))
    assert convs[0].meta["scores"]["relevance"] is None and convs[0].meta["scores"]["echo"] is None
    assert verdicts["empty_response"] is None and verdicts["empty_prompt"] is None
    for conv in convs:
        for value in conv.meta["scores"].values():
            assert value is None or math.isfinite(value)
    nan = Conversation([Message("user", "q"), Message("assistant", "a")], 9, {"scores": {"relevance": float("nan")}})
    assert judge(nan) is None  # a non-finite score is no evidence


def test_thresholds_come_from_the_calibration_or_the_config() -> None:
    table = calibration()
    judge = Relevance(RelevanceStep(), MINILM)
    assert judge.off_topic_threshold == table["off_topic_threshold"][MINILM]
    assert judge.echo_threshold == table["echo_threshold"]
    assert Relevance(RelevanceStep(off_topic_threshold=0.3), "my-model").off_topic_threshold == 0.3
    with pytest.raises(ConfigError, match=r"curation\.relevance\.offTopicThreshold"):
        Relevance(RelevanceStep(), "my-model")


def test_a_large_set_on_a_cpu_skips_the_model_and_still_judges_echoes() -> None:
    config = RelevanceStep(max_records_on_cpu=10)
    assert "maxRecordsOnCpu (10" in (skip_note(config, 11, "cpu") or "")
    assert skip_note(config, 10, "cpu") is None and skip_note(config, 11, "cuda") is None
    prompt = "Name three primary colours."
    convs = [
        Conversation([Message("user", prompt), Message("assistant", "You asked: " + prompt)], 0),
        Conversation([Message("user", prompt), Message("assistant", "Paris is the capital of France.")], 1),
    ]
    EchoScores()(convs)
    assert all("relevance" not in c.meta["scores"] for c in convs)
    judge = Relevance(config, MINILM)
    assert [judge(c) for c in convs] == ["relevance.prompt_echo", None]
