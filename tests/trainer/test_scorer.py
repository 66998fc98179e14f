"""The scorer LM and the judges that read it, with the real SmolLM2-135M-Instruct.

Every record here comes from LIMA's held-out half (`noise.calibration_half`
False): the thresholds shipped in resources/calibration/scorer.json were
calibrated on the other half by benchmarks/calibrate_scorer.py. Samples are
short answers, except the style blend's 60 long ones, so the module runs in about three minutes on 2 CPU cores.
"""

from __future__ import annotations

import copy
import json
import math
import random
from pathlib import Path

import pytest

from sft_trainer.config import CurationConfig
from sft_trainer.config.curation import BorderlineOnCpu, CoherenceStep, CompletenessStep, ScorerStep, StyleStep
from sft_trainer.curation import noise, style
from sft_trainer.curation.coherence import Coherence
from sft_trainer.curation.completeness import Completeness
from sft_trainer.curation.fluency import FluencyScores
from sft_trainer.curation.lm_scores import (
    BORDERLINE_NOTE,
    OTHER_SCORER_NOTE,
    SCORE_KEYS,
    BorderlineLmScores,
    LmScores,
    exchange,
    order_gains,
    skip_note,
)
from sft_trainer.curation.pipeline import build_steps, curate
from sft_trainer.curation.style import StyleClassifier, StyleJudge, StyleScore
from sft_trainer.formats import Conversation, Message
from sft_trainer.models.device import inference_device
from sft_trainer.models.scorer import FIELD, ScorerLM
from sft_trainer.runconfig import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]
SMOLLM2_DIR = REPO_ROOT / ".cache" / "models" / "smollm2-135m-instruct"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def scorer() -> ScorerLM:
    if not (SMOLLM2_DIR / "config.json").is_file():
        pytest.skip(f"SmolLM2 not converted at {SMOLLM2_DIR} (make model)")
    return ScorerLM.load(str(SMOLLM2_DIR))


@pytest.fixture(scope="module")
def held_out_short(shared_data: Path) -> list[Conversation]:
    """Single-turn held-out LIMA answers of 200-700 characters (cheap to score), in a seeded order."""
    lima = noise.load_lima(shared_data)
    short = [
        c
        for c in lima
        if not noise.calibration_half(c) and len(c.messages) == 2 and 200 <= len(noise._last_response(c)) <= 700
    ]
    random.Random(7).shuffle(short)
    return short


def scored(scorer: ScorerLM, convs: list[Conversation]) -> list[Conversation]:
    LmScores(ScorerStep(), scorer, order_check_above=Coherence(CoherenceStep()).order_check_above)(convs)
    return convs


def test_scores_are_sane_on_clean_answers_and_their_truncated_copies(scorer, held_out_short) -> None:
    clean = held_out_short[:6]
    truncated = noise.plant("truncated", clean, random.Random(3))
    scored(scorer, clean + truncated)
    for conv in clean + truncated:
        assert set(SCORE_KEYS) <= set(conv.meta["scores"])
        json.dumps(conv.meta["scores"], allow_nan=False)
    helped = sum(c.meta["scores"]["cond_ppl"] < c.meta["scores"]["ppl"] for c in clean)
    print(f"\nprompt lowers perplexity on {helped}/{len(clean)} clean answers")
    assert helped >= len(clean) - 1
    by_origin = {c.source_index: c for c in clean}
    for cut in truncated:
        original = by_origin[cut.meta["planted_from"]]
        assert cut.meta["scores"]["eos_prob"] < original.meta["scores"]["eos_prob"]
    assert all(0 < c.meta["scores"]["ifd"] < 1.6 for c in clean)


def test_judges_meet_the_recall_goal_on_held_out_noise(scorer, held_out_short) -> None:
    clean = held_out_short[6:14]
    salad = noise.plant("word_salad", held_out_short[14:19], random.Random(4))
    truncated = noise.plant("truncated", held_out_short[19:24], random.Random(5))
    scored(scorer, clean + salad + truncated)
    coherence, completeness = Coherence(CoherenceStep()), Completeness(CompletenessStep())
    salad_recall = sum(coherence.check(c) == "incoherent" for c in salad) / len(salad)
    cut_recall = sum(completeness.check(c) == "truncated" for c in truncated) / len(truncated)
    clean_flagged = sum(coherence.check(c) is not None or completeness.check(c) is not None for c in clean)
    print(
        f"\nword_salad recall {salad_recall:.2f}, truncated recall {cut_recall:.2f}, clean flagged {clean_flagged}/{len(clean)}"
    )
    assert salad_recall >= 0.8
    assert cut_recall >= 0.8
    assert clean_flagged <= 1


def test_shuffling_words_multiplies_the_perplexity_of_fluent_answers_not_of_word_salad(scorer, held_out_short) -> None:
    clean = held_out_short[24:34]
    salad = noise.plant("word_salad", clean, random.Random(6))
    scored(scorer, clean + salad)
    gains = order_gains(scorer, clean + salad)
    bound = Coherence(CoherenceStep()).min_order_gain
    clean_gains, salad_gains = gains[: len(clean)], gains[len(clean) :]
    print(f"\norder gain: clean {sorted(clean_gains)}, word salad {sorted(salad_gains)}, bound {bound}")
    assert sum(g is not None and g >= bound for g in clean_gains) >= len(clean) - 1
    assert sum(g is not None and g < bound for g in salad_gains) >= 0.8 * len(salad)
    assert order_gains(scorer, salad[:3]) == salad_gains[:3]  # seeded by the text: the same shuffle every run


def test_odd_responses_go_through(scorer, held_out_short) -> None:
    """Empty, huge (100k tokens), non-English and code-only responses: scored, no crash, finite or None."""
    text = " ".join(noise._last_response(c) for c in held_out_short)
    huge = (text + " ") * (1 + 100_000 // max(1, len(scorer.tokenizer(text).input_ids)))
    responses = {
        "empty": "",
        "huge": huge,
        "chinese": "我的家乡有着美丽的自然风景和悠久的历史文化。每年春天，山上开满了花。",
        "code": "```python\ndef add(a: int, b: int) -> int:\n    return a + b\n```",
    }
    convs = [
        Conversation([Message("user", "Please answer."), Message("assistant", r)], i)
        for i, r in enumerate(responses.values())
    ]
    scored(scorer, convs)
    results = dict(zip(responses, (c.meta["scores"] for c in convs), strict=True))
    assert len(scorer.tokenizer(huge).input_ids) >= 100_000
    assert results["empty"]["ppl"] is None and results["empty"]["ifd"] is None
    assert 0 <= results["empty"]["eos_prob"] <= 1
    for name in ("huge", "chinese", "code"):
        assert all(isinstance(results[name][k], float) and math.isfinite(results[name][k]) for k in SCORE_KEYS), name


def test_non_finite_model_output_becomes_none_and_the_judges_keep_the_record(scorer) -> None:
    broken = copy.deepcopy(scorer.model)
    broken.base_model.norm.weight.data.fill_(math.nan)  # every logit NaN, as after an overflow
    nan_scorer = ScorerLM(broken, scorer.tokenizer)
    conv = Conversation([Message("user", "Hi"), Message("assistant", "Hello there, how can I help you today")], 0)
    LmScores(ScorerStep(), nan_scorer)([conv])
    assert conv.meta["scores"] == {"ppl": None, "cond_ppl": None, "ifd": None, "eos_prob": None, "order_gain": None}
    json.dumps(conv.meta["scores"], allow_nan=False)
    assert Coherence(CoherenceStep()).check(conv) is None
    assert Completeness(CompletenessStep()).check(conv) is None


def test_a_missing_or_unreadable_model_folder_is_a_config_error_naming_the_field(tmp_path) -> None:
    unreadable = tmp_path / "broken"
    unreadable.mkdir()
    (unreadable / "config.json").write_text("{not json", encoding="utf-8")
    for model in (str(tmp_path / "missing"), str(tmp_path), str(unreadable)):
        with pytest.raises(ConfigError, match=FIELD.replace(".", r"\.")):
            ScorerLM.load(model)
    assert FIELD == "curation.scorer.model"


def test_a_set_too_large_for_the_cpu_skips_the_lm_judges_and_says_so() -> None:
    config = ScorerStep(max_records_on_cpu=100)
    note = skip_note(config, 101, "cpu")
    assert note is not None and "maxRecordsOnCpu" in note and "101" in note
    assert skip_note(config, 100, "cpu") is None
    assert skip_note(config, 10**6, "cuda") is None
    assert skip_note(ScorerStep(max_records_on_cpu=None), 10**6, "cpu") is None
    assert "disabled" in skip_note(ScorerStep(enabled=False), 1, "cuda")


@pytest.mark.skipif(inference_device()[0].type != "cpu", reason="the borderline pass is a CPU's")
def test_on_a_cpu_the_pipeline_runs_the_borderline_pass_for_sets_up_to_its_limit() -> None:
    """After the cheap measurements and before the judges that read it; a larger set is judged without the
    LM, and the note names both limits."""
    cfg = CurationConfig.model_validate({"relevance": {"enabled": False}})
    steps, _, notes = build_steps(cfg, records=5000)
    kinds = [type(step) for step in steps]
    assert LmScores not in kinds and BorderlineLmScores in kinds
    assert kinds.index(FluencyScores) < kinds.index(BorderlineLmScores) < kinds.index(StyleJudge)
    assert not any("Skipped the scorer" in note for note in notes)
    steps, _, notes = build_steps(cfg, records=5001)
    assert not any(isinstance(step, BorderlineLmScores | LmScores) for step in steps)
    assert any("borderlineOnCpu.maxRecords (5000)" in note and "5001 records" in note for note in notes)


def test_the_last_assistant_turn_is_scored_after_the_whole_conversation() -> None:
    conv = Conversation(
        [Message("user", "a"), Message("assistant", "b"), Message("user", "c"), Message("assistant", "d")], 0
    )
    context, response = exchange(conv)
    assert [m.content for m in context] == ["a", "b", "c"] and response == "d"
    assert exchange(Conversation([Message("user", "only")], 1)) == ([Message("user", "only")], "")


@pytest.fixture(scope="module")
def long_answers(shared_data: Path) -> tuple[list[Conversation], list[Conversation]]:
    """30 long held-out LIMA answers and 30 planted long chat answers, unscored."""
    lima = [c for c in noise.load_lima(shared_data) if not noise.calibration_half(c)]
    long_lima = [c for c in lima if style.word_count(noise._last_response(c)) >= 150]
    planted = [
        c
        for c in noise.plant("assistant_style", lima * 4, random.Random(7), shared_dir=shared_data)
        if not noise.calibration_half(c)
    ]
    rng = random.Random(3)
    return rng.sample(long_lima, 30), rng.sample(planted, 30)


@pytest.fixture(scope="module")
def long_answers_scored(scorer, long_answers) -> tuple[list[Conversation], list[Conversation]]:
    """`long_answers` (copies) with every score of the LM."""
    human, chat = copy.deepcopy(long_answers)
    scored(scorer, human + chat)
    return human, chat


def test_style_blends_in_the_packaged_scorers_perplexity(long_answers_scored) -> None:
    """Long held-out LIMA answers and planted long chat answers, scored by the LM: the blend widens the gap
    between the two (chat answers are text the LM finds predictable), and the judge's rate on each stays near
    what `make classifiers` reported for the whole held-out half with the LM."""
    human, chat = long_answers_scored
    logits = {}
    for read in (False, True):
        StyleScore(StyleStep(), read_perplexity=read)(human + chat)
        scores = [min(max(c.meta["scores"]["style"], 1e-4), 1 - 1e-4) for c in human + chat]  # 4 decimals kept
        logits[read] = [math.log(p / (1 - p)) for p in scores]
    gap = {read: sum(v[30:]) / 30 - sum(v[:30]) / 30 for read, v in logits.items()}
    judge = StyleJudge(StyleStep())
    recall = sum(judge(c) == "style.assistant" for c in chat) / len(chat)
    flagged = sum(judge(c) == "style.assistant" for c in human) / len(human)
    reported = json.loads(StyleClassifier().model.meta["meta_report"])["perplexity_blend"]["noise_kit"]
    print(
        f"\nlogit gap chat - LIMA: {gap}; with the LM: recall {recall:.2f}, long LIMA flagged {flagged:.2f}; {reported}"
    )
    assert all(c.meta["scores"]["cond_ppl"] is not None for c in human + chat)
    assert gap[True] > gap[False]
    # 30 records: about three binomial standard deviations around the whole half's figures.
    assert recall == pytest.approx(reported["assistant_style_recall"], abs=0.22)
    assert flagged <= 0.1


def test_on_a_cpu_the_lm_scores_only_the_records_whose_verdict_it_could_change(
    scorer, long_answers, long_answers_scored, held_out_short
) -> None:
    """The CPU's borderline pass: style verdicts exactly those of scoring every record, with a fraction of
    them scored; an open ending the n-gram model rejects is judged by the LM's end-of-turn probability; word
    salad (left to the n-gram model) and a clean short answer nobody doubts are not scored. Over the limit,
    nothing is scored and a note says so."""
    human, chat = copy.deepcopy(long_answers)
    completeness = Completeness(CompletenessStep())
    cut = noise.plant("truncated", held_out_short[:40], random.Random(5))
    salad = noise.plant("word_salad", held_out_short[40:41], random.Random(5))
    plain = [Conversation(list(c.messages), 900 + i) for i, c in enumerate(held_out_short[41:44])]
    style_score = StyleScore(StyleStep())
    FluencyScores()(cut)
    in_doubt = [c for c in cut if completeness.lm_would_decide(c)][:2]
    assert in_doubt, "some planted cut endings are open endings the n-gram model rejects"
    convs = human + chat + in_doubt + salad + plain
    style_score(convs)
    FluencyScores()(convs)
    step = BorderlineLmScores(
        ScorerStep(), style_score, completeness, Coherence(CoherenceStep()).order_check_above, scorer=scorer
    )
    step(convs)
    judge = StyleJudge(StyleStep())
    full_human, full_chat = long_answers_scored
    StyleScore(StyleStep(), read_perplexity=True)(full_human + full_chat)
    assert [judge.check(c) for c in human + chat] == [judge.check(c) for c in full_human + full_chat]
    report = step.report()
    lm_scored = [c for c in convs if c.meta["scores"].get("cond_ppl") is not None]
    print(f"\nborderline pass: {report}")
    assert report["scored"] == len(lm_scored) and 0 < report["styleBorderline"] < len(human + chat)
    assert report["endingInDoubt"] == len(in_doubt)
    assert all(c in lm_scored and c.meta["scores"]["eos_prob"] is not None for c in in_doubt)
    assert not any(c in lm_scored for c in salad + plain)
    assert all(c.meta["scores"].get("ifd") is None for c in convs), "no IFD from a partial pass"
    assert step.notes == [BORDERLINE_NOTE]

    over = [Conversation(list(c.messages), i) for i, c in enumerate(long_answers[1])]
    StyleScore(StyleStep())(over)
    limited = BorderlineLmScores(
        ScorerStep(borderline_on_cpu=BorderlineOnCpu(max_scored=1)), StyleScore(StyleStep()), None, None, scorer=scorer
    )
    limited(over)
    assert all(c.meta["scores"].get("cond_ppl") is None for c in over)
    assert "maxScored (1)" in limited.notes[0] and limited.report()["overLimit"] > 1


def test_another_scorer_is_recorded_but_not_read_against_the_shipped_thresholds(held_out_short) -> None:
    """A model named by its folder is, for the calibration, another model: its scores are recorded (IFD for
    selection), the report says the LM judges do not read them, and the style step runs without the blend."""
    convs = [Conversation(list(c.messages), i) for i, c in enumerate(held_out_short[24:27])]
    config = CurationConfig(scorer=ScorerStep(model=str(SMOLLM2_DIR), max_records_on_cpu=None))
    result = curate(convs, config)
    assert OTHER_SCORER_NOTE in result.notes
    assert result.stats["step_reports"]["style_score"] == {"readsScorerPerplexity": False}
    assert all(c.meta["scores"]["ifd"] is not None for c in result.curated)
