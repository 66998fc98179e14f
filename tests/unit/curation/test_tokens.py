"""Token bounds, template check and token review with the real target tokenizer (SmolLM2-135M-Instruct)."""

from __future__ import annotations

from pathlib import Path

from sft_trainer.curation.base import Step
from sft_trainer.curation.runner import Runner, RunResult
from sft_trainer.curation.tokens import (
    OodText,
    RareTokens,
    TemplateCheck,
    TokenBounds,
    Tokenize,
    mixed_script_word,
)
from sft_trainer.formats import Conversation, Message, read_dataset


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


def test_template_skeleton_matches_exact_rendering_on_lima(tokenizer_view, data_dir: Path) -> None:
    convs = [c for c in read_dataset(data_dir / "lima_llamafactory.json") if isinstance(c, Conversation)][:120]
    step = TemplateCheck(tokenizer_view, max_seq_length=100_000)
    assert rejected(run([Tokenize(tokenizer_view), step], convs)) == {}
    assert all(not s.exact and s.problem is None and s.verified > 0 for s in step.skeletons.values())
    # The skeleton's token count equals the exact rendering's, give or take merges at the seams.
    conv = convs[0]
    exact = len(
        tokenizer_view.encode([tokenizer_view.render([{"role": m.role, "content": m.content} for m in conv.messages])])[
            0
        ]
    )
    assert abs(conv.meta["scores"]["tokens"] - exact) <= 3


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
        0: "template.special_token_in_content",
        1: "template.exceeds_max_seq_length",
        2: "length.response_too_few_tokens",
    }


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
