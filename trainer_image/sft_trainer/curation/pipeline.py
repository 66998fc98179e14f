"""The pipeline: which steps a configuration enables, in which order, and the figures of a run.

`build_steps` turns a `CurationConfig` into a flat list of steps; the runner
(`runner.py`) runs it and owns where every record goes. The order:

1. gates: over-long turns (unread), then validation;
2. the embedder (one pass: the vectors that learned task labels, semantic
   dedup and diverse selection read), then task labels (the learned head, or
   the keyword rules);
3. surface quality filters (length, repetition, artifacts, junk characters,
   GPT-isms, arithmetic, decontamination), all of them, so a rejected record lists
   every reason it has;
4. judges of meaning: the scorer LM, the relevance embedder, the style
   classifier and the n-gram fluency model measure; the relevance, style,
   coherence and completeness judges decide on the measurements. On a CPU
   above `scorer.maxRecordsOnCpu` (0 by default) the scorer runs after the
   cheap measurements instead, on only the records whose verdict it could
   change (`lm_scores.BorderlineLmScores`), and coherence and completeness
   read the n-gram measurements elsewhere;
5. the quality score (ranks survivors in dedup, balance and selection);
6. exact, near and semantic deduplication;
7. token steps with the target tokenizer: tokenise once, token bounds,
   template check, rare-token review;
8. review of invisible characters and mixed-script words;
9. task balance, then selection of the best N with its random control.
"""

from __future__ import annotations

from array import array
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..config.curation import CurationConfig
from ..formats import Conversation, RejectedRecord
from ..models.device import inference_device
from .artifacts import Artifacts
from .balance import Balance
from .base import Filter, Step
from .coherence import Coherence
from .completeness import Completeness
from .decontamination import Decontamination
from .dedup import ExactDedup, NearDedup
from .embeddings import Embeddings
from .facts import Facts
from .fluency import FluencyScores
from .gptisms import Gptisms
from .junk import Junk
from .length import Length, Overlength
from .lm_scores import (
    OTHER_SCORER_NOTE,
    BorderlineLmScores,
    LmScores,
    borderline_on_cpu,
    borderline_skip_note,
    default_scorer,
    skip_note,
)
from .quality import QualityScore
from .relevance import EchoScores, Relevance, RelevanceScores
from .relevance import skip_note as relevance_skip_note
from .repetition import Repetition
from .runner import Progress, Rejection, Runner, RunResult, example, response_words
from .selection import Selection
from .semantic_dedup import SemanticDedup
from .style import StyleJudge, StyleScore
from .tasks import LearnedTaskLabeller, RuleTaskLabels, normalised_entropy
from .tokens import OodText, RareTokens, TemplateCheck, TokenBounds, Tokenize, TokenizerView
from .validation import Validation

__all__ = ["CurationResult", "Rejection", "build_steps", "curate", "surface_filters"]


@dataclass
class CurationResult:
    """A run's outcome (`RunResult`) with the figures the report and the status show."""

    run: RunResult
    stats: dict[str, Any]
    notes: list[str]
    control: list[Conversation] = field(default_factory=list)
    """The random control of a selection (same size and task mix, same pool); empty without selection."""

    # The run's fields, read through: entrypoint and report read them by these names.
    @property
    def input_count(self) -> int:
        return self.run.input_count

    @property
    def curated(self) -> Sequence[Conversation]:
        return self.run.curated

    @property
    def rejected(self) -> Sequence[Rejection]:
        return self.run.rejected

    @property
    def review(self) -> list[tuple[Conversation, list[str]]]:
        return self.run.review

    @property
    def funnel(self) -> list[tuple[str, int]]:
        return self.run.funnel

    @property
    def steps(self) -> list[Step]:
        return self.run.steps

    @property
    def selection(self) -> dict[str, Any] | None:
        """The selection step's figures (budget, selected, control...), None when no selection ran."""
        return self.stats["step_reports"].get("selection")

    def drops_by_reason(self) -> Counter[str]:
        return self.run.drops_by_reason()

    def flags_by_reason(self) -> Counter[str]:
        return self.run.flags_by_reason()


REPORTED_SCORES = (
    "quality", "ifd", "ppl", "cond_ppl", "eos_prob", "relevance", "echo", "style", "fluency", "end_prob", "gptism_density",
)  # fmt: skip
"""Scores whose distributions the report draws (those present in the run)."""


def build_steps(
    cfg: CurationConfig, tokenizer: TokenizerView | None = None, records: int = 0
) -> tuple[list[Step], dict[int, str], list[str]]:
    """The steps `cfg` enables, in order, the progress label of each, and notes on what was left out.

    `records` (the input size) decides whether the scorer LM runs on a CPU
    (`curation.scorer.maxRecordsOnCpu`). Models load here: a folder that
    cannot be loaded raises `ConfigError` naming its field.
    """
    steps: list[Step] = []
    labels: dict[int, str] = {}
    notes: list[str] = []

    def add(label: str, *new: Step) -> None:
        for step in new:
            steps.append(step)
            labels[id(step)] = label

    bounds = _char_bounds(cfg)
    add("validate", *_gate_steps(cfg, bounds))
    embeddings = Embeddings(cfg.embedder) if _needs_embeddings(cfg) else None
    if embeddings is not None:
        add("embed", embeddings)
    add("label", LearnedTaskLabeller() if cfg.balance.method == "learned" else RuleTaskLabels())
    add("filter", *_surface_steps(cfg, bounds))
    add("judge", *_meaning_steps(cfg, records, notes))
    add("score", QualityScore(max_density=cfg.gptisms.max_density, prior_words=cfg.gptisms.prior_words))
    if cfg.dedup.exact:
        add("dedup", ExactDedup())
    if cfg.dedup.near:
        add(
            "dedup",
            NearDedup(
                ngram=cfg.dedup.ngram,
                permutations=cfg.dedup.permutations,
                threshold=cfg.dedup.threshold,
                seed=cfg.seed,
            ),
        )
    if cfg.dedup.semantic and embeddings is not None:
        add("dedup", SemanticDedup(cfg.dedup, embeddings.embedder))
    if tokenizer is not None:
        add("tokens", *_token_steps(cfg, tokenizer))
    if cfg.ood_review.enabled:
        add("review", OodText())
    if cfg.balance.enabled:
        add(
            "balance",
            Balance(
                target_entropy=cfg.balance.target_entropy,
                target_mix=cfg.balance.target_mix,
                max_drop_fraction=cfg.balance.max_drop_fraction,
            ),
        )
    if cfg.selection.enabled:
        add(
            "select",
            Selection(
                budget=cfg.selection.budget,
                fraction=cfg.selection.fraction,
                strategy=cfg.selection.strategy,
                diversity_threshold=cfg.selection.diversity_threshold,
                seed=cfg.seed,
            ),
        )
    return steps, labels, notes


def _needs_embeddings(cfg: CurationConfig) -> bool:
    """Learned task labels, semantic dedup and diverse selection read the shared embeddings."""
    return (
        cfg.balance.method == "learned"
        or cfg.dedup.semantic
        or (cfg.selection.enabled and cfg.selection.strategy == "diverse-quality")
    )


def _char_bounds(cfg: CurationConfig) -> dict[str, int]:
    return {
        "min_prompt_chars": cfg.length.min_prompt_chars,
        "max_prompt_chars": cfg.length.max_prompt_chars,
        "min_response_chars": cfg.length.min_response_chars,
        "max_response_chars": cfg.length.max_response_chars,
    }


def _gate_steps(cfg: CurationConfig, bounds: dict[str, int]) -> list[Step]:
    """Over-long turns (unread), then validation: a record either stops will not be shown to the others."""
    steps: list[Step] = []
    if cfg.length.enabled:
        steps.append(Overlength(**bounds))
    if cfg.validation.enabled:
        steps.append(
            Validation(
                reject_placeholders=cfg.validation.reject_placeholders,
                reject_unseeable_inputs=cfg.validation.reject_unseeable_inputs,
            )
        )
    return steps


def _surface_steps(cfg: CurationConfig, bounds: dict[str, int]) -> list[Step]:
    """The per-record filters that read the text alone, in the order they report."""
    steps: list[Step] = []
    if cfg.length.enabled:
        steps.append(Length(**bounds))
    if cfg.repetition.enabled:
        steps.append(
            Repetition(
                max_duplicate_line_fraction=cfg.repetition.max_duplicate_line_fraction,
                max_duplicate_ngram_fraction=cfg.repetition.max_duplicate_ngram_fraction,
                max_top_ngram_share=cfg.repetition.max_top_ngram_share,
                exempt_code_and_lists=cfg.repetition.exempt_code_and_lists,
            )
        )
    if cfg.artifacts.enabled:
        steps += [Artifacts(), Junk()]
    if cfg.gptisms.enabled:
        steps.append(Gptisms(max_density=cfg.gptisms.max_density, prior_words=cfg.gptisms.prior_words))
    if cfg.facts.enabled:
        steps.append(Facts(cfg.facts))
    if cfg.decontamination.eval_sets:
        steps.append(Decontamination(cfg.decontamination.eval_sets, ngram=cfg.decontamination.ngram))
    return steps


def _meaning_steps(cfg: CurationConfig, records: int, notes: list[str]) -> list[Step]:
    """The model judges: measurements first (one pass each), then the filters that read them."""
    steps: list[Step] = []
    device = inference_device()[0].type
    scorer_skipped = skip_note(cfg.scorer, records, device)
    calibrated_scorer = default_scorer(cfg.scorer)
    coherence = Coherence(cfg.coherence, calibrated_scorer) if cfg.coherence.enabled else None
    completeness = Completeness(cfg.completeness, calibrated_scorer) if cfg.completeness.enabled else None
    borderline = scorer_skipped is not None and device == "cpu" and borderline_on_cpu(cfg.scorer, records)
    if scorer_skipped and not borderline:
        borderline_possible = cfg.scorer.enabled and calibrated_scorer and device == "cpu"
        notes.append(borderline_skip_note(cfg.scorer, records) if borderline_possible else scorer_skipped)
    elif not scorer_skipped:
        steps.append(LmScores(cfg.scorer, order_check_above=coherence.order_check_above if coherence else None))
        if not calibrated_scorer:
            notes.append(OTHER_SCORER_NOTE)
    if cfg.relevance.enabled:
        off_topic_skipped = relevance_skip_note(cfg.relevance, records, device)
        if off_topic_skipped:
            notes.append(off_topic_skipped)
        embedder_name = cfg.relevance.model
        steps.append(EchoScores())
        if off_topic_skipped is None:
            relevance = RelevanceScores(cfg.relevance)
            embedder_name = relevance.embedder.name
            steps.append(relevance)
        steps.append(Relevance(cfg.relevance, embedder_name))
    style = (
        StyleScore(cfg.style, read_perplexity=scorer_skipped is None and calibrated_scorer)
        if cfg.style.enabled
        else None
    )
    if style:
        steps.append(style)
    if coherence or completeness:
        # Cheap (thousands of records/s): the judges' fallback wherever the LM did not score.
        steps.append(FluencyScores())
    if borderline:
        # After the cheap measurements, which tell the records whose verdict the LM could change.
        order_check_above = coherence.order_check_above if coherence else None
        steps.append(BorderlineLmScores(cfg.scorer, style, completeness, order_check_above))
    if style:
        steps.append(StyleJudge(cfg.style))
    steps += [judge for judge in (coherence, completeness) if judge is not None]
    return steps


def surface_filters(cfg: CurationConfig) -> list[Filter]:
    """The per-record filters of `cfg` that need no model, in pipeline order (the audit judges with them)."""
    bounds = _char_bounds(cfg)
    return [step for step in _gate_steps(cfg, bounds) + _surface_steps(cfg, bounds) if isinstance(step, Filter)]


def _token_bounds(cfg: CurationConfig) -> dict[str, tuple[int | None, int | None]]:
    if not cfg.length.enabled:
        return {}
    bounds = {
        "prompt": (cfg.length.min_prompt_tokens, cfg.length.max_prompt_tokens),
        "response": (cfg.length.min_response_tokens, cfg.length.max_response_tokens),
    }
    return {k: v for k, v in bounds.items() if v != (None, None)}


def _token_steps(cfg: CurationConfig, tokenizer: TokenizerView) -> list[Step]:
    steps: list[Step] = []
    if _token_bounds(cfg):
        steps.append(TokenBounds(_token_bounds(cfg)))
    if cfg.template.enabled:
        steps.append(TemplateCheck(tokenizer, max_seq_length=cfg.template.max_seq_length, template=cfg.template.name))
    if cfg.ood_review.enabled:
        steps.append(RareTokens(tokenizer, max_rare_token_fraction=cfg.ood_review.max_rare_token_fraction))
    return [Tokenize(tokenizer), *steps] if steps else []


def _uses_tokenizer(cfg: CurationConfig) -> bool:
    return cfg.template.enabled or cfg.ood_review.enabled or bool(_token_bounds(cfg))


def curate(
    items: Iterable[Conversation | RejectedRecord],
    cfg: CurationConfig,
    tokenizer: TokenizerView | None = None,
    on_progress: Progress | None = None,
    workers: int = 1,
) -> CurationResult:
    """Run the configured steps over `items`; every item ends in curated, rejected or review."""
    items = list(items)
    steps, labels, skipped = build_steps(cfg, tokenizer, records=len(items))
    run = Runner(steps, labels=labels, workers=workers, on_progress=on_progress).run(items)
    return CurationResult(
        run, run_stats(run, steps), run_notes(cfg, steps, skipped, tokenizer), selection_control(steps)
    )


def run_notes(cfg: CurationConfig, steps: list[Step], skipped: list[str], tokenizer: TokenizerView | None) -> list[str]:
    """What the report must say about the run: the steps left out, and each step's own notes (once each)."""
    notes = list(dict.fromkeys(skipped + [note for step in steps for note in step.notes]))
    if tokenizer is None and _uses_tokenizer(cfg):
        notes.append("no tokenizer given: token bounds, template check and token review were skipped")
    return notes


def selection_control(steps: list[Step]) -> list[Conversation]:
    """The selection's random control; empty without a selection."""
    return next((step.control for step in steps if isinstance(step, Selection)), [])


def run_stats(run: RunResult, steps: list[Step]) -> dict[str, Any]:
    """The before/after figures of the report: task mix, response lengths, GPT-ism density, clusters."""
    shown = {
        i for step in steps if isinstance(step, NearDedup) for members in step.cluster_sources[:10] for i in members[:4]
    }
    before, after = Population.of(run.judged, shown), Population.of(run.curated)
    categories = len(before.tasks) or None
    stats: dict[str, Any] = {
        "task_counts_before": before.tasks,
        "task_counts_after": after.tasks,
        "task_entropy_before": normalised_entropy(before.tasks, categories),
        "task_entropy_after": normalised_entropy(after.tasks, categories),
        "response_words_before": before.words,
        "response_words_after": after.words,
        "gptism_before": before.gptism,
        "gptism_after": after.gptism,
        "dup_clusters": [],
        "examples": run.examples,
        "timings": run.timings,
        "step_reports": {step.name: step.report() for step in steps if step.report()},
        "score_values": {
            key: {"judged": before.scores[key], "curated": after.scores[key]}
            for key in REPORTED_SCORES
            if len(before.scores[key])
        },
    }
    for step in steps:
        if isinstance(step, NearDedup):
            stats["near_clusters"] = len(step.clusters)
            stats["dup_clusters"] = [
                [before.shown[i] for i in members[:4] if i in before.shown] for members in step.cluster_sources[:10]
            ]
        if isinstance(step, TemplateCheck):
            stats["skeletons"] = step.report()["skeletons"]
    return stats


@dataclass
class Population:
    """What the report draws of a set of records (judged, or curated), gathered in one walk over them (a
    streaming run builds each record from its columns as it is read); numbers as arrays, 8 bytes a value."""

    tasks: Counter[str]
    words: np.ndarray
    """The response's word count, per record."""
    gptism: np.ndarray
    """GPT-ism density per record (0 where unmeasured)."""
    scores: dict[str, np.ndarray]
    """Each reported score's values where a step measured it (None: the step could not, e.g. empty text)."""
    shown: dict[int, dict[str, Any]]
    """`runner.example` of the records asked for, by source_index."""

    @staticmethod
    def of(convs: Sequence[Conversation], shown: frozenset[int] | set[int] = frozenset()) -> Population:
        tasks: Counter[str] = Counter()
        words = np.empty(len(convs), dtype=np.int64)
        gptism = np.empty(len(convs), dtype=np.float64)
        measured: dict[str, array[float]] = {key: array("d") for key in REPORTED_SCORES}
        examples: dict[int, dict[str, Any]] = {}
        for row, conv in enumerate(convs):
            tasks[conv.meta.get("task", "other")] += 1
            words[row] = response_words(conv)
            scores = conv.meta.get("scores", {})
            gptism[row] = float(scores.get("gptism_density", 0.0))
            for key, values in measured.items():
                if isinstance(value := scores.get(key), int | float):
                    values.append(float(value))
            if conv.source_index in shown:
                examples[conv.source_index] = example(conv)
        values = {key: np.frombuffer(found, dtype=np.float64) for key, found in measured.items()}
        return Population(tasks, words, gptism, values, examples)
