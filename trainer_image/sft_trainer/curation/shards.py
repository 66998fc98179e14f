"""The input as numbered shards of records, each readable on its own (JSON Lines by seeking to its first line)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from ..formats import (
    BadLine,
    Conversation,
    DatasetReadError,
    RejectedRecord,
    parse_record,
    read_dataset,
    record_to_conversation,
)

SHARD_RECORDS = 10_000
"""Records per shard: the texts held at once (about 10 KB each), and the unit a Ray worker is given."""

Item = Conversation | RejectedRecord


class InputShards:
    """The input file as numbered shards of `shard_records` records, each readable on its own.

    JSON Lines (`.jsonl`, `.ndjson`, UTF-8, a first line that parses) is read
    line by line: a first scan counts the records and notes where each shard
    starts, and a shard is read by seeking there, so memory holds one shard.
    Other inputs (a JSON array, Parquet, a file `read_dataset` must judge
    whole) are read whole once and kept: convert a large set to JSON Lines.
    """

    def __init__(self, path: str, format: str, shard_records: int = SHARD_RECORDS, max_records: int | None = None):
        self.path, self.format = Path(path), format
        self.shard_records, self.max_records = shard_records, max_records
        self.starts: list[tuple[int, int]] = []
        """(byte offset, line number) where each shard starts (JSON Lines)."""
        self.whole: list[Item] | None = None
        self.count = 0
        self._scan()

    @property
    def streams(self) -> bool:
        return self.whole is None

    @property
    def shards(self) -> int:
        return -(-self.count // self.shard_records)

    def shard_bounds(self, shard: int) -> tuple[int, int]:
        """The source_index range [start, end) of a shard."""
        start = shard * self.shard_records
        return start, min(start + self.shard_records, self.count)

    def _scan(self) -> None:
        if not self._streamable():
            self._read_whole()
            return
        count, offset = 0, 0
        with self.path.open("rb") as handle:
            for line_no, line in enumerate(handle, start=1):
                if line.strip():
                    if self.max_records is not None and count >= self.max_records:
                        break
                    first = _decode_line(line, at_file_start=offset == 0)
                    if count == 0 and isinstance(parse_record(first, "line 1"), BadLine):
                        # A pretty-printed object, or not JSON Lines at all: the whole-file reader decides.
                        self._read_whole()
                        return
                    if count % self.shard_records == 0:
                        self.starts.append((offset, line_no))
                    count += 1
                offset += len(line)
        self.count = count

    def _read_whole(self) -> None:
        items = list(read_dataset(self.path, self.format))
        self.whole = items[: self.max_records] if self.max_records is not None else items
        self.count = len(self.whole)
        self.starts = []

    def _streamable(self) -> bool:
        """A regular UTF-8 file named .jsonl or .ndjson (anything else gets the whole-file reader and its errors)."""
        if self.path.suffix.lower() not in (".jsonl", ".ndjson"):
            return False
        try:
            if not stat.S_ISREG(self.path.stat().st_mode):
                return False
        except OSError:
            return False
        return self._utf8()

    def _utf8(self) -> bool:
        try:
            with self.path.open("rb") as handle:
                head = handle.read(4)
        except OSError as err:
            raise DatasetReadError(f"{self.path}: cannot read: {err.strerror or err}") from err
        return json.detect_encoding(head).startswith("utf-8")

    def read(self, shard: int) -> list[Item]:
        """The items of one shard, in order, with their source_index (what `read_dataset` gives for them)."""
        start, end = self.shard_bounds(shard)
        if self.whole is not None:
            return self.whole[start:end]
        offset, line_no = self.starts[shard]
        items: list[Item] = []
        index = start
        with self.path.open("rb") as handle:
            handle.seek(offset)
            for line in handle:
                if index >= end:
                    break
                if line.strip():
                    record = parse_record(_decode_line(line, at_file_start=offset == 0), f"line {line_no}")
                    if isinstance(record, BadLine):
                        items.append(RejectedRecord(index, [record.reason], record.text, record.detail))
                    else:
                        items.append(record_to_conversation(record, index, self.format))
                    index += 1
                line_no += 1
                offset += len(line)
        return items


def _decode_line(line: bytes, *, at_file_start: bool) -> str:
    """One JSON Lines line as `read_dataset` decodes it: invalid UTF-8 kept as surrogates, and a BOM skipped
    only where the file starts (a BOM mid-file, from concatenated files, leaves its line invalid JSON there too)."""
    if at_file_start:
        line = line.removeprefix(b"\xef\xbb\xbf")
    return line.decode("utf-8", errors="surrogateescape").rstrip("\r\n")
