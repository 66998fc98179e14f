"""Calibrate the judges that read the scorer LM (coherence, completeness) and report what they catch.

    .venv/bin/python benchmarks/calibrate_scorer.py [--write] [--clean N] [--per-kind N] [--cache FILE]
    .venv/bin/python benchmarks/calibrate_scorer.py --speed

Clean LIMA answers and planted noise (`sft_trainer.curation.noise`: word_salad,
truncated, off_topic, prompt_echo) of the calibration half are scored with the
packaged SmolLM2-135M-Instruct at the default windows; each threshold flags
at most TARGET_FP of the clean calibration answers and sits midway (log scale)
between them and the nearest planted record of the kind it targets beyond them.
Coherence has two: the perplexity floor above which a response's word order is
tested (the top ORDER_TEST_SHARE of clean answers) and the order gain
(`lm_scores.order_gains`) under which it is word salad; the bound sits between
the clean and the salad gains above the floor. The
figures (recall per noise kind, false positives on clean LIMA) are printed for
the calibration AND the held-out half (which no threshold saw), plus what
`ifd`, `eos_prob` and the perplexities do on off_topic and prompt_echo, and
the false positives on clean code answers (GPTeacher codegen), on short GPT-4 Alpaca
answers (6-30 words) and on the few clean non-English answers of the shared data. --write stores the thresholds
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
from sft_trainer.curation.lm_scores import exchange, order_gains
from sft_trainer.formats import Conversation, Message
from sft_trainer.models.scorer import ScorerLM, significant

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "trainer_image" / "sft_trainer" / "resources" / "calibration" / "scorer.json"
MODEL = REPO / ".cache" / "models" / "smollm2-135m-instruct"
KINDS = ("word_salad", "truncated", "off_topic", "prompt_echo")
JUDGED = {"word_salad": "coherence", "truncated": "completeness"}
TARGET_FP = {"coherence": 0.005, "completeness": 0.01}
"""Most of the clean calibration half each judge may flag (the project's budget over all judges is 3%).
Completeness gets 1%: the answers it can only judge by eos_prob (open endings, 4-6% of LIMA) overlap
the truncated ones (a poem line or a last list item without a full stop), and at 0.5% its recall on
truncated falls to 0.75."""
ORDER_TEST_SHARE = 0.1
"""Share of clean calibration answers above the coherence floor, whose word order is tested (one more LM pass each):
the floor is the clean 90th percentile of `cond_ppl`, below the planted word salad."""
SEED = 0


# -- data ----------------------------------------------------------------------


def shuffled(records: Sequence[Conversation], seed: str) -> list[Conversation]:
    """A seeded shuffle: taking its first k gives the same records whatever k (a smaller rerun reuses the cache)."""
    out = list(records)
    random.Random(seed).shuffle(out)
    return out


def half_sets(n_clean: int, per_kind: int, per_relevance_kind: int) -> dict[str, list[Conversation]]:
    """For each half: up to n_clean clean LIMA records, per_kind planted copies of the judged kinds, and
    per_relevance_kind of off_topic and prompt_echo (only described here: the embedder's judges decide on them)."""
    lima = noise.load_lima()
    out: dict[str, list[Conversation]] = {}
    for half, wanted in (("calibration", True), ("held_out", False)):
        clean = [c for c in lima if noise.calibration_half(c) == wanted]
        records = shuffled(clean, f"{SEED}-clean-{half}")[:n_clean]
        for kind in KINDS:
            planted = noise.plant(kind, clean, random.Random(f"{SEED}-{kind}-{half}"))
            wanted_n = per_kind if kind in JUDGED else per_relevance_kind
            records += shuffled(planted, f"{SEED}-pick-{kind}-{half}")[:wanted_n]
        out[half] = records
    return out


def open_ended(records: Sequence[Conversation]) -> list[Conversation]:
    """The records only the LM part of completeness judges: an open ending and no structural cue."""
    texts = [noise._last_response(c) for c in records]
    return [c for c, t in zip(records, texts, strict=True) if ends_open(t) and not structurally_cut(t)]


def clean_half(half: str) -> list[Conversation]:
    return [c for c in noise.load_lima() if noise.calibration_half(c) == (half == "calibration")]


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


def short_answers(n: int) -> list[Conversation]:
    """n GPT-4 Alpaca answers of 6-30 words: short answers, where a perplexity rests on few tokens."""
    rows = json.loads((noise.shared_data_dir() / "alpaca_gpt4_en_demo_llamafactory.json").read_text(encoding="utf-8"))
    rows = [r for r in rows if 6 <= len(r["output"].split()) <= 30]
    picked = random.Random(SEED).sample(rows, min(n, len(rows)))
    return [
        Conversation(
            [Message("user", (r["instruction"] + "\n\n" + r["input"]).strip()), Message("assistant", r["output"])], i
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


def score_all(
    scorer: ScorerLM, convs: Sequence[Conversation], cache: Path, chunk: int = 16, with_order: bool = True
) -> None:
    """Put scores into each conv.meta["scores"], from the cache or the model (cached as they come); `with_order`
    False leaves out the order test's second pass (a reader of `cond_ppl` alone pays half)."""
    known: dict[str, dict[str, Any]] = {}
    if cache.exists():
        for line in cache.read_text(encoding="utf-8").splitlines():
            entry = json.loads(line)
            known[entry["key"]] = entry["scores"]
    todo = [c for c in convs if key(c, scorer) not in known]
    _score_missing(todo, known, cache, lambda part: [s.as_dict() for s in scorer.score([exchange(c) for c in part])],
                   lambda c: key(c, scorer), chunk)  # fmt: skip
    for conv in convs:
        conv.meta["scores"] = dict(known[key(conv, scorer)])
    if not with_order:
        return
    # The order test (coherence), measured on every record with a perplexity so that any floor can be calibrated.
    testable = [c for c in convs if c.meta["scores"]["cond_ppl"] is not None]
    todo = [c for c in testable if "order:" + key(c, scorer) not in known]
    _score_missing(todo, known, cache, lambda part: [{"order_gain": g} for g in order_gains(scorer, part)],
                   lambda c: "order:" + key(c, scorer), chunk)  # fmt: skip
    for conv in testable:
        conv.meta["scores"].update(known["order:" + key(conv, scorer)])


def _score_missing(
    todo: Sequence[Conversation],
    known: dict[str, dict[str, Any]],
    cache: Path,
    measure: Callable[[Sequence[Conversation]], list[dict[str, Any]]],
    key_of: Callable[[Conversation], str],
    chunk: int,
) -> None:
    """Measure `todo` in chunks into `known` and append each result to the cache as it comes."""
    started = time.monotonic()
    with cache.open("a", encoding="utf-8") as out:
        for i in range(0, len(todo), chunk):
            part = todo[i : i + chunk]
            for conv, scores in zip(part, measure(part), strict=True):
                known[key_of(conv)] = scores
                out.write(json.dumps({"key": key_of(conv), "scores": scores}) + "\n")
            out.flush()
            done = i + len(part)
            rate = done / (time.monotonic() - started)
            print(f"  scored {done}/{len(todo)} ({rate:.2f} records/s)", file=sys.stderr, flush=True)


# -- thresholds and figures ----------------------------------------------------


def kind(conv: Conversation) -> str:
    return conv.meta.get("planted", "clean")


def coherence_signal(conv: Conversation) -> float | None:
    return conv.meta["scores"].get("cond_ppl")


def between(clean_edge: float, planted: Sequence[float], noise_above: bool) -> float:
    """The threshold: midway in log scale between the clean edge (the most extreme clean value the
    false-positive budget allows) and the nearest planted value beyond it (the widest margin on both
    sides, as held-out data will spread); else the clean edge itself. A planted value on the clean side
    of the edge is missed whatever the threshold, so it sets no margin: with the whole calibration half,
    one word salad the LM finds hard even unshuffled sits among the clean perplexities and would pin the
    threshold to the edge."""
    beyond = [v for v in planted if (v > clean_edge if noise_above else v < clean_edge)]
    if not beyond:
        return clean_edge
    nearest = min(beyond) if noise_above else max(beyond)
    return significant(math.sqrt(clean_edge * nearest))


def pick_coherence(clean: Sequence[Conversation], salad: Sequence[Conversation]) -> dict[str, float]:
    """The perplexity floor above which the order test runs (the clean value ORDER_TEST_SHARE from the top) and
    the order gain under which a response there is incoherent: between the clean gains (at most TARGET_FP of
    all clean answers under it) and the word salad's."""
    values = sorted(v for v in map(coherence_signal, clean) if v is not None)
    floor = significant(values[int((1 - ORDER_TEST_SHARE) * len(values))])
    clean_gains = sorted(order_gain(c) for c in clean if (coherence_signal(c) or 0) > floor and order_gain(c))
    allowed = int(TARGET_FP["coherence"] * len(values))
    clean_edge = clean_gains[allowed] if allowed < len(clean_gains) else max(clean_gains, default=1.0)
    salad_gains = [order_gain(c) for c in salad if (coherence_signal(c) or 0) > floor and order_gain(c)]
    return {"max_cond_ppl": floor, "min_order_gain": between(clean_edge, salad_gains, noise_above=False)}


def order_gain(conv: Conversation) -> float | None:
    return conv.meta["scores"].get("order_gain")


def open_eos(records: Sequence[Conversation]) -> list[float]:
    """eos_prob of the open-ended records (see `open_ended`), sorted."""
    return sorted(
        c.meta["scores"]["eos_prob"] for c in open_ended(records) if c.meta["scores"].get("eos_prob") is not None
    )


def completeness_fp(
    half: Sequence[Conversation], scored_open: Sequence[Conversation], threshold: float
) -> dict[str, float]:
    """Share of a whole clean half the completeness judge flags: structural flags (counted on every record)
    plus the open-ended share times the share of scored open-ended answers under the threshold. Open
    endings are 6% of LIMA, so they are all scored rather than a random sample that holds a handful."""
    structural = sum(structurally_cut(noise._last_response(c)) for c in half) / len(half)
    open_share = len(open_ended(half)) / len(half)
    eos = open_eos(scored_open)
    under = sum(e < threshold for e in eos) / len(eos) if eos else 0.0
    return {
        "rate": round(structural + open_share * under, 4),
        "structural": round(structural, 4),
        "open_share": round(open_share, 4),
        "open_flagged": f"{sum(e < threshold for e in eos)}/{len(eos)}",
    }


def pick_completeness(
    half: Sequence[Conversation], scored_open: Sequence[Conversation], truncated: Sequence[Conversation]
) -> float:
    """eos_prob threshold: the whole clean half flagged (structure + open endings under it) within
    TARGET_FP, placed between those clean answers and the truncated ones."""
    structural = sum(structurally_cut(noise._last_response(c)) for c in half) / len(half)
    open_share = len(open_ended(half)) / len(half)
    clean_eos = open_eos(scored_open)
    allowed = (
        int(max(0.0, TARGET_FP["completeness"] - structural) / open_share * len(clean_eos))
        if open_share
        else len(clean_eos)
    )
    clean_edge = clean_eos[allowed] if allowed < len(clean_eos) else 1.0
    return between(clean_edge, open_eos(truncated), noise_above=False)


def coherence_flags(conv: Conversation, thresholds: dict[str, float]) -> bool:
    """The judge's LM rule (`coherence.Coherence`): above the floor and an order gain under the bound."""
    value, gain = coherence_signal(conv), order_gain(conv)
    return (
        value is not None
        and value > thresholds["max_cond_ppl"]
        and gain is not None
        and gain < thresholds["min_order_gain"]
    )


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
    for batch_size in (32, 16, 8, 16, 32):  # there and back: the machine's load drifts during the run
        scorer = ScorerLM.load(str(MODEL), batch_size=batch_size)
        started = time.monotonic()
        scorer.score([exchange(c) for c in lima])
        elapsed = time.monotonic() - started
        print(f"batch {batch_size}: {n / elapsed:.2f} records/s ({n} LIMA records, {elapsed:.0f} s)")


# -- main ----------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="write resources/calibration/scorer.json")
    parser.add_argument(
        "--clean", type=int, default=521, help="clean LIMA answers per half (521: all of the calibration half)"
    )
    parser.add_argument("--per-kind", type=int, default=25, help="planted records per kind and half")
    parser.add_argument("--per-relevance-kind", type=int, default=15, help="off_topic and prompt_echo per half")
    parser.add_argument("--extra", type=int, default=10, help="clean code answers measured for false positives")
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
    sets = half_sets(args.clean, args.per_kind, args.per_relevance_kind)
    halves = {half: clean_half(half) for half in sets}
    opens = {half: open_ended(records) for half, records in halves.items()}
    extra = {
        "open_ended_calibration": opens["calibration"],
        "open_ended_held_out": opens["held_out"],
        "code": code_answers(args.extra),
        "non_english": non_english_answers(),
        "short": short_answers(args.extra),
    }
    for name, records in (*sets.items(), *extra.items()):
        print(f"scoring {name}: {len(records)} records", file=sys.stderr)
        score_all(scorer, records, args.cache)

    cal = sets["calibration"]
    clean_cal = [c for c in cal if kind(c) == "clean"]
    planted_cal = {name: [c for c in cal if kind(c) == name] for name in JUDGED}
    thresholds = {
        "coherence": pick_coherence(clean_cal, planted_cal["word_salad"]),
        "completeness": {
            "max_eos_prob": pick_completeness(halves["calibration"], opens["calibration"], planted_cal["truncated"])
        },
    }
    completeness = Completeness(CompletenessStep(max_eos_prob=thresholds["completeness"]["max_eos_prob"]))
    judges: dict[str, Callable[[Conversation], bool]] = {
        "coherence": lambda c: coherence_flags(c, thresholds["coherence"]),
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
        print(f"  clean flagged by either judge (sample): {either['clean']['rate']:.3f}")
        whole = completeness_fp(halves[half], opens[half], thresholds["completeness"]["max_eos_prob"])
        figures[half]["completeness_clean_whole_half"] = whole
        print(
            f"  completeness on the whole clean half ({len(halves[half])} records, every open ending scored): {whole}"
        )
        figures[half]["relevance_scores"] = relevance_figures(records)
        for score, row in figures[half]["relevance_scores"].items():
            print(f"  {score}: {json.dumps(row)}")
    for name, records in extra.items():
        if name.startswith("open_ended"):
            continue
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
            + f"--clean {args.clean} --per-kind {args.per_kind} --per-relevance-kind {args.per_relevance_kind} "
            + f"--extra {args.extra}",
        }
        OUT.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
