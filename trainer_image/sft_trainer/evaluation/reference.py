"""Reference: mean per-token negative log-likelihood of human-written answers the model never trained on.

Each record is rendered with the chat template exactly as training renders it
(`SampleBuilder`, loss on the last assistant turn): the NLL is taken over the
answer's tokens and its end-of-turn token, given the prompt. Lower is better;
base vs tuned says whether fine-tuning made good human answers more or less
likely. The default records are the SFTJob's held-out split; any dataset file
the trainer reads works too (`read_conversations`).

Records the builder rejects (no assistant turn, longer than the context, ...)
and records whose NLL is not finite are counted under their reason, never
scored.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from ..formats import Conversation
from ..training.masking import Sample
from .generation import EvalModel
from .suite import Figure, SuiteResult, skipped_suite

NON_FINITE = "non_finite_nll"
EMPTY_ANSWER = "empty_answer"


def load_reference(path: Path, limit: int | None = None) -> tuple[list[Conversation], Counter[str]]:
    """Conversations of a dataset file (ConfigError naming it when unreadable) and format rejects by reason."""
    from ..training.data import read_conversations

    conversations, rejects = read_conversations(str(path), "auto")
    counted = Counter(f"format.{r.reasons[0] if r.reasons else 'rejected'}" for r in rejects)
    return conversations[:limit] if limit is not None else conversations, counted


def token_nll(model: EvalModel, samples: Sequence[Sample], tokens_per_batch: int = 4096) -> list[tuple[float, int]]:
    """(summed NLL in nats, scored tokens) per sample, in order.

    The training loop's `token_losses` (output head only at scored positions);
    samples sorted by length and batched up to `tokens_per_batch` padded tokens.
    """
    import torch

    from ..training.collate import pad_batch
    from ..training.loop import token_losses

    generator = model.generator
    order = sorted(range(len(samples)), key=lambda i: len(samples[i].input_ids))
    out: list[tuple[float, int]] = [(0.0, 0)] * len(samples)
    was_training = generator.model.training
    generator.model.eval()
    try:
        start = 0
        while start < len(order):
            stop = start + 1
            while stop < len(order) and (stop - start + 1) * len(samples[order[stop]].input_ids) <= tokens_per_batch:
                stop += 1
            batch = [samples[i] for i in order[start:stop]]
            with torch.no_grad():
                losses, mask = token_losses(generator.model, pad_batch(batch, generator.pad_id).to(generator.device))
            for row, position in enumerate(order[start:stop]):
                out[position] = (float(losses[row].sum()), int(mask[row].sum()))
            start = stop
    finally:
        generator.model.train(was_training)
    return out


def run_reference(
    model: EvalModel, conversations: Sequence[Conversation], *, skipped: Counter[str] | None = None, examples: int = 2
) -> SuiteResult:
    """Mean per-token NLL over `conversations` (a ratio of sums: long answers weigh by their tokens)."""
    if not conversations:
        return skipped_suite("reference", "no held-out records to score (the held-out split is empty)")
    result = SuiteResult("reference", skipped=Counter(skipped or {}))
    samples: list[Sample] = []
    kept: list[Conversation] = []
    for conversation, built in zip(conversations, model.builder.build_many(conversations), strict=True):
        if isinstance(built, Sample) and not conversation.messages[-1].content.strip():
            result.skipped[EMPTY_ANSWER] += 1
        elif isinstance(built, Sample):
            samples.append(built)
            kept.append(conversation)
        else:
            result.skipped[built.reason] += 1
    ids, nll, tokens = [], [], []
    for conversation, (total, count) in zip(kept, token_nll(model, samples), strict=True):
        if count == 0 or not math.isfinite(total):
            result.skipped[NON_FINITE] += 1
            continue
        ids.append(str(conversation.source_index))
        nll.append(total)
        tokens.append(float(count))
    result.figures = [
        Figure(
            "referenceNll",
            "Mean per-token NLL of held-out human answers (nats)",
            ids,
            nll,
            tokens,
            higher_is_better=False,
            unit="nats",
        )
    ]
    result.counts = {"records": len(ids), "tokens": int(sum(tokens))}
    for conversation in kept[:examples]:
        result.examples.append(
            {
                "id": str(conversation.source_index),
                "prompt": conversation.messages[-2].content if len(conversation.messages) > 1 else "",
                "response": conversation.messages[-1].content,
            }
        )
    return result


def reference_from_path(model: EvalModel, path: Path, limit: int | None = None) -> SuiteResult:
    conversations, rejects = load_reference(path, limit)
    return run_reference(model, conversations, skipped=rejects)
