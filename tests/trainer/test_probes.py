"""Probe building blocks, measured on real models and the shipped resources."""

from __future__ import annotations

import json
from importlib import resources

import pytest
import torch

from sft_trainer.evaluation.forgetting import paragraph_nll, reference_paragraphs
from sft_trainer.evaluation.generation import load_eval_model
from sft_trainer.evaluation.safety import safety_sets
from sft_trainer.formats import Conversation, Message
from sft_trainer.training.probes import longest_common_substring_ratio


def test_longest_common_substring_ratio() -> None:
    assert longest_common_substring_ratio("the cat sat on the mat", "the cat sat on the mat") == 1.0
    assert longest_common_substring_ratio("abc", "xyz") == 0.0
    assert longest_common_substring_ratio("say: the cat sat", "the cat sat on the mat") == pytest.approx(11 / 22)


def test_builtin_refusal_set_and_shipped_safety_prompts_are_disjoint() -> None:
    text = resources.files("sft_trainer.resources").joinpath("refusals.jsonl").read_text()
    trained = {json.loads(line)["messages"][0]["content"] for line in text.splitlines()}
    chosen = safety_sets(None)
    assert {name: len(rows) for name, rows in chosen.items()} == {
        "advbench_heldout": 100,
        "xstest_unsafe": 48,
        "xstest_safe": 50,
    }
    evaluated = {prompt for rows in chosen.values() for _, prompt in rows}
    assert not trained & evaluated  # never evaluate refusals on prompts we trained refusals for
    few = safety_sets(None, 5)["xstest_safe"]
    assert len(few) == 5 and len({source.split(":")[2] for source, _ in few}) == 5  # spread over types


def test_forgetting_nll_is_the_models_own_token_loss(tiny_model_dir) -> None:
    """The forgetting suite's per-paragraph NLL equals transformers' mean loss times the predicted tokens."""
    model = load_eval_model(tiny_model_dir)
    paragraphs = reference_paragraphs()[:2]
    scored = paragraph_nll(model, paragraphs)
    tokenizer = model.generator.tokenizer
    for paragraph, (total, count) in zip(paragraphs, scored, strict=True):
        ids = tokenizer(paragraph, add_special_tokens=False).input_ids
        if model.builder.model_wants_bos and tokenizer.bos_token_id is not None:
            ids = [tokenizer.bos_token_id, *ids]
        tensor = torch.tensor([ids])
        loss = float(model.model(input_ids=tensor, labels=tensor).loss)
        assert count == len(ids) - 1
        assert total == pytest.approx(loss * count, rel=1e-4)
    assert len(reference_paragraphs()) == 12


def test_memorisation_probe_separates_a_memorised_answer(tiny_model_dir, tiny_tokenizer) -> None:
    """Overfit one answer with full fine-tuning, then the probe must show it on that prompt only."""
    from transformers import AutoModelForCausalLM

    from sft_trainer.evaluation.generation import Generator
    from sft_trainer.training.collate import pad_batch
    from sft_trainer.training.loop import summed_loss
    from sft_trainer.training.masking import SampleBuilder
    from sft_trainer.training.probes import memorisation_probe
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
