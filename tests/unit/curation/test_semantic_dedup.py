"""Semantic dedup with the real static embedder on held-out LIMA prompts: rewordings go, distinct requests stay."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from sft_trainer.config.curation import DedupStep, EmbedderStep
from sft_trainer.curation import noise
from sft_trainer.curation.embeddings import PROMPT, RESPONSE, Embeddings
from sft_trainer.curation.semantic_dedup import DEFAULT_THRESHOLDS, SemanticDedup, operands, split_request
from sft_trainer.formats import Conversation, Message
from sft_trainer.models.embedder import STATIC, Embedder, load_embedder
from sft_trainer.runconfig import ConfigError

CLEAN = 60
REWORDED = 20


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return load_embedder(STATIC)


def _record(prompt: str, response: str, index: int, quality: float = 0.0) -> Conversation:
    messages = [Message("user", prompt), Message("assistant", response)]
    return Conversation(messages, index, {"scores": {"quality": quality}})


@pytest.fixture(scope="module")
def held_out(data_dir: Path) -> list[Conversation]:
    lima = [c for c in noise.load_lima(data_dir) if not noise.calibration_half(c) and len(c.messages) == 2]
    return random.Random(0).sample(lima, CLEAN)


def _run(convs: list[Conversation], embedder: Embedder) -> tuple[SemanticDedup, dict[int, str]]:
    Embeddings(EmbedderStep(), embedder)(convs)
    step = SemanticDedup(DedupStep(), embedder)
    return step, step(convs)


def test_rewordings_are_removed_and_the_better_scored_copy_survives(held_out, embedder) -> None:
    originals = [_record(c.messages[0].content, c.messages[1].content, c.source_index) for c in held_out]
    rng = random.Random(1)
    copies = [
        _record(noise.reword(c.messages[0].content, rng), c.messages[1].content, 100_000 + i, quality=1.0)
        for i, c in enumerate(originals[:REWORDED])
    ]
    convs = originals + copies
    step, stopped = _run(convs, embedder)
    caught = [i for i in range(REWORDED) if stopped.get(i) == "dedup.semantic_duplicate"]
    print(f"\n{len(caught)}/{REWORDED} reworded prompts joined to their original; {len(stopped)} records stopped")
    assert len(caught) >= 0.7 * REWORDED  # measured recall on calibration LIMA is about 0.8 at the default
    for i in caught:  # the copy scored higher: it survives, the original points at it
        keeper = convs[CLEAN + i]
        assert CLEAN + i not in stopped
        assert convs[i].meta["duplicate_of"] == keeper.source_index
        assert convs[i].meta["dup_cluster"] == keeper.meta["dup_cluster"] == f"semantic-{keeper.source_index}"
    distinct_stopped = [i for i in range(REWORDED, CLEAN) if i in stopped]
    assert len(distinct_stopped) <= 1, [convs[i].messages[0].content[:80] for i in distinct_stopped]


def test_equal_scores_keep_the_earliest_record(embedder) -> None:
    convs = [
        _record("Give me three tips for staying healthy.", "Sleep, move, eat well.", 7),
        _record("Please give me three tips for staying healthy. Thanks!", "Eat well, sleep, walk.", 3),
    ]
    _, stopped = _run(convs, embedder)
    assert stopped == {0: "dedup.semantic_duplicate"} and convs[0].meta["duplicate_of"] == 3


def test_different_operands_are_different_requests(embedder) -> None:
    assert operands("Name three colours.") == operands("List 3 colours")
    assert split_request("Fix the grammar.\n\nHe go home.") == ("Fix the grammar.", "He go home.")
    assert split_request("Rearrange the words: do, why") == ("Rearrange the words", "do, why")
    convs = [
        _record("Calculate the area of a triangle with sides 8, 6 and 4 cm.", "About 11.6 cm².", 0),
        _record("Calculate the area of a triangle with sides 3, 4 and 5 cm.", "6 cm².", 1),
        _record('Generate a sentence that begins with "I remember when".', "I remember when...", 2),
        _record('Generate a sentence that begins with "She had a dream".', "She had a dream...", 3),
        _record("Suggest a title for this story.\n\nAlex had studied for weeks for his exam.", "The Exam", 4),
        _record("Rewrite this story humorously.\n\nAlex had studied for weeks for his exam.", "Alex, a hero...", 5),
        _record("Correct the grammar of this sentence.\n\nHe go to school.", "He goes to school.", 6),
        _record("Correct the grammar of this sentence.\n\nShe like cats.", "She likes cats.", 7),
    ]
    _, stopped = _run(convs, embedder)
    assert stopped == {}


def test_hostile_prompts_go_through(embedder) -> None:
    convs = [
        _record("", "An answer to nothing.", 0),
        _record("   ", "Another answer to nothing.", 1),
        _record("深海中尚存的一丝光明：生活在深海热泉喷口周围的外来管虫。", "Translation...", 2),
        _record("```python\nprint('hi')\n```", "It prints hi.", 3),
        _record("lorem ipsum dolor sit amet " * 4000, "Latin filler.", 4),
    ]
    step, stopped = _run(convs, embedder)
    assert np.linalg.norm(convs[0].features[PROMPT]) == 0 and RESPONSE in convs[0].features
    assert stopped == {}  # empty prompts have zero vectors: similar to nothing, not to each other


def test_missing_features_and_uncalibrated_models_are_clear_errors(embedder, tmp_path) -> None:
    step = SemanticDedup(DedupStep(), embedder)
    assert step.threshold == DEFAULT_THRESHOLDS[STATIC]
    with pytest.raises(ValueError, match="prompt_emb"):
        step([_record("a", "b", 0), _record("c", "d", 1)])
    assert step([]) == {} and step([_record("a", "b", 0)]) == {}
    other = load_embedder(str(_copy_of_static(tmp_path)))  # a model without a calibrated threshold
    with pytest.raises(ConfigError, match=r"curation\.dedup\.semanticThreshold"):
        SemanticDedup(DedupStep(), other)
    assert SemanticDedup(DedupStep(semantic_threshold=0.95), other).threshold == 0.95


def _copy_of_static(tmp_path: Path) -> Path:
    import shutil

    from sft_trainer.models.embedder import static_dir

    return Path(shutil.copytree(static_dir(), tmp_path / "my-own-model"))
