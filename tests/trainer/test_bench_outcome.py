"""`make bench-outcome`'s plumbing at tiny sizes: curate, three arms trained alike, evaluated, compared.

Runs benchmarks/bench_outcome.py as `make bench-outcome` does (a separate
process: tests and benchmarks do not import each other) on real Alpaca
records and the real SmolLM2-135M, with N=16, 2 optimiser steps and a few
prompts per suite, then checks what the JSON says against the files the run
wrote: the arms hold the selection, its control and the whole pool, every arm
trained the same steps, and every delta is the arm's figure minus random's
on the same prompts, inside its interval.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUDGET = 16


@pytest.fixture(scope="module")
def tiny_outcome(tmp_path_factory: pytest.TempPathFactory, smollm2_dir: Path, shared_data: Path) -> tuple[dict, Path]:
    work = tmp_path_factory.mktemp("bench-outcome")
    figures = work / "figures.json"
    command = [
        sys.executable, str(REPO / "benchmarks" / "bench_outcome.py"),
        "--base", str(smollm2_dir), "--pool-size", "300", "--budget", str(BUDGET),
        "--steps", "2", "--batch", "2", "--seq", "256",
        "--ifeval-prompts", "4", "--ifeval-max-new-tokens", "16",
        "--safety-prompts", "2", "--safety-max-new-tokens", "16", "--reference-records", "2",
        "--no-base-eval", "--threads", "1",
        # The MiniLM off-topic judge takes minutes on 300 records on a CPU and is not what this tests.
        "--curation-settings", '{"relevance": {"maxRecordsOnCpu": 0}}',
        "--work", str(work), "--json", str(figures),
    ]  # fmt: skip
    env = {**os.environ, "SFT_SHARED_DATA": str(shared_data)}
    # ~2 min on 2 idle cores; the limit only catches a hang (a shared machine at load 20 took 10-20 min).
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=3600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "curated − random" in done.stdout  # the one table
    return json.loads(figures.read_text(encoding="utf-8")), work


def _indices(path: Path, reason: str | None = None) -> set[int]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return {r["source_index"] for r in rows if reason is None or r["reasons"] == [reason]}


def test_arms_are_the_selection_its_control_and_the_whole_pool(tiny_outcome) -> None:
    report, work = tiny_outcome
    pool = json.loads((work / "pool.json").read_text(encoding="utf-8"))
    curation = work / "curation"
    selected = _indices(curation / "curated.jsonl")
    control = _indices(curation / "control.jsonl")
    passed = selected | _indices(curation / "rejected.jsonl", "selection.not_selected")
    expected = {"curated": selected, "random": control, "all": passed}
    for name, indices in expected.items():
        records = json.loads((work / f"arm_{name}.json").read_text(encoding="utf-8"))
        assert records == [pool[i] for i in sorted(indices)], name
        assert report["arms"][name]["records"] == len(indices)
    assert len(selected) == len(control) == BUDGET
    assert len(passed) > BUDGET
    assert report["curation"]["selected"] == BUDGET and report["curation"]["control"] == BUDGET


def test_every_arm_trains_the_same_steps_and_is_evaluated_alike(tiny_outcome) -> None:
    report, _ = tiny_outcome
    assert report["baseline"] == "random"
    for name in ("curated", "random", "all"):
        arm = report["arms"][name]
        assert arm["train"]["steps"] == 2, name
        assert arm["train"]["seconds"] > 0 and arm["evalSeconds"] > 0
        assert arm["counts"]["ifeval"]["prompts"] == 4
        assert arm["counts"]["reference"]["records"] == 2
    assert report["settings"]["training"]["maxSteps"] == 2


def test_deltas_are_paired_differences_against_random_inside_their_intervals(tiny_outcome) -> None:
    report, _ = tiny_outcome
    rows = report["figures"]
    assert {"ifeval.promptLevelStrict", "safety.advbenchRefusal", "safety.xstestSafeOverRefusal",
            "reference.referenceNll"} <= set(rows)  # fmt: skip
    for key, row in rows.items():
        assert set(row["delta"]) == {"curated", "all"}, key  # random is the baseline: no delta of its own
        for arm, delta in row["delta"].items():
            assert delta["value"] == pytest.approx(row[arm]["value"] - row["random"]["value"], abs=2e-4), key
            assert delta["low"] - 1e-9 <= delta["value"] <= delta["high"] + 1e-9, key
        for arm in ("curated", "random", "all"):
            assert row[arm]["low"] - 1e-9 <= row[arm]["value"] <= row[arm]["high"] + 1e-9, (key, arm)
    nll = rows["reference.referenceNll"]
    assert all(1.0 < nll[arm]["value"] < 6.0 for arm in ("curated", "random", "all"))  # real model, real answers
