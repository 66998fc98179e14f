"""Task labels as a step: every judged record gets `meta["task"]`, which balance and selection read."""

from __future__ import annotations

from collections.abc import Sequence

from ..formats import Conversation
from .base import Annotator
from .tasks import label


class RuleTaskLabels(Annotator):
    """The ordered keyword rules of `tasks.py` (no model needed)."""

    name = "tasks"
    batch_size = 4096

    def annotate(self, convs: Sequence[Conversation]) -> None:
        for conv in convs:
            conv.meta["task"] = label(conv)
