"""Running the probes of probes.py at the two points a recipe calls them: before and after training."""

from __future__ import annotations

import logging
from typing import Any

from .probes import Generator, memorisation_probe, perplexity, reference_paragraphs, safety_probe
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


def probes_before(session: Session, model: Any) -> dict[str, Any]:
    """Forgetting and safety baselines on the untouched base model."""
    probes = session.training.probes
    results: dict[str, Any] = {}
    if probes.forgetting:
        session.reporter.phase("probing-before")
        results["perplexity"] = perplexity(
            model, session.tokenizer, reference_paragraphs(), session.device, session.builder.model_wants_bos
        )
    if probes.safety:
        session.reporter.phase("probing-before")
        results["safety"] = safety_probe(
            generator_for(session, model), probes.safety_prompts_per_set, probes.max_new_tokens
        )
    return results


def probes_after(session: Session, model: Any, before: dict[str, Any]) -> dict[str, Any]:
    """Memorisation, forgetting and safety after training, compared with `before`."""
    probes = session.training.probes
    results: dict[str, Any] = {}
    session.reporter.phase("probing-after")
    if probes.memorisation_prompts > 0:
        results["memorisation"] = memorisation_probe(
            generator_for(session, model),
            session.data.train_conversations,
            session.data.eval_conversations,
            probes.memorisation_prompts,
            probes.max_new_tokens,
        )
    if probes.forgetting and "perplexity" in before:
        after = perplexity(
            model, session.tokenizer, reference_paragraphs(), session.device, session.builder.model_wants_bos
        )
        results["forgetting"] = {
            "perplexityBefore": before["perplexity"],
            "perplexityAfter": after,
            "relativeChange": (after - before["perplexity"]) / before["perplexity"],
        }
    if probes.safety and "safety" in before:
        after_safety = safety_probe(generator_for(session, model), probes.safety_prompts_per_set, probes.max_new_tokens)
        results["safety"] = {"before": before["safety"], "after": after_safety}
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
    forgetting = probe_results.get("forgetting")
    if forgetting:
        metrics["forgettingPerplexityBefore"] = forgetting["perplexityBefore"]
        metrics["forgettingPerplexityAfter"] = forgetting["perplexityAfter"]
        metrics["forgettingRelativeChange"] = forgetting["relativeChange"]
    safety = probe_results.get("safety")
    if safety:
        for when in ("before", "after"):
            suffix = when.capitalize()
            if safety[when].get("harmfulRefusalRate") is not None:
                metrics[f"harmfulRefusalRate{suffix}"] = safety[when]["harmfulRefusalRate"]
            if safety[when].get("overRefusalRate") is not None:
                metrics[f"overRefusalRate{suffix}"] = safety[when]["overRefusalRate"]
    return {k: float(v) for k, v in metrics.items()}
