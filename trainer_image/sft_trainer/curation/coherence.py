"""Coherence: reject responses that are not fluent language (`coherence.incoherent`).

Word salad, garbled or machine-mangled text is text a language model cannot
predict: its per-token perplexity is many times that of a fluent answer.
The judge reads the scorer's `cond_ppl` (perplexity of the response given its
prompt) rather than the bare `ppl`, because the prompt is what makes unusual
but fluent answers predictable: a translation asked for in French, a code
block after a coding question, a list of names after "list ...". Perplexity
is a per-token mean, so it does not grow with length; only answers too short
to measure (fewer than `MIN_WORDS` words, where one rare name decides the
mean) are not judged.

Perplexity alone cannot tell word salad from fluent text the small LM finds
hard: LIMA's writing prompts ("in only 26 words, going down the alphabet,
write a murder", a story without the letter "a", poems) reach 120-220, as
high as a short salad. So above a floor the judge asks a second question:
does the text's word order matter to the LM? The scorer shuffles the words
of each line of the response's window and measures `cond_ppl` again
(`lm_scores.order_gains`); fluent text, however unusual, becomes several
times harder to predict (calibration clean answers above the floor: a gain
of 1.9 to 38, median 14.6), while text whose order carries nothing
barely moves (word salad: 0.5-1.8, median 1.1). Incoherent = `cond_ppl` above
`max_perplexity` AND `order_gain` below `min_order_gain`. The floor is the
clean calibration 90th percentile (52.0: the order test costs one more LM
pass for about a tenth of the records, and all 25 planted calibration salads
are above it); the bound flags at most 0.5% of the 521 clean calibration
answers and sits midway (log scale) between that clean edge (3.80) and the
highest salad gain (1.84): 2.642 (`benchmarks/calibrate_scorer.py`).
Measured: word-salad recall 1.00 / 0.96 (25 per calibration / held-out
half), clean LIMA flagged 2/521 and 1/508, and 0 of 10 code answers, 8
non-English answers (Chinese, Spanish, German, French) and 10 short
answers. With perplexity alone (above 168.4, calibrated the same way):
recall 0.96 / 0.92, clean 1/521 and 5/508. A response above the floor
whose order cannot be tested (no line with two words, such as Chinese) is
judged like one without the LM.

A record
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
    """`coherence.incoherent`: the response's prompt-conditioned perplexity is above the threshold and shuffling its
    words barely raises it (its word order carries nothing)."""

    name = "coherence"

    def __init__(self, config: CoherenceStep, calibrated_scorer: bool = True) -> None:
        """`calibrated_scorer`: the scorer is the packaged model at its default windows (`lm_scores.default_scorer`),
        the one the shipped `max_cond_ppl` was calibrated on; another model's perplexities are on another scale, so
        without a configured `max_perplexity` the judge reads the n-gram fluency instead."""
        super().__init__()
        self.reads_lm = calibrated_scorer or config.max_perplexity is not None
        shipped = calibration()["coherence"]
        self.max_perplexity = config.max_perplexity if config.max_perplexity is not None else shipped["max_cond_ppl"]
        self.min_order_gain = config.min_order_gain if config.min_order_gain is not None else shipped["min_order_gain"]
        self.min_fluency = (
            config.min_fluency if config.min_fluency is not None else fluency_calibration()["coherence"]["min_fluency"]
        )

    @property
    def order_check_above(self) -> float | None:
        """The `cond_ppl` above which the scorer must measure `order_gain` for this judge (None: it reads no LM)."""
        return self.max_perplexity if self.reads_lm else None

    def check(self, conv: Conversation) -> str | None:
        scores = conv.meta.get("scores", {})
        if len(last_response(conv).split()) < MIN_WORDS:
            return None
        cond_ppl = scores.get("cond_ppl") if self.reads_lm else None
        if cond_ppl is not None:
            if cond_ppl <= self.max_perplexity:
                return None
            order_gain = scores.get("order_gain")
            if order_gain is not None:
                return "incoherent" if order_gain < self.min_order_gain else None
        # No LM verdict (not scored, or its word order could not be tested): the n-gram fluency decides.
        fluency = scores.get("fluency")
        return "incoherent" if fluency is not None and fluency < self.min_fluency else None
