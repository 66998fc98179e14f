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
from ..training.masking import IGNORE_INDEX, Sample
from .generation import EvalModel
from .suite import Figure, SuiteResult, skipped_suite

NON_FINITE = "non_finite_nll"


def load_reference(path: Path, limit: int | None = None) -> tuple[list[Conversation], Counter[str]]:
    """Conversations of a dataset file (ConfigError naming it when unreadable) and format rejects by reason."""
    from ..training.data import read_conversations

    conversations, rejects = read_conversations(str(path), "auto")
    counted = Counter(f"format.{r.reasons[0] if r.reasons else 'rejected'}" for r in rejects)
    return conversations[:limit] if limit is not None else conversations, counted


def token_nll(model: EvalModel, samples: Sequence[Sample], batch_size: int = 8) -> list[tuple[float, int]]:
    """(summed NLL in nats, trained tokens) per sample, in order."""
    import torch
    import torch.nn.functional as F

    generator = model.generator
    order = sorted(range(len(samples)), key=lambda i: len(samples[i].input_ids))
    out: list[tuple[float, int]] = [(0.0, 0)] * len(samples)
    was_training = generator.model.training
    generator.model.eval()
    try:
        for start in range(0, len(order), batch_size):
            batch = [samples[i] for i in order[start : start + batch_size]]
            width = max(len(s.input_ids) for s in batch)
            ids = torch.full((len(batch), width), generator.pad_id, dtype=torch.long)
            labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
            attention = torch.zeros((len(batch), width), dtype=torch.long)
            for row, s in enumerate(batch):
                ids[row, : len(s.input_ids)] = torch.tensor(s.input_ids)
                labels[row, : len(s.labels)] = torch.tensor(s.labels)
                attention[row, : len(s.input_ids)] = 1
            with torch.no_grad():
                logits = (
                    generator.model(
                        input_ids=ids.to(generator.device),
                        attention_mask=attention.to(generator.device),
                        use_cache=False,
                    )
                    .logits[:, :-1]
                    .float()
                )
            target = labels[:, 1:].to(logits.device)
            losses = F.cross_entropy(logits.transpose(1, 2), target, ignore_index=IGNORE_INDEX, reduction="none")
            counts = (target != IGNORE_INDEX).sum(dim=1)
            for row, position in enumerate(order[start : start + batch_size]):
                out[position] = (float(losses[row].sum()), int(counts[row]))
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
        if isinstance(built, Sample):
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
