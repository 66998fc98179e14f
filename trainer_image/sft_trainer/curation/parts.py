"""Part files: what each phase and shard writes with the records' text, merged into the usual outputs at the end."""

from __future__ import annotations

import heapq
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..formats import Conversation
from .runner import Rejection

PARTS = ".parts"


def part_path(out: Path, phase: int, shard: int, kind: str) -> Path:
    return out / PARTS / f"phase{phase:02d}" / f"shard{shard:06d}.{kind}.jsonl"


def rejection_record(r: Rejection) -> dict[str, Any]:
    """A line of rejected.jsonl (the one format both the in-memory and the streaming writers use)."""
    return {
        "source_index": r.source_index,
        "reasons": r.reasons,
        **({"detail": r.detail} if r.detail else {}),
        **r.extra,
        "record": r.raw,
    }


def review_record(conv: Conversation, reasons: list[str]) -> dict[str, Any]:
    return {**conv.to_record(), "reasons": reasons}


def record_line(record: dict[str, Any]) -> str:
    # default=str: a Parquet input can hand us bytes, timestamps and decimals,
    # which a rejected record must still be written with.
    try:
        line = json.dumps(record, ensure_ascii=False, default=str)
        line.encode("utf-8")  # invalid UTF-8 read from the input survives as lone surrogates
        return line
    except UnicodeEncodeError:
        return json.dumps(record, ensure_ascii=True, default=str)


def write_part(path: Path, records: Iterator[dict[str, Any]]) -> None:
    """A part file, written whole or not at all (a restarted pass rewrites it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    with temporary.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(record_line(record) + "\n")
    temporary.replace(path)


_SOURCE_INDEX = re.compile(r'^\{"source_index": (\d+)')


def merge_parts(out: Path) -> None:
    """The part files -> curated.jsonl (input order), rejected.jsonl (by source_index), review.jsonl (phase order)."""
    parts = out / PARTS
    curated = sorted(parts.glob("output/shard*.curated.jsonl"))
    _concatenate(curated, out / "curated.jsonl")
    review = sorted(p for p in parts.glob("phase*/shard*.review.jsonl"))
    _concatenate(review, out / "review.jsonl")
    rejected = sorted(parts.glob("phase*/shard*.rejected.jsonl"))
    handles = [p.open(encoding="utf-8") for p in rejected]
    try:
        with (out / "rejected.jsonl").open("w", encoding="utf-8") as target:
            target.writelines(heapq.merge(*handles, key=_line_index))
    finally:
        for handle in handles:
            handle.close()


def _line_index(line: str) -> int:
    match = _SOURCE_INDEX.match(line)
    assert match, f"a part line without a leading source_index: {line[:80]!r}"
    return int(match.group(1))


def _concatenate(paths: list[Path], target: Path) -> None:
    with target.open("wb") as handle:
        for path in paths:
            with path.open("rb") as part:
                shutil.copyfileobj(part, handle)
