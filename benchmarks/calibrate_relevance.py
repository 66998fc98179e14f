"""Calibrate the relevance judges (off-topic, prompt echo) and print what they catch on both halves.

    SFT_SHARED_DATA=../shared/data .venv/bin/python benchmarks/calibrate_relevance.py [--write]

Data (sft_trainer.curation.noise): clean LIMA, and one planted copy per LIMA
record of each kind: `off_topic` (the response of another LIMA prompt) and
`prompt_echo` (the prompt copied, reordered or wrapped in a template).
Legitimate rewriting tasks, whose answer should resemble their input, come
from raw Alpaca (instructions that start with rewrite, paraphrase, correct,
edit, ...): the echo threshold must spare them too.

Thresholds are chosen on the calibration half only (`calibration_half`):
- off-topic, per embedder: the highest cosine that flags at most 0.5% of
  clean calibration LIMA;
- echo: the lowest score that flags at most 0.5% of clean calibration LIMA
  and at most 0.5% of the calibration half of the Alpaca rewriting tasks.
Then recall per kind, the false-positive rates and the off-topic AUC are
printed for the calibration half AND the held-out half (the one the tests
score). `--write` stores the thresholds and figures in
trainer_image/sft_trainer/resources/calibration/relevance.json.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "trainer_image"))

from sft_trainer.config.curation import RelevanceStep  # noqa: E402
from sft_trainer.curation.noise import calibration_half, load_alpaca, load_lima, plant  # noqa: E402
from sft_trainer.curation.relevance import RELEVANCE, RelevanceScores, echo_score  # noqa: E402
from sft_trainer.curation.text import last_response, last_user_turn  # noqa: E402
from sft_trainer.formats import Conversation  # noqa: E402
from sft_trainer.models.embedder import MINILM, STATIC, Embedder, load_embedder  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "trainer_image/sft_trainer/resources/calibration/relevance.json"
MAX_FP = 0.005
SEED = 0
REWRITING = re.compile(
    r"\s*(rewrite|re-write|paraphrase|rephrase|reword|correct|edit|revise|proofread|fix|change|convert|transform)\b",
    re.I,
)


class CachedEmbedder(Embedder):
    """An embedder that encodes each distinct text once (planted copies reuse the clean texts)."""

    def __init__(self, inner: Embedder) -> None:
        self.inner, self.name, self.dim, self.max_tokens = inner, inner.name, inner.dim, inner.max_tokens
        self.cache: dict[str, np.ndarray] = {}

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        new = list(dict.fromkeys(t for t in texts if t not in self.cache))
        if new:
            self.cache.update(zip(new, self.inner.encode(new), strict=True))
        return np.stack([self.cache[t] for t in texts]) if texts else np.zeros((0, self.dim), np.float32)

    def _embed(self, texts: list[str]) -> np.ndarray:  # pragma: no cover - encode is overridden
        raise NotImplementedError


def sets(half: bool) -> dict[str, list[Conversation]]:
    lima = [c for c in load_lima() if calibration_half(c) == half]
    rng = random.Random(SEED)
    rewriting = [c for c in load_alpaca() if calibration_half(c) == half and REWRITING.match(c.messages[0].content)]
    return {
        "clean": lima,
        "off_topic": plant("off_topic", lima, rng),
        "prompt_echo": plant("prompt_echo", lima, rng),
        "rewriting": rewriting,
    }


def echo_scores(convs: list[Conversation]) -> np.ndarray:
    """The echo score of every record (NaN where undefined): lexical, no model needed."""
    values = [echo_score(last_user_turn(c), last_response(c)) for c in convs]
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def relevance_scores(step: RelevanceScores, convs: list[Conversation]) -> np.ndarray:
    """The prompt-response cosine the real step writes (NaN where None)."""
    for conv in convs:
        conv.meta.pop("scores", None)
    step(convs)
    values = [c.meta["scores"][RELEVANCE] for c in convs]
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def auc(negatives: np.ndarray, positives: np.ndarray) -> float:
    """P(a positive scores lower than a negative): off-topic answers have the LOWER cosine."""
    neg, pos = negatives[~np.isnan(negatives)], positives[~np.isnan(positives)]
    lower = (pos[:, None] < neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
    return float(lower)


def low_threshold(clean: np.ndarray) -> float:
    """The highest t such that `score < t` flags at most MAX_FP of `clean`."""
    values = np.sort(clean[~np.isnan(clean)])
    return float(values[int(MAX_FP * len(values))])


def high_threshold(*cleans: np.ndarray) -> float:
    """The lowest t (4 decimals) such that `score >= t` flags at most MAX_FP of each clean set."""
    t = 0.0
    for clean in cleans:
        values = np.sort(clean[~np.isnan(clean)])[::-1]
        t = max(t, float(values[int(MAX_FP * len(values))]) + 1e-4)
    return round(t, 4)


def rate(flags: np.ndarray) -> float:
    return round(float(flags.mean()), 4) if len(flags) else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help=f"write {OUT.relative_to(OUT.parents[4])}")
    parser.add_argument("--models", nargs="+", default=[MINILM, STATIC])
    args = parser.parse_args()

    halves = {"calibration": sets(True), "held-out": sets(False)}
    echo = {h: {k: echo_scores(v) for k, v in s.items()} for h, s in halves.items()}
    echo_t = high_threshold(echo["calibration"]["clean"], echo["calibration"]["rewriting"])
    result: dict[str, object] = {"off_topic_threshold": {}, "echo_threshold": echo_t, "figures": {}}
    figures: dict[str, object] = result["figures"]  # type: ignore[assignment]
    for model in args.models:
        step = RelevanceScores(RelevanceStep(model=model), CachedEmbedder(load_embedder(model)))
        started = time.perf_counter()
        rel = {h: {k: relevance_scores(step, v) for k, v in s.items() if k != "rewriting"} for h, s in halves.items()}
        seconds = time.perf_counter() - started
        off_t = round(low_threshold(rel["calibration"]["clean"]), 4)
        result["off_topic_threshold"][model] = off_t  # type: ignore[index]
        print(
            f"\n== {model}: off_topic below cosine {off_t}, prompt_echo at echo >= {echo_t} ({seconds:.0f} s to score)"
        )
        print(
            f"{'half':<12} {'AUC':>6} {'off_topic':>10} {'echo':>6} {'FP off':>7} {'FP echo':>8} {'FP any':>7} {'FP echo rewriting':>18}"
        )
        per_model: dict[str, object] = {}
        for half in halves:
            r, e = rel[half], echo[half]
            fp_off = r["clean"] < off_t
            fp_echo = e["clean"] >= echo_t
            row = {
                "auc_off_topic": round(auc(r["clean"], r["off_topic"]), 4),
                "recall_off_topic": rate(r["off_topic"] < off_t),
                "recall_prompt_echo": rate(e["prompt_echo"] >= echo_t),
                "fp_off_topic_clean_lima": rate(fp_off),
                "fp_echo_clean_lima": rate(fp_echo),
                "fp_any_clean_lima": rate(fp_off | fp_echo),
                "fp_echo_alpaca_rewriting": rate(e["rewriting"] >= echo_t),
                "records": {k: len(v) for k, v in halves[half].items()},
            }
            per_model[half] = row
            print(
                f"{half:<12} {row['auc_off_topic']:6.4f} {row['recall_off_topic']:10.3f} {row['recall_prompt_echo']:6.3f} "
                f"{row['fp_off_topic_clean_lima']:7.4f} {row['fp_echo_clean_lima']:8.4f} {row['fp_any_clean_lima']:7.4f} "
                f"{row['fp_echo_alpaca_rewriting']:18.4f}"
            )
        figures[model] = per_model
    if args.write:
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"\nwrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
