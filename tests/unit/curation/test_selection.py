"""Selection of the best N: budget met in the pool's task mix, the rest accounted for, a seeded random control."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from sft_trainer.config import CurationConfig
from sft_trainer.curation.pipeline import curate
from sft_trainer.curation.selection import Selection, task_quotas
from sft_trainer.formats import Conversation, Message, read_dataset
from sftctl.cli import main as sftctl_main

# Selection is what these tests are about: the models that cost minutes on 2 cores stay off (the MiniLM
# relevance judge, ~15 records/s; the scorer LM's borderline pass, about 1 record/s).
JUDGES_OFF = {"relevance": {"enabled": False}, "scorer": {"borderlineOnCpu": {"maxRecords": 0}}}


@pytest.fixture(scope="module")
def lima(data_dir: Path) -> list[Conversation]:
    return [c for c in read_dataset(data_dir / "lima_llamafactory.json") if isinstance(c, Conversation)][:400]


def test_quotas_follow_the_pool_mix_and_sum_to_the_budget() -> None:
    quotas = task_quotas({"coding": 50, "open_qa": 30, "other": 20}, 10)
    assert quotas == {"coding": 5, "open_qa": 3, "other": 2}
    assert sum(task_quotas({"a": 7, "b": 5, "c": 1}, 6).values()) == 6
    assert task_quotas({"a": 2, "b": 100}, 50)["a"] <= 2  # never more than a task has


def test_budget_keeps_the_best_in_the_task_mix_and_writes_a_control(lima: list[Conversation]) -> None:
    cfg = CurationConfig.model_validate(
        {**JUDGES_OFF, "selection": {"budget": 100, "strategy": "quality"}, "balance": {"enabled": False}}
    )
    result = curate(lima, cfg)
    assert len(result.curated) == 100
    assert len(result.control) == 100
    not_selected = [r for r in result.rejected if r.reasons == ["selection.not_selected"]]
    assert result.selection is not None
    assert len(result.curated) + len(not_selected) == result.selection["pool"]
    # The same task mix in the selection and in its control.
    assert Counter(c.meta["task"] for c in result.curated) == Counter(c.meta["task"] for c in result.control)
    # Within each task, every selected record scores at least as high as every passed-over one.
    for task in {c.meta["task"] for c in result.curated}:
        worst_kept = min(c.meta["scores"]["quality"] for c in result.curated if c.meta["task"] == task)
        best_left = max((r.extra["scores"]["quality"] for r in not_selected if r.extra["task"] == task), default=-1.0)
        assert worst_kept >= best_left
    assert all(r.extra["selection"]["rank"] >= 1 and not r.extra["selection"]["selected"] for r in not_selected)
    assert (result.selection["selected"], result.selection["control"], result.selection["budget"]) == (100, 100, 100)


def test_the_control_is_seeded_and_differs_from_the_selection(lima: list[Conversation]) -> None:
    def control(seed: int) -> list[int]:
        cfg = CurationConfig.model_validate(
            {**JUDGES_OFF, "selection": {"budget": 80, "strategy": "quality"}, "seed": seed}
        )
        return [c.source_index for c in curate(lima, cfg).control]

    assert control(1) == control(1)
    assert control(1) != control(2)
    cfg = CurationConfig.model_validate({**JUDGES_OFF, "selection": {"budget": 80, "strategy": "quality"}, "seed": 1})
    selected = {c.source_index for c in curate(lima, cfg).curated}
    assert selected != set(control(1))


def test_diversity_passes_over_a_near_copy_of_a_kept_prompt() -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(size=16).astype(np.float32)
    records = []
    for i in range(6):
        vector = base if i < 2 else rng.normal(size=16).astype(np.float32)  # 0 and 1: the same request
        conv = Conversation([Message("user", f"q{i}"), Message("assistant", "a")], i)
        conv.meta = {"task": "open_qa", "scores": {"quality": 1.0 - i / 10}}
        conv.features["prompt_emb"] = vector / np.linalg.norm(vector)
        records.append(conv)
    step = Selection(budget=3, strategy="diverse-quality", diversity_threshold=0.9)
    stopped = step(records)
    assert sorted(set(range(6)) - set(stopped)) == [0, 2, 3]  # 1 is the best left but repeats 0
    assert step.passed_over_for_diversity == 1


def test_budget_and_fraction_together_are_refused_naming_the_field() -> None:
    with pytest.raises(ValidationError, match="selection.budget or selection.fraction"):
        CurationConfig.model_validate({"selection": {"budget": 10, "fraction": 0.5}})


def test_sftctl_curate_budget_writes_control_and_status(tmp_path: Path, data_dir: Path) -> None:
    records = json.loads((data_dir / "lima_llamafactory.json").read_text())[:300]
    source = tmp_path / "lima.json"
    source.write_text(json.dumps(records))
    out = tmp_path / "out"
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps(JUDGES_OFF))
    argv = [
        "curate",
        str(source),
        "--out",
        str(out),
        "--config",
        str(settings),
        "--budget",
        "50",
        "--strategy",
        "quality",
    ]
    assert sftctl_main(argv) == 0
    control = [json.loads(line) for line in (out / "control.jsonl").read_text().splitlines()]
    curated = (out / "curated.jsonl").read_text().splitlines()
    status = json.loads((out / "report.json").read_text())["status"]
    assert len(control) == len(curated) == 50
    assert status["selection"] == {"strategy": "quality", "budget": 50, "selected": 50, "control": 50}
    assert "selection-table" in (out / "report.html").read_text()
