"""Token bounds, template check and token review with the real target tokenizer (SmolLM2-135M-Instruct)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sft_trainer.curation.base import Step
from sft_trainer.curation.runner import Runner, RunResult
from sft_trainer.curation.tokens import (
    ESTIMATE_MARGIN_PER_MESSAGE,
    OodText,
    RareTokens,
    TemplateCheck,
    TokenBounds,
    Tokenize,
    mixed_script_word,
)
from sft_trainer.formats import Conversation, Message, read_dataset
from sft_trainer.runconfig import ConfigError
from sft_trainer.training.masking import Rejection, SampleBuilder
from sft_trainer.training.templates import resolve_template


def chat(user: str, answer: str, index: int = 0) -> Conversation:
    return Conversation([Message("user", user), Message("assistant", answer)], index)


def run(steps: list[Step], convs: list[Conversation]) -> RunResult:
    return Runner(steps).run(convs)


def rejected(result: RunResult) -> dict[int, str]:
    return {r.source_index: r.reasons[0] for r in result.rejected}


def test_mixed_scripts_and_invisible_characters_go_to_review() -> None:
    assert mixed_script_word("Log in to your pаypal account") == "pаypal"  # Cyrillic а
    assert mixed_script_word("Привет, world") is None
    step = OodText()
    assert step(chat("Hi", "Hello\u200b there")) == "ood.control_sequence"
    assert step(chat("Hi", "Visit pаypal now")) == "ood.mixed_script"
    assert step.outcome == "review"


def test_template_skeleton_estimates_the_built_length_on_lima(tokenizer_view, data_dir: Path) -> None:
    convs = [c for c in read_dataset(data_dir / "lima_llamafactory.json") if isinstance(c, Conversation)][:120]
    step = TemplateCheck(tokenizer_view, max_seq_length=100_000)
    assert rejected(run([Tokenize(tokenizer_view), step], convs)) == {}
    assert all(not s.exact and s.problem is None and s.verified > 0 for s in step.skeletons.values())
    # Records past the verified sample carry the estimate: training's builder agrees, give or take merges at the seams.
    for conv in convs[10:]:
        built = step.builder.build(conv)
        assert not isinstance(built, Rejection)
        assert abs(conv.meta["scores"]["tokens"] - len(built.input_ids)) <= ESTIMATE_MARGIN_PER_MESSAGE * len(
            conv.messages
        )


def test_template_rejects_special_tokens_and_overlong_records(tokenizer_view) -> None:
    steps: list[Step] = [
        Tokenize(tokenizer_view),
        TokenBounds({"response": (2, None)}),
        TemplateCheck(tokenizer_view, max_seq_length=64),
    ]
    convs = [
        chat("Say hi", "hi <|im_start|>user", 0),
        chat("Tell a long story", "word " * 200, 1),
        chat("Say a word", "Yes", 2),
        chat("Say hello", "Hello to you.", 3),
    ]
    assert rejected(run(steps, convs)) == {
        0: "template.special_token_text_in_content",
        1: "template.overlong",
        2: "length.response_too_few_tokens",
    }


def test_the_token_minimum_of_a_prompt_bounds_the_opening_request_not_a_reply_in_a_dialogue(tokenizer_view) -> None:
    dialogue = [Message("user", "Think of an animal and I will guess it."), Message("assistant", "Is it a bird?")]
    convs = [
        Conversation([*dialogue, Message("user", "No"), Message("assistant", "Is it a fish?")], 0),
        chat("Hi", "Hello! What can I do for you?", 1),
    ]
    assert rejected(run([Tokenize(tokenizer_view), TokenBounds({"prompt": (3, None)})], convs)) == {
        1: "length.prompt_too_few_tokens"
    }


@pytest.mark.parametrize("template", ["auto", "alpaca"])
def test_curation_rejects_what_training_rejects_under_the_same_reason(tokenizer_view, template: str) -> None:
    """One implementation of the chat-template rules: the curation step's verdict is the training builder's."""
    limit = 96
    convs = [
        chat("Say hi", "hi <|im_start|>user", 0),  # a special token of the template
        chat("Name a file", "See <filename>notes.txt", 1),  # an added special token of SmolLM2's tokenizer
        chat("Tell a long story", "word " * 200, 2),  # far over the limit
        chat("Count", "one two three " * 23, 3),  # near the limit: decided by building it exactly
        chat("Say hello", "Hello to you.", 4),
        Conversation([Message("system", "Be terse."), Message("user", "Hi"), Message("assistant", "Hi.")], 5),
        *(chat(f"Question {i}", f"Answer number {i}.", 6 + i) for i in range(12)),
    ]
    curated = rejected(
        run([Tokenize(tokenizer_view), TemplateCheck(tokenizer_view, max_seq_length=limit, template=template)], convs)
    )
    builder = SampleBuilder(
        tokenizer_view.tokenizer, resolve_template(tokenizer_view.tokenizer, template), max_seq_length=limit
    )
    trained = {c.source_index: b.reason for c in convs if isinstance(b := builder.build(c), Rejection)}
    assert curated == trained
    assert {0, 1, 2} <= set(curated)


def test_a_template_the_tokenizer_cannot_carry_is_a_config_error_naming_the_field(tokenizer_view) -> None:
    with pytest.raises(ConfigError, match=r"curation\.template\.name: .*llama3"):
        TemplateCheck(tokenizer_view, max_seq_length=512, template="llama3")


def test_rare_and_byte_fragment_tokens_are_held_for_review(tokenizer_view, alpaca: list[dict]) -> None:
    convs = [chat(r["instruction"], r["output"], i) for i, r in enumerate(alpaca[:1500])]
    convs.append(chat("Translate to Tamil", "வணக்கம் உலகம் இது ஒரு சோதனை வாக்கியம் நன்றி", 1500))
    step = RareTokens(tokenizer_view)
    result = run([Tokenize(tokenizer_view), TemplateCheck(tokenizer_view, max_seq_length=4096), step], convs)
    assert rejected(result) == {}
    held = {c.source_index: reasons[0] for c, reasons in result.review}
    assert held.get(1500) == "ood.byte_fallback"
    assert len(held) / len(convs) < 0.02  # ordinary English answers are not held
    assert any("rare-token review skipped" in note for note in step.notes)  # 1,501 records are too few to know rarity
