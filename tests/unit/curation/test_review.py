"""Review decisions applied to a real curation output folder: moves, report, idempotence, crashes, bad logs."""

from __future__ import annotations

import json
import multiprocessing
import shutil
from pathlib import Path

import pytest
from pydantic import ValidationError

from sft_operator.api import DatasetCurationStatus
from sft_trainer.config import CurationRunConfig
from sft_trainer.curation.entrypoint import run_from_config, verify_accounting
from sft_trainer.curation.review import (
    DECISIONS_FILE,
    DROPPED,
    PARTITION,
    STAGING_DIR,
    Decision,
    Outputs,
    ReviewError,
    ReviewSession,
    append_decision,
    apply_decisions,
    commit,
    explain,
    flagged_spans,
    now,
    partition,
    read_decisions,
    read_report,
    record_hash,
    recover,
    resolve,
    reviewed_report,
    stage,
)

MIXED = (3, 10, 17)  # a Latin 'a' replaced by Cyrillic 'а' in the response
INVISIBLE = (5, 12, 20)  # a zero-width space in the middle of the response


def plant(records: list[dict]) -> list[dict]:
    records = [dict(r) for r in records]
    for i in MIXED:
        records[i]["output"] = records[i]["output"].replace("a", "\u0430", 1)
    for i in INVISIBLE:
        text = records[i]["output"]
        records[i]["output"] = text[: len(text) // 2] + "\u200b" + text[len(text) // 2 :]
    return records


def curate_into(records: list[dict], folder: Path) -> Path:
    source = folder / "input.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    assert run_from_config(CurationRunConfig(input=str(source), output_dir=str(folder / "out")), workers=1) == 0
    return folder / "out"


@pytest.fixture(scope="module")
def alpaca60(alpaca: list[dict]) -> list[dict]:
    return plant(alpaca[:60])


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory, alpaca60: list[dict]) -> Path:
    """A real curation of 60 Alpaca records, six of them held for review."""
    out = curate_into(alpaca60, tmp_path_factory.mktemp("pristine"))
    held = Outputs.read(out).held
    assert set(MIXED) | set(INVISIBLE) <= set(held)
    return out


@pytest.fixture
def out(pristine: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(pristine, tmp_path / "out"))


def decide(out: Path, index: int, verdict: str, reviewer: str = "ana", **fields: str) -> None:
    held = Outputs.read(out).held[index]
    append_decision(
        out,
        Decision(
            source_index=index,
            record_hash=record_hash(held),
            decision=verdict,
            reviewer=reviewer,
            time=now(),
            **fields,
        ),
    )


def rows(out: Path, name: str) -> dict[int, dict]:
    return {r["source_index"]: r for r in map(json.loads, (out / name).read_text().split("\n")[:-1])}


def snapshot(out: Path) -> dict[str, bytes]:
    return {name: (out / name).read_bytes() for name in (*PARTITION, "report.json")}


def test_keep_edit_and_drop_move_records_and_update_the_report(out: Path) -> None:
    original = Outputs.read(out).held
    decide(out, 3, "keep", note="a Cyrillic letter, harmless")
    decide(out, 10, "edit", edited_response="Julius Caesar was stabbed in the Senate in 44 BC.")
    decide(out, 5, "drop", reviewer="ben", note="hidden character")

    result = apply_decisions(out)

    assert result.changed and result.figures == {"pending": len(original) - 3, "kept": 2, "dropped": 1}
    report = json.loads((out / "report.json").read_text())
    verify_accounting(out, report["status"]["counts"]["input"])
    curated, rejected, review = (rows(out, name) for name in PARTITION)
    assert not {3, 10, 5} & set(review)
    assert curated[3]["messages"] == original[3]["messages"]
    assert curated[3]["review"] | {"time": ""} == {
        "decision": "keep",
        "reviewer": "ana",
        "time": "",
        "reasons": ["ood.mixed_script"],
        "note": "a Cyrillic letter, harmless",
    }
    assert curated[10]["messages"][-1]["content"] == "Julius Caesar was stabbed in the Senate in 44 BC."
    assert curated[10]["review"]["original_response"] == original[10]["messages"][-1]["content"]
    assert rejected[5]["reasons"] == [DROPPED, "ood.control_sequence"]
    assert rejected[5]["detail"] == "hidden character" and rejected[5]["review"]["reviewer"] == "ben"
    assert rejected[5]["record"] == original[5]

    status = report["status"]
    assert status["review"] == result.figures
    assert status["counts"]["review"] == len(review) and status["counts"]["curated"] == len(curated)
    assert status["dropsByReason"][DROPPED] == 1
    assert sum(status["dropsByReason"].values()) == status["counts"]["rejected"]
    assert DatasetCurationStatus.model_validate(status).review.kept == 2
    assert [d["sourceIndex"] for d in report["review"]["decisions"]] == [3, 5, 10]
    assert {q["sourceIndex"] for q in report["review"]["queue"]} == set(review)
    assert "review.dropped" in (out / "report.html").read_text()


def test_reapplying_is_a_no_op(out: Path) -> None:
    decide(out, 3, "keep")
    decide(out, 5, "drop")
    assert apply_decisions(out).changed
    before = snapshot(out)
    again = apply_decisions(out)
    assert not again.changed and snapshot(out) == before


def test_undo_returns_an_applied_record_to_the_queue_as_it_was(out: Path, pristine: Path) -> None:
    decide(out, 10, "edit", edited_response="Stabbed, 44 BC.")
    decide(out, 12, "drop", note="junk")
    apply_decisions(out)
    decide(out, 10, "undo")
    decide(out, 12, "undo")
    result = apply_decisions(out)
    assert result.figures == {"pending": len(Outputs.read(pristine).held), "kept": 0, "dropped": 0}
    for name in PARTITION:  # byte for byte what the curation wrote
        assert (out / name).read_bytes() == (pristine / name).read_bytes(), name


def test_a_crash_before_the_commit_point_leaves_the_old_outputs(out: Path) -> None:
    decide(out, 3, "drop")
    before = snapshot(out)
    current = Outputs.read(out)
    files = partition(current, resolve(current.held, read_decisions(out), 60))
    stage(out, {name: b"".join(json.dumps(r).encode() + b"\n" for r in rs) for name, rs in files.items()}, 60)
    # killed here: staged, not committed
    assert "discarded" in recover(out)
    assert snapshot(out) == before and not (out / STAGING_DIR).exists()


def test_a_crash_between_renames_is_rolled_forward_by_the_next_reader(out: Path, tmp_path: Path) -> None:
    decide(out, 3, "drop")
    decide(out, 17, "keep")
    reference = Path(shutil.copytree(out, tmp_path / "reference"))
    apply_decisions(reference)

    current = Outputs.read(out)
    resolution = resolve(current.held, read_decisions(out), 60)
    files = partition(current, resolution)
    contents = {
        name: "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rs).encode() for name, rs in files.items()
    }
    contents["report.json"] = json.dumps(reviewed_report(read_report(out), files, resolution), indent=2).encode()
    staging = stage(out, contents, 60)
    commit(out, staging)
    (staging / "curated.jsonl").replace(out / "curated.jsonl")  # killed after the first rename
    with pytest.raises(Exception, match="17"):
        verify_accounting(out, 60)  # on disk, record 17 is now in two files

    session = ReviewSession(out, "ana")  # any reader recovers first
    assert "finished an interrupted apply" in session.recovered
    verify_accounting(out, 60)
    assert {n: rows(out, n) for n in PARTITION} == {n: rows(reference, n) for n in PARTITION}


def test_a_new_curation_run_wins_over_an_interrupted_apply(out: Path, alpaca60: list[dict]) -> None:
    decide(out, 3, "drop")
    current = Outputs.read(out)
    files = partition(current, resolve(current.held, read_decisions(out), 60))
    staging = stage(out, {n: b"".join(json.dumps(r).encode() + b"\n" for r in rs) for n, rs in files.items()}, 60)
    commit(out, staging)
    cleaned = [dict(r) for r in alpaca60]
    cleaned[12]["output"] = cleaned[12]["output"].replace("\u200b", "")
    curate_into(cleaned, out.parent)  # the curation runs again, on a cleaned source, into the same folder
    assert "rewritten since" in recover(out)
    verify_accounting(out, 60)


def test_a_messy_log_is_reported_and_nothing_in_it_is_lost(out: Path) -> None:
    held = Outputs.read(out).held
    decide(out, 3, "keep", reviewer="ana")
    decide(out, 3, "drop", reviewer="ben", note="looks like spoofing")
    decide(out, 17, "keep")
    unknown = Decision(source_index=999, record_hash="0" * 16, decision="keep", reviewer="ana", time=now())
    append_decision(out, unknown)
    changed = Decision(source_index=20, record_hash="f" * 16, decision="drop", reviewer="ana", time=now())
    append_decision(out, changed)
    log = out / DECISIONS_FILE
    with log.open("a") as handle:
        handle.write('{"source_index": 12, "decision": "edit", "record_hash": "x", "reviewer": "ana", "time": "t"}\n')
        handle.write('{"source_index": 12, "decision": "dr')  # the writer was killed mid-line
    assert read_decisions(out).unreadable[-1][1].startswith("truncated last line")
    decide(out, 12, "keep")  # the next append seals the cut line instead of gluing onto it
    written = log.read_text()

    result = apply_decisions(out)

    assert log.read_text() == written  # the log is never rewritten
    review = json.loads((out / "report.json").read_text())["review"]
    assert review["conflicts"] == [
        {
            "sourceIndex": 3,
            "decisions": [
                {"decision": "keep", "reviewer": "ana", "time": review["conflicts"][0]["decisions"][0]["time"]},
                {"decision": "drop", "reviewer": "ben", "time": review["conflicts"][0]["decisions"][1]["time"]},
            ],
            "applied": "drop",
        }
    ]
    assert [u["sourceIndex"] for u in review["unknown"]] == [999]
    assert review["stale"][0]["sourceIndex"] == 20 and "content changed" in review["stale"][0]["why"]
    lines = {entry["line"]: entry["problem"] for entry in review["unreadableLines"]}
    assert "edited_response" in lines[6] and "truncated" not in lines[7]  # sealed: now an ordinary bad line
    assert len(lines) == 2
    text = "\n".join(result.problems)
    assert "record 3: decided 2 times (keep by ana, drop by ben)" in text and "never read" in text
    rejected, curated = rows(out, "rejected.jsonl"), rows(out, "curated.jsonl")
    assert rejected[3]["reasons"][0] == DROPPED and {12, 17} <= set(curated)
    assert 20 in rows(out, "review.jsonl") and held[20] == rows(out, "review.jsonl")[20]


def test_decisions_survive_a_new_curation_run_and_stale_ones_are_named(out: Path, alpaca60: list[dict]) -> None:
    decide(out, 5, "keep")
    decide(out, 12, "drop", note="junk")
    apply_decisions(out)
    fixed = [dict(r) for r in alpaca60]
    fixed[12]["output"] = fixed[12]["output"].replace("\u200b", "")  # the source was cleaned: 12 is no longer held
    curate_into(fixed, out.parent)

    result = apply_decisions(out)

    assert rows(out, "curated.jsonl")[5]["review"]["decision"] == "keep"  # still held: re-applied
    dropped = {i for i, r in rows(out, "rejected.jsonl").items() if r["reasons"][0] == DROPPED}
    assert 12 not in dropped and 12 not in rows(out, "review.jsonl")  # the pipeline's verdict stands
    assert [line for line in result.problems if "record 12" in line] == [
        "record 12: drop by ana is stale: the record is no longer held for review (a later curation run)"
    ]
    verify_accounting(out, 60)


def test_an_edit_without_text_is_refused_naming_the_field() -> None:
    with pytest.raises(ValidationError, match="edited_response"):
        Decision(source_index=1, record_hash="ab", decision="edit", reviewer="ana", time=now())
    with pytest.raises(ValidationError, match="takes no edited_response"):
        Decision(source_index=1, record_hash="ab", decision="keep", reviewer="ana", time=now(), edited_response="x")


def test_a_failed_or_foreign_folder_is_refused(tmp_path: Path, out: Path) -> None:
    with pytest.raises(ReviewError, match="not a curation output folder"):
        apply_decisions(tmp_path)
    (out / "report.json").write_text(json.dumps({"error": "source_index 3 is in both"}))
    with pytest.raises(ReviewError, match="failed its accounting check"):
        apply_decisions(out)


def _append_many(folder: str, reviewer: str) -> None:
    for i in range(150):
        append_decision(
            Path(folder),
            Decision(source_index=i, record_hash="ab", decision="keep", reviewer=reviewer, time=now(), note="n" * 900),
        )


def test_two_reviewers_appending_at_once_do_not_overwrite_each_other(tmp_path: Path) -> None:
    procs = [multiprocessing.Process(target=_append_many, args=(str(tmp_path), name)) for name in ("ana", "ben")]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    log = read_decisions(tmp_path)
    assert not log.unreadable and sorted(d.reviewer for d in log.decisions) == ["ana"] * 150 + ["ben"] * 150


def test_the_session_walks_the_queue_filters_and_undoes(out: Path) -> None:
    session = ReviewSession(out, "ana")
    total = len(session.held)
    first = session.next_pending()
    assert first == min(session.held) and session.progress() == (0, total)
    assert session.next_pending(reason="mixed") == 3 and session.next_pending(after=3, reason="mixed") == 10
    session.decide(3, "keep")
    session.decide(10, "drop", note="spoof")
    assert session.progress() == (2, total) and session.next_pending(reason="mixed") == 17
    assert session.undo() == 10 and session.progress() == (1, total)
    other = ReviewSession(out, "ben")  # a second reviewer sees the first one's decisions at once
    assert other.progress() == (1, total) and 3 not in other.resolution.pending(other.held)


def test_flagged_spans_point_at_what_to_look_at() -> None:
    text = "Pay via pаypal\u200b now 🙂 or ask 東京"
    flags = {(text[f.start : f.end], f.kind): f.detail for f in flagged_spans(text)}
    assert flags[("pаypal", "mixed_script")] == "U+0430 CYRILLIC SMALL LETTER A"
    assert flags[("\u200b", "invisible")] == "U+200B ZERO WIDTH SPACE"
    assert flags[("🙂", "unusual")].startswith("U+1F642")
    assert flags[("東京", "script")] == "Cjk letters"
    assert flagged_spans("plain ascii") == []
    assert "look-alike" in explain("ood.mixed_script") and "facts" in explain("facts.unsupported")
