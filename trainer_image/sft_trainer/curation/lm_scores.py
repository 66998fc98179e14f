"""The scorer step: one forward pass per record gives the scores the meaning judges read.

`LmScores` is an `Annotator`: it stops nothing and writes, for the last
assistant turn of each record (the conversation before it is the prompt),
`conv.meta["scores"]` `ppl`, `cond_ppl`, `ifd` and `eos_prob` (definitions,
windows and None for undefined values: `sft_trainer.models.scorer`). The
judges that decide on them are `coherence.Coherence` and
`completeness.Completeness` (and the lead's selection reads `ifd`).

Without a GPU, scoring is slow: 0.4-0.6 records/s measured on this
project's 2 shared CPU cores (see `models.scorer`). A set larger than
`curation.scorer.maxRecordsOnCpu` is not scored on a CPU: `skip_note` says
why, the runner puts that sentence in the report and the status, and the
judges fall back to what they can see without the model (completeness keeps
its structural cues; coherence judges nothing). Never hours of silent work.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import cache
from importlib import resources
from typing import Any

from ..config.curation import ScorerStep
from ..formats import Conversation, Message
from ..models.scorer import Exchange, ScorerLM, describe
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
    """Writes `ppl`, `cond_ppl`, `ifd`, `eos_prob` into `conv.meta["scores"]` (None where undefined)."""

    name = "scorer"
    batch_size = 64

    def __init__(self, config: ScorerStep, scorer: ScorerLM | None = None) -> None:
        super().__init__()
        self.scorer = scorer or ScorerLM.load(
            config.model,
            max_prompt_tokens=config.max_prompt_tokens,
            max_response_tokens=config.max_response_tokens,
            batch_size=config.batch_size,
        )

    def annotate(self, convs: Sequence[Conversation]) -> None:
        results = self.scorer.score([exchange(conv) for conv in convs])
        for conv, scores in zip(convs, results, strict=True):
            conv.meta.setdefault("scores", {}).update(scores.as_dict())

    def report(self) -> dict[str, Any]:
        return describe(self.scorer)
