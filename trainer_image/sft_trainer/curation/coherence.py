"""Coherence: reject responses that are not fluent language (`coherence.incoherent`).

Word salad, garbled or machine-mangled text is text a language model cannot
predict: its per-token perplexity is many times that of any fluent answer.
The judge reads the scorer's `cond_ppl` (perplexity of the response given its
prompt) rather than the bare `ppl`, because the prompt is what makes unusual
but fluent answers predictable: a translation asked for in French, a code
block after a coding question, a list of names after "list ...". Perplexity
is a per-token mean, so it does not grow with length; only answers too short
to measure (fewer than `MIN_WORDS` words, where one rare name decides the
mean) are not judged.

The threshold flags at most 0.5% of the 521 clean LIMA answers of the
calibration half and sits midway (log scale) between the clean edge that
budget allows (123.9) and the lowest word salad above it (229.0)
(`benchmarks/calibrate_scorer.py`; shipped: 168.4). Measured: word-salad
recall 0.96 / 0.92 (25 per calibration / held-out half; the calibration
miss is an answer the LM finds hard even unshuffled: keyboard shortcuts
written as HTML entities, "⌘+&#x21E7;+3"), clean
LIMA flagged 1/521 and 5/508 (the clean tail overlaps the salad's lowest
values, and it is heavier in the held-out half), and 0 of 10 code answers, 8
non-English answers (Chinese, Spanish, German, French) and 10 short answers.
Until 2026-12 the threshold (179.6) came from 60 clean answers per half,
too few to place a 0.5% bound. A record
without `cond_ppl` (scorer skipped, empty response, non-finite score: see
`models.scorer`) is judged by the word-bigram `fluency` score instead
(`fluency.FluencyScores`: mean PMI of adjacent words, no LM) against
`min_fluency` from resources/calibration/fluency.json
(`benchmarks/train_fluency.py`); a record with neither score (too little
prose, another script, no annotator ran) is kept: no evidence, no verdict.
Measured without the LM (`benchmarks/train_fluency.py --per-kind 200`):
word-salad recall 0.865 / 0.900 (calibration, cross-fitted / held-out
half; 0.835 / 0.845 while every line with a parenthetical counted as code and
went unread, see `text.is_code_line`; 0.865 / 0.890 while table rows counted
as prose), clean LIMA flagged 0.4% / 0.2%.
"""

from __future__ import annotations

from ..config.curation import CoherenceStep
from ..formats import Conversation
from .base import Filter
from .fluency import fluency_calibration
from .lm_scores import calibration
from .text import last_response

MIN_WORDS = 6
"""Shorter answers are not judged: a few tokens give no stable perplexity."""


class Coherence(Filter):
    """`coherence.incoherent`: the response's prompt-conditioned perplexity is above the threshold."""

    name = "coherence"

    def __init__(self, config: CoherenceStep, calibrated_scorer: bool = True) -> None:
        """`calibrated_scorer`: the scorer is the packaged model at its default windows (`lm_scores.default_scorer`),
        the one the shipped `max_cond_ppl` was calibrated on; another model's perplexities are on another scale, so
        without a configured `max_perplexity` the judge reads the n-gram fluency instead."""
        super().__init__()
        self.reads_lm = calibrated_scorer or config.max_perplexity is not None
        self.max_perplexity = (
            config.max_perplexity if config.max_perplexity is not None else calibration()["coherence"]["max_cond_ppl"]
        )
        self.min_fluency = (
            config.min_fluency if config.min_fluency is not None else fluency_calibration()["coherence"]["min_fluency"]
        )

    def check(self, conv: Conversation) -> str | None:
        scores = conv.meta.get("scores", {})
        if len(last_response(conv).split()) < MIN_WORDS:
            return None
        cond_ppl = scores.get("cond_ppl") if self.reads_lm else None
        if cond_ppl is not None:
            return "incoherent" if cond_ppl > self.max_perplexity else None
        fluency = scores.get("fluency")
        return "incoherent" if fluency is not None and fluency < self.min_fluency else None
