"""Calibrate the judges that read the scorer LM (coherence, completeness) and report what they catch.

    .venv/bin/python benchmarks/calibrate_scorer.py [--write] [--clean N] [--per-kind N] [--cache FILE]
    .venv/bin/python benchmarks/calibrate_scorer.py --speed

Clean LIMA answers and planted noise (`sft_trainer.curation.noise`: word_salad,
truncated, off_topic, prompt_echo) of the calibration half are scored with the
packaged SmolLM2-135M-Instruct at the default windows; each threshold is the
one that flags at most TARGET_FP of the clean calibration answers. The
figures (recall per noise kind, false positives on clean LIMA) are printed for
the calibration AND the held-out half (which no threshold saw), plus what
`ifd`, `eos_prob` and the perplexities do on off_topic and prompt_echo, and
the false positives on clean code answers (GPTeacher codegen) and on the few
clean non-English answers of the shared data. --write stores the thresholds
and figures in trainer_image/sft_trainer/resources/calibration/scorer.json.

Scores are cached by content (FILE, default /tmp/calibrate_scorer_cache.jsonl):
a rerun only scores what it has not seen. --speed measures records/s per batch
size on LIMA records.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sft_trainer.config.curation import CompletenessStep, ScorerStep
from sft_trainer.curation import noise
from sft_trainer.curation.completeness import Completeness, ends_open, structurally_cut
from sft_trainer.curation.lm_scores import exchange
from sft_trainer.formats import Conversation, Message
from sft_trainer.models.scorer import ScorerLM

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "trainer_image" / "sft_trainer" / "resources" / "calibration" / "scorer.json"
MODEL = REPO / ".cache" / "models" / "smollm2-135m-instruct"
KINDS = ("word_salad", "truncated", "off_topic", "prompt_echo")
JUDGED = {"word_salad": "coherence", "truncated": "completeness"}
TARGET_FP = 0.005
"""Most clean calibration answers each judge may flag (the project's budget over all judges is 3%)."""
SEED = 0


# -- data ----------------------------------------------------------------------


def shuffled(records: Sequence[Conversation], seed: str) -> list[Conversation]:
    """A seeded shuffle: taking its first k gives the same records whatever k (a smaller rerun reuses the cache)."""
    out = list(records)
    random.Random(seed).shuffle(out)
    return out


def half_sets(n_clean: int, per_kind: int) -> dict[str, list[Conversation]]:
    """For each half: up to n_clean clean LIMA records plus up to per_kind planted copies of each kind."""
    lima = noise.load_lima()
    out: dict[str, list[Conversation]] = {}
    for half, wanted in (("calibration", True), ("held_out", False)):
        clean = [c for c in lima if noise.calibration_half(c) == wanted]
        records = shuffled(clean, f"{SEED}-clean-{half}")[:n_clean]
        for kind in KINDS:
            planted = noise.plant(kind, clean, random.Random(f"{SEED}-{kind}-{half}"))
            records += shuffled(planted, f"{SEED}-pick-{kind}-{half}")[:per_kind]
        out[half] = records
    return out


def non_english_answers() -> list[Conversation]:
    """The clean non-English answers of the shared data (LIMA, AlpacaEval): few, all measured, none tuned on."""
    pool = noise.load_lima() + noise.load_chat_answers(models=("gpt4", "claude-2", "gpt-3.5-turbo-0301"))
    latin = {
        "es": "el la los las de que y en un una por con para es",
        "fr": "le la les et des un une est pour dans que",
    }
    latin |= {"de": "der die das und ist nicht ein eine mit zu den von"}
    stop = {lang: set(words.split()) for lang, words in latin.items()}
    out, seen = [], set()
    for conv in pool:
        text = noise._last_response(conv)
        letters = [ch for ch in text if ch.isalpha()]
        words = re.findall(r"[a-zà-ÿ]+", text.lower())
        cjk = letters and sum(ord(ch) > 0x2E80 for ch in letters) / len(letters) > 0.3
        european = len(words) >= 20 and any(sum(w in s for w in words) / len(words) > 0.15 for s in stop.values())
        if (cjk or european) and text[:200] not in seen:
            seen.add(text[:200])
            out.append(conv)
    return out


def code_answers(n: int) -> list[Conversation]:
    """n GPTeacher codegen answers that hold a fenced code block (clean, GPT-4 written)."""
    rows = json.loads((noise.shared_data_dir() / "gpteacher_codegen_instruct.json").read_text(encoding="utf-8"))
    rows = [r for r in rows if "```" in r["response"]]
    picked = random.Random(SEED).sample(rows, min(n, len(rows)))
    return [
        Conversation(
            [Message("user", (r["instruction"] + "\n\n" + r["input"]).strip()), Message("assistant", r["response"])], i
        )
        for i, r in enumerate(picked)
    ]


# -- scoring -------------------------------------------------------------------


def key(conv: Conversation, scorer: ScorerLM) -> str:
    context, response = exchange(conv)
    blob = json.dumps(
        [[m.role, m.content] for m in context] + [response, scorer.max_prompt_tokens, scorer.max_response_tokens]
    )
    return hashlib.sha1(blob.encode("utf-8", "surrogatepass")).hexdigest()


def score_all(scorer: ScorerLM, convs: Sequence[Conversation], cache: Path, chunk: int = 16) -> None:
    """Put scores into each conv.meta["scores"], from the cache or the model (cached as they come)."""
    known: dict[str, dict[str, Any]] = {}
    if cache.exists():
        for line in cache.read_text(encoding="utf-8").splitlines():
            entry = json.loads(line)
            known[entry["key"]] = entry["scores"]
    todo = [c for c in convs if key(c, scorer) not in known]
    started = time.monotonic()
    with cache.open("a", encoding="utf-8") as out:
        for i in range(0, len(todo), chunk):
            part = todo[i : i + chunk]
            for conv, scores in zip(part, scorer.score([exchange(c) for c in part]), strict=True):
                known[key(conv, scorer)] = scores.as_dict()
                out.write(json.dumps({"key": key(conv, scorer), "scores": scores.as_dict()}) + "\n")
            out.flush()
            done = i + len(part)
            rate = done / (time.monotonic() - started)
            print(f"  scored {done}/{len(todo)} ({rate:.2f} records/s)", file=sys.stderr, flush=True)
    for conv in convs:
        conv.meta["scores"] = dict(known[key(conv, scorer)])


# -- thresholds and figures ----------------------------------------------------


def kind(conv: Conversation) -> str:
    return conv.meta.get("planted", "clean")


def coherence_signal(conv: Conversation) -> float | None:
    return conv.meta["scores"].get("cond_ppl")


def pick_coherence(clean: Sequence[Conversation]) -> float:
    """Highest cond_ppl kept: flags at most TARGET_FP of the clean answers."""
    values = sorted(v for v in map(coherence_signal, clean) if v is not None)
    allowed = int(TARGET_FP * len(values))
    return values[len(values) - 1 - allowed]


def pick_completeness(clean: Sequence[Conversation]) -> float:
    """eos_prob threshold: open-ended clean answers below it, plus the structural flags, stay within TARGET_FP."""
    texts = [noise._last_response(c) for c in clean]
    structural = sum(structurally_cut(t) for t in texts)
    allowed = max(0, int(TARGET_FP * len(clean)) - structural)
    open_eos = sorted(
        c.meta["scores"]["eos_prob"]
        for c, t in zip(clean, texts, strict=True)
        if not structurally_cut(t) and ends_open(t) and c.meta["scores"].get("eos_prob") is not None
    )
    return open_eos[allowed] if allowed < len(open_eos) else 1.0


def coherence_flags(conv: Conversation, threshold: float) -> bool:
    value = coherence_signal(conv)
    return value is not None and value > threshold


def rates(records: Sequence[Conversation], flagged: Callable[[Conversation], bool]) -> dict[str, dict[str, float]]:
    """Share flagged per kind (clean: the false-positive rate), with counts."""
    out: dict[str, dict[str, float]] = {}
    for name in ("clean", *KINDS):
        group = [c for c in records if kind(c) == name]
        if group:
            hits = sum(flagged(c) for c in group)
            out[name] = {"rate": round(hits / len(group), 4), "flagged": hits, "n": len(group)}
    return out


def auc(negatives: Sequence[float], positives: Sequence[float]) -> float:
    """P(a random positive scores above a random negative), ties half."""
    wins = sum((p > n) + 0.5 * (p == n) for p in positives for n in negatives)
    return round(wins / (len(positives) * len(negatives)), 3)


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2] if ordered else math.nan


def relevance_figures(records: Sequence[Conversation]) -> dict[str, dict[str, Any]]:
    """What each score does on off_topic and prompt_echo vs clean: medians and AUC (higher = more noise-like)."""
    out: dict[str, dict[str, Any]] = {}
    for score in ("ifd", "eos_prob", "cond_ppl", "ppl"):
        clean = [c.meta["scores"][score] for c in records if kind(c) == "clean" and c.meta["scores"][score] is not None]
        row: dict[str, Any] = {"clean_median": median(clean)}
        for name in ("off_topic", "prompt_echo"):
            vals = [c.meta["scores"][score] for c in records if kind(c) == name and c.meta["scores"][score] is not None]
            row[f"{name}_median"] = median(vals)
            row[f"{name}_auc_high"] = auc(clean, vals)
        out[score] = row
    return out


def report(title: str, table: dict[str, dict[str, float]]) -> None:
    cells = ", ".join(f"{k} {v['rate']:.3f} ({v['flagged']}/{v['n']})" for k, v in table.items())
    print(f"  {title}: {cells}")


# -- speed ---------------------------------------------------------------------


def speed(n: int) -> None:
    lima = [c for c in noise.load_lima() if not noise.calibration_half(c)][:n]
    for batch_size in (4, 8, 16):
        scorer = ScorerLM.load(str(MODEL), batch_size=batch_size)
        started = time.monotonic()
        scorer.score([exchange(c) for c in lima])
        elapsed = time.monotonic() - started
        print(f"batch {batch_size}: {n / elapsed:.2f} records/s ({n} LIMA records, {elapsed:.0f} s)")


# -- main ----------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="write resources/calibration/scorer.json")
    parser.add_argument("--clean", type=int, default=200, help="clean LIMA answers per half")
    parser.add_argument("--per-kind", type=int, default=50, help="planted records per kind and half")
    parser.add_argument("--extra", type=int, default=20, help="clean code answers measured for false positives")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/calibrate_scorer_cache.jsonl"))
    parser.add_argument("--speed", type=int, default=0, metavar="N", help="only measure records/s on N records")
    args = parser.parse_args(argv)
    if args.speed:
        speed(args.speed)
        return 0

    defaults = ScorerStep()
    scorer = ScorerLM.load(
        str(MODEL), max_prompt_tokens=defaults.max_prompt_tokens, max_response_tokens=defaults.max_response_tokens
    )
    sets = half_sets(args.clean, args.per_kind)
    extra = {"code": code_answers(args.extra), "non_english": non_english_answers()}
    for name, records in (*sets.items(), *extra.items()):
        print(f"scoring {name}: {len(records)} records", file=sys.stderr)
        score_all(scorer, records, args.cache)

    cal = sets["calibration"]
    clean_cal = [c for c in cal if kind(c) == "clean"]
    thresholds = {
        "coherence": {"max_cond_ppl": pick_coherence(clean_cal)},
        "completeness": {"max_eos_prob": pick_completeness(clean_cal)},
    }
    completeness = Completeness(CompletenessStep(max_eos_prob=thresholds["completeness"]["max_eos_prob"]))
    judges: dict[str, Callable[[Conversation], bool]] = {
        "coherence": lambda c: coherence_flags(c, thresholds["coherence"]["max_cond_ppl"]),
        "completeness": lambda c: completeness.check(c) is not None,
        "completeness_structural_only": lambda c: structurally_cut(noise._last_response(c)),
    }
    figures: dict[str, Any] = {"thresholds": thresholds}
    print(f"thresholds: {json.dumps(thresholds)}")
    for half, records in sets.items():
        print(f"{half} half ({len(records)} records):")
        figures[half] = {name: rates(records, flagged) for name, flagged in judges.items()}
        for name, table in figures[half].items():
            report(name, table)
        either = rates(records, lambda c: any(judges[j](c) for j in ("coherence", "completeness")))
        print(f"  clean flagged by either judge: {either['clean']['rate']:.3f}")
        figures[half]["relevance_scores"] = relevance_figures(records)
        for score, row in figures[half]["relevance_scores"].items():
            print(f"  {score}: {json.dumps(row)}")
    for name, records in extra.items():
        flagged = {j: sum(judges[j](c) for c in records) for j in ("coherence", "completeness")}
        figures[name] = {"n": len(records), "flagged": flagged}
        print(f"{name}: {len(records)} clean answers, flagged {flagged}")

    if args.write:
        OUT.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "model": "SmolLM2-135M-Instruct (packaged, fp32)",
            "windows": {
                "maxPromptTokens": defaults.max_prompt_tokens,
                "maxResponseTokens": defaults.max_response_tokens,
            },
            "target_false_positive_rate": TARGET_FP,
            "coherence": thresholds["coherence"],
            "completeness": thresholds["completeness"],
            "figures": figures,
            "command": "benchmarks/calibrate_scorer.py --write "
            + f"--clean {args.clean} --per-kind {args.per_kind} --extra {args.extra}",
        }
        OUT.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
