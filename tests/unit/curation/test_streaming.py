"""One pod, bounded memory: the input in shards gives the same outputs as the whole set in memory, and resumes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sft_trainer.config.curation import CurationConfig, CurationRunConfig
from sft_trainer.curation.entrypoint import verify_accounting
from sft_trainer.curation.parts import PARTS, record_line, rejection_record, review_record
from sft_trainer.curation.pipeline import CurationResult, curate
from sft_trainer.curation.resume import STAGES, State
from sft_trainer.curation.shards import InputShards
from sft_trainer.curation.streaming import StreamingEngine, curate_in_shards
from sft_trainer.formats import RejectedRecord, read_dataset
from support.planted import planted_records, write_jsonl

# The MiniLM relevance judge costs minutes on 2 loaded cores; every other default judge runs.
SETTINGS = {
    "relevance": {"maxRecordsOnCpu": 0},
    "scorer": {"borderlineOnCpu": {"maxRecords": 0}},
    "dedup": {"semantic": True},
    "selection": {"budget": 250},
}
SHARD = 120


def canonical(record: dict[str, Any]) -> Any:
    return json.loads(record_line(record))


def lines(path: Path) -> list[Any]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def expected_outputs(memory: CurationResult) -> dict[str, list[Any]]:
    """What the in-memory pipeline's result is, written the one way outputs are written."""
    return {
        "curated.jsonl": [canonical(c.to_record()) for c in memory.curated],
        "rejected.jsonl": [canonical(rejection_record(r)) for r in memory.rejected],
        "review.jsonl": [canonical(review_record(c, reasons)) for c, reasons in memory.review],
        "control.jsonl": [canonical(c.to_record()) for c in memory.control],
    }


def score_values(result: CurationResult) -> dict[str, dict[str, list[float]]]:
    """The report's score distributions (judged and curated), as lists."""
    return {
        key: {group: v.tolist() for group, v in groups.items()} for key, groups in result.stats["score_values"].items()
    }


class Crash(RuntimeError):
    """The pod dies (here: right after its second phase was saved)."""


class CrashAfterTwoPhases(StreamingEngine):
    def save(self, state: State, finished: Any, seconds: float) -> None:
        super().save(state, finished, seconds)
        if finished.index == 1:
            raise Crash


@pytest.fixture(scope="module")
def planted(alpaca: list[dict], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("planted") / "pool.jsonl", planted_records(alpaca, 500))


def test_shards_give_the_in_memory_outputs_and_a_restart_skips_finished_phases(
    planted: Path, tmp_path: Path, tokenizer_view: Any
) -> None:
    out = tmp_path / "out"
    cfg = CurationRunConfig(input=str(planted), output_dir=str(out), curation=CurationConfig.model_validate(SETTINGS))
    memory = curate(read_dataset(planted), cfg.curation, tokenizer_view)
    reasons = memory.drops_by_reason()
    for planted_kind in ("dedup.exact_duplicate", "dedup.near_duplicate", "dedup.semantic_duplicate"):
        assert reasons[planted_kind] > 0, f"no {planted_kind} found: the planted set does not test it"
    duplicate_pairs = [(r.source_index, r.extra["duplicate_of"]) for r in memory.rejected if "duplicate_of" in r.extra]
    assert any(a // SHARD != b // SHARD for a, b in duplicate_pairs), "no duplicate pair spans two shards"

    shards = InputShards(str(planted), "auto", shard_records=SHARD)
    assert shards.streams and shards.shards > 3
    with pytest.raises(Crash):
        curate_in_shards(cfg, shards, tokenizer_view, engine_class=CrashAfterTwoPhases)
    first_pass_parts = {p: p.stat().st_mtime_ns for p in (out / PARTS / "phase00").iterdir()}
    assert len(first_pass_parts) == 2 * shards.shards

    result, engine = curate_in_shards(cfg, shards, tokenizer_view)
    verify_accounting(out, result.input_count)
    assert engine.resumed_phases == ["pass", "dedup"]
    assert {p: p.stat().st_mtime_ns for p in (out / PARTS / "phase00").iterdir()} == first_pass_parts
    for name, records in expected_outputs(memory).items():
        written = lines(out / name)
        if name == "review.jsonl":  # phase by phase, the same records
            key = lambda r: r["source_index"]  # noqa: E731
            written, records = sorted(written, key=key), sorted(records, key=key)
        assert written == records, f"{name} differs from the in-memory run"
    assert result.funnel == memory.funnel
    assert result.drops_by_reason() == memory.drops_by_reason()
    assert result.stats["dup_clusters"] == memory.stats["dup_clusters"]
    for figure in ("response_words_before", "response_words_after", "gptism_before", "gptism_after"):
        assert result.stats[figure].tolist() == memory.stats[figure].tolist(), figure
    for figure in ("task_counts_before", "task_counts_after", "task_entropy_before", "task_entropy_after"):
        assert result.stats[figure] == memory.stats[figure], figure
    assert score_values(result) == score_values(memory)
    engine.clean_up()
    assert not (out / PARTS).exists()


def crashed_after_two_phases(planted: Path, out: Path) -> tuple[CurationRunConfig, InputShards]:
    """A small surface-only curation of 200 records whose pod died after its second saved phase."""
    settings = {"relevance": {"enabled": False}, "balance": {"method": "rules"}, "maxRecords": 200}
    cfg = CurationRunConfig(input=str(planted), output_dir=str(out), curation=CurationConfig.model_validate(settings))
    shards = InputShards(str(planted), "auto", shard_records=50, max_records=200)
    with pytest.raises(Crash):
        curate_in_shards(cfg, shards, engine_class=CrashAfterTwoPhases)
    return cfg, shards


def test_saved_phases_of_another_configuration_are_not_reused(planted: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    cfg, shards = crashed_after_two_phases(planted, out)
    changed = cfg.model_copy(update={"curation": cfg.curation.model_copy(update={"seed": 1})})
    result, engine = curate_in_shards(changed, shards)
    verify_accounting(out, result.input_count)
    assert engine.resumed_phases == []
    assert result.input_count == 200


def test_a_shard_reads_what_the_whole_file_reader_gives(planted: Path) -> None:
    """Seeking to a shard gives its records, broken ones included, as `read_dataset` numbers and parses them."""
    whole = list(read_dataset(planted))
    shards = InputShards(str(planted), "auto", shard_records=SHARD)
    assert shards.count == len(whole)
    read = [item for shard in range(shards.shards) for item in shards.read(shard)]

    def view(item: Any) -> Any:
        if isinstance(item, RejectedRecord):
            return (item.source_index, item.reasons, item.raw, item.detail)
        return item.to_record()

    assert [view(i) for i in read] == [view(i) for i in whole]
    assert any(isinstance(i, RejectedRecord) for i in read)


class Planted:
    """What an attacker with write access to the output volume would leave as a saved state."""

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        import os

        return (os.system, ("touch planted-code-ran",))


def test_a_planted_state_file_is_refused_and_its_code_never_runs(
    planted: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pickle

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    cfg, shards = crashed_after_two_phases(planted, out)
    marker = json.loads((out / STAGES / "latest.json").read_text())
    (out / STAGES / marker["state"]).write_bytes(pickle.dumps(Planted()))
    with pytest.raises(pickle.UnpicklingError, match="may not hold posix.system"):
        curate_in_shards(cfg, shards)
    assert not (tmp_path / "planted-code-ran").exists()
