"""The memorisation probe (forgetting and refusal are evaluation suites now: sft_trainer.evaluation).

* Memorisation: greedy-generate from K training prompts and K held-out
  prompts and compare with the reference responses (exact match of the
  reference's first `max_new_tokens` tokens, and longest-common-substring
  ratio). A model that reproduces training answers much better than held-out
  ones is memorising its set rather than learning the task.
"""

from __future__ import annotations

from difflib import SequenceMatcher
from typing import Any

from ..evaluation.generation import Generator
from ..formats import Conversation, Message

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
