"""Relevance judges: a response that answers another prompt, or one that only restates its prompt.

Three steps, in the contract's shape (`Annotator`s measure, a `Filter` decides):

- two annotators write `conv.meta["scores"]`:
  - `relevance` (`RelevanceScores`): cosine similarity of the prompt (the user turns) and the
    last response, embedded with the packaged MiniLM (`curation.relevance.model`).
    Measured on calibration LIMA with planted off-topic answers
    (`benchmarks/calibrate_relevance.py`), MiniLM separates them with an
    AUC near 0.996 and the static model only about 0.88: short, generic
    and creative answers share few tokens with their prompt, and only a
    contextual model still sees that they answer it. Relative scores (the
    pair's rank among the set's other responses) were measured too and
    gained little over MiniLM's plain cosine while needing the whole set,
    so the judge stays per record.
  - `echo` (`EchoScores`, no model, runs in forked workers): a lexical score in [0, 1], `coverage x (1 - novelty)`: the share
    of the last user turn's words (and of its first line, the instruction)
    that the response repeats, times the share of the response's words that
    come from the prompt. A copy, a reordering or a template around the
    prompt ("You asked: ...") scores near 1. A legitimate rewrite (correct
    the grammar, paraphrase this) scores low, because it does not repeat the
    instruction line, which is why the first line counts on its own.
  Either is None when the prompt or the response is empty (there is
  nothing to compare; the validation step owns empty turns).
- `Relevance` rejects `relevance.prompt_echo` when `echo` is at or above the
  echo threshold, else `relevance.off_topic` when `relevance` is below the
  off-topic threshold. A missing, None or non-finite score is no evidence:
  the record is kept by this judge.

Without a GPU, MiniLM embeds about 15 records/s on 2 cores
(`benchmarks/bench_semantic_dedup.py --speed`). A set larger than
`curation.relevance.maxRecordsOnCpu` is not embedded on a CPU:
`skip_note` says why (the runner puts it in the report), `RelevanceScores`
is left out (only `EchoScores` runs), and the off-topic judge sees no
`relevance` score (no evidence: it keeps the record).

Thresholds: `curation.relevance.offTopicThreshold` / `echoThreshold`, else
the calibrated values in `resources/calibration/relevance.json` (off-topic
per embedder name; a model without a calibrated value needs the threshold
set, or the step refuses to start with a `ConfigError`).
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Sequence
from functools import cache
from importlib import resources
from typing import Any

import numpy as np

from ..config.curation import RelevanceStep
from ..formats import Conversation
from ..models.embedder import Embedder, load_embedder
from ..runconfig import ConfigError
from .base import Annotator, Filter
from .text import last_response, last_user_turn, prompt_text

CALIBRATION = "relevance.json"
RELEVANCE = "relevance"
ECHO = "echo"
_WORD = re.compile(r"\w+")


@cache
def calibration() -> dict[str, Any]:
    """What `benchmarks/calibrate_relevance.py` wrote (resources/calibration/relevance.json)."""
    path = resources.files("sft_trainer") / "resources" / "calibration" / CALIBRATION
    return json.loads(path.read_text(encoding="utf-8"))


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _shared(a: list[str], b: Counter[str]) -> int:
    """How many of `a`'s words (with repeats) `b` holds."""
    return sum(min(count, b[word]) for word, count in Counter(a).items())


def echo_score(prompt: str, response: str) -> float | None:
    """`coverage x (1 - novelty)` (module docstring); None when either text has no words."""
    prompt_words, response_words = _words(prompt), _words(response)
    if not prompt_words or not response_words:
        return None
    in_response = Counter(response_words)
    first_line = next((line for line in prompt.splitlines() if _words(line)), prompt)
    head = _words(first_line)
    coverage = min(_shared(prompt_words, in_response) / len(prompt_words), _shared(head, in_response) / len(head))
    from_prompt = _shared(response_words, Counter(prompt_words)) / len(response_words)
    return coverage * from_prompt


def _rounded(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), 4)


class RelevanceScores(Annotator):
    """Writes `scores["relevance"]`: the cosine of the prompt and response embeddings (module docstring)."""

    name = "relevance"
    batch_size = 256

    def __init__(self, config: RelevanceStep, embedder: Embedder | None = None) -> None:
        super().__init__()
        self.embedder = embedder or load_embedder(config.model)

    def annotate(self, convs: Sequence[Conversation]) -> None:
        prompts = [prompt_text(conv) for conv in convs]
        responses = [last_response(conv) for conv in convs]
        products = np.einsum("ij,ij->i", self.embedder.encode(prompts), self.embedder.encode(responses))
        for conv, prompt, response, cosine in zip(convs, prompts, responses, products, strict=True):
            empty = not prompt.strip() or not response.strip()
            conv.meta.setdefault("scores", {})[RELEVANCE] = None if empty else _rounded(float(cosine))

    def report(self) -> dict[str, Any]:
        return {"model": self.embedder.name}


class EchoScores(Annotator):
    """Writes `scores["echo"]`: how much the response only restates its prompt (module docstring); no model."""

    name = "echo"
    batch_size = 256
    forkable = True

    def annotate(self, convs: Sequence[Conversation]) -> None:
        for conv in convs:
            echo = echo_score(last_user_turn(conv), last_response(conv))
            conv.meta.setdefault("scores", {})[ECHO] = _rounded(echo)


def skip_note(config: RelevanceStep, records: int, device_type: str) -> str | None:
    """Why the off-topic judge will not embed this set here, or None when it will."""
    limit = config.max_records_on_cpu
    if config.enabled and device_type == "cpu" and limit is not None and records > limit:
        return (
            f"Skipped the off-topic judge (relevance.off_topic): {records} records on a CPU exceed "
            f"curation.relevance.maxRecordsOnCpu ({limit}; MiniLM embeds about 15 records/s on 2 cores). "
            f"The prompt-echo judge ran. Give the curation a GPU or raise the limit."
        )
    return None


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


class Relevance(Filter):
    """`relevance.prompt_echo` / `relevance.off_topic` from the scores `RelevanceScores` wrote."""

    name = "relevance"

    def __init__(self, config: RelevanceStep, embedder_name: str) -> None:
        super().__init__()
        table = calibration()
        off_topic = config.off_topic_threshold
        if off_topic is None:
            off_topic = table["off_topic_threshold"].get(embedder_name)
            if off_topic is None:
                raise ConfigError(
                    f"curation.relevance.offTopicThreshold: no calibrated value for the embedder {embedder_name!r} "
                    f"(calibrated: {', '.join(sorted(table['off_topic_threshold']))}); set it"
                )
        self.off_topic_threshold = float(off_topic)
        self.echo_threshold = float(
            config.echo_threshold if config.echo_threshold is not None else table["echo_threshold"]
        )

    def check(self, conv: Conversation) -> str | None:
        scores = conv.meta.get("scores", {})
        echo = _finite(scores.get(ECHO))
        if echo is not None and echo >= self.echo_threshold:
            return "prompt_echo"
        relevance = _finite(scores.get(RELEVANCE))
        if relevance is not None and relevance < self.off_topic_threshold:
            return "off_topic"
        return None
