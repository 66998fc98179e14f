"""Step 5, GPT-ism density: how thickly a response is laid with chatbot phrasing.

PHRASES is our own list of words and phrases that instruction-tuned models
overuse. A phrase's weight says how much more often it appears in synthetic
responses than in human-written ones: weight = ln((synthetic rate + a) /
(human rate + a)), rates per 1,000 words, a = SMOOTHING, capped at
MAX_WEIGHT; phrases under MIN_WEIGHT (humans use them about as often)
weigh nothing.
`benchmarks/curation_calibrate_gptisms.py` measures the rates on half of the
human data (LIMA, OpenAssistant, self-instruct seeds) and the synthetic data
(Alpaca, GPT-4 Alpaca, AlpacaEval outputs), writes `gptism_weights.py`, and
reports the separation on the other half.

A record's density = 1000 * sum(weight * hits) / (words + prior_words): hits
per 1,000 words, shrunk towards zero for short texts, where one phrase says
little.
"""

from __future__ import annotations

import re

from ..formats import Conversation
from .base import Filter
from .gptism_weights import WEIGHTS

SMOOTHING = 0.005
MAX_WEIGHT = 3.0
# Phrases below this weight are about as common in human text: they carry no signal, only noise.
MIN_WEIGHT = 0.3

PHRASES: tuple[str, ...] = (
    # hedges and signposts
    "it is important to note",
    "it's important to note",
    "it is worth noting",
    "it's worth noting",
    "it is important to",
    "it's important to",
    "it is essential to",
    "it's essential to",
    "it is crucial to",
    "it's crucial to",
    "keep in mind",
    "remember that",
    "note that",
    "in conclusion",
    "in summary",
    "to summarize",
    "overall,",
    "ultimately,",
    "additionally,",
    "furthermore,",
    "moreover,",
    "in addition,",
    "however, it",
    "that being said",
    "all in all",
    "at the end of the day",
    "in today's",
    "in this day and age",
    "when it comes to",
    # inflated vocabulary
    "delve",
    "delves",
    "delving",
    "tapestry",
    "testament to",
    "realm",
    "landscape",
    "ever-evolving",
    "ever-changing",
    "fast-paced",
    "foster",
    "fosters",
    "fostering",
    "leverage",
    "leveraging",
    "robust",
    "seamless",
    "seamlessly",
    "holistic",
    "comprehensive",
    "crucial",
    "pivotal",
    "paramount",
    "vital",
    "essential",
    "invaluable",
    "myriad",
    "plethora",
    "multifaceted",
    "intricate",
    "nuanced",
    "vibrant",
    "bustling",
    "showcase",
    "showcasing",
    "underscore",
    "underscores",
    "highlighting",
    "navigate",
    "navigating",
    "embark",
    "journey",
    "unlock",
    "unleash",
    "empower",
    "empowering",
    "elevate",
    "harness",
    "harnessing",
    "streamline",
    "utilize",
    "utilizing",
    "enhance",
    "enhancing",
    "optimize",
    "ensure",
    "ensuring",
    "facilitate",
    "innovative",
    "cutting-edge",
    "state-of-the-art",
    "game-changer",
    "transformative",
    "profound",
    "unwavering",
    "meticulous",
    "meticulously",
    "commendable",
    "captivating",
    "enigmatic",
    "beacon",
    "symphony",
    "interplay",
    "resonate",
    "dynamic",
    "significant",
    "significantly",
    "various",
    "numerous",
    "diverse",
    # stock constructions
    "plays a crucial role",
    "plays a vital role",
    "plays a key role",
    "plays an important role",
    "a wide range of",
    "a variety of",
    "a range of",
    "serves as a",
    "strike a balance",
    "not only",
    "whether you're",
    "dive into",
    "let's dive",
    "by following these",
    "can help you",
    "a great way to",
    "there are several",
    "there are many",
    "here are some",
    "here is a",
    "here's a",
    "key factors",
    "potential",
    "overall, the",
    "a sense of",
    "sense of community",
    "well-being",
    "mental health",
    "physical and mental",
    "healthy lifestyle",
    # assistant small talk
    "i hope this helps",
    "hope this helps",
    "feel free to",
    "let me know if",
    "happy to help",
    "great question",
    "certainly!",
    "absolutely!",
    "sure!",
    "of course!",
    "i'd be happy to",
    "consult with a",
    "consult a professional",
    "seek professional",
    # enumerating scaffolding
    "firstly,",
    "secondly,",
    "thirdly,",
    "lastly,",
    "in terms of",
    "make sure to",
    "be sure to",
)

_PHRASE_RE = re.compile(
    "|".join(
        (r"\b" if p[0].isalnum() else "") + re.escape(p) + (r"\b" if p[-1].isalnum() else "")
        for p in sorted(PHRASES, key=len, reverse=True)
    )
)


def phrase_hits(text: str) -> list[str]:
    return _PHRASE_RE.findall(text.lower())


def density(text: str, weights: dict[str, float] | None = None, prior_words: int = 100) -> float:
    """Weighted GPT-ism hits per 1,000 words of `text` (shrunk for short texts)."""
    weights = WEIGHTS if weights is None else weights
    lowered = text.lower()
    score = sum(weights.get(hit, 0.0) for hit in _PHRASE_RE.findall(lowered))
    if not score:
        return 0.0
    return 1000.0 * score / (len(lowered.split()) + prior_words)


def response_density(conv: Conversation, prior_words: int = 100) -> float:
    return density("\n".join(m.content for m in conv.messages if m.role == "assistant"), prior_words=prior_words)


class Gptisms(Filter):
    """Reject responses whose weighted GPT-ism density exceeds `max_density`; records the score."""

    name = "gptisms"

    def __init__(self, *, max_density: float, prior_words: int = 100) -> None:
        super().__init__()
        self.max_density = max_density
        self.prior_words = prior_words

    def check(self, conv: Conversation) -> str | None:
        score = response_density(conv, self.prior_words)
        conv.meta.setdefault("scores", {})["gptism_density"] = round(score, 3)
        return "dense" if score > self.max_density else None
