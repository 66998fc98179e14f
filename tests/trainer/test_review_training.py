"""Review decisions change what an SFTJob trains on: a kept held record is in the training split, a dropped one is not."""

from __future__ import annotations

import json
from pathlib import Path

from test_training import run_config

from sft_trainer.config import CurationConfig, CurationRunConfig
from sft_trainer.curation.entrypoint import run_from_config as curate
from sft_trainer.curation.review import DROPPED, ReviewSession
from sft_trainer.training.data import SPLIT_FILE
from sft_trainer.training.entrypoint import run_from_config as train

KEEP, DROP = 7, 11  # input positions of the two records planted with a zero-width space


def test_a_kept_record_is_trained_on_and_a_dropped_one_is_not(
    tiny_model_dir: Path, shared_data: Path, tmp_path: Path
) -> None:
    records = json.loads((shared_data / "alpaca_gpt4_en_demo_llamafactory.json").read_text(encoding="utf-8"))[:40]
    for i in (KEEP, DROP):
        text = records[i]["output"]
        records[i]["output"] = text[:20] + "\u200b" + text[20:]
    source = tmp_path / "input.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    out = tmp_path / "curation"
    # GPT-4 Alpaca's long answers are assistant style (style.assistant would reject the two planted ones
    # before the review step sees them); this test is about what review decisions do to training.
    no_style = CurationConfig.model_validate({"style": {"enabled": False}})
    assert curate(CurationRunConfig(input=str(source), output_dir=str(out), curation=no_style), workers=1) == 0

    session = ReviewSession(out, "ana")
    assert {KEEP, DROP} <= set(session.held)
    session.decide(KEEP, "keep")
    session.decide(DROP, "drop", note="hidden character")
    session.apply()

    curated = [json.loads(line) for line in (out / "curated.jsonl").read_text(encoding="utf-8").splitlines()]
    run = tmp_path / "train"
    cfg = run_config(
        tiny_model_dir,
        out / "curated.jsonl",
        run,
        maxSteps=1,
        evalFraction=0,
        probes={"memorisationPrompts": 0},
        evaluation={"enabled": False},
    )
    assert train(cfg) == 0

    split = json.loads((run / SPLIT_FILE).read_text())
    # The trainer numbers records by their line in curated.jsonl; the curation numbers them by input position.
    trained = {curated[line]["source_index"] for line in split["train"]}
    assert KEEP in trained
    assert DROP not in {r["source_index"] for r in curated}
    rejected = [json.loads(line) for line in (out / "rejected.jsonl").read_text(encoding="utf-8").splitlines()]
    assert next(r for r in rejected if r["source_index"] == DROP)["reasons"][0] == DROPPED
