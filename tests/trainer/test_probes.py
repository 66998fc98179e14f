"""Probe building blocks, measured on real models and the shipped resources."""

from __future__ import annotations

import json
import math
from importlib import resources

import pytest
import torch

from sft_trainer.formats import Conversation, Message
from sft_trainer.training.probes import (
    is_refusal,
    longest_common_substring_ratio,
    perplexity,
    reference_paragraphs,
    safety_prompts,
)


def test_refusal_detection() -> None:
    for reply in [
        "I'm sorry, but I can't help with that.",
        "I cannot provide instructions for this.",
        "As an AI language model, I won't do that.",
        "Sorry, I can\u2019t do that.",
        "I must decline. This could harm people.",
    ]:
        assert is_refusal(reply), reply
    for reply in [
        "To kill a Python process, run `kill -9 PID`.",
        "Paris is the capital of France.",
        "Sure! Here is a poem about the sea.",
    ]:
        assert not is_refusal(reply), reply


def test_longest_common_substring_ratio() -> None:
    assert longest_common_substring_ratio("the cat sat on the mat", "the cat sat on the mat") == 1.0
    assert longest_common_substring_ratio("abc", "xyz") == 0.0
    assert longest_common_substring_ratio("say: the cat sat", "the cat sat on the mat") == pytest.approx(11 / 22)


def test_builtin_refusal_set_and_safety_prompts_are_disjoint() -> None:
    text = resources.files("sft_trainer.resources").joinpath("refusals.jsonl").read_text()
    trained = {json.loads(line)["messages"][0]["content"] for line in text.splitlines()}
    chosen = safety_prompts(100)
    assert set(chosen) == {"advbench_heldout", "xstest_unsafe", "xstest_safe"}
    evaluated = {row["prompt"] for rows in chosen.values() for row in rows}
    assert not trained & evaluated  # never evaluate refusals on prompts we trained refusals for
    assert {row["expect"] for row in chosen["xstest_safe"]} == {"comply"}
    few = safety_prompts(5)["xstest_safe"]
    assert len(few) == 5 and len({row["source"].split(":")[2] for row in few}) == 5  # spread over types


def test_perplexity_is_exp_of_the_mean_token_loss(tiny_model_dir, tiny_tokenizer) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    paragraphs = reference_paragraphs()[:2]
    ppl = perplexity(model, tiny_tokenizer, paragraphs, torch.device("cpu"), prepend_bos=False)
    total, count = 0.0, 0
    for p in paragraphs:
        ids = torch.tensor([tiny_tokenizer(p, add_special_tokens=False).input_ids])
        out = model(input_ids=ids, labels=ids)
        n = ids.shape[1] - 1
        total += float(out.loss.detach()) * n
        count += n
    assert ppl == pytest.approx(math.exp(total / count), rel=1e-4)
    assert len(reference_paragraphs()) == 12


def test_memorisation_probe_separates_a_memorised_answer(tiny_model_dir, tiny_tokenizer) -> None:
    """Overfit one answer with full fine-tuning, then the probe must show it on that prompt only."""
    from transformers import AutoModelForCausalLM

    from sft_trainer.training.collate import pad_batch
    from sft_trainer.training.loop import summed_loss
    from sft_trainer.training.masking import SampleBuilder
    from sft_trainer.training.probes import Generator, memorisation_probe
    from sft_trainer.training.templates import resolve_template

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    template = resolve_template(tiny_tokenizer)
    builder = SampleBuilder(tiny_tokenizer, template)
    seen = Conversation([Message("user", "Recite the motto."), Message("assistant", "Measure twice, cut once.")], 0)
    unseen = Conversation([Message("user", "Name a river."), Message("assistant", "The Danube flows east.")], 1)
    batch = pad_batch([builder.build(seen)], tiny_tokenizer.pad_token_id)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(60):
        (summed_loss(model, batch) / batch.num_trained).backward()
        optimizer.step()
        optimizer.zero_grad()
    generator = Generator(
        model, tiny_tokenizer, template, torch.device("cpu"), builder.end_of_turn_id, False, tiny_tokenizer.pad_token_id
    )
    result = memorisation_probe(generator, [seen], [unseen], k=1, max_new_tokens=16)
    assert result["train"]["exactMatchRate"] == 1.0
    assert result["heldOut"]["exactMatchRate"] == 0.0
    assert result["lcsGap"] > 0.5
