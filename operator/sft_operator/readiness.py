"""Whether something an SFTJob needs (its dataset, the stage it starts from) can be used: now, not yet, or never."""

from __future__ import annotations

from dataclasses import dataclass

READY_TO_USE, NOT_YET, UNUSABLE = "ready", "waiting", "unusable"


@dataclass(frozen=True)
class Readiness:
    """READY_TO_USE, NOT_YET or UNUSABLE, with the condition's reason and message (reason empty when ready)."""

    state: str
    reason: str = ""
    message: str = ""
