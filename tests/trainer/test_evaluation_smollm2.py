"""Evaluation on the real SmolLM2-135M-Instruct: generation, the suites end to end, bad input. Tiny sizes."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from sft_trainer.evaluation.decoding import greedy_tokens
from sft_trainer.evaluation.generation import PROMPT_TOO_LONG, EvalModel, load_eval_model
from sft_trainer.evaluation.ifeval import RESPONSES_FILE, run_ifeval
from sft_trainer.evaluation.reference import reference_from_path, run_reference
from sft_trainer.formats import Message
from sft_trainer.runconfig import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]
SMOLLM2_DIR = Path(os.environ.get("SFT_SMOLLM2_DIR", REPO_ROOT / ".cache" / "models" / "smollm2-135m-instruct"))

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (SMOLLM2_DIR / "config.json").is_file(), reason="SmolLM2 not converted (make model)"),
]


@pytest.fixture(scope="module")
def smol() -> Iterator[EvalModel]:
    # One thread: on a 2-core machine shared with other work, two threads wait on each other (6x slower).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield load_eval_model(SMOLLM2_DIR, batch_size=4)
    torch.set_num_threads(threads)


def test_batched_left_padded_generation_matches_one_at_a_time(smol: EvalModel) -> None:
    prompts = [
        [Message("user", "What is the capital of France?")],
        [Message("user", "Write one sentence about the sea, and mention a ship, a storm and the moon in it.")],
    ]
    batched = smol.generator.run(prompts, 12)
    alone = [smol.generator.run([p], 12).replies[0] for p in prompts]
    assert [r.text for r in batched.replies] == [r.text for r in alone]
    assert "Paris" in batched.replies[0].text
    # 12 tokens cannot finish the second answer: it is counted as hitting the cap, not hidden.
    assert batched.replies[1].hit_cap and batched.replies[1].new_tokens == 12
    assert batched.hit_cap >= 1


def test_our_greedy_loop_gives_the_tokens_transformers_generate_gives(smol: EvalModel) -> None:
    """The decoding loop that writes the KV cache in place and drops finished rows decodes what `generate` does: a
    batch of prompts of different lengths where one reply stops early (leaving the batch) and the others run on."""
    generator = smol.generator
    prompts = [
        [Message("user", "Answer with one word: what colour is the sky on a clear day?")],
        [Message("user", "Write a short poem about the sea.")],
        [Message("user", "List three uses of copper, one per line, and explain each in a sentence.")],
    ]
    chunk = [generator.prompt_ids(p) for p in prompts]
    input_ids, attention = generator.left_padded(chunk)
    stop = generator.stop_ids
    ours = greedy_tokens(generator.model, input_ids, attention, 24, stop)
    with torch.no_grad():
        generated = generator.model.generate(
            input_ids=input_ids,
            attention_mask=attention,
            max_new_tokens=24,
            do_sample=False,
            eos_token_id=stop,
            pad_token_id=generator.pad_id,
        )[:, input_ids.shape[1] :].tolist()
    theirs = [row[: next((k + 1 for k, t in enumerate(row) if t in stop), len(row))] for row in generated]
    assert ours == theirs
    lengths = sorted(len(row) for row in ours)
    assert lengths[0] < 24 and ours[0][-1] in stop  # the one-word answer stopped and left the batch
    assert lengths[-1] == 24  # the others ran to the cap after it left


def test_prompt_longer_than_the_context_is_a_counted_skip(smol: EvalModel) -> None:
    too_long = [Message("user", "word " * (smol.generator.context_length + 10))]
    run = smol.generator.run([too_long, [Message("user", "Hi")]], 2)
    assert run.replies[0] is None and run.skipped == {0: PROMPT_TOO_LONG}
    assert run.replies[1] is not None


def test_ifeval_writes_every_response_in_input_order(smol: EvalModel, shared_data: Path, tmp_path: Path) -> None:
    data = shared_data / "eval" / "ifeval_input_data.jsonl"
    result = run_ifeval(smol, data, tmp_path, limit=3, max_new_tokens=16)
    lines = [json.loads(line) for line in (tmp_path / RESPONSES_FILE).read_text(encoding="utf-8").splitlines()]
    every = [json.loads(line)["prompt"] for line in data.read_text(encoding="utf-8").splitlines()]
    expected = every[:: len(every) // 3][:3]  # a sample spread over the file, in file order
    assert [line["prompt"] for line in lines] == expected
    assert all(set(line) == {"prompt", "response"} and line["response"] for line in lines)
    assert [f.key for f in result.figures] == [
        "promptLevelStrict",
        "promptLevelLoose",
        "instructionLevelStrict",
        "instructionLevelLoose",
    ]
    assert result.counts["prompts"] == 3 and result.counts["hitTokenCap"] <= 3
    strict, loose = result.figures[2], result.figures[3]
    assert all(s <= lo for s, lo in zip(strict.numerators, loose.numerators, strict=True))  # loose never below strict


def test_reference_nll_counts_what_it_cannot_score(smol: EvalModel, shared_data: Path, tmp_path: Path) -> None:
    lima = json.loads((shared_data / "lima_llamafactory.json").read_text(encoding="utf-8"))
    records = [r for r in lima[600:] if len(r["output"]) < 600 and not r.get("history")][:3]
    records.append({"instruction": "Say hi", "output": ""})  # no answer to score
    path = tmp_path / "held_out.json"
    path.write_text(json.dumps(records), encoding="utf-8")
    result = reference_from_path(smol, path)
    figure = result.figures[0]
    assert len(figure.ids) == 3 and sum(result.skipped.values()) == 1
    mean_nll = sum(figure.numerators) / sum(figure.denominators or [])
    assert 0.5 < mean_nll < 5.0  # a chat model on good human answers: a few nats per token, not noise
    empty = run_reference(smol, [])
    assert empty.error and "held-out split is empty" in empty.error
    with pytest.raises(ConfigError, match="dataset"):
        reference_from_path(smol, tmp_path / "missing.json")


def test_adapter_that_does_not_fit_the_model_is_named(tiny_model_dir: Path, tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    tiny = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    adapter = tmp_path / "adapter"
    get_peft_model(tiny, LoraConfig(r=2, target_modules=["q_proj", "v_proj"])).save_pretrained(adapter)
    with pytest.raises(ConfigError, match=r"adapter: .*adapter does not fit the model"):
        load_eval_model(SMOLLM2_DIR, adapter)
    with pytest.raises(ConfigError, match=r"adapter: .*\(no adapter_config\.json\)"):
        load_eval_model(SMOLLM2_DIR, tmp_path)


def test_sftctl_eval_compares_base_and_adapter(shared_data: Path, tmp_path: Path) -> None:
    """A freshly initialised LoRA (B = 0) changes nothing: every delta is exactly zero."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from sftctl.cli import main

    adapter = tmp_path / "adapter"
    base = AutoModelForCausalLM.from_pretrained(SMOLLM2_DIR)
    get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"])).save_pretrained(adapter)
    out = tmp_path / "eval"
    held_out = tmp_path / "held_out.json"
    held_out.write_text(json.dumps([{"instruction": "Name a colour.", "input": "", "output": "Blue."}]))
    code = main(
        [
            "eval",
            "--model",
            str(SMOLLM2_DIR),
            "--adapter",
            str(adapter),
            "--suites",
            "ifeval,safety,reference,style,forgetting",
            "--reference-data",
            str(held_out),
            "--limit",
            "1",
            "--max-new-tokens",
            "8",
            "--safety-max-new-tokens",
            "8",
            "--ifeval-data",
            str(shared_data / "eval" / "ifeval_input_data.jsonl"),
            "--threads",
            "1",
            "--precision",
            "bf16",  # the fast path on a CPU with native bf16 (docs/evaluation.md, Speed)
            "--out",
            str(out),
        ]
    )
    assert code == 0
    report = json.loads((out / "eval_report.json").read_text(encoding="utf-8"))
    assert (out / "base" / RESPONSES_FILE).is_file() and (out / "tuned" / RESPONSES_FILE).is_file()
    assert (out / "eval_report.html").read_text(encoding="utf-8").startswith("<!doctype html>")
    deltas = [row["delta"]["value"] for suite in report["suites"].values() for row in suite["figures"]]
    assert len(deltas) == 11 and all(d == 0.0 for d in deltas)  # ifeval 4, safety 3, reference 1, style 2, forgetting 1
    assert report["gates"] == {"passed": True, "results": []} and report["regressions"] == []
    assert main(["eval", "--model", str(SMOLLM2_DIR), "--out", str(out), "--ifeval-data", "/nope.jsonl"]) == 42
