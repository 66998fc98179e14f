"""Style: how much the model's own replies read as chatbot/assistant style, base vs tuned.

The prompts are held-out prompts (the run's held-out split, or the reference
data file of `sftctl eval`): the user's task, not a benchmark's. Each model
answers them greedily; the curation's style classifier
(`sft_trainer.curation.style.StyleClassifier`, boosted trees over GPT-ism
phrases, layout and rhythm) gives each reply the probability that it is
assistant style. Two figures: the mean probability, and the share of replies
above the classifier's calibrated threshold and at least its calibrated
length (what curation would reject as `style.assistant`). Lower means more human-like; a fine-tune on human-written
answers should lower it, one on chat-model answers raises it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from ..curation.text import last_user_turn
from ..formats import Conversation
from .generation import EvalModel
from .suite import Figure, SuiteResult, skipped_suite


def run_style(
    model: EvalModel, conversations: Sequence[Conversation], *, max_new_tokens: int = 256, examples: int = 2
) -> SuiteResult:
    """Generate a reply to each conversation's prompt (all turns but the last) and score its style."""
    from ..curation.style import StyleClassifier

    if not conversations:
        return skipped_suite("style", "no held-out prompts to answer (the held-out split is empty)")
    classifier = StyleClassifier()
    prompts = [list(c.messages[:-1]) for c in conversations]
    run = model.generator.run(prompts, max_new_tokens)
    result = SuiteResult("style", skipped=Counter())
    ids: list[str] = []
    asked: list[str] = []
    replies: list[str] = []
    kept: list[Conversation] = []
    for position, (conversation, reply) in enumerate(zip(conversations, run.replies, strict=True)):
        if reply is None:
            result.skipped[run.skipped[position]] += 1
            continue
        ids.append(str(conversation.source_index))
        asked.append(last_user_turn(conversation))
        replies.append(reply.text)
        kept.append(conversation)
    probabilities = [float(p) for p in classifier.probabilities(asked, replies)] if replies else []
    flagged = [float(classifier.judged(r, p)) for r, p in zip(replies, probabilities, strict=True)]
    result.figures = [
        Figure("assistantStyle", "Mean probability that a reply is in chatbot style", ids, probabilities,
               higher_is_better=False),
        Figure("assistantStyleFlagged",
               f"Replies judged chatbot style (probability > {classifier.threshold:.2f}, "
               f"{classifier.min_words} words or more)",
               ids, flagged, higher_is_better=False),
    ]  # fmt: skip
    result.counts = {
        "prompts": len(ids),
        "hitTokenCap": run.hit_cap,
        "maxNewTokens": max_new_tokens,
        "generationSeconds": round(run.seconds, 2),
    }
    for conversation, reply, probability in list(zip(kept, replies, probabilities, strict=True))[:examples]:
        result.examples.append(
            {
                "id": str(conversation.source_index),
                "prompt": conversation.messages[-2].content if len(conversation.messages) > 1 else "",
                "response": reply,
                "style": round(probability, 3),
            }
        )
    return result
