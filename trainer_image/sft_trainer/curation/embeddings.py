"""The embedder step: one pass of the sentence embedder gives the vectors the meaning judges compare.

`Embeddings` is an `Annotator`: it stops nothing and writes, for every
record, two unit float32 vectors into `conv.features` (never written out):

- `prompt_emb`: the user turns, joined (the request as a whole: in a
  multi-turn record a short follow-up such as "And in French?" means nothing
  without the turns before it; LIMA and Alpaca are almost all single-turn,
  where this is simply the prompt);
- `response_emb`: the last assistant turn (the one training teaches, and the
  one the relevance judges ask about).

An empty text has the zero vector (cosine 0 with everything). Readers:
`relevance.Relevance`, `semantic_dedup.SemanticDedup`, and the task-label and
style heads.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..config.curation import EmbedderStep
from ..formats import Conversation
from ..models.embedder import Embedder, load_embedder
from .base import Annotator
from .text import last_response, prompt_text

PROMPT = "prompt_emb"
RESPONSE = "response_emb"


class Embeddings(Annotator):
    """Writes `conv.features["prompt_emb"]` and `["response_emb"]` (unit float32 vectors)."""

    name = "embedder"
    batch_size = 512
    """Records per call: the static model is fastest on large batches, MiniLM batches inside `encode`."""

    def __init__(self, config: EmbedderStep, embedder: Embedder | None = None) -> None:
        super().__init__()
        self.embedder = embedder or load_embedder(config.model)

    def annotate(self, convs: Sequence[Conversation]) -> None:
        prompts = self.embedder.encode([prompt_text(conv) for conv in convs])
        responses = self.embedder.encode([last_response(conv) for conv in convs])
        for conv, prompt, response in zip(convs, prompts, responses, strict=True):
            conv.features[PROMPT] = prompt
            conv.features[RESPONSE] = response

    def report(self) -> dict[str, Any]:
        return {"model": self.embedder.name, "dim": self.embedder.dim}
