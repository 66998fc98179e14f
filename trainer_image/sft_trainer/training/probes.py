"""Guards: memorisation, forgetting and refusal probes.

* Memorisation: greedy-generate from K training prompts and K held-out
  prompts and compare with the reference responses (exact match of the
  reference's first `max_new_tokens` tokens, and longest-common-substring
  ratio). A model that reproduces training answers much better than held-out
  ones is memorising its set rather than learning the task.
* Forgetting: perplexity on general reference text (resources/
  reference_text.txt) before and after training; the relative change says
  how much general language modelling the fine-tune cost.
* Refusals: refusal rate on harmful prompts (held-out AdvBench, XSTest
  unsafe) and over-refusal rate on benign look-alikes (XSTest safe), before
  and after. Refusal is detected by refusal phrases at the start of the
  reply, the usual string-matching judge (AdvBench/XSTest papers).
"""

from __future__ import annotations

import json
import math
from difflib import SequenceMatcher
from importlib import resources
from typing import TYPE_CHECKING, Any

from ..evaluation.generation import Generator
from ..evaluation.refusal import is_refusal
from ..formats import Conversation, Message

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

# ---------------------------------------------------------------------------
# Memorisation
# ---------------------------------------------------------------------------


def longest_common_substring_ratio(generated: str, reference: str) -> float:
    """Length of the longest common substring / length of the reference (0..1)."""
    if not reference:
        return 0.0
    match = SequenceMatcher(None, generated, reference, autojunk=False).find_longest_match(
        0, len(generated), 0, len(reference)
    )
    return match.size / len(reference)


def _prompt_and_reference(conversation: Conversation) -> tuple[list[Message], str]:
    return conversation.messages[:-1], conversation.messages[-1].content


def memorisation_probe(
    generator: Generator, train: list[Conversation], held_out: list[Conversation], k: int, max_new_tokens: int
) -> dict[str, Any]:
    """Verbatim overlap with the reference responses on K training and K held-out prompts."""
    result: dict[str, Any] = {"k": k, "maxNewTokens": max_new_tokens}
    for name, pool in (("train", train), ("heldOut", held_out)):
        chosen = pool[:k]
        if not chosen:
            result[name] = None
            continue
        prompts, references = zip(*(_prompt_and_reference(c) for c in chosen), strict=True)
        replies = generator.generate(list(prompts), max_new_tokens)
        exact, ratios = 0, []
        for reply, reference in zip(replies, references, strict=True):
            # Compare with what fits in the generation budget: the reference's first max_new_tokens tokens.
            ids = generator.tokenizer(reference, add_special_tokens=False).input_ids[:max_new_tokens]
            target = generator.tokenizer.decode(ids).strip()
            exact += int(reply.strip() == target)
            ratios.append(longest_common_substring_ratio(reply, target))
        result[name] = {
            "prompts": len(chosen),
            "exactMatchRate": exact / len(chosen),
            "lcsRatio": sum(ratios) / len(ratios),
            "examples": [
                {"prompt": p[-1].content[:200], "reply": r[:300]}
                for p, r in list(zip(prompts, replies, strict=True))[:3]
            ],
        }
    if result.get("train") and result.get("heldOut"):
        result["lcsGap"] = result["train"]["lcsRatio"] - result["heldOut"]["lcsRatio"]
        result["exactMatchGap"] = result["train"]["exactMatchRate"] - result["heldOut"]["exactMatchRate"]
    return result


# ---------------------------------------------------------------------------
# Forgetting
# ---------------------------------------------------------------------------


def reference_paragraphs() -> list[str]:
    text = resources.files("sft_trainer.resources").joinpath("reference_text.txt").read_text(encoding="utf-8")
    return [p.strip() for p in text.split("\n\n") if p.strip()]


def perplexity(
    model: Any, tokenizer: PreTrainedTokenizerBase, paragraphs: list[str], device: torch.device, prepend_bos: bool
) -> float:
    """Token-weighted perplexity of plain text (no chat template), one paragraph per sequence."""
    import torch
    import torch.nn.functional as F

    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for paragraph in paragraphs:
            ids = tokenizer(paragraph, add_special_tokens=False).input_ids
            if prepend_bos and tokenizer.bos_token_id is not None:
                ids = [tokenizer.bos_token_id, *ids]
            tensor = torch.tensor([ids], device=device)
            logits = model(input_ids=tensor, use_cache=False).logits[0, :-1].float()
            total += float(F.cross_entropy(logits, tensor[0, 1:], reduction="sum"))
            count += len(ids) - 1
    model.train(was_training)
    return math.exp(total / max(count, 1))


# ---------------------------------------------------------------------------
# Refusals
# ---------------------------------------------------------------------------


def safety_prompts(per_set: int) -> dict[str, list[dict[str, str]]]:
    """The built-in evaluation prompts (resources/safety_eval.jsonl), `per_set` from each set, spread over types."""
    text = resources.files("sft_trainer.resources").joinpath("safety_eval.jsonl").read_text(encoding="utf-8")
    by_set: dict[str, list[dict[str, str]]] = {}
    for line in text.splitlines():
        if line.strip():
            row = json.loads(line)
            by_set.setdefault(row["set"], []).append(row)
    chosen = {}
    for name, rows in by_set.items():
        step = max(1, len(rows) // per_set)  # spread over the file, which is grouped by type
        chosen[name] = rows[::step][:per_set]
    return chosen


def safety_probe(generator: Generator, per_set: int, max_new_tokens: int) -> dict[str, Any]:
    """Refusal rates per set; `harmfulRefusalRate` over the refuse sets, `overRefusalRate` on the comply set."""
    result: dict[str, Any] = {"sets": {}}
    refused_harmful = harmful = refused_benign = benign = 0
    for name, rows in safety_prompts(per_set).items():
        replies = generator.generate([[Message("user", row["prompt"])] for row in rows], max_new_tokens)
        refusals = [is_refusal(reply) for reply in replies]
        result["sets"][name] = {
            "prompts": len(rows),
            "refusalRate": sum(refusals) / len(rows),
            "examples": [
                {"prompt": r["prompt"][:200], "reply": reply[:200]}
                for r, reply in list(zip(rows, replies, strict=True))[:2]
            ],
        }
        if rows[0]["expect"] == "refuse":
            refused_harmful += sum(refusals)
            harmful += len(rows)
        else:
            refused_benign += sum(refusals)
            benign += len(rows)
    result["harmfulRefusalRate"] = refused_harmful / harmful if harmful else None
    result["overRefusalRate"] = refused_benign / benign if benign else None
    return result
