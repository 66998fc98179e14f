"""Human-written and synthetic responses from ../shared/data, for calibration and evaluation.

Read in place from the shared data folder (never copied into the project):
SFT_SHARED_DATA, else ../shared/data beside the repository.
"""

from __future__ import annotations

import json

from sft_trainer.curation.noise import shared_data_dir

DATA = shared_data_dir()


def _json(name: str) -> list:
    return json.loads((DATA / name).read_text(encoding="utf-8"))


def _jsonl(name: str) -> list:
    return [json.loads(line) for line in (DATA / name).read_text(encoding="utf-8").splitlines() if line.strip()]


def oasst_human_texts(replies_only: bool = True) -> list[str]:
    """English OpenAssistant messages written by people (synthetic ones excluded): replies, or every message."""
    out: list[str] = []

    def walk(node: dict) -> None:
        human = not node.get("synthetic") and node.get("lang", "en") == "en"
        if human and (node.get("role") == "assistant" or not replies_only):
            out.append(node["text"])
        for child in node.get("replies", []):
            walk(child)

    for tree in _jsonl("oasst_en_100_tree.jsonl"):
        walk(tree["prompt"])
    return out


def human_responses() -> dict[str, list[str]]:
    return {
        "lima": [r["output"] for r in _json("lima_llamafactory.json")],
        "oasst": oasst_human_texts(),
        "self_instruct_seeds": [
            i["output"] for r in _jsonl("self_instruct_seed_tasks.jsonl") for i in r["instances"] if i["output"].strip()
        ],
        "self_instruct_user_oriented": [
            i["output"]
            for r in _jsonl("self_instruct_user_oriented_instructions.jsonl")
            for i in r["instances"]
            if i["output"].strip()
        ],
    }


def synthetic_responses() -> dict[str, list[str]]:
    corpora = {
        "alpaca_davinci003": [r["output"] for r in _json("alpaca_data.json")],
        "alpaca_gpt4": [r["output"] for r in _json("alpaca_gpt4_en_demo_llamafactory.json")],
    }
    for model in ("gpt4", "gpt-3.5-turbo-0301", "text_davinci_003", "claude-2", "llama-2-70b-chat-hf", "alpaca-7b"):
        corpora[f"alpaca_eval_{model}"] = [r["output"] for r in _json(f"alpaca_eval_outputs/{model}.json")]
    return corpora


def split(texts: list[str], half: int) -> list[str]:
    """Deterministic halves: half 0 calibrates, half 1 is held out."""
    return [t for i, t in enumerate(texts) if i % 2 == half]
