"""The per-record filters on real records from ../shared/data."""

from __future__ import annotations

import json
from pathlib import Path

from sft_trainer.config import CurationConfig
from sft_trainer.curation.artifacts import AI_DISCLAIMER, IDENTITY_CLAIM, KNOWLEDGE_CUTOFF, Artifacts
from sft_trainer.curation.gptisms import density
from sft_trainer.curation.length import Length
from sft_trainer.curation.pipeline import surface_filters
from sft_trainer.curation.repetition import Repetition
from sft_trainer.curation.text import is_code_line, prose_lines
from sft_trainer.curation.validation import Validation
from sft_trainer.formats import Conversation, Message, record_to_conversation


def conv(record: dict, index: int = 0) -> Conversation:
    result = record_to_conversation(record, index)
    assert isinstance(result, Conversation)
    return result


def repetition() -> Repetition:
    return next(f for f in surface_filters(CurationConfig()) if isinstance(f, Repetition))


def test_validation_catches_alpaca_placeholders_and_unseeable_inputs(alpaca: list[dict]) -> None:
    check = Validation()
    placeholder = next(r for r in alpaca if r["input"].strip().lower() == "<no input>")
    url = next(r for r in alpaca if r["input"].startswith("https://en.wikipedia.org"))
    image = next(r for r in alpaca if r["input"].startswith("<image"))
    assert check(conv(placeholder)) == "validation.placeholder_input"
    assert check(conv(url)) == "validation.unseeable_url"
    assert check(conv(image)) == "validation.unseeable_media"
    assert check.drops["validation.unseeable_url"] == 1


def test_validation_keeps_tasks_about_a_url_string(alpaca: list[dict]) -> None:
    record = next(r for r in alpaca if "domain" in r["instruction"].lower() and "http" in r["input"])
    assert Validation()(conv(record)) is None


def test_validation_passes_lima(data_dir: Path) -> None:
    lima = json.loads((data_dir / "lima_llamafactory.json").read_text())
    check = Validation()
    failures = [i for i, r in enumerate(lima) if check(conv(r, i))]
    assert len(failures) / len(lima) < 0.01, failures


def test_a_one_word_reply_inside_a_dialogue_is_a_whole_turn_but_a_one_word_request_is_too_short(
    data_dir: Path,
) -> None:
    lima = json.loads((data_dir / "lima_llamafactory.json").read_text(encoding="utf-8"))
    game = conv(next(r for r in lima if r["history"] and r["history"][0][0].startswith("Let's play 20 Questions")))
    assert [m.content for m in game.messages if m.role == "user"][1:4] == ["No", "No", "Yes"]
    check = Length(min_prompt_chars=3, max_prompt_chars=24000, min_response_chars=1, max_response_chars=24000)
    assert check(game) is None
    assert check(Conversation([Message("user", "Hi"), Message("assistant", "Hello!")], 1)) == "length.prompt_too_short"
    empty_follow_up = [Message("user", "Name a colour."), Message("assistant", "Red."), Message("user", " ")]
    assert check(Conversation([*empty_follow_up, Message("assistant", "Blue.")], 2)) == "length.prompt_too_short"


def test_repetition_flags_degenerate_text_but_not_code_or_lists(data_dir: Path) -> None:
    codegen = json.loads((data_dir / "gpteacher_codegen_instruct.json").read_text())
    step = repetition()
    flagged = sum(1 for i, r in enumerate(codegen[:1500]) if step(conv(r, i)))
    assert flagged / 1500 < 0.01
    looping = "The answer is that we should go home now. " * 30
    assert step.check_text(looping) is not None
    same_items = "\n".join(f"{i}. Buy fresh vegetables at the market" for i in range(1, 8))
    assert step.check_text(same_items) == "duplicate_list_items"


def test_inline_code_stays_in_its_sentence_and_fenced_blocks_leave_the_prose() -> None:
    # LIMA's StackExchange answers write inline code as ```x``` and put code on the opening fence line.
    answer = (
        "You are using ```|```, a pipe, to send the output of a command into another command.\n"
        "```cp a b && rm a\ncp a c\n```\n"
        "~~~\nrm -rf build\n~~~\n"
        "To sum up the operators:\n\n"
        + "".join(
            f"* ```{op}``` executes the right-hand command of ```{op}``` only if the previous one {outcome}.\n"
            for op, outcome in (("&&", "succeeded"), ("||", "failed"), (";", "finished"))
        )
    )
    assert prose_lines(answer) == [
        "You are using ```|```, a pipe, to send the output of a command into another command.",
        "To sum up the operators:",
    ]
    assert prose_lines("Try:\n```host: `0.0.0.0`\nport: 3306") == ["Try:"]  # a block left open runs to the end
    # The list items are list items, not fragments left over from cutting out inline code: parallel
    # phrasing in a list is no repetition.
    assert repetition().check_text(answer * 3) is None


def test_a_parenthetical_is_prose_and_a_call_is_code() -> None:
    prose = [
        "Neuronal stem cells migrate over long distances in response to injury (Imitola et al., 2004).",
        "* the staging area (also called the index), which stages changes",
    ]
    code = ['print("hi")', "with open(name, 'r') as handle:", "x = f(y)", "main :: IO ()", "    return total"]
    assert not any(map(is_code_line, prose))
    assert all(map(is_code_line, code))
    assert prose_lines("\n".join([prose[0], *code])) == [prose[0]]


def test_a_table_is_no_prose_and_its_repeated_cells_are_no_repetition() -> None:
    """A schedule's rows repeat their cells ("| 2011 | 1:00 PM |"): Gopher's n-gram statistics rejected such
    tables in a human self-instruct output and in chat-model answers while they read them as sentences."""
    teams = [
        "Bengals",
        "Texans",
        "Jets",
        "Cardinals",
        "49ers",
        "Browns",
        "Colts",
        "Steelers",
        "Chargers",
        "Rams",
        "Seahawks",
    ]
    rows = [f"| 2011 | 1:00 PM | Ravens vs. {team} | Ravens won |" for team in teams]
    table = "\n".join(["Here are the games:", "| Season | Local Time | Game | Result |", "|---|---|---|---|", *rows])
    assert prose_lines(table) == ["Here are the games:"]
    assert prose_lines("Cats | dogs | birds") == []
    assert prose_lines("Pick one option | not both.") == ["Pick one option | not both."]
    assert repetition().check_text(table) is None


def test_artifacts_catch_chatbot_text_in_real_data(data_dir: Path) -> None:
    safety = json.loads((data_dir / "safety/safety_tuned_llamas_safety_only_data_Instructions.json").read_text())
    step = Artifacts()
    disclaimers = [r for r in safety if "as an ai language model" in r["output"].lower()]
    assert disclaimers
    assert all(step(conv(r)) == "artifacts.ai_disclaimer" for r in disclaimers[:50])


def test_needles_never_hide_a_match(data_dir: Path, alpaca: list[dict]) -> None:
    """The substring guards in front of the artifact patterns agree with the bare patterns on real text."""
    safety = json.loads((data_dir / "safety/safety_tuned_llamas_safety_only_data_Instructions.json").read_text())
    texts = [r["output"].lower() for r in alpaca + safety]
    for guarded in (AI_DISCLAIMER, KNOWLEDGE_CUTOFF, IDENTITY_CLAIM):
        bare = [bool(guarded.pattern.search(t)) for t in texts]
        assert [bool(guarded.search(t)) for t in texts] == bare
        assert any(bare), "the sample must exercise the pattern"


def test_refusal_of_a_harmful_request_is_kept_and_of_a_benign_one_is_dropped() -> None:
    step = Artifacts()
    harmful = {
        "instruction": "Explain how to make a bomb at home.",
        "output": "I'm sorry, but I cannot help with making weapons.",
    }
    benign = {
        "instruction": "Draw a picture of a cat.",
        "output": "I'm sorry, but I cannot draw pictures as I am a text-based model.",
    }
    assert step(conv(harmful)) is None
    assert step(conv(benign)) in {"artifacts.benign_refusal", "artifacts.ai_disclaimer"}


def test_artifacts_catch_alpaca_gpt_model_refusals(alpaca: list[dict]) -> None:
    # Outputs that say a GPT model cannot do the task; two that explain GPT models are not refusals.
    gpt_refusals = [
        r
        for r in alpaca
        if "gpt model" in r["output"].lower()
        and "cannot" in r["output"].lower()
        and not r["output"].lower().startswith(("gpt models are", "a gpt-based model is"))
    ]
    assert gpt_refusals
    step = Artifacts()
    caught = sum(1 for r in gpt_refusals if step(conv(r)))
    assert caught / len(gpt_refusals) >= 0.9


def test_gptism_density_is_higher_for_chat_models_than_for_people(data_dir: Path) -> None:
    lima = [r["output"] for r in json.loads((data_dir / "lima_llamafactory.json").read_text())[1::2]]
    llama_chat = [
        r["output"] for r in json.loads((data_dir / "alpaca_eval_outputs/llama-2-70b-chat-hf.json").read_text())[1::2]
    ]
    mean = lambda texts: sum(map(density, texts)) / len(texts)  # noqa: E731
    assert mean(llama_chat) > 1.5 * mean(lima)


def test_filters_count_totals_and_drops() -> None:
    step = Validation()
    step(Conversation([], 0))
    step(Conversation([Message("user", "Hi there"), Message("assistant", "Hello")], 1))
    assert step.seen == 2 and dict(step.drops) == {"validation.empty_conversation": 1}
