"""Forgetting: perplexity of general reference text, base vs tuned.

The text (resources/reference_text.txt: encyclopedic paragraphs written for
this project, no instruction format) is scored as plain text, without the
chat template, one paragraph per sequence. The figure is the mean per-token
NLL over paragraphs (a ratio of sums, so long paragraphs weigh by their
tokens), with its interval over paragraphs; perplexity is e^NLL, and the
tuned/base perplexity ratio is e^(delta): a delta of +0.05 nats is 5% higher
perplexity. This was the training's forgetting probe; it is now a suite with
an interval and a gate (`maxForgettingIncrease`).
"""

from __future__ import annotations

import math
from importlib import resources

from .generation import EvalModel
from .suite import Figure, SuiteResult

KEY = "referenceTextNll"


def reference_paragraphs() -> list[str]:
    text = resources.files("sft_trainer.resources").joinpath("reference_text.txt").read_text(encoding="utf-8")
    return [p.strip() for p in text.split("\n\n") if p.strip()]


def paragraph_nll(model: EvalModel, paragraphs: list[str]) -> list[tuple[float, int]]:
    """(summed NLL in nats, predicted tokens) per paragraph, scored as plain text."""
    import torch
    import torch.nn.functional as F

    generator = model.generator
    tokenizer = generator.tokenizer
    was_training = generator.model.training
    generator.model.eval()
    out: list[tuple[float, int]] = []
    try:
        with torch.no_grad():
            for paragraph in paragraphs:
                ids = tokenizer(paragraph, add_special_tokens=False).input_ids
                if model.builder.model_wants_bos and tokenizer.bos_token_id is not None:
                    ids = [tokenizer.bos_token_id, *ids]
                tensor = torch.tensor([ids], device=generator.device)
                logits = generator.model(input_ids=tensor, use_cache=False).logits[0, :-1].float()
                out.append((float(F.cross_entropy(logits, tensor[0, 1:], reduction="sum")), len(ids) - 1))
    finally:
        generator.model.train(was_training)
    return out


def run_forgetting(model: EvalModel) -> SuiteResult:
    paragraphs = reference_paragraphs()
    scored = paragraph_nll(model, paragraphs)
    ids = [str(i) for i in range(len(paragraphs))]
    figure = Figure(
        KEY,
        "Reference text: mean per-token NLL (nats; perplexity = e^NLL)",
        ids,
        [total for total, _ in scored],
        [float(tokens) for _, tokens in scored],
        higher_is_better=False,
        unit="nats",
    )
    tokens = sum(t for _, t in scored)
    nll = sum(total for total, _ in scored) / max(tokens, 1)
    return SuiteResult(
        "forgetting",
        figures=[figure],
        counts={"paragraphs": len(paragraphs), "tokens": tokens, "perplexity": round(math.exp(nll), 3)},
    )
