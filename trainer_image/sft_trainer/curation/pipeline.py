"""The pipeline: a flat list of steps over `Conversation`s, and where every record ends up.

Order: per-record filters (a record over the length bounds is rejected
before any other filter reads it; validation next, and a record that fails
validation is not looked at further; the quality filters all run so that a
rejected record lists every reason it has), then exact and near deduplication, then
the tokenizer steps (token bounds and template check reject; odd token
statistics go to review), the review filter for invisible characters and
mixed scripts, and last the task balance. Every record read is in exactly one
of `curated`, `rejected`, `review`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ..config.curation import CurationConfig
from ..formats import Conversation, RejectedRecord
from .balance import Balance
from .base import SetStep, Step
from .dedup import ExactDedup, NearDedup
from .per_record import RecordJudge, judge_all
from .tasks import normalised_entropy
from .text import last_response, prompt_text
from .tokens import OodText, TokenChecks, TokenizerView

Progress = Callable[[str, int, int], None]
EXAMPLES_PER_REASON = 3


@dataclass
class Rejection:
    """A rejected record: its reasons (the first one is the one counted) and the original."""

    source_index: int
    reasons: list[str]
    raw: Any
    detail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class CurationResult:
    input_count: int
    curated: list[Conversation]
    rejected: list[Rejection]
    review: list[tuple[Conversation, list[str]]]
    funnel: list[tuple[str, int]]
    steps: list[Step]
    stats: dict[str, Any]
    notes: list[str]

    def drops_by_reason(self) -> Counter[str]:
        """Rejected records per first reason: sums to the number rejected."""
        return Counter(r.reasons[0] for r in self.rejected)

    def flags_by_reason(self) -> Counter[str]:
        """Every reason of every rejected record (a record can have several)."""
        return Counter(reason for r in self.rejected for reason in r.reasons)


def _safe(text: str) -> str:
    """Text that can be written as UTF-8: invalid bytes read from the input become '?'."""
    return text.encode("utf-8", "replace").decode("utf-8")


def _examples(conv: Conversation) -> dict[str, Any]:
    return {
        "source_index": conv.source_index,
        "prompt": _safe(prompt_text(conv)[:200]),
        "response": _safe(last_response(conv)[:200]),
    }


def curate(
    items: Iterable[Conversation | RejectedRecord],
    cfg: CurationConfig,
    tokenizer: TokenizerView | None = None,
    on_progress: Progress | None = None,
    workers: int = 1,
) -> CurationResult:
    progress = on_progress or (lambda stage, done, total: None)
    items = list(items)
    total = len(items)
    rejected: list[Rejection] = []
    review: list[tuple[Conversation, list[str]]] = []
    notes: list[str] = []
    examples: dict[str, list[dict[str, Any]]] = {}

    def reject(conv: Conversation, reasons: list[str]) -> None:
        extra = {k: conv.meta[k] for k in ("dup_cluster", "duplicate_of", "task") if k in conv.meta}
        if "scores" in conv.meta:
            extra["scores"] = conv.meta["scores"]
        rejected.append(Rejection(conv.source_index, reasons, conv.raw, extra=extra))
        bucket = examples.setdefault(reasons[0], [])
        if len(bucket) < EXAMPLES_PER_REASON:
            bucket.append(_examples(conv))

    # -- parse ---------------------------------------------------------------
    convs: list[Conversation] = []
    for item in items:
        if isinstance(item, RejectedRecord):
            rejected.append(Rejection(item.source_index, list(item.reasons), item.raw, item.detail))
            bucket = examples.setdefault(item.reasons[0], [])
            if len(bucket) < EXAMPLES_PER_REASON:
                bucket.append(
                    {
                        "source_index": item.source_index,
                        "detail": _safe(item.detail),
                        "prompt": _safe(str(item.raw)[:200]),
                        "response": "",
                    }
                )
        else:
            convs.append(item)
    funnel = [("input", total), ("parsed", len(convs))]

    # -- per-record filters ---------------------------------------------------
    judge = RecordJudge(cfg)
    steps: list[Step] = judge.steps
    verdicts = judge_all(judge, convs, workers, lambda done: progress("filter", done, len(convs)))
    validated: list[Conversation] = []
    survivors: list[Conversation] = []
    for conv, verdict in zip(convs, verdicts, strict=True):
        if verdict.validated:
            validated.append(conv)
        if verdict.reasons:
            reject(conv, verdict.reasons)
        else:
            survivors.append(conv)
    progress("filter", len(convs), len(convs))
    funnel += [("validated", len(validated)), ("quality filters", len(survivors))]
    stats: dict[str, Any] = {
        "task_counts_before": Counter(c.meta["task"] for c in validated),
        "response_words_before": [len(last_response(c).split()) for c in validated],
        "gptism_before": [c.meta["scores"]["gptism_density"] for c in validated],
        "dup_clusters": [],
    }

    # -- whole-set steps ------------------------------------------------------
    def run_set_step(step: SetStep, stage: str) -> None:
        nonlocal survivors
        progress(stage, 0, len(survivors))
        stopped = step(survivors)
        steps.append(step)
        for i, reason in stopped.items():
            reject(survivors[i], [reason])
        survivors = [c for i, c in enumerate(survivors) if i not in stopped]
        progress(stage, 1, 1)

    if cfg.dedup.exact:
        run_set_step(ExactDedup(), "dedup")
    if cfg.dedup.near:
        near = NearDedup(
            ngram=cfg.dedup.ngram, permutations=cfg.dedup.permutations, threshold=cfg.dedup.threshold, seed=cfg.seed
        )
        before = list(survivors)
        run_set_step(near, "dedup")
        stats["near_clusters"] = len(near.clusters)
        stats["dup_clusters"] = [[_examples(before[i]) for i in members[:4]] for members in near.clusters[:10]]
    funnel.append(("deduplicated", len(survivors)))

    token_step_enabled = cfg.template.enabled or cfg.ood_review.enabled or _token_bounds(cfg)
    if tokenizer is not None and token_step_enabled:
        checks = TokenChecks(
            tokenizer,
            max_seq_length=cfg.template.max_seq_length,
            template_enabled=cfg.template.enabled,
            token_bounds=_token_bounds(cfg),
            ood_enabled=cfg.ood_review.enabled,
            max_rare_token_fraction=cfg.ood_review.max_rare_token_fraction,
        )
        before = list(survivors)
        run_set_step(checks, "tokens")
        # Review indices are positions in the set the step saw.
        held_ids = {id(before[i]) for i in checks.review}
        for i, reason in sorted(checks.review.items()):
            review.append((before[i], [reason]))
        survivors = [c for c in survivors if id(c) not in held_ids]
        notes += checks.notes
        stats["skeletons"] = {
            "/".join(k): v.problem or ("exact" if v.exact else "ok") for k, v in checks.skeletons.items()
        }
    elif tokenizer is None and token_step_enabled:
        notes.append("no tokenizer given: token bounds, template check and token review were skipped")
    funnel.append(("token checks", len(survivors)))

    if cfg.ood_review.enabled:
        ood_text = OodText()
        steps.append(ood_text)
        still: list[Conversation] = []
        for conv in survivors:
            reason = ood_text(conv)
            if reason:
                review.append((conv, [reason]))
            else:
                still.append(conv)
        survivors = still
    funnel.append(("not held for review", len(survivors)))

    if cfg.balance.enabled:
        run_set_step(
            Balance(
                target_entropy=cfg.balance.target_entropy,
                target_mix=cfg.balance.target_mix,
                categories=len(stats["task_counts_before"]) or None,
                max_drop_fraction=cfg.balance.max_drop_fraction,
            ),
            "balance",
        )
    funnel.append(("curated", len(survivors)))

    categories = len(stats["task_counts_before"]) or None
    stats["task_counts_after"] = Counter(c.meta["task"] for c in survivors)
    stats["task_entropy_before"] = normalised_entropy(stats["task_counts_before"], categories)
    stats["task_entropy_after"] = normalised_entropy(stats["task_counts_after"], categories)
    stats["response_words_after"] = [len(last_response(c).split()) for c in survivors]
    stats["gptism_after"] = [c.meta["scores"]["gptism_density"] for c in survivors]
    stats["examples"] = examples
    rejected.sort(key=lambda r: r.source_index)
    return CurationResult(total, survivors, rejected, review, funnel, steps, stats, notes)


def _token_bounds(cfg: CurationConfig) -> dict[str, tuple[int | None, int | None]]:
    if not cfg.length.enabled:
        return {}
    bounds = {
        "prompt": (cfg.length.min_prompt_tokens, cfg.length.max_prompt_tokens),
        "response": (cfg.length.min_response_tokens, cfg.length.max_response_tokens),
    }
    return {k: v for k, v in bounds.items() if v != (None, None)}
