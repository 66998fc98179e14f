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
`curation.scorer.maxRecordsOnCpu` is not scored on a CPU: `skip_note` says
why, the runner puts that sentence in the report and the status, and the
judges fall back to what they can see without the model (completeness keeps
its structural cues and its n-gram end-of-turn score, coherence reads the
n-gram `fluency` score). Never hours of silent work.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import cache
from importlib import resources
from typing import Any

from ..config.curation import ScorerStep
from ..formats import Conversation, Message
from ..models.scorer import Exchange, ScorerLM, describe, significant
from .base import Annotator

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
        if self.order_check_above is not None:
            tested = [c for c in convs if (c.meta["scores"]["cond_ppl"] or 0.0) > self.order_check_above]
            self.order_tested += len(tested)
            for conv, gain in zip(tested, order_gains(self.scorer, tested), strict=True):
                conv.meta["scores"]["order_gain"] = gain

    def report(self) -> dict[str, Any]:
        return describe(self.scorer) | {"orderCheckAbove": self.order_check_above, "orderTested": self.order_tested}
