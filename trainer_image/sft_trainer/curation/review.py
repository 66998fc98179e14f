"""Manual review: the decisions log, and applying it to a curation output folder.

A curation holds some records for a person to look at (`review.jsonl`). A
reviewer's decision moves a held record to `curated.jsonl` (keep, or keep an
edited response: the original response is stored with it) or to
`rejected.jsonl` (reason `review.dropped`, with the reviewer's note).

The decisions live in `review_decisions.jsonl`, one JSON object a line,
appended under an exclusive `flock` and fsynced: two reviewers on one folder
each append, nobody rewrites the file, so nobody overwrites anybody. The log
is the truth; the three outputs are derived from it by `apply_decisions`:

- The held records are found again wherever an earlier apply put them (a kept
  record carries its `review` block and original response, a dropped one its
  held record), so applying is a pure function of (held records, log):
  re-applying is a no-op, and an undone decision moves its record back.
- The new outputs are written to `.review-staging/`, checked with the
  curation's own `verify_accounting`, then a `COMMIT` file is written and the
  files are renamed over the outputs. A crash before `COMMIT` leaves the old
  outputs; a crash after it is rolled forward by the next reader (`recover`).
- For each record the last decision wins (`undo` returns it to the queue);
  several decisions for one record, decisions for unknown records, a
  truncated last line, and decisions made for a record that a later curation
  run no longer holds or holds with other content ("stale") are reported in
  report.json's `review` section, never applied, and never deleted.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import unicodedata
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .entrypoint import verify_accounting
from .parts import record_line
from .tokens import INVISIBLE, mixed_script_word

DECISIONS_FILE = "review_decisions.jsonl"
PARTITION = ("curated.jsonl", "rejected.jsonl", "review.jsonl")
REPORT_FILE = "report.json"
STAGING_DIR = ".review-staging"
COMMIT_FILE = "COMMIT"
LOCK_FILE = ".review.lock"
DROPPED = "review.dropped"

Verdict = Literal["keep", "edit", "drop", "undo"]


class ReviewError(RuntimeError):
    """The folder cannot be reviewed (not a curation output, a failed run); the message says why."""


# --------------------------------------------------------------------------
# Decisions
# --------------------------------------------------------------------------


class Decision(BaseModel):
    """One line of review_decisions.jsonl."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source_index: int = Field(ge=0)
    """The held record's source_index (its position in the curation input)."""
    record_hash: str = Field(min_length=1)
    """`record_hash` of the held record the reviewer saw: a decision never applies to other content."""
    decision: Verdict
    """keep, edit (keep with `edited_response`), drop, or undo (back to the queue)."""
    reviewer: str = Field(min_length=1)
    """Who decided."""
    time: str = Field(min_length=1)
    """When, ISO 8601 UTC."""
    note: str = ""
    """The reviewer's note (why a record was dropped)."""
    edited_response: str | None = None
    """For `edit`: the new content of the last assistant turn."""

    @model_validator(mode="after")
    def _edit_has_text(self) -> Decision:
        if self.decision == "edit" and not (self.edited_response or "").strip():
            raise ValueError("decision 'edit' needs a non-empty edited_response")
        if self.decision != "edit" and self.edited_response is not None:
            raise ValueError(f"decision '{self.decision}' takes no edited_response")
        return self


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def record_hash(record: dict[str, Any]) -> str:
    """What a decision is about: the held record's turns (not its scores, which a re-run may change)."""
    turns = json.dumps(record["messages"], ensure_ascii=True, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(turns.encode()).hexdigest()[:16]


@dataclass
class DecisionLog:
    """The parsed log, with what could not be read (line number, problem)."""

    decisions: list[Decision] = field(default_factory=list)
    unreadable: list[tuple[int, str]] = field(default_factory=list)


def read_decisions(out: Path) -> DecisionLog:
    log = DecisionLog()
    path = out / DECISIONS_FILE
    if not path.exists():
        return log
    text = path.read_bytes().decode("utf-8", errors="replace")
    lines = text.split("\n")
    # A complete log ends with "\n": the last piece is then "", otherwise a line was cut mid-write.
    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        truncated = line_no == len(lines)
        try:
            log.decisions.append(Decision.model_validate_json(line))
        except ValidationError as err:
            problem = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'line'}: {e['msg']}" for e in err.errors())
            if truncated:
                problem = f"truncated last line (a write was cut short): {problem}"
            log.unreadable.append((line_no, problem[:300]))
    return log


def append_decision(out: Path, decision: Decision) -> None:
    """Append one decision, durably, under an exclusive lock (concurrent reviewers interleave whole lines)."""
    with (out / DECISIONS_FILE).open("ab+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            handle.seek(0, os.SEEK_END)
            if handle.tell():
                handle.seek(-1, os.SEEK_END)
                if handle.read(1) != b"\n":
                    handle.write(b"\n")  # seal a cut line, so this one is not glued to it
            handle.write(decision.model_dump_json(exclude_defaults=True).encode() + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --------------------------------------------------------------------------
# Held records, wherever an earlier apply put them
# --------------------------------------------------------------------------


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    # split("\n"), not splitlines(): records hold raw U+2028 and U+0085 (ensure_ascii=False).
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]


def _last_assistant(record: dict[str, Any]) -> int:
    for i in range(len(record["messages"]) - 1, -1, -1):
        if record["messages"][i]["role"] == "assistant":
            return i
    raise ReviewError(f"held record {record['source_index']} has no assistant turn")


def _held_from_curated(record: dict[str, Any]) -> dict[str, Any]:
    review = record["review"]
    held = {k: v for k, v in record.items() if k != "review"}
    if "original_response" in review:
        messages = [dict(m) for m in held["messages"]]
        messages[_last_assistant(held)]["content"] = review["original_response"]
        held["messages"] = messages
    return held | {"reasons": review["reasons"]}


@dataclass
class Outputs:
    """The three partition files of a folder, and the held records found in them."""

    curated: list[dict[str, Any]]
    rejected: list[dict[str, Any]]
    review: list[dict[str, Any]]
    held: dict[int, dict[str, Any]]
    """source_index -> the record as the curation held it (with its `reasons`)."""

    @classmethod
    def read(cls, out: Path) -> Outputs:
        curated, rejected, review = (read_jsonl(out / name) for name in PARTITION)
        held: dict[int, dict[str, Any]] = {r["source_index"]: r for r in review}
        held |= {r["source_index"]: _held_from_curated(r) for r in curated if "review" in r}
        held |= {r["source_index"]: r["record"] for r in rejected if r["reasons"][:1] == [DROPPED]}
        return cls(curated, rejected, review, dict(sorted(held.items())))


def read_report(out: Path) -> dict[str, Any]:
    path = out / REPORT_FILE
    if not path.exists() or not all((out / name).exists() for name in PARTITION):
        raise ReviewError(f"{out} is not a curation output folder (report.json and the three .jsonl files)")
    report = json.loads(path.read_text(encoding="utf-8"))
    if "error" in report:
        raise ReviewError(f"the curation in {out} failed its accounting check, nothing to review: {report['error']}")
    return report  # type: ignore[no-any-return]


# --------------------------------------------------------------------------
# Resolving the log against the held records
# --------------------------------------------------------------------------


@dataclass
class Resolution:
    """What the log means for the held records now."""

    effective: dict[int, Decision]
    """source_index -> the decision that stands (keep, edit or drop)."""
    conflicts: dict[int, list[Decision]] = field(default_factory=dict)
    """Records decided more than once without an undo in between: every decision, the last one won."""
    stale: list[tuple[Decision, str]] = field(default_factory=list)
    unknown: list[Decision] = field(default_factory=list)
    unreadable: list[tuple[int, str]] = field(default_factory=list)

    def pending(self, held: dict[int, dict[str, Any]]) -> list[int]:
        return [i for i in held if i not in self.effective]


def resolve(held: dict[int, dict[str, Any]], log: DecisionLog, input_count: int) -> Resolution:
    hashes = {i: record_hash(r) for i, r in held.items()}
    resolution = Resolution({}, unreadable=list(log.unreadable))
    streak: dict[int, list[Decision]] = {}
    for decision in log.decisions:
        index = decision.source_index
        if index >= input_count:
            resolution.unknown.append(decision)
            continue
        if index not in held:
            resolution.stale.append((decision, "the record is no longer held for review (a later curation run)"))
            continue
        if decision.record_hash != hashes[index]:
            resolution.stale.append((decision, "the held record's content changed since the decision"))
            continue
        if decision.decision == "undo":
            resolution.effective.pop(index, None)
            streak.pop(index, None)
            continue
        resolution.effective[index] = decision
        streak.setdefault(index, []).append(decision)
    resolution.conflicts = {i: ds for i, ds in streak.items() if len(ds) > 1}
    return resolution


# --------------------------------------------------------------------------
# The outputs a resolution implies
# --------------------------------------------------------------------------


def _kept(held: dict[str, Any], decision: Decision) -> dict[str, Any]:
    record = {k: v for k, v in held.items() if k != "reasons"}
    review: dict[str, Any] = {
        "decision": decision.decision,
        "reviewer": decision.reviewer,
        "time": decision.time,
        "reasons": held["reasons"],
    }
    if decision.note:
        review["note"] = decision.note
    if decision.decision == "edit":
        turn = _last_assistant(held)
        review["original_response"] = held["messages"][turn]["content"]
        messages = [dict(m) for m in held["messages"]]
        messages[turn]["content"] = decision.edited_response
        record["messages"] = messages
    return record | {"review": review}


def _dropped(held: dict[str, Any], decision: Decision) -> dict[str, Any]:
    return {
        "source_index": held["source_index"],
        "reasons": [DROPPED, *held["reasons"]],
        "detail": decision.note or f"dropped by {decision.reviewer}",
        "review": {"decision": "drop", "reviewer": decision.reviewer, "time": decision.time, "note": decision.note},
        "record": held,
    }


def partition(current: Outputs, resolution: Resolution) -> dict[str, list[dict[str, Any]]]:
    """The three files after applying: the curation's own records untouched and in their order, then the
    decided records by source_index; the queue by source_index."""
    decided = sorted(resolution.effective.items())
    curated = [r for r in current.curated if "review" not in r]
    curated += [_kept(current.held[i], d) for i, d in decided if d.decision != "drop"]
    rejected = [r for r in current.rejected if r["reasons"][:1] != [DROPPED]]
    rejected += [_dropped(current.held[i], d) for i, d in decided if d.decision == "drop"]
    review = [current.held[i] for i in resolution.pending(current.held)]
    return {"curated.jsonl": curated, "rejected.jsonl": rejected, "review.jsonl": review}


# --------------------------------------------------------------------------
# report.json after the review
# --------------------------------------------------------------------------


def _figures(files: dict[str, list[dict[str, Any]]]) -> dict[str, int]:
    kept = sum(1 for r in files["curated.jsonl"] if "review" in r)
    dropped = sum(1 for r in files["rejected.jsonl"] if r["reasons"][:1] == [DROPPED])
    return {"pending": len(files["review.jsonl"]), "kept": kept, "dropped": dropped}


def reviewed_report(report: dict[str, Any], files: dict[str, list[dict[str, Any]]], res: Resolution) -> dict[str, Any]:
    """report.json with the counts of the new outputs, the queue, and every decision with reviewer and note."""
    figures = _figures(files)
    status = dict(report["status"])
    counts = {**status["counts"], **{name.split(".")[0]: len(records) for name, records in files.items()}}
    drops = {k: v for k, v in status["dropsByReason"].items() if k != DROPPED}
    if figures["dropped"]:
        drops[DROPPED] = figures["dropped"]
    status |= {
        "counts": counts,
        "dropsByReason": dict(sorted(drops.items())),
        "rejectedFraction": round(counts["rejected"] / counts["input"], 6) if counts["input"] else 0.0,
        "review": figures,
    }
    queue = files["review.jsonl"]
    section = {
        "queue": [{"sourceIndex": r["source_index"], "reasons": r["reasons"]} for r in queue],
        "decisions": [
            {"sourceIndex": i, "decision": d.decision, "reviewer": d.reviewer, "time": d.time, "note": d.note}
            for i, d in sorted(res.effective.items())
        ],
        "conflicts": [
            {
                "sourceIndex": i,
                "decisions": [{"decision": d.decision, "reviewer": d.reviewer, "time": d.time} for d in ds],
                "applied": ds[-1].decision,
            }
            for i, ds in sorted(res.conflicts.items())
        ],
        "stale": [
            {"sourceIndex": d.source_index, "decision": d.decision, "reviewer": d.reviewer, "time": d.time, "why": why}
            for d, why in res.stale
        ],
        "unknown": [
            {"sourceIndex": d.source_index, "decision": d.decision, "reviewer": d.reviewer, "time": d.time}
            for d in res.unknown
        ],
        "unreadableLines": [{"line": n, "problem": p} for n, p in res.unreadable],
    }
    return report | {
        "status": status,
        "reviewByReason": dict(Counter(r["reasons"][0] for r in queue)),
        "review": section,
    }


def problems(res: Resolution) -> list[str]:
    """One line per thing in the log that was not applied as written, for a person to read."""
    lines = [f"{DECISIONS_FILE} line {n}: {p}" for n, p in res.unreadable]
    lines += [
        f"record {i}: decided {len(ds)} times ({', '.join(f'{d.decision} by {d.reviewer}' for d in ds)}); the last one applies"
        for i, ds in sorted(res.conflicts.items())
    ]
    lines += [f"record {d.source_index}: {d.decision} by {d.reviewer} is stale: {why}" for d, why in res.stale]
    lines += [
        f"record {d.source_index}: {d.decision} by {d.reviewer} names a record the curation never read"
        for d in res.unknown
    ]
    return lines


# --------------------------------------------------------------------------
# Writing: stage, verify, commit, rename; recover after a crash
# --------------------------------------------------------------------------


@contextlib.contextmanager
def folder_lock(out: Path) -> Iterator[None]:
    """One apply at a time per folder (two reviewers quitting at once take turns)."""
    with (out / LOCK_FILE).open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _sha256(path: Path) -> str | None:
    if not path.exists():
        return None
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_durably(path: Path, data: bytes) -> None:
    with path.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def stage(out: Path, contents: dict[str, bytes], input_count: int) -> Path:
    """Write the new files into the staging folder and check the partition there; the outputs are untouched."""
    staging = out / STAGING_DIR
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    for name, data in contents.items():
        _write_durably(staging / name, data)
    verify_accounting(staging, input_count)
    return staging


def commit(out: Path, staging: Path) -> None:
    """The commit point: from here on the staged files will replace the outputs, even after a crash."""
    base = {name: _sha256(out / name) for name in sorted(p.name for p in staging.iterdir())}
    _write_durably(staging / (COMMIT_FILE + ".tmp"), json.dumps(base).encode())
    os.replace(staging / (COMMIT_FILE + ".tmp"), staging / COMMIT_FILE)
    _fsync_dir(staging)


def finish(out: Path, staging: Path) -> None:
    """Rename every staged file still there over its output (partition files first, the report last)."""
    for name in sorted((p.name for p in staging.iterdir() if p.name in PARTITION), key=PARTITION.index):
        os.replace(staging / name, out / name)
    for name in (REPORT_FILE, "report.html"):
        if (staging / name).exists():
            os.replace(staging / name, out / name)
    _fsync_dir(out)
    shutil.rmtree(staging)


def recover(out: Path) -> str | None:
    """Finish or discard an apply that a crash interrupted; returns what was done, for the user."""
    staging = out / STAGING_DIR
    if not staging.exists():
        return None
    commit_file = staging / COMMIT_FILE
    if not commit_file.exists():
        shutil.rmtree(staging)
        return "discarded an apply interrupted before its commit point (the outputs were not touched)"
    base: dict[str, str | None] = json.loads(commit_file.read_text())
    remaining = [name for name in base if (staging / name).exists()]
    if all(_sha256(out / name) == base[name] for name in remaining):
        finish(out, staging)
        return f"finished an interrupted apply ({len(remaining)} files still to rename)"
    shutil.rmtree(staging)
    return "discarded an interrupted apply: the outputs were rewritten since (a new curation run); re-applying the log"


@dataclass
class ApplyResult:
    changed: bool
    """False: the outputs already were what the log says (re-applying is a no-op)."""
    figures: dict[str, int]
    """pending, kept, dropped."""
    problems: list[str]
    recovered: str | None = None


def _encode(records: list[dict[str, Any]]) -> bytes:
    return "".join(record_line(r) + "\n" for r in records).encode("utf-8", errors="surrogatepass")


def apply_decisions(out: Path) -> ApplyResult:
    """Make the outputs of `out` what its decisions log says, atomically; safe to run any number of times."""
    from .report import render_html

    out = Path(out)
    with folder_lock(out):
        recovered = recover(out)
        report = read_report(out)
        input_count = report["status"]["counts"]["input"]
        current = Outputs.read(out)
        resolution = resolve(current.held, read_decisions(out), input_count)
        files = partition(current, resolution)
        new_report = reviewed_report(report, files, resolution)
        unchanged = (
            files
            == {"curated.jsonl": current.curated, "rejected.jsonl": current.rejected, "review.jsonl": current.review}
            and new_report == report
        )
        result = ApplyResult(not unchanged, _figures(files), problems(resolution), recovered)
        if unchanged:
            return result
        contents = {name: _encode(records) for name, records in files.items()}
        contents[REPORT_FILE] = json.dumps(new_report, indent=2, ensure_ascii=False).encode()
        contents["report.html"] = render_html(new_report).encode()
        staging = stage(out, contents, input_count)
        commit(out, staging)
        finish(out, staging)
        return result


# --------------------------------------------------------------------------
# A reviewer's session (the terminal UI drives this)
# --------------------------------------------------------------------------


class ReviewSession:
    """The queue as one reviewer works through it: what is next, decide, skip, undo, progress."""

    def __init__(self, out: Path, reviewer: str) -> None:
        self.out = Path(out)
        self.reviewer = reviewer
        with folder_lock(self.out):
            self.recovered = recover(self.out)
            self.input_count: int = read_report(self.out)["status"]["counts"]["input"]
            self.held = Outputs.read(self.out).held
        self.hashes = {i: record_hash(r) for i, r in self.held.items()}
        self.mine: list[int] = []
        """Records this session decided, newest last (what `undo` takes back)."""
        self.refresh()

    def refresh(self) -> None:
        """Re-read the log: another reviewer's decisions count as soon as they are appended."""
        self.resolution = resolve(self.held, read_decisions(self.out), self.input_count)

    def progress(self) -> tuple[int, int]:
        return len(self.resolution.effective), len(self.held)

    def reasons(self) -> Counter[str]:
        return Counter(reason for record in self.held.values() for reason in record["reasons"])

    def next_pending(self, after: int | None = None, reason: str | None = None) -> int | None:
        """The first undecided record after `after` (wrapping round), among those with a reason containing `reason`."""
        candidates = [
            i
            for i in self.resolution.pending(self.held)
            if not reason or any(reason in r for r in self.held[i]["reasons"])
        ]
        if not candidates:
            return None
        if after is None:
            return candidates[0]
        later = [i for i in candidates if i > after]
        return later[0] if later else candidates[0]

    def decide(self, index: int, verdict: Verdict, note: str = "", edited_response: str | None = None) -> None:
        append_decision(
            self.out,
            Decision(
                source_index=index,
                record_hash=self.hashes[index],
                decision=verdict,
                reviewer=self.reviewer,
                time=now(),
                note=note,
                edited_response=edited_response,
            ),
        )
        if verdict != "undo":
            self.mine.append(index)
        self.refresh()

    def undo(self) -> int | None:
        """Return this session's last decided record to the queue; its index, or None when there is none."""
        if not self.mine:
            return None
        index = self.mine.pop()
        self.decide(index, "undo")
        return index

    def apply(self) -> ApplyResult:
        return apply_decisions(self.out)


# --------------------------------------------------------------------------
# What a reviewer is shown: flagged spans and reasons in words
# --------------------------------------------------------------------------

_WORD = re.compile(r"\w+")
FlagKind = Literal["invisible", "mixed_script", "unusual", "script"]


@dataclass(frozen=True)
class Flag:
    start: int
    end: int
    kind: FlagKind
    detail: str


REASONS_IN_WORDS = {
    "ood.control_sequence": "invisible or text-direction (bidi) control characters: they hide text or reorder "
    "what a reader sees, and a model learns to emit them",
    "ood.mixed_script": "a word mixes Latin letters with look-alike letters of another script (Cyrillic 'а' in "
    "'pаypal'): a spoofing trick or an encoding accident",
    "ood.unknown_token": "the target model's tokenizer has no token for part of the response (it becomes <unk>)",
    "ood.byte_fallback": "the tokenizer spells part of the response byte by byte: characters the model rarely saw",
    "ood.rare_tokens": "many of the response's tokens are rare in this dataset",
}


def explain(reason: str) -> str:
    return REASONS_IN_WORDS.get(reason, f"held by the {reason.split('.')[0]} step ({reason})")


def _char_name(ch: str) -> str:
    return f"U+{ord(ch):04X} {unicodedata.name(ch, 'unnamed')}"


def _script(ch: str) -> str:
    return unicodedata.name(ch, "").split(" ")[0]


def flagged_spans(text: str) -> list[Flag]:
    """Where in `text` a reviewer should look: invisible characters, mixed-script words, unusual characters,
    letters of non-Latin scripts; sorted by position, not overlapping."""
    if text.isascii():
        return []
    flags = [Flag(m.start(), m.end(), "invisible", _char_name(m.group())) for m in INVISIBLE.finditer(text)]
    for m in _WORD.finditer(text):
        if not m.group().isascii() and mixed_script_word(m.group()):
            foreign = sorted({_char_name(ch) for ch in m.group() if ord(ch) > 127 and ch.isalpha()})
            flags.append(Flag(m.start(), m.end(), "mixed_script", ", ".join(foreign)))
    taken = {i for f in flags for i in range(f.start, f.end)}
    run_start, run_script = None, ""
    for i, ch in enumerate(text + "\n"):
        script = _script(ch) if ord(ch) > 127 and ch.isalpha() and i not in taken else ""
        if script == "LATIN":
            script = ""
        if run_start is not None and script != run_script:
            flags.append(Flag(run_start, i, "script", f"{run_script.title()} letters"))
            run_start = None
        if script and run_start is None:
            run_start, run_script = i, script
        if i < len(text) and i not in taken and not script and ord(ch) > 127:
            category = unicodedata.category(ch)
            if category in ("So", "Co", "Cn", "Cs", "Cc", "Cf") or ch == "\ufffd":
                flags.append(Flag(i, i + 1, "unusual", _char_name(ch)))
    return sorted(flags, key=lambda f: f.start)


# --------------------------------------------------------------------------
# On a cluster: the review-apply pod (decisions from the operator, tasks to Label Studio)
# --------------------------------------------------------------------------

EXIT_LABEL_STUDIO = 4
"""review-apply applied the decisions but could not reach Label Studio: the Job retries (nothing is applied twice)."""


def append_new_decisions(out: Path, decisions: list[Decision]) -> int:
    """Append the decisions that the log does not hold yet (a retried pod appends nothing twice); how many."""
    present = {d.model_dump_json() for d in read_decisions(out).decisions}
    added = 0
    for decision in decisions:
        if decision.model_dump_json() not in present:
            append_decision(out, decision)
            present.add(decision.model_dump_json())
            added += 1
    return added


def task_key(record: dict[str, Any]) -> str:
    """What makes a Label Studio task unique: the held record and its content (a re-run adds no duplicate)."""
    return f"{record['source_index']}:{record_hash(record)}"


def label_studio_task(record: dict[str, Any]) -> dict[str, Any]:
    """A held record as a Label Studio task: the prompt, the response, the reasons and flagged spans in words."""
    turn = _last_assistant(record)
    prompt = "\n\n".join(f"{m['role']}: {m['content']}" for m in record["messages"][:turn])
    response = record["messages"][turn]["content"]
    flags = [f"{reason}: {explain(reason)}" for reason in record["reasons"]]
    flags += [f"{f.kind} at {f.start}-{f.end}: {f.detail}" for f in flagged_spans(response)[:20]]
    return {
        "data": {
            "key": task_key(record),
            "source_index": record["source_index"],
            "record_hash": record_hash(record),
            "prompt": prompt,
            "response": response,
            "flags": "\n".join(flags),
        }
    }


def export_pending_tasks(out: Path, client: Any, project: int) -> int:
    """Import the records still pending that the project lacks (keyed on source_index + record_hash); how many."""
    with folder_lock(out):
        report = read_report(out)
        current = Outputs.read(out)
        resolution = resolve(current.held, read_decisions(out), report["status"]["counts"]["input"])
    existing = {str((task.get("data") or {}).get("key")) for task in client.export_tasks(project)}
    new = [
        label_studio_task(current.held[i])
        for i in resolution.pending(current.held)
        if task_key(current.held[i]) not in existing
    ]
    client.import_tasks(project, new)
    return len(new)


def run_review_apply(config: Any) -> int:
    """`python -m sft_trainer review-apply CONFIG`: append the operator's decisions, apply them, export the queue.

    `config` is a `ReviewApplyRunConfig`. The report's `status` (with `review`
    figures) goes to the termination message, as the curation pod's does.
    """
    import sys

    from ..config.review import TOKEN_ENV, LabelStudioClient, LabelStudioError
    from ..termination import write_termination_summary

    out = Path(config.output_dir)
    try:
        decisions = [Decision.model_validate(d) for d in config.decisions]
    except ValidationError as err:
        print(f"review-apply: a decision from the operator is invalid: {err}", file=sys.stderr)
        return 2
    added = append_new_decisions(out, decisions)
    result = apply_decisions(out)
    print(
        f"review-apply: {added} new decisions, outputs {'changed' if result.changed else 'unchanged'}; {result.figures}"
    )
    for line in result.problems:
        print(f"review-apply: {line}")
    status = read_report(out)["status"]
    if config.label_studio is not None and result.figures["pending"]:
        token = os.environ.get(TOKEN_ENV, "")
        client = LabelStudioClient(config.label_studio.url, token)
        try:
            project = client.ensure_project(config.label_studio.project)
            imported = export_pending_tasks(out, client, project)
        except LabelStudioError as err:
            print(f"review-apply: {err.reason}: {err}", file=sys.stderr)
            write_termination_summary(status)
            return EXIT_LABEL_STUDIO
        print(f"review-apply: {imported} tasks imported into Label Studio project {project}")
    write_termination_summary(status)
    return 0
