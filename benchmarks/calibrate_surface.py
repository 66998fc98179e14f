"""Calibrate the surface judges (junk, loops, Gopher's repetition statistics) and measure them with the arithmetic
checker.

    SFT_SHARED_DATA=../shared/data .venv/bin/python benchmarks/calibrate_surface.py [--write] [--alpaca]

Bounds are fitted on clean text that no test scores: the calibration half
(`noise.calibration_half`) of LIMA's human answers and prompts and of four
chat models' AlpacaEval answers (clean of encoding junk and decoding loops
whatever their style), and every human OpenAssistant message (whose weekly
plans repeat lines and 5-grams as the others do not). Each bound is the
largest value that text shows, never below a floor: what people legitimately
write needs, or for Gopher's statistics Gopher's own bounds (duplicated lines
0.3, top 2-gram 0.2, duplicated 5-grams 0.2). Then, on both halves, it
prints the recall of each noise kind this family owns (ood_junk,
repetition_loop, wrong_arithmetic) and the share of clean LIMA the surface
judges (validation, repetition, artifacts, junk, facts) stop, by reason. `--write` stores the bounds and the
figures in trainer_image/sft_trainer/resources/calibration/surface.json;
`--alpaca` also counts the raw Alpaca records the arithmetic checker flags.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from collections import Counter
from pathlib import Path

import regex
from curation_corpora import oasst_human_texts
from ftfy.badness import badness

from sft_trainer.config import CurationConfig
from sft_trainer.curation import noise
from sft_trainer.curation.artifacts import Artifacts
from sft_trainer.curation.base import Filter
from sft_trainer.curation.facts import Facts
from sft_trainer.curation.junk import Junk, JunkBounds, densest_window
from sft_trainer.curation.repetition import MIN_LINES as MIN_PROSE_LINES
from sft_trainer.curation.repetition import MIN_WORDS as MIN_PROSE_WORDS
from sft_trainer.curation.repetition import (
    NGRAM,
    Repetition,
    duplicate_line_fraction,
    duplicate_ngram_fraction,
    longest_sentence_loop,
    measured_prose,
    top_ngram_bounds,
    top_ngram_share,
)
from sft_trainer.curation.validation import Validation
from sft_trainer.formats import Conversation

OUT = (
    Path(__file__).resolve().parents[1] / "trainer_image" / "sft_trainer" / "resources" / "calibration" / "surface.json"
)
SEED = 0
WINDOW = 64
"""Characters in which a flood is counted: about one line of text."""
# Floors: what clean text may always hold, whatever the sample showed.
FLOORS = {"max_mojibake": 0, "max_replacement_chars": 1, "max_invisible_run": 2, "max_odd_chars": 5}
MIN_SENTENCE_REPEATS = 2
"""A sentence said twice in a row can be emphasis; three times never was, in any clean sample."""
GOPHER_DUPLICATE_NGRAMS = 0.2
"""The floor of the duplicated-5-gram bound: Gopher's web-document bound (0.15), as loosened for short answers."""
GOPHER_DUPLICATE_LINES = 0.3
"""The floor of the duplicated-line bound: Gopher's."""
GOPHER_TOP_NGRAM = 0.2
"""The floor of the top-2-gram bound: Gopher's."""
ARITHMETIC_RECORDS = 600
KINDS = ("ood_junk", "repetition_loop", "wrong_arithmetic")
INVISIBLE = regex.compile("[\u200b-\u200f\u2060-\u2064\ufeff]+")


def clean_texts(convs: list[Conversation]) -> list[str]:
    return [m.content for c in convs for m in c.messages]


def fit(clean: list[str]) -> dict:
    """Each bound = the largest value in clean calibration text, at least its floor."""
    stats = {
        "max_mojibake": max(badness(t) for t in clean),
        "max_replacement_chars": max(t.count("\ufffd") for t in clean),
        "max_invisible_run": max((len(r) for t in clean for r in INVISIBLE.findall(t)), default=0),
        "max_odd_chars": max(densest_window(t, WINDOW)[0] for t in clean),
    }
    junk = {k: max(v, FLOORS[k]) for k, v in stats.items()} | {"window": WINDOW}
    repeats = max(MIN_SENTENCE_REPEATS, max(longest_sentence_loop(t) for t in clean))
    stats |= repetition_maxima(clean)
    repetition = {
        "max_sentence_repeats": repeats,
        "max_duplicate_line_fraction": upper_bound(stats["max_duplicate_line_fraction"], GOPHER_DUPLICATE_LINES),
        "max_duplicate_ngram_fraction": upper_bound(stats["max_duplicate_ngram_fraction"], GOPHER_DUPLICATE_NGRAMS),
        "max_top_ngram_share": upper_bound(stats["max_top_ngram_share"], GOPHER_TOP_NGRAM),
    }
    return {"junk": junk, "repetition": repetition, "clean_maxima": stats}


def upper_bound(largest: float, floor: float) -> float:
    """`largest` rounded up to 4 decimals (so the text that showed it still passes), at least `floor`."""
    return max(math.ceil(largest * 10_000) / 10_000, floor)


def repetition_maxima(clean: list[str]) -> dict[str, float]:
    """The largest value of each Gopher statistic over `clean`, over its slack, as `Repetition.check_text` reads them
    (one prose measurement per text; a text with too little prose is not judged)."""
    offsets = top_ngram_bounds(0.0)  # each n-gram length's bound less the 2-gram's
    lines_max = ngrams_max = top_max = 0.0
    for text in clean:
        lines, words, slack = measured_prose(text)
        if len(words) < MIN_PROSE_WORDS:
            continue
        if len(lines) >= MIN_PROSE_LINES:
            lines_max = max(lines_max, duplicate_line_fraction(lines) / slack)
        ngrams_max = max(ngrams_max, duplicate_ngram_fraction(words, NGRAM) / slack)
        top_max = max(top_max, *(top_ngram_share(words, n) / slack - offset for n, offset in offsets.items()))
    return {
        "max_duplicate_line_fraction": lines_max,
        "max_duplicate_ngram_fraction": ngrams_max,
        "max_top_ngram_share": top_max,
    }


def judges(bounds: dict) -> dict[str, Filter]:
    cfg = CurationConfig()
    return {
        "validation": Validation(
            reject_placeholders=cfg.validation.reject_placeholders,
            reject_unseeable_inputs=cfg.validation.reject_unseeable_inputs,
        ),
        "repetition": Repetition(
            max_duplicate_line_fraction=bounds["repetition"]["max_duplicate_line_fraction"],
            max_duplicate_ngram_fraction=bounds["repetition"]["max_duplicate_ngram_fraction"],
            max_top_ngram_share=bounds["repetition"]["max_top_ngram_share"],
            exempt_code_and_lists=cfg.repetition.exempt_code_and_lists,
            max_sentence_repeats=bounds["repetition"]["max_sentence_repeats"],
        ),
        "artifacts": Artifacts(),
        "junk": Junk(JunkBounds(**bounds["junk"])),
        "facts": Facts(cfg.facts),
    }


OWNER = {"ood_junk": "junk", "repetition_loop": "repetition", "wrong_arithmetic": "facts"}


def reasons(conv: Conversation, steps: dict[str, Filter]) -> list[str]:
    return [step.reason(code) for step in steps.values() if (code := step.check(conv))]


def measure(half: bool, lima: list[Conversation], chat: list[Conversation], steps: dict[str, Filter]) -> dict:
    clean = [c for c in lima if noise.calibration_half(c) == half]
    rng = random.Random(SEED)
    planted = {kind: noise.plant(kind, lima, rng, chat_answers=chat) for kind in KINDS if kind != "wrong_arithmetic"}
    arithmetic_right = noise.arithmetic_records(ARITHMETIC_RECORDS, random.Random(SEED + 1))
    planted["wrong_arithmetic"] = noise.plant("wrong_arithmetic", arithmetic_right, random.Random(SEED + 2))
    out: dict = {"half": "calibration" if half else "held_out", "recall": {}, "recall_by_detail": {}}
    for kind, convs in planted.items():
        convs = [c for c in convs if noise.calibration_half(c) == half]
        verdicts = [reasons(c, steps) for c in convs]
        own = OWNER[kind]
        out["recall"][kind] = {
            "n": len(convs),
            "any_surface_judge": round(sum(bool(v) for v in verdicts) / len(convs), 3),
            own: round(sum(any(r.startswith(own + ".") for r in v) for v in verdicts) / len(convs), 3),
        }
        details = Counter(c.meta.get("planted_detail", "-") for c in convs)
        caught = Counter(c.meta.get("planted_detail", "-") for c, v in zip(convs, verdicts, strict=True) if v)
        if len(details) > 1:
            out["recall_by_detail"][kind] = {d: round(caught[d] / n, 3) for d, n in sorted(details.items())}
    right = [c for c in arithmetic_right if noise.calibration_half(c) == half]
    out["correct_arithmetic_flagged"] = sum(bool(steps["facts"].check(c)) for c in right)
    flagged = {c.source_index: reasons(c, steps) for c in clean}
    flagged = {i: r for i, r in flagged.items() if r}
    out["lima"] = {
        "n": len(clean),
        "flagged": len(flagged),
        "fp_rate": round(len(flagged) / len(clean), 4),
        "by_reason": dict(Counter(r[0] for r in flagged.values())),
        "records": {str(i): r for i, r in sorted(flagged.items())},
    }
    return out


def alpaca_arithmetic(facts: Facts) -> dict:
    flagged = [c for c in noise.load_alpaca() if facts.check(c)]
    return {
        "flagged": len(flagged),
        "examples": [
            {"source_index": c.source_index, "prompt": c.messages[0].content, "answer": c.messages[-1].content[:200]}
            for c in flagged
        ],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help=f"store the bounds and figures in {OUT}")
    parser.add_argument(
        "--alpaca", action="store_true", help="count the raw Alpaca records the arithmetic checker flags"
    )
    args = parser.parse_args()
    lima, chat = noise.load_lima(), noise.load_chat_answers()
    calibration_clean = [c for c in lima + chat if noise.calibration_half(c)]
    bounds = fit(clean_texts(calibration_clean) + oasst_human_texts(replies_only=False))
    print("bounds (clean text no test scores):", json.dumps({k: bounds[k] for k in ("junk", "repetition")}))
    print("clean maxima:", json.dumps(bounds["clean_maxima"]))
    steps = judges(bounds)
    figures = [measure(half, lima, chat, steps) for half in (True, False)]
    for fig in figures:
        print(f"\n== {fig['half']} half")
        for kind, rec in fig["recall"].items():
            print(f"  recall {kind:18s} n={rec['n']:4d}  " + "  ".join(f"{k}={v}" for k, v in rec.items() if k != "n"))
        for kind, detail in fig["recall_by_detail"].items():
            print(f"    {kind} by detail: {detail}")
        print(f"  correct arithmetic flagged: {fig['correct_arithmetic_flagged']}")
        lima_fig = fig["lima"]
        print(
            f"  clean LIMA flagged: {lima_fig['flagged']}/{lima_fig['n']} = {lima_fig['fp_rate']:.2%}  {lima_fig['by_reason']}"
        )
        print(f"    records: {lima_fig['records']}")
    result = {k: bounds[k] for k in ("junk", "repetition")} | {"figures": figures}
    if args.alpaca:
        result["alpaca_arithmetic"] = alpaca_arithmetic(steps["facts"])  # type: ignore[arg-type]
        print(f"\nraw Alpaca flagged facts.wrong_arithmetic: {result['alpaca_arithmetic']['flagged']}")
        for ex in result["alpaca_arithmetic"]["examples"]:
            print(f"  #{ex['source_index']}: {ex['prompt']!r} -> {ex['answer']!r}")
    if args.write:
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"\nwrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
