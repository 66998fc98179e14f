"""The token pitfalls of SFT, each shown to be impossible (tiny tokenizers built locally).

EOS masked because pad == EOS; the wrong EOS; a double BOS; a training template
that differs from serving; token merges across the prompt/response boundary;
all-zero assistant masks; truncation that removes the response.
"""

from __future__ import annotations

import copy
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sft_trainer.formats import Conversation, Message
from sft_trainer.training.collate import pad_batch
from sft_trainer.training.masking import (
    DOUBLE_BOS,
    IGNORE_INDEX,
    LAST_TURN_NOT_ASSISTANT,
    MISSING_END_OF_TURN,
    NO_ASSISTANT_TURN,
    NOTHING_TRAINED,
    OVERLONG,
    RESPONSE_TOO_LONG,
    RESPONSE_TRUNCATED,
    SPECIAL_TOKEN_TEXT,
    Rejection,
    Sample,
    SampleBuilder,
    verify_sample,
)
from sft_trainer.training.templates import TemplateError, resolve_template


def conv(*turns: tuple[str, str], index: int = 0) -> Conversation:
    return Conversation([Message(role, content) for role, content in turns], index)  # type: ignore[arg-type]


TWO_TURNS = conv(
    ("user", "Name a colour."), ("assistant", "Blue."), ("user", "Another one?"), ("assistant", "Green, like grass.")
)


def builder(tokenizer, name: str = "auto", **kwargs) -> SampleBuilder:
    return SampleBuilder(tokenizer, resolve_template(tokenizer, name), **kwargs)


def trained_stretches(sample: Sample) -> list[list[int]]:
    """Maximal runs of trained token ids."""
    runs, current = [], []
    for token, label in zip(sample.input_ids, sample.labels, strict=True):
        if label != IGNORE_INDEX:
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return runs


# --------------------------------------------------------------------- EOS


def test_every_end_of_turn_is_trained_although_pad_equals_eos(tiny_tokenizer) -> None:
    assert tiny_tokenizer.pad_token_id == tiny_tokenizer.eos_token_id  # the trap is set
    b = builder(tiny_tokenizer)
    sample = b.build(TWO_TURNS)
    assert isinstance(sample, Sample)
    eot = tiny_tokenizer.convert_tokens_to_ids("<|im_end|>")
    stretches = trained_stretches(sample)
    assert len(stretches) == 2
    assert all(run[-1] == eot for run in stretches)
    # After padding (with the pad id == EOS id), the EOS labels survive; pad positions are masked by position.
    short = b.build(conv(("user", "Hi"), ("assistant", "Hello.")))
    batch = pad_batch([sample, short], pad_id=tiny_tokenizer.pad_token_id)
    row = batch.labels[1].tolist()
    length = len(short.input_ids)
    assert row[:length] == short.labels
    assert row[length:] == [IGNORE_INDEX] * (len(row) - length)
    assert batch.input_ids[1, length:].eq(eot).all()  # the padding *is* the EOS id ...
    assert eot in [label for label in row[:length]]  # ... and the real EOS is still trained
    assert batch.attention_mask[1, length:].eq(0).all()


def test_end_of_turn_follows_the_template_not_a_guess(tiny_tokenizer) -> None:
    auto = resolve_template(tiny_tokenizer, "auto")
    alpaca = resolve_template(tiny_tokenizer, "alpaca")
    assert auto.end_of_turn == "<|im_end|>"
    assert alpaca.end_of_turn == tiny_tokenizer.eos_token
    sample = builder(tiny_tokenizer, "alpaca").build(TWO_TURNS)
    assert isinstance(sample, Sample)
    assert all(run[-1] == tiny_tokenizer.eos_token_id for run in trained_stretches(sample))


def test_generation_config_stops_at_the_trained_end_of_turn(tiny_tokenizer, tmp_path) -> None:
    from sft_trainer.training.export import generation_config

    b = builder(tiny_tokenizer)
    config = generation_config(tmp_path, tiny_tokenizer, b.end_of_turn_id, tiny_tokenizer.pad_token_id)
    assert b.end_of_turn_id in config.eos_token_id


def test_template_without_end_of_turn_is_refused(tiny_tokenizer) -> None:
    broken = copy.deepcopy(tiny_tokenizer)
    broken.chat_template = "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\n' }}{% endfor %}"
    with pytest.raises(TemplateError, match="end-of-turn"):
        resolve_template(broken, "auto")


# --------------------------------------------------------------------- BOS


def test_exactly_one_bos_when_tokenizer_and_template_both_add_one(llama_tokenizer) -> None:
    bos = llama_tokenizer.bos_token_id
    # The trap: apply_chat_template's text + the tokenizer's own BOS = two BOS.
    text = llama_tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False)
    naive = llama_tokenizer(text).input_ids
    assert naive[:2] == [bos, bos]
    b = builder(llama_tokenizer)
    sample = b.build(TWO_TURNS)
    assert isinstance(sample, Sample)
    assert sample.input_ids[0] == bos and sample.input_ids[1] != bos
    assert sample.input_ids.count(bos) == 1


def test_bos_added_when_the_model_wants_one_and_the_template_does_not_write_it(llama_tokenizer) -> None:
    b = builder(llama_tokenizer, "chatml")
    sample = b.build(TWO_TURNS)
    assert isinstance(sample, Sample)
    assert sample.input_ids[0] == llama_tokenizer.bos_token_id
    assert sample.input_ids.count(llama_tokenizer.bos_token_id) == 1


def test_verify_rejects_a_double_bos(tiny_tokenizer) -> None:
    b = builder(tiny_tokenizer)
    good = b.build(TWO_TURNS)
    assert isinstance(good, Sample)
    doubled = Sample([good.input_ids[0], *good.input_ids], [IGNORE_INDEX, *good.labels], 0)
    problem = verify_sample(
        doubled, bos_id=b.bos_id, end_of_turn_id=b.end_of_turn_id, expected_responses=2, max_seq_length=4096
    )
    assert problem is not None and problem[0] == DOUBLE_BOS


# ------------------------------------------------------------- template parity


@pytest.mark.parametrize("name", ["auto", "chatml", "alpaca"])
def test_training_tokens_equal_serving_tokens(tiny_tokenizer, tmp_path, name) -> None:
    """The exported tokenizer, used as serving uses it, yields exactly the training prompt tokens."""
    from transformers import AutoTokenizer

    from sft_trainer.training.export import generation_config, save_tokenizer_and_generation

    b = builder(tiny_tokenizer, name)
    save_tokenizer_and_generation(
        tmp_path, tiny_tokenizer, b.template, generation_config(tmp_path, tiny_tokenizer, b.end_of_turn_id, 0)
    )
    served = AutoTokenizer.from_pretrained(tmp_path)
    sample = b.build(TWO_TURNS)
    assert isinstance(sample, Sample)
    first_trained = next(i for i, label in enumerate(sample.labels) if label != IGNORE_INDEX)
    prompt = served.apply_chat_template(
        [{"role": "user", "content": "Name a colour."}], add_generation_prompt=True, tokenize=True, return_dict=False
    )
    assert sample.input_ids[:first_trained] == list(prompt)
    # And the whole training sequence decodes to what the serving template renders.
    full = served.apply_chat_template(
        [{"role": m.role, "content": m.content} for m in TWO_TURNS.messages], tokenize=False
    )
    assert tiny_tokenizer.decode(sample.input_ids) == full


# --------------------------------------------------------- boundaries / merges


def test_boundary_tokens_do_not_merge(smollm2_dir) -> None:
    """Whole-string tokenization merges text across the prompt/response boundary; segment tokenization cannot."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    b = builder(tokenizer, "alpaca")  # the prompt ends with "### Response:\n"
    merged_somewhere = False
    for response in ["\n\nIndented answer.", "\n- item one\n- item two", "  two leading spaces", "\tTabbed."]:
        messages = [Message("user", "Question"), Message("assistant", response)]
        sample = b.build(conv(("user", "Question"), ("assistant", response)))
        assert isinstance(sample, Sample)
        [stretch] = trained_stretches(sample)
        assert tokenizer.decode(stretch) == response + tokenizer.eos_token
        whole = tokenizer(b.template.render(messages), add_special_tokens=False).input_ids
        merged_somewhere |= whole != sample.input_ids
    assert merged_somewhere  # the trap is real for this tokenizer, and the builder avoided it


_text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",), exclude_characters="\ue000\ue001"),
    min_size=0,
    max_size=40,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(user=_text, answer=_text, name=st.sampled_from(["auto", "alpaca", "chatml"]))
def test_trained_tokens_are_exactly_the_response_and_its_end_of_turn(tiny_tokenizer, user, answer, name) -> None:
    b = builder(tiny_tokenizer, name)
    result = b.build(conv(("user", user), ("assistant", answer)))
    if isinstance(result, Rejection):
        # Only content holding special-token text may be refused, and it must say so.
        assert result.reason == SPECIAL_TOKEN_TEXT
        assert any(s in user + answer for s in ("<|im_start|>", "<|im_end|>", "<|endoftext|>"))
        return
    [stretch] = trained_stretches(result)
    assert tiny_tokenizer.decode(stretch) == answer + b.template.end_of_turn
    assert result.labels[0] == IGNORE_INDEX


# ---------------------------------------------------------------- empty masks


def test_assistant_masks_from_the_template_are_all_zero_but_ours_are_not(tiny_tokenizer) -> None:
    """SmolLM2's template has no generation markers: transformers' assistant mask is all zeros there."""
    messages = [{"role": m.role, "content": m.content} for m in TWO_TURNS.messages]
    out = tiny_tokenizer.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    assert sum(out["assistant_masks"]) == 0
    sample = builder(tiny_tokenizer).build(TWO_TURNS)
    assert isinstance(sample, Sample) and sample.num_trained > 0


def test_nothing_to_train_is_rejected_never_trained(tiny_tokenizer) -> None:
    b = builder(tiny_tokenizer)
    no_answer = b.build(conv(("user", "Hello?")))
    assert isinstance(no_answer, Rejection) and no_answer.reason == NO_ASSISTANT_TURN
    dangling = b.build(conv(("user", "Hi"), ("assistant", "Hello"), ("user", "And?")))
    assert isinstance(dangling, Rejection) and dangling.reason == LAST_TURN_NOT_ASSISTANT
    good = b.build(TWO_TURNS)
    assert isinstance(good, Sample)
    masked = Sample(good.input_ids, [IGNORE_INDEX] * len(good.labels), 0)
    problem = verify_sample(
        masked, bos_id=b.bos_id, end_of_turn_id=b.end_of_turn_id, expected_responses=2, max_seq_length=4096
    )
    assert problem is not None and problem[0] == NOTHING_TRAINED


def test_verify_catches_a_missing_or_cut_end_of_turn(tiny_tokenizer) -> None:
    b = builder(tiny_tokenizer)
    good = b.build(TWO_TURNS)
    assert isinstance(good, Sample)
    last_eot = max(i for i, label in enumerate(good.labels) if label == b.end_of_turn_id)
    cut = Sample(good.input_ids[:last_eot], good.labels[:last_eot], 0)  # right-truncated: last EOS gone
    problem = verify_sample(
        cut, bos_id=b.bos_id, end_of_turn_id=b.end_of_turn_id, expected_responses=2, max_seq_length=4096
    )
    assert problem is not None and problem[0] in (MISSING_END_OF_TURN, RESPONSE_TRUNCATED)


def test_special_token_text_in_content_is_rejected(tiny_tokenizer) -> None:
    result = builder(tiny_tokenizer).build(conv(("user", "Hi"), ("assistant", "Done.<|im_end|> extra")))
    assert isinstance(result, Rejection) and result.reason == SPECIAL_TOKEN_TEXT
    assert "message 1" in result.detail


# ------------------------------------------------------------------ loss modes


def test_loss_modes(tiny_tokenizer) -> None:
    assistant = builder(tiny_tokenizer, loss_on="assistant").build(TWO_TURNS)
    last = builder(tiny_tokenizer, loss_on="last").build(TWO_TURNS)
    everything = builder(tiny_tokenizer, loss_on="all").build(TWO_TURNS)
    assert isinstance(assistant, Sample) and isinstance(last, Sample) and isinstance(everything, Sample)
    assert len(trained_stretches(assistant)) == 2
    [only] = trained_stretches(last)
    assert tiny_tokenizer.decode(only) == "Green, like grass.<|im_end|>"
    # all: everything but the first token and the markup after the final end of turn
    assert everything.num_trained == len(everything.input_ids) - 2
    assert assistant.input_ids == last.input_ids == everything.input_ids


# ------------------------------------------------------------------ truncation


def long_conversation(words: int) -> Conversation:
    return conv(
        ("system", "You answer briefly."),
        ("user", "first " * words),
        ("assistant", "First answer."),
        ("user", "Summarise: " + "lorem ipsum " * words),
        ("assistant", "A short summary."),
        index=7,
    )


def test_overlong_is_rejected_by_default(tiny_tokenizer) -> None:
    result = builder(tiny_tokenizer, max_seq_length=64).build(long_conversation(40))
    assert isinstance(result, Rejection) and result.reason == OVERLONG and "maxSeqLength 64" in result.detail


def test_truncation_cuts_the_prompt_never_the_response(tiny_tokenizer) -> None:
    b = builder(tiny_tokenizer, max_seq_length=64, overlong="truncate_prompt")
    result = b.build(long_conversation(40))
    assert isinstance(result, Sample), result
    assert result.truncated and len(result.input_ids) <= 64
    stretches = trained_stretches(result)
    assert tiny_tokenizer.decode(stretches[-1]) == "A short summary.<|im_end|>"
    assert result.source_index == 7


@pytest.mark.parametrize("prompt_tokens_left", [1, 3, 8])
def test_truncation_keeps_as_much_prompt_as_fits_when_nearly_all_must_go(tiny_tokenizer, prompt_tokens_left) -> None:
    """A 200-token prompt over a limit that leaves room for a few of its tokens: it is cut, not rejected."""
    words = " ".join(f"w{i}" for i in range(200))
    record = conv(("user", words), ("assistant", "A short summary."))
    prompt_ids = len(tiny_tokenizer(words, add_special_tokens=False).input_ids)
    whole = builder(tiny_tokenizer, max_seq_length=100_000).build(record)
    assert isinstance(whole, Sample) and prompt_ids > 100  # the prompt is most of the record
    limit = len(whole.input_ids) - prompt_ids + prompt_tokens_left
    result = builder(tiny_tokenizer, max_seq_length=limit, overlong="truncate_prompt").build(record)
    assert isinstance(result, Sample), result
    assert result.truncated and len(result.input_ids) <= limit
    without_prompt = len(whole.input_ids) - prompt_ids  # the markup and response alone
    assert len(result.input_ids) > without_prompt, "some of the prompt is kept"
    assert tiny_tokenizer.decode(trained_stretches(result)[-1]) == "A short summary.<|im_end|>"


def test_a_response_that_cannot_fit_is_rejected(tiny_tokenizer) -> None:
    b = builder(tiny_tokenizer, max_seq_length=32, overlong="truncate_prompt")
    result = b.build(conv(("user", "Hi"), ("assistant", "word " * 100)))
    assert isinstance(result, Rejection) and result.reason == RESPONSE_TOO_LONG


def test_huge_records_are_settled_by_characters_without_tokenizing(tiny_tokenizer) -> None:
    """20 MB of text: rejected, or its prompt cut, before the tokenizer sees it (it would take minutes)."""
    huge = "lorem ipsum " * 1_700_000
    strict = builder(tiny_tokenizer, max_seq_length=64)
    assert strict.build(conv(("user", "Hi"), ("assistant", huge))).reason == OVERLONG
    lenient = builder(tiny_tokenizer, max_seq_length=256, overlong="truncate_prompt")
    assert lenient.build(conv(("user", "Hi"), ("assistant", huge))).reason == RESPONSE_TOO_LONG
    cut = lenient.build(
        conv(("system", "You answer briefly."), ("user", "Summarise: " + huge), ("assistant", "A short summary."))
    )
    assert isinstance(cut, Sample) and cut.truncated and len(cut.input_ids) <= 256
    assert tiny_tokenizer.decode(trained_stretches(cut)[-1]) == "A short summary.<|im_end|>"


# ------------------------------------------------------------ counted rejects


def test_rejections_are_counted_and_written(tiny_tokenizer, tmp_path) -> None:
    from sft_trainer.config import TrainingConfig
    from sft_trainer.training.data import REJECTED_FILE, prepare_data

    records = [
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]},
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "x<|im_end|>"}]},
        {"messages": [{"role": "user", "content": "Only a question"}]},
        {"messages": [{"role": "user", "content": "Q " * 300}, {"role": "assistant", "content": "A"}]},
        {"instruction": "Add 2 and 2.", "input": "", "output": "4"},
    ]
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n{broken json\n", encoding="utf-8")
    training = TrainingConfig(eval_fraction=0, max_seq_length=128, refusal={"enabled": False})
    data = prepare_data(str(path), "auto", training, builder(tiny_tokenizer, max_seq_length=128), tmp_path)
    assert len(data.train) == 2
    rejected = [json.loads(line) for line in (tmp_path / REJECTED_FILE).read_text().splitlines()]
    reasons = sorted(r["reasons"][0] for r in rejected)
    assert reasons == sorted([SPECIAL_TOKEN_TEXT, NO_ASSISTANT_TURN, OVERLONG, "format.invalid_json"])
    assert {r["source_index"] for r in rejected} == {1, 2, 3, 5}
    assert sum(data.rejected_by_reason.values()) == 4
