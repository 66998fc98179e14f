"""The quality score that ranks records in dedup, balance and selection, and the step that writes it."""

from __future__ import annotations

import math
from collections.abc import Sequence

from ..formats import Conversation
from .base import Annotator
from .gptisms import response_density
from .text import last_response


def quality_score(conv: Conversation, max_density: float) -> float:
    """In [0, 1]: fuller answers and fewer GPT-isms score higher. Ranks survivors in dedup and balance."""
    words = len(last_response(conv).split())
    fullness = min(1.0, math.log1p(words) / math.log1p(300))
    density = conv.meta.get("scores", {}).get("gptism_density", 0.0)
    style = 1.0 - min(1.0, density / max_density) if max_density > 0 else 1.0
    return round(0.6 * fullness + 0.4 * style, 4)


class QualityScore(Annotator):
    """Writes `scores.quality` (see `quality_score`), and `scores.gptism_density` where the GPT-ism filter is off."""

    name = "quality"
    batch_size = 4096

    def __init__(self, *, max_density: float, prior_words: int) -> None:
        super().__init__()
        self.max_density, self.prior_words = max_density, prior_words

    def annotate(self, convs: Sequence[Conversation]) -> None:
        for conv in convs:
            scores = conv.meta.setdefault("scores", {})
            if "gptism_density" not in scores:
                scores["gptism_density"] = round(response_density(conv, self.prior_words), 3)
            scores["quality"] = quality_score(conv, self.max_density)
