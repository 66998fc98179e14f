"""Style judge: is a response written in the chatbot/assistant style?

Gradient-boosted trees over features of the response and of how it leans
on its prompt: counts of chatbot phrasing (every phrase of the GPT-ism list
as its own feature, so the model learns each phrase's weight instead of the
hand-fitted one), layout (list lines, bold item titles, "**Title**:"
lead-ins, headings, an opening "Sure! Here are...", an intro ending in a
colon, a closing "I hope this helps" or "Overall, ..." paragraph), rhythm
(sentence length and its variation, paragraphs, connective sentence openers,
hedges such as "it's important to note"), word habits (vocabulary variety,
word length, commas, quotes), the marks of hand-typed text that chat models
rarely leave (lower-case sentence starts, a lower-case "i", double spaces,
non-ASCII characters), and echo (`ECHO_FEATURES`: chat models open by
restating the request and close by summing it up; out-of-fold, these raised
the long chat answers caught at 0.8% of LIMA from 0.50 to 0.63 before the
length rule below). Trees, because the signals interact: a list is
chat-like in a long polished answer and ordinary in a short typed one.
The trees' last input is stacked: the logit of a logistic regression over
the tf-idf of the response's cased word unigrams and bigrams, punctuation
marks included (`linear.cased_word_ngrams`, the 30,000 most frequent terms:
"Here are", "I", "**", ": " tell how a text is written). The trees learn
when to trust it; they are trained on its out-of-fold logits, so they never
see a logit of a text the word model was fitted on. No sentence embedding:
neither the static embedding nor MiniLM's (AUC 0.67 alone) adds to it.

The judge decides only on responses of at least `min_words` words (150
shipped), and only those are scored: below that length the model tells
LIMA from chat-model answers at an out-of-fold AUC of 0.71-0.90, from it at
0.97-0.99, so a verdict on a short answer would mostly stop people. Short
chat answers are left to the GPT-ism phrase step.

Held-out half (`make classifiers` prints it): the noise kit's long
chat-model answers are caught 0.77 of the time with 1.2% of clean LIMA
flagged (AUC 0.977), short of the 0.8-at-1% goal: LIMA itself holds answers
written in the assistant style ("Here is an example email invitation...",
recipes with Ingredients and Instructions headings), which score as high as
a chat model's and set the threshold.

With the scorer LM, the score also reads its perplexity of the response given
the prompt (`PerplexityBlend`: one weighted term, bounded at ±`MAX_SHIFT`,
added to the trees' logit and re-centred so the same threshold holds). A GPU
scores every record; a CPU scores only the long answers whose verdict the
bounded term could change (`StyleScore.borderline`, then `rescore`; see
`lm_scores.BorderlineLmScores`), which gives the same verdicts. Held-out
half: the kit's long chat answers caught 0.823 instead of 0.771, with 1.4% of clean LIMA flagged instead of 1.2% (7 and
6 of 508). Out of fold the weight of 1.0 put 0.856 of the long chat answers
above the 0.8% LIMA cut, against 0.824 without (over five fold seeds at
learning rate 0.05: 0.787 without, 0.829 / 0.815 at weights 0.5 / 1.0). The
same LM signals as tree features (perplexity, entropy, top-1 share, log-rank,
their ratio) lowered that five-seed figure to 0.72: the trees overfit the few
hundred long human answers on them.

`benchmarks/train_classifiers.py` (`make classifiers`) fits the model with
scikit-learn on the calibration half of LIMA, all of the other human answers
(OpenAssistant, self-instruct: no test scores them) and the calibration half
of chat-model answers (AlpacaEval gpt4 / gpt-3.5 / claude-2 /
llama-2-70b-chat, GPT-4 Alpaca, GPTeacher role-play), chooses the threshold
and the perplexity weight on out-of-fold scores (folds grouped by prompt), and ships the trees as
`resources/classifiers/style.npz` and the word model as `style_words.npz`;
inference is numpy only (`curation/trees.py`, `curation/linear.py`).

Two steps, as every judge of meaning: `StyleScore` (Annotator) writes the
probability of assistant style to `conv.meta["scores"]["style"]`; `StyleJudge`
(Filter) rejects a response of at least `min_words` words above the threshold
as `style.assistant`. The features of
any text are finite, so every response long enough gets a score; a score
that is None (too short) or not finite makes the judge abstain (keep).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config.curation import StyleStep
from ..formats import Conversation
from .base import Annotator, Filter
from .gptisms import PHRASES, phrase_hits
from .linear import CLASSIFIERS_DIR, LinearModel, cased_word_ngrams, sigmoid, tfidf_row
from .text import last_response, last_user_turn
from .trees import TreeEnsemble

STYLE_WEIGHTS = CLASSIFIERS_DIR / "style.npz"
WORD_WEIGHTS = CLASSIFIERS_DIR / "style_words.npz"
"""The word n-gram model whose logit is the trees' last input (`vocabulary`, `idf` and a linear model)."""
SCORE_KEY = "style"

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
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
# Sentence openers chat models lean on to chain their paragraphs.
_CONNECTIVE_START = re.compile(
    r"^(?:this|these|additionally|furthermore|moreover|however|overall|in addition|finally|firstly|secondly|lastly|"
    r"ultimately|it is|it's)\b",
    re.I,
)
_HEDGE = re.compile(
    r"\b(?:it(?:'s| is) (?:important|worth|essential|crucial) to (?:note|remember|consider|keep in mind)|"
    r"keep in mind|please note|note that)\b",
    re.I,
)
_COLON_LEAD = re.compile(r"^\s*(?:[-*•+]|\d{1,3}[.)])?\s*(?:\*\*)?[A-Z][^:\n]{1,60}(?:\*\*)?:\s+\S", re.M)
# Marks of hand-typed text that chat models rarely produce.
_NON_ASCII = re.compile(r"[^\x00-\x7f]")
_LOWER_SENTENCE_START = re.compile(r"(?:^|[.!?]\s+)[a-z]")
_DOUBLE_SPACE = re.compile(r"\S  +\S")
_LOWER_I = re.compile(r"(?:^|\s)i(?:\s|')")
_DASH = re.compile(r" - | -- |—")
_LETTER_WORD = re.compile(r"[A-Za-z']+")
_ECHO_WORD = re.compile(r"[a-z0-9']+")
_OPENING_SENTENCE = re.compile(r"(?<=[.!?:])\s|\n")
_SENTENCE_OR_LINE = re.compile(r"(?<=[.!?])\s+|\n")
ECHOING_SENTENCE = 0.2
"""A sentence echoes the prompt when more than this share of its word pairs are the prompt's."""
VOCABULARY_WINDOW = 150
"""Type-token ratio over the first words only, so that it does not fall with length alone."""

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
    "log_paragraphs",
    "sentence_length_variation",
    "connective_start_share",
    "hedge_rate",
    "colon_lead_share",
    "non_ascii_rate",
    "lower_sentence_start_rate",
    "double_space_rate",
    "parenthesis_rate",
    "exclamation_rate",
    "question_rate",
    "digit_rate",
    "lower_i_rate",
    "dash_rate",
    "ends_with_stop",
    "has_code_fence",
    "log_words_per_paragraph",
    "type_token_ratio",
    "mean_word_length",
    "long_word_share",
    "comma_rate",
    "semicolon_rate",
    "quote_rate",
    "ellipsis_rate",
    "capitalised_word_share",
)
ECHO_FEATURES: tuple[str, ...] = (
    "opening_prompt_word_share",
    "opening_prompt_bigram_share",
    "prompt_bigram_share",
    "log_prompt_words",
    "closing_prompt_bigram_share",
    "echoing_sentence_share",
    "log_length_ratio",
    "prompt_bigram_coverage",
)
"""How the response leans on its prompt: chat models open by restating the request ("Here's a C++ program
that reads a text file line by line...") and close by summing it up; people mostly just answer."""
FEATURE_NAMES: tuple[str, ...] = (
    tuple(f"phrase:{p}" for p in PHRASES)
    + tuple(f"layout:{n}" for n in LAYOUT_FEATURES)
    + tuple(f"echo:{n}" for n in ECHO_FEATURES)
)
MODEL_INPUTS: tuple[str, ...] = (*FEATURE_NAMES, "words:logit")
"""What the trees read: the text features, then the word n-gram model's logit (stacking)."""
_PHRASE_INDEX = {p: i for i, p in enumerate(PHRASES)}


def features(prompt: str, text: str) -> np.ndarray:
    """The model's input for one response to `prompt`: phrase counts, layout, rhythm, typing marks and echo."""
    return np.concatenate([text_features(text), echo_features(prompt, text)])


def text_features(text: str) -> np.ndarray:
    """Phrase counts, layout, rhythm, word statistics and typing marks of one response."""
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
        *_rhythm_features(text, paragraphs, lines, per),
        *_word_statistics(text, per),
    ]
    # sqrt tames the long tail of per-1,000-word rates (one phrase in a two-word answer).
    return np.concatenate([np.sqrt(phrases), np.asarray(layout)])


def _rhythm_features(text: str, paragraphs: list[str], lines: list[str], per: float) -> list[float]:
    """Sentence rhythm, connectives and hedges (chat answers), and the marks of hand-typed text (human answers)."""
    sentences = [s for s in _SENTENCE_END.split(text.strip()) if s.strip()]
    lengths = np.array([len(s.split()) for s in sentences] or [0])
    return [
        math.log1p(len(paragraphs)),
        float(lengths.std() / (lengths.mean() + 1.0)),  # burstiness: people vary their sentence length more
        sum(bool(_CONNECTIVE_START.match(s)) for s in sentences) / max(1, len(sentences)),
        len(_HEDGE.findall(text)) * per,
        len(_COLON_LEAD.findall(text)) / max(1, len(lines)),
        math.sqrt(len(_NON_ASCII.findall(text)) * per),
        math.sqrt(len(_LOWER_SENTENCE_START.findall(text)) * per),
        math.sqrt(len(_DOUBLE_SPACE.findall(text)) * per),
        text.count("(") * per,
        text.count("!") * per,
        text.count("?") * per,
        math.sqrt(sum(map(str.isdigit, text)) * per),
        len(_LOWER_I.findall(text)) * per,
        len(_DASH.findall(text)) * per,
        float(text.rstrip()[-1:] in (".", "!", "?")),
        float("```" in text),
        math.log1p(float(np.mean([len(p.split()) for p in paragraphs])) if paragraphs else 0.0),
    ]


def _word_statistics(text: str, per: float) -> list[float]:
    """Vocabulary and punctuation habits: how varied and long the words are, commas, quotes, ellipses."""
    words = _LETTER_WORD.findall(text)
    count = max(1, len(words))
    window = [w.lower() for w in words[:VOCABULARY_WINDOW]]
    return [
        len(set(window)) / max(1, len(window)),
        sum(map(len, words)) / count,
        sum(len(w) >= 8 for w in words) / count,
        text.count(",") * per,
        text.count(";") * per,
        text.count('"') * per,
        text.count("...") * per,
        sum(w[0].isupper() for w in words[1:]) / count,
    ]


def _share_in(items: Sequence[object], known: set) -> float:
    return sum(map(known.__contains__, items)) / max(1, len(items))


def _bigrams(words: Sequence[str]) -> list[tuple[str, str]]:
    return list(zip(words, words[1:], strict=False))


def echo_features(prompt: str, text: str) -> list[float]:
    """`ECHO_FEATURES`: how much of the prompt the response repeats, in its opening, its close and overall."""
    prompt_words = _ECHO_WORD.findall(prompt.lower())
    words = _ECHO_WORD.findall(text.lower())
    prompt_set, prompt_pairs = set(prompt_words), set(_bigrams(prompt_words))
    opening = _ECHO_WORD.findall(_OPENING_SENTENCE.split(text.strip(), maxsplit=1)[0].lower())
    paragraphs = [p for p in re.split(r"\n\s*\n", text.strip()) if p.strip()]
    closing = _bigrams(_ECHO_WORD.findall(paragraphs[-1].lower())) if len(paragraphs) > 1 else []
    sentences = [_bigrams(_ECHO_WORD.findall(s.lower())) for s in _SENTENCE_OR_LINE.split(text) if s.strip()]
    pairs = _bigrams(words)
    return [
        _share_in(opening, prompt_set),
        _share_in(_bigrams(opening), prompt_pairs),
        _share_in(pairs, prompt_pairs),
        math.log1p(len(prompt_words)),
        _share_in(closing, prompt_pairs),
        sum(_share_in(s, prompt_pairs) > ECHOING_SENTENCE for s in sentences) / max(1, len(sentences)),
        math.log1p(len(words)) - math.log1p(len(prompt_words)),
        len(prompt_pairs.intersection(pairs)) / max(1, len(prompt_pairs)),
    ]


def feature_matrix(prompts: Sequence[str], texts: Sequence[str]) -> np.ndarray:
    if not texts:
        return np.zeros((0, len(FEATURE_NAMES)))
    return np.stack([features(p, t) for p, t in zip(prompts, texts, strict=True)])


class WordModel:
    """Logistic regression over the tf-idf of cased word unigrams and bigrams (`linear.cased_word_ngrams`)."""

    def __init__(self, path: Path | None = None) -> None:
        self.model = LinearModel.load(path or WORD_WEIGHTS)
        self.index = {str(term): i for i, term in enumerate(self.model.extras["vocabulary"])}
        self.idf = self.model.extras["idf"]
        if np.any(self.model.mean) or np.any(self.model.scale != 1.0):
            raise ValueError(f"{self.model.path}: tf-idf columns are not standardised; retrain with `make classifiers`")

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        # Sparse rows: a few hundred of the vocabulary's terms occur in one response.
        coef, out = self.model.coef[0], np.empty(len(texts))
        for row, text in enumerate(texts):
            columns, values = tfidf_row(text, self.index, self.idf, cased_word_ngrams)
            out[row] = values @ coef[columns]
        return out + float(self.model.intercept[0])


def model_inputs(prompts: Sequence[str], texts: Sequence[str], words: WordModel) -> np.ndarray:
    """The trees' input rows (`MODEL_INPUTS`): the features of each response to its prompt, the word model's logit."""
    return np.column_stack([feature_matrix(prompts, texts), words.logits(texts)])


def word_count(text: str) -> int:
    return len(text.split())


def judged_assistant_style(text: str, probability: float, threshold: float, min_words: int) -> bool:
    """The judge's rule: a response long enough to judge (see `StyleClassifier`) whose probability exceeds
    the threshold."""
    return word_count(text) >= min_words and probability > threshold


PERPLEXITY_KEY = "cond_ppl"
"""The scorer LM's perplexity of the response given its prompt (`lm_scores`), which the blend reads."""

MAX_SHIFT = 2.0
"""The most the perplexity term moves the style logit either way (before the offset). The trees' evidence
leads; the LM's can tip a score near the threshold but never decide alone (±2 clips a long answer's term
only where its `cond_ppl` is below about 2.2 or above about 48, about ±2.3 standard deviations of the
calibration answers'). A bound also says, before the LM runs, which records it could change
(`PerplexityBlend.could_change`): on a CPU those are the only ones it scores."""


ROUNDING_SLACK = 0.02
"""Logits by which `StyleScore.borderline` widens the band: a score is stored to 4 decimals, which moves
its logit by up to about 0.01 near the band's edges."""


def _logit(probability: float) -> float:
    p = min(1.0 - 1e-9, max(1e-9, probability))
    return math.log(p / (1.0 - p))


@dataclass(frozen=True)
class PerplexityBlend:
    """How the scorer LM's perplexity moves the style logit, when the LM scored the record.

    A chat model writes text that a small LM finds predictable: on long calibration answers the
    packaged SmolLM2's `cond_ppl` alone tells LIMA from chat answers at AUC 0.93. Fed to the trees as
    one more feature it overfits the few hundred long human answers; added to their logit as one
    weighted term it lifts the long chat answers caught at the same LIMA budget (module docstring).
    The term is `weight * (mean - log cond_ppl) / scale`, clipped to ±`MAX_SHIFT`, plus `offset`; the offset
    puts the blended score's calibrated cut on the shipped threshold, so one threshold serves scores with and
    without the LM.
    Calibrated for the packaged scorer at its default windows only: another model's perplexities
    are on another scale, so the pipeline does not pass them (`lm_scores.default_scorer`).
    """

    weight: float
    mean: float
    scale: float
    offset: float

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> PerplexityBlend | None:
        if "meta_lm_weight" not in meta:
            return None
        return cls(*(float(meta[f"meta_lm_{k}"]) for k in ("weight", "mean", "scale", "offset")))

    def shift(self, perplexity: float | None) -> float:
        """The logit term for one record: 0 where the LM gave no usable perplexity (None, non-finite, < 1)."""
        if perplexity is None or not math.isfinite(perplexity) or perplexity < 1.0:
            return 0.0
        term = self.weight * (self.mean - math.log(perplexity)) / self.scale
        return min(MAX_SHIFT, max(-MAX_SHIFT, term)) + self.offset

    def could_change(self, probability: float, threshold: float, slack: float = 0.0) -> bool:
        """Whether some perplexity would give this score (without the LM) the other verdict at `threshold`:
        outside this band the blended score is above the threshold for every perplexity or for none, the same
        verdict as without the LM. `slack` widens the band by that many logits each way."""
        logit, cut = _logit(probability), _logit(threshold)
        reach = MAX_SHIFT + slack
        return cut - self.offset - reach < logit <= cut - self.offset + reach

    def shifts(self, perplexities: Sequence[float | None]) -> np.ndarray:
        """`shift` of each record (NaN, like None, gives 0)."""
        return np.array([self.shift(p) for p in perplexities], dtype=float)


class StyleClassifier:
    """The shipped style model: probability that a response is in the chatbot/assistant style.

    `threshold` and `min_words` are the calibrated defaults shipped with the weights: a response
    shorter than `min_words` is scored but never judged (`judged`), because on short answers the
    classifier does not tell a chat model from a person reliably (AUC per length in the model's report).
    """

    def __init__(self, path: Path | None = None, words: Path | None = None) -> None:
        self.model = TreeEnsemble.load(path or STYLE_WEIGHTS)
        self.words = WordModel(words)
        self.threshold = float(self.model.meta["meta_threshold"])
        self.min_words = int(self.model.meta["meta_min_words"])
        self.blend = PerplexityBlend.from_meta(self.model.meta)
        if self.model.n_features != len(MODEL_INPUTS):
            raise ValueError(
                f"{self.model.path}: {self.model.n_features} features, the code computes {len(MODEL_INPUTS)}: "
                "retrain with `make classifiers`"
            )

    def probabilities(
        self, prompts: Sequence[str], texts: Sequence[str], perplexities: Sequence[float | None] | None = None
    ) -> np.ndarray:
        """P(assistant style) per response, each read beside the prompt it answers; with `perplexities`
        (the packaged scorer's `cond_ppl` per response, None where it gave none) through the blend."""
        if not texts:
            return np.zeros(0)
        logits = self.model.raw_scores(model_inputs(prompts, texts, self.words))
        if perplexities is not None and self.blend is not None:
            logits = logits + self.blend.shifts(perplexities)
        return sigmoid(logits)

    def judged(self, text: str, probability: float) -> bool:
        """Whether curation with the shipped defaults rejects this response as `style.assistant`."""
        return judged_assistant_style(text, probability, self.threshold, self.min_words)


class StyleScore(Annotator):
    """Writes `scores["style"]`: the probability that the response is chatbot/assistant style.

    Only responses long enough to be judged (`min_words`) are scored; a shorter one gets None, which
    the judge and the report skip. The classifier's verdict on short answers is not trusted (see the
    module docstring), and scoring them was most of curation's CPU time: on Alpaca 97% of the
    responses are shorter than the shipped 150 words.
    """

    name = "style_score"
    forkable = True

    def __init__(
        self, cfg: StyleStep | None = None, weights: Path | None = None, read_perplexity: bool = False
    ) -> None:
        super().__init__()
        self.classifier = StyleClassifier(weights)
        self.threshold, self.min_words = _judge_settings(cfg or StyleStep(), weights, self.classifier)
        self.read_perplexity = read_perplexity

    def annotate(self, convs: Sequence[Conversation]) -> None:
        self._score(convs, self.read_perplexity)

    def rescore(self, convs: Sequence[Conversation]) -> None:
        """Score `convs` again through the blend, now that the scorer measured their perplexity (the CPU's
        pass over the records whose verdict the LM could change, `lm_scores.BorderlineLmScores`)."""
        self._score(convs, read_perplexity=True)

    def borderline(self, conv: Conversation) -> bool:
        """Whether the scorer's perplexity could change this record's verdict: it has a score without the LM
        (long enough), and the blend's bounded term could carry it across the threshold either way."""
        score = conv.meta.get("scores", {}).get(SCORE_KEY)
        blend = self.classifier.blend
        if blend is None or score is None or not math.isfinite(score):
            return False
        return blend.could_change(score, self.threshold, slack=ROUNDING_SLACK)

    def _score(self, convs: Sequence[Conversation], read_perplexity: bool) -> None:
        responses = [last_response(c) for c in convs]
        judged = [i for i, text in enumerate(responses) if word_count(text) >= self.min_words]
        perplexities = (
            [convs[i].meta.get("scores", {}).get(PERPLEXITY_KEY) for i in judged] if read_perplexity else None
        )
        probs = self.classifier.probabilities(
            [last_user_turn(convs[i]) for i in judged], [responses[i] for i in judged], perplexities
        )
        for conv in convs:
            conv.meta.setdefault("scores", {})[SCORE_KEY] = None
        for i, p in zip(judged, probs, strict=True):
            convs[i].meta["scores"][SCORE_KEY] = round(float(p), 4)

    def report(self) -> dict[str, Any]:
        return {"readsScorerPerplexity": self.read_perplexity and self.classifier.blend is not None}


def _judge_settings(cfg: StyleStep, weights: Path | None, shipped: StyleClassifier | None = None) -> tuple[float, int]:
    """(threshold, min_words): the configured values, the shipped calibrated ones where unset (read from
    `shipped`, or from the weights when a value is needed and no classifier is loaded)."""
    if cfg.threshold is not None and cfg.min_words is not None:
        return cfg.threshold, cfg.min_words
    shipped = shipped or StyleClassifier(weights)
    return (
        cfg.threshold if cfg.threshold is not None else shipped.threshold,
        cfg.min_words if cfg.min_words is not None else shipped.min_words,
    )


class StyleJudge(Filter):
    """Rejects a response of at least `min_words` words whose style score exceeds the threshold (`style.assistant`)."""

    name = "style"

    def __init__(self, cfg: StyleStep | None = None, weights: Path | None = None) -> None:
        super().__init__()
        self.threshold, self.min_words = _judge_settings(cfg or StyleStep(), weights)

    def check(self, conv: Conversation) -> str | None:
        scores = conv.meta.get("scores", {})
        if SCORE_KEY not in scores:
            raise KeyError(f"record {conv.source_index} has no scores[{SCORE_KEY!r}]: StyleScore must run first")
        score = scores[SCORE_KEY]
        if score is None or not math.isfinite(score):
            return None  # not scored: the judge abstains, see the module docstring
        return (
            "assistant" if judged_assistant_style(last_response(conv), score, self.threshold, self.min_words) else None
        )

    def report(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "minWords": self.min_words}
