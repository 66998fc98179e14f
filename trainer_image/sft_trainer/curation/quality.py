"""The quality score that ranks records in dedup, balance and selection, and the step that writes it."""

from __future__ import annotations

import math
from collections.abc import Sequence

from ..formats import Conversation
from .base import Annotator
from .gptisms import response_density
from .junk import junk_penalty
from .repetition import distinct_words
from .text import last_response


def quality_score(conv: Conversation, max_density: float) -> float:
    """In [0, 1]: fuller answers, fewer GPT-isms and no junk score higher. Ranks survivors in dedup and balance.

    Fullness counts each sentence once, so a looped copy is not "fuller" than
    its original; the share of words in repeated sentences takes up to half
    the score off, and junk characters another share (see `junk_penalty`),
    so a corrupted copy never outranks the clean one. A
    GPT-ism density that is not a finite number counts as the worst style.
    """
    response = last_response(conv)
    distinct, total = distinct_words(response), len(response.split())
    fullness = min(1.0, math.log1p(distinct) / math.log1p(300))
    repeated = 1.0 - distinct / total if total else 0.0
    density = conv.meta.get("scores", {}).get("gptism_density", 0.0)
    if max_density <= 0:
        style = 1.0
    elif isinstance(density, int | float) and math.isfinite(density):
        style = 1.0 - min(1.0, max(0.0, density) / max_density)
    else:
        style = 0.0
    return round((0.6 * fullness + 0.4 * style) * (1.0 - junk_penalty(response)) * (1.0 - 0.5 * repeated), 4)


class QualityScore(Annotator):
    """Writes `scores.quality` (see `quality_score`), and `scores.gptism_density` where the GPT-ism filter is off."""

    name = "quality"
    batch_size = 4096
    forkable = True

    def __init__(self, *, max_density: float, prior_words: int) -> None:
        super().__init__()
        self.max_density, self.prior_words = max_density, prior_words

    def annotate(self, convs: Sequence[Conversation]) -> None:
        for conv in convs:
            scores = conv.meta.setdefault("scores", {})
            if "gptism_density" not in scores:
                scores["gptism_density"] = round(response_density(conv, self.prior_words), 3)
            scores["quality"] = quality_score(conv, self.max_density)
