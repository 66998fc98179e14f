"""The scorer step: one forward pass per record gives the scores the meaning judges read.

`LmScores` is an `Annotator`: it stops nothing and writes, for the last
assistant turn of each record (the conversation before it is the prompt),
`conv.meta["scores"]` `ppl`, `cond_ppl`, `ifd` and `eos_prob` (definitions,
windows and None for undefined values: `sft_trainer.models.scorer`), and
`order_gain` (`order_gains`: one more pass, only for the responses whose
`cond_ppl` is above the coherence judge's floor; None elsewhere). The
judges that decide on them are `coherence.Coherence` and
`completeness.Completeness` (and the lead's selection reads `ifd`).

Without a GPU, scoring is slow: 0.4-0.6 records/s measured on this
project's 2 shared CPU cores (see `models.scorer`). A set larger than
`curation.scorer.maxRecordsOnCpu` is not scored whole on a CPU: the judges
fall back to what they can see without the model (completeness keeps its
structural cues and its n-gram end-of-turn score, coherence reads the
n-gram `fluency` score, style its trees alone), and `BorderlineLmScores`
scores only the records whose verdict the LM could change, when there are
few enough (`scorer.borderlineOnCpu`). Either way a note says what ran,
and the runner puts it in the report and the status. Never hours of silent
work.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

from ..config.curation import ScorerStep
from ..formats import Conversation, Message
from ..models.scorer import Exchange, ScorerLM, describe, significant
from .base import Annotator

if TYPE_CHECKING:
    from .completeness import Completeness
    from .style import StyleScore

SCORE_KEYS: tuple[str, ...] = ("ppl", "cond_ppl", "ifd", "eos_prob")
CALIBRATION = "scorer.json"


@cache
def calibration() -> dict[str, Any]:
    """The thresholds `benchmarks/calibrate_scorer.py` wrote (resources/calibration/scorer.json), with its figures."""
    path = resources.files("sft_trainer") / "resources" / "calibration" / CALIBRATION
    return json.loads(path.read_text(encoding="utf-8"))


def exchange(conv: Conversation) -> Exchange:
    """(the turns before the last assistant turn, that turn); no assistant turn: (all turns, "")."""
    messages: list[Message] = list(conv.messages)
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].role == "assistant":
            return messages[:i], messages[i].content
    return messages, ""


def order_gains(scorer: ScorerLM, convs: Sequence[Conversation]) -> list[float | None]:
    """How many times `cond_ppl` rises when the words of each response's window are shuffled on their lines
    (`models.scorer.shuffled_words`). Fluent text the LM finds hard (a lipogram, a poem, an invented
    vocabulary) still depends on its word order, so shuffling it multiplies its perplexity; text whose order
    carries nothing (word salad, garbled text) barely moves. None where there is no order to test or no
    finite perplexity. Needs `cond_ppl` in each record's scores."""
    shuffled = scorer.shuffled_cond_ppl([exchange(conv) for conv in convs])
    return [
        significant(after / conv.meta["scores"]["cond_ppl"]) if after is not None else None
        for conv, after in zip(convs, shuffled, strict=True)
    ]


def write_order_gains(scorer: ScorerLM, convs: Sequence[Conversation], above: float | None) -> int:
    """Write `order_gain` for the scored responses whose `cond_ppl` is above `above` (None: none); how many."""
    if above is None:
        return 0
    tested = [c for c in convs if (c.meta["scores"]["cond_ppl"] or 0.0) > above]
    for conv, gain in zip(tested, order_gains(scorer, tested), strict=True):
        conv.meta["scores"]["order_gain"] = gain
    return len(tested)


OTHER_SCORER_NOTE = (
    "The scorer LM is not the packaged SmolLM2-135M-Instruct at its default windows, on which the LM judges were "
    "calibrated: its perplexities and end-of-turn probabilities are on another scale. Its scores (IFD for "
    "selection among them) are recorded; coherence and completeness judge with the n-gram model unless "
    "coherence.maxPerplexity / completeness.maxEosProb are set, and style without the LM's perplexity."
)


def default_scorer(config: ScorerStep) -> bool:
    """Whether the scorer is the packaged model at the default windows: the only one whose scores the shipped
    LM thresholds (coherence, completeness) and the style blend (`style.PerplexityBlend`) were calibrated on."""
    defaults = ScorerStep()
    return (
        config.model is None
        and config.max_prompt_tokens == defaults.max_prompt_tokens
        and config.max_response_tokens == defaults.max_response_tokens
    )


def skip_note(config: ScorerStep, records: int, device_type: str) -> str | None:
    """Why the LM judges will not run on this set here, or None when they will."""
    if not config.enabled:
        return "The scorer LM is disabled (curation.scorer.enabled: false): coherence and completeness judged with the n-gram fluency and ending model."
    limit = config.max_records_on_cpu
    if device_type == "cpu" and limit is not None and records > limit:
        return (
            f"Skipped the scorer LM (no IFD or LM perplexity): {records} records on a CPU exceed "
            f"curation.scorer.maxRecordsOnCpu ({limit}; a CPU scores well under 1 record/s). Coherence and "
            f"completeness judged with the n-gram fluency and ending model instead. Give the curation a GPU "
            f"or raise the limit for the LM judges."
        )
    return None


def borderline_on_cpu(config: ScorerStep, records: int) -> bool:
    """Whether, where a CPU skips the scorer for the whole set, it still scores the records whose verdict it
    could change (`BorderlineLmScores`): for a set of at most `borderlineOnCpu.maxRecords`, and only with the
    packaged scorer at its default windows, the one the judges' LM thresholds and the style blend were
    calibrated on. Decided on the whole set's size, before it is split into shards."""
    limits = config.borderline_on_cpu
    return config.enabled and default_scorer(config) and 0 < records <= limits.max_records and limits.max_scored > 0


def borderline_skip_note(config: ScorerStep, records: int) -> str:
    """Why a CPU judged this set without the LM."""
    return (
        f"Skipped the scorer LM (no IFD or LM perplexity): {records} records on a CPU exceed "
        f"curation.scorer.maxRecordsOnCpu ({config.max_records_on_cpu}; a CPU scores well under 1 record/s) and "
        f"curation.scorer.borderlineOnCpu.maxRecords ({config.borderline_on_cpu.max_records}), the largest set "
        "whose borderline records it scores. Coherence and completeness judged with the n-gram fluency and "
        "ending model instead, style without the LM's perplexity. Give the curation a GPU or raise the limits "
        "for the LM judges."
    )


BORDERLINE_NOTE = (
    "The scorer LM ran on this CPU only for the records whose verdict it could change (long answers near the "
    "style threshold; answers the n-gram model judged cut off, which the LM judges instead): the scorer step's "
    "report counts them. No IFD for selection; give the curation a GPU, or raise "
    "curation.scorer.maxRecordsOnCpu, to score every record."
)


class BorderlineLmScores(Annotator):
    """On a CPU, for a set too large to score whole: the scorer's scores for only the records whose verdict
    they could change, after the cheap judges' own measurements (style without the LM, n-gram fluency and
    ending).

    Those are (1) a long response whose style score the blend's bounded perplexity term could carry across
    the threshold either way (`style.StyleScore.borderline`; outside that band the verdict with the LM is the
    one without it, so style judges exactly as where every record is scored), and (2) a response whose open
    ending the n-gram end model rejects (`Completeness.lm_would_decide`): the LM's end-of-turn probability
    decides instead, as on a GPU (held-out LIMA: 3 clean answers judged cut off instead of 5, planted
    truncations still caught 0.88). Coherence's n-gram rejections are not sent: the LM clears some word salad
    that the n-gram model catches (on one mix, salad recall fell from 0.88 to 0.84 for one clean answer in
    508 spared). Where a record is scored, every judge reads the LM, as on a GPU. Typically a few percent of
    a set.

    Only `cond_ppl`, `eos_prob` and `order_gain` are measured (the judges' inputs; no `ppl`, so no IFD).
    When more than `scorer.borderlineOnCpu.maxScored` records qualify, none is scored and a note says so:
    the cost is bounded before it is paid. The pipeline runs this step only for a set of at most
    `borderlineOnCpu.maxRecords` (`borderline_on_cpu`), so that in shards of a larger set the bound is not
    paid once per shard.
    """

    name = "scorer"
    batch_size = 1 << 30  # the whole set at once: the bound is on the set's count

    def __init__(
        self,
        config: ScorerStep,
        style: StyleScore | None,
        completeness: Completeness | None,
        order_check_above: float | None,
        scorer: ScorerLM | None = None,
    ) -> None:
        """`order_check_above`: as `LmScores`'. `scorer`: by default the packaged one, loaded when a record
        needs it."""
        super().__init__()
        self.limit = config.borderline_on_cpu.max_scored
        self.config = config
        self.style = style
        self.completeness = completeness
        self.order_check_above = order_check_above
        self.scorer = scorer
        self.counts = {"styleBorderline": 0, "endingInDoubt": 0, "scored": 0, "overLimit": 0, "orderTested": 0}

    def _needs(self, conv: Conversation) -> tuple[bool, bool]:
        """(style borderline, completeness would read the LM)."""
        style = self.style is not None and self.style.borderline(conv)
        return style, self.completeness is not None and self.completeness.lm_would_decide(conv)

    def annotate(self, convs: Sequence[Conversation]) -> None:
        needs = [self._needs(conv) for conv in convs]
        chosen = [conv for conv, need in zip(convs, needs, strict=True) if any(need)]
        self.counts["styleBorderline"] += sum(style for style, _ in needs)
        self.counts["endingInDoubt"] += sum(ending for _, ending in needs)
        if len(chosen) > self.limit:
            self.counts["overLimit"] += len(chosen)
            self.notes.append(
                "Skipped the scorer LM: more records than curation.scorer.borderlineOnCpu.maxScored "
                f"({self.limit}) had a verdict it could change. Coherence and completeness judged with the "
                "n-gram model, style without the LM's perplexity; give the curation a GPU or raise the limit."
            )
            return
        self.notes.append(BORDERLINE_NOTE)
        if not chosen:
            return
        self.scorer = self.scorer or ScorerLM.load(None, batch_size=self.config.batch_size)
        results = self.scorer.score([exchange(conv) for conv in chosen], unconditional=False)
        for conv, scores in zip(chosen, results, strict=True):
            conv.meta.setdefault("scores", {}).update(
                cond_ppl=scores.cond_ppl, eos_prob=scores.eos_prob, order_gain=None
            )
        self.counts["scored"] += len(chosen)
        self.counts["orderTested"] += write_order_gains(self.scorer, chosen, self.order_check_above)
        if self.style is not None:
            self.style.rescore(chosen)

    def report(self) -> dict[str, Any]:
        described = describe(self.scorer) if self.scorer is not None else {}
        return described | {"borderlineOnly": True, "maxScored": self.limit, **self.counts}


class LmScores(Annotator):
    """Writes `ppl`, `cond_ppl`, `ifd`, `eos_prob` into `conv.meta["scores"]` (None where undefined), and
    `order_gain` (see `order_gains`) for the responses whose `cond_ppl` is above `order_check_above`."""

    name = "scorer"
    batch_size = 64

    def __init__(
        self, config: ScorerStep, scorer: ScorerLM | None = None, order_check_above: float | None = None
    ) -> None:
        """`order_check_above`: the `cond_ppl` above which the coherence judge reads `order_gain` (None: never)."""
        super().__init__()
        self.scorer = scorer or ScorerLM.load(
            config.model,
            max_prompt_tokens=config.max_prompt_tokens,
            max_response_tokens=config.max_response_tokens,
            batch_size=config.batch_size,
        )
        self.order_check_above = order_check_above
        self.order_tested = 0

    def annotate(self, convs: Sequence[Conversation]) -> None:
        results = self.scorer.score([exchange(conv) for conv in convs])
        for conv, scores in zip(convs, results, strict=True):
            conv.meta.setdefault("scores", {}).update(scores.as_dict(), order_gain=None)
        self.order_tested += write_order_gains(self.scorer, convs, self.order_check_above)

    def report(self) -> dict[str, Any]:
        return describe(self.scorer) | {"orderCheckAbove": self.order_check_above, "orderTested": self.order_tested}
