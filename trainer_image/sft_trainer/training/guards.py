"""Running the memorisation probe of probes.py after training.

Forgetting (reference-text perplexity) and safety (refusal, over-refusal)
are suites of the evaluation that runs on the export (`sft_trainer.evaluation`),
with intervals and gates; they are not probes any more.
"""

from __future__ import annotations

import logging
from typing import Any

from ..evaluation.generation import Generator
from .probes import memorisation_probe
from .session import Session

log = logging.getLogger("sft_trainer.training")


def generator_for(session: Session, model: Any) -> Generator:
    return Generator(
        model=model,
        tokenizer=session.tokenizer,
        template=session.template,
        device=session.device,
        end_of_turn_id=session.builder.end_of_turn_id,
        prepend_bos=session.builder.model_wants_bos and not session.builder.template_writes_bos,
        pad_id=session.pad_id,
    )


def probes_after(session: Session, model: Any) -> dict[str, Any]:
    """Memorisation after training: verbatim recall of training vs held-out answers."""
    probes = session.training.probes
    results: dict[str, Any] = {}
    if probes.memorisation_prompts > 0:
        session.reporter.phase("probing-after")
        results["memorisation"] = memorisation_probe(
            generator_for(session, model),
            session.data.train_conversations,
            session.data.eval_conversations,
            probes.memorisation_prompts,
            probes.max_new_tokens,
        )
    return results


def flat_metrics(probe_results: dict[str, Any]) -> dict[str, float]:
    """The probe figures as the flat {name: float} map of the SFTJob status."""
    metrics: dict[str, float] = {}
    memo = probe_results.get("memorisation") or {}
    for split in ("train", "heldOut"):
        part = memo.get(split)
        if part:
            prefix = "memorisation" + split[0].upper() + split[1:]
            metrics[f"{prefix}ExactMatch"] = part["exactMatchRate"]
            metrics[f"{prefix}LcsRatio"] = part["lcsRatio"]
    if "lcsGap" in memo:
        metrics["memorisationLcsGap"] = memo["lcsGap"]
    return {k: float(v) for k, v in metrics.items()}
