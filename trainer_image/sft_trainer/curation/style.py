"""Style judge: is a response written in the chatbot/assistant style?

A logistic regression over the last response's sentence embedding
(`conv.features["response_emb"]`, from the `Embeddings` annotator) plus
counts of chatbot phrasing (every phrase of the GPT-ism list as its own
feature, so the classifier learns each phrase's weight instead of the
hand-fitted one) and a few layout signals (list lines, bold item titles,
headings, an opening "Sure! Here are...", an intro ending in a colon, a
closing "I hope this helps" or "Overall, ..." paragraph).
`benchmarks/train_classifiers.py` (`make classifiers`) fits it with
scikit-learn on the calibration half of human answers (LIMA, OpenAssistant,
self-instruct) and chat-model answers (AlpacaEval gpt4 / gpt-3.5 / claude-2 /
llama-2-70b-chat, GPT-4 Alpaca, GPTeacher role-play), chooses the threshold
on out-of-fold scores, and ships the weights as
`resources/classifiers/style.npz`; inference is numpy only. The weights
belong to the embedder they were trained on (the default one, named in the
file): another embedder's vectors are refused when their size differs, and
must not be fed in when it does not (retrain with `make classifiers`).

Two steps, as every judge of meaning: `StyleScore` (Annotator) writes the
probability of assistant style to `conv.meta["scores"]["style"]`; `StyleJudge`
(Filter) rejects above the threshold as `style.assistant`. A response whose
embedding is not finite gets the score None, and the judge keeps it (it
abstains: a broken vector says nothing about style).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..config.curation import StyleStep
from ..formats import Conversation
from .base import Annotator, Filter
from .gptisms import PHRASES, phrase_hits
from .linear import CLASSIFIERS_DIR, LinearModel, sigmoid
from .text import last_response

if TYPE_CHECKING:
    from ..models.embedder import Embedder

STYLE_WEIGHTS = CLASSIFIERS_DIR / "style.npz"
SCORE_KEY = "style"
EMBEDDING_KEY = "response_emb"

# Every phrase hit count is taken per (words + PRIOR_WORDS), as the GPT-ism density is:
# one phrase in a short answer says little.
PRIOR_WORDS = 100

_LIST_LINE = re.compile(r"^\s*(?:[-*•+]|\d{1,3}[.)])\s+\S")
_HEADING = re.compile(r"^\s*#{1,6}\s+\S", re.M)
_BOLD = re.compile(r"\*\*[^*\n]+\*\*")
_CLOSING = re.compile(r"^(?:overall|in conclusion|in summary|to summarize|ultimately|in short|remember)\b", re.I)
_OPENING = re.compile(
    r"^(?:sure|certainly|absolutely|of course|great question|as an ai|i'm sorry|i apologize|thank you|"
    r"here(?:'s| is| are)|there are (?:several|many|a few))\b",
    re.I,
)
_CLOSING_OFFER = re.compile(
    r"\b(?:i hope (?:this|that|these)|let me know|feel free|if you have any (?:other |more |further )?questions|"
    r"happy to help|good luck|enjoy)\b",
    re.I,
)
_TITLED_ITEM = re.compile(r"^\s*(?:[-*•+]|\d{1,3}[.)])\s+\*\*[^*\n]+\*\*", re.M)
_CONTRACTION = re.compile(r"\b\w+'(?:s|t|re|ve|ll|d|m)\b", re.I)
_FIRST_PERSON = re.compile(r"\b(?:i|i'm|i've|my|me)\b", re.I)
_URL = re.compile(r"https?://|www\.")

LAYOUT_FEATURES: tuple[str, ...] = (
    "log_words",
    "list_line_share",
    "bold_rate",
    "has_heading",
    "intro_colon",
    "closing_summary",
    "chat_opening",
    "closing_offer",
    "titled_items",
    "contraction_rate",
    "first_person_rate",
    "has_url",
    "mean_sentence_words",
)
FEATURE_NAMES: tuple[str, ...] = tuple(f"phrase:{p}" for p in PHRASES) + tuple(f"layout:{n}" for n in LAYOUT_FEATURES)
_PHRASE_INDEX = {p: i for i, p in enumerate(PHRASES)}


def text_features(text: str) -> np.ndarray:
    """Phrase counts and layout signals of one response (the non-embedding part of the input)."""
    lowered = text.lower()
    words = len(lowered.split())
    per = 1000.0 / (words + PRIOR_WORDS)
    phrases = np.zeros(len(PHRASES), dtype=np.float64)
    for hit in phrase_hits(lowered):
        phrases[_PHRASE_INDEX[hit]] += per
    lines = [line for line in text.splitlines() if line.strip()]
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text.strip()) if p.strip()]
    sentences = max(1, len(re.findall(r"[.!?](?:\s|$)", text)))
    layout = [
        math.log1p(words),
        sum(bool(_LIST_LINE.match(line)) for line in lines) / max(1, len(lines)),
        len(_BOLD.findall(text)) * per,
        float(bool(_HEADING.search(text))),
        float(bool(lines) and lines[0].rstrip().endswith(":")),
        float(len(paragraphs) > 1 and bool(_CLOSING.match(paragraphs[-1]))),
        float(bool(_OPENING.match(text.lstrip()))),
        float(bool(paragraphs) and bool(_CLOSING_OFFER.search(paragraphs[-1]))),
        math.log1p(len(_TITLED_ITEM.findall(text))),
        len(_CONTRACTION.findall(text)) * per,
        len(_FIRST_PERSON.findall(text)) * per,
        float(bool(_URL.search(text))),
        min(words / sentences, 100.0) / 10.0,
    ]
    # sqrt tames the long tail of per-1,000-word rates (one phrase in a two-word answer).
    return np.concatenate([np.sqrt(phrases), np.asarray(layout)])


def text_feature_matrix(texts: Sequence[str]) -> np.ndarray:
    return np.stack([text_features(t) for t in texts]) if texts else np.zeros((0, len(FEATURE_NAMES)))


class StyleClassifier:
    """The shipped style model: probability that a response is in the chatbot/assistant style."""

    def __init__(self, path: Path | None = None) -> None:
        self.model = LinearModel.load(path or STYLE_WEIGHTS)
        self.threshold = float(self.model.meta["meta_threshold"])
        self.embedding_dim = self.model.n_features - len(FEATURE_NAMES)
        if self.embedding_dim <= 0:
            raise ValueError(f"{self.model.path}: {self.model.n_features} features cannot hold the text features")

    def probabilities(self, embeddings: np.ndarray, texts: Sequence[str]) -> np.ndarray:
        """P(assistant style) per response; NaN where the embedding is not finite."""
        embeddings = np.asarray(embeddings, dtype=np.float64)
        if embeddings.shape != (len(texts), self.embedding_dim):
            raise ValueError(
                f"style classifier expects {self.embedding_dim}-dimensional embeddings (the embedder it was trained on: "
                f"{self.model.meta.get('meta_embedder')}), got an array of shape {embeddings.shape} for {len(texts)} texts"
            )
        finite = np.isfinite(embeddings).all(axis=1)
        features = np.hstack([np.where(finite[:, None], embeddings, 0.0), text_feature_matrix(texts)])
        probs = sigmoid(self.model.logits(features)[:, 0])
        return np.where(finite, probs, np.nan)


def response_embeddings(
    convs: Sequence[Conversation], embedder: Embedder | None, key: str = EMBEDDING_KEY
) -> np.ndarray:
    """`conv.features[key]` of every record, or the embedder's vectors of the responses when they are absent."""
    if all(key in c.features for c in convs):
        return np.stack([np.asarray(c.features[key], dtype=np.float32) for c in convs])
    if embedder is None:
        missing = next(c for c in convs if key not in c.features)
        raise ValueError(
            f"record {missing.source_index} has no features[{key!r}]: run the embeddings annotator first, "
            "or give the step an embedder"
        )
    return embedder.encode([last_response(c) for c in convs])


class StyleScore(Annotator):
    """Writes `scores["style"]`: the probability that the response is chatbot/assistant style (None: not scored)."""

    name = "style_score"

    def __init__(self, cfg: StyleStep | None = None, embedder: Embedder | None = None, weights: Path | None = None):
        super().__init__()
        self.classifier = StyleClassifier(weights)
        self.embedder = embedder

    def annotate(self, convs: Sequence[Conversation]) -> None:
        if not convs:
            return
        probs = self.classifier.probabilities(
            response_embeddings(convs, self.embedder), [last_response(c) for c in convs]
        )
        for conv, p in zip(convs, probs, strict=True):
            conv.meta.setdefault("scores", {})[SCORE_KEY] = round(float(p), 4) if math.isfinite(p) else None


class StyleJudge(Filter):
    """Rejects a response whose style score exceeds the threshold (`style.assistant`)."""

    name = "style"

    def __init__(self, cfg: StyleStep | None = None, weights: Path | None = None) -> None:
        super().__init__()
        cfg = cfg or StyleStep()
        self.threshold = cfg.threshold if cfg.threshold is not None else StyleClassifier(weights).threshold

    def check(self, conv: Conversation) -> str | None:
        scores = conv.meta.get("scores", {})
        if SCORE_KEY not in scores:
            raise KeyError(f"record {conv.source_index} has no scores[{SCORE_KEY!r}]: StyleScore must run first")
        score = scores[SCORE_KEY]
        if score is None or not math.isfinite(score):
            return None  # not scored (non-finite embedding): the judge abstains, see the module docstring
        return "assistant" if score > self.threshold else None
