"""Alpaca / ShareGPT / OpenAI `messages` records -> one `Conversation` type.

`read_dataset` reads JSON (an array), JSON Lines or Parquet and yields, for
every record in file order, either a `Conversation` or a `RejectedRecord`
that says why the record could not be understood. Nothing is dropped: the
`source_index` of each yielded item is the record's position in the file, so
the callers can prove that every input record ended up somewhere.

Only a file that cannot be read at all (missing, not a regular file, not
JSON/JSONL/Parquet, a JSON array broken in the middle, no line of a JSONL
file parses) raises `DatasetReadError`, whose message names the file and the
first bad record. Text is UTF-8 (a BOM is skipped); UTF-16 and UTF-32 are
recognised by their first bytes, as RFC 4627 and Python's `json` do.

This module judges structure only (types, required fields, known roles).
Whether the content is any good (empty turns, role order, placeholders,
invalid UTF-8 ...) is the curation pipeline's validation step, so that those
drops are counted with the other quality reasons.
"""

from __future__ import annotations

import json
import re
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Role = Literal["system", "user", "assistant"]
RecordFormat = Literal["alpaca", "sharegpt", "messages"]

FORMATS: tuple[str, ...] = ("auto", "alpaca", "sharegpt", "messages")

# Reasons for records this module cannot turn into a Conversation. Short,
# stable, snake_case, prefixed by the step ("format"), like every other drop
# reason the pipeline counts.
INVALID_JSON = "format.invalid_json"
NOT_AN_OBJECT = "format.not_an_object"
UNKNOWN_SCHEMA = "format.unknown_schema"
MISSING_FIELD = "format.missing_field"
WRONG_TYPE = "format.wrong_type"
UNKNOWN_ROLE = "format.unknown_role"
NON_TEXT_CONTENT = "format.non_text_content"
TOO_DEEP = "format.too_deeply_nested"

# Deepest nesting of objects and arrays a record may have. Real records are
# 2 to 5 levels deep. A record nested close to Python's recursion limit
# (about 1,000) parses, but cannot then be written back (json.dumps), printed
# or copied from a deeper call stack; one nested beyond it does not even parse.
MAX_NESTING = 100


@dataclass(frozen=True, slots=True)
class Message:
    role: Role
    content: str


@dataclass(slots=True)
class Conversation:
    """One training example: its turns, where it came from, and extra fields.

    `meta` is copied into the canonical record (an `id`, the task label,
    scores); `raw` is the record as it was read, kept so a later rejection can
    write the original, and is never part of the canonical record.
    """

    messages: list[Message]
    source_index: int
    meta: dict[str, Any] = field(default_factory=dict)
    raw: Any = field(default=None, repr=False, compare=False)
    features: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    """Working features the curation steps share (embeddings as numpy vectors); never written out."""

    def to_record(self) -> dict[str, Any]:
        """The canonical form: `{"messages": [...], "source_index": n, **meta}`."""
        record: dict[str, Any] = {
            "messages": [{"role": m.role, "content": m.content} for m in self.messages],
            "source_index": self.source_index,
        }
        record.update(self.meta)
        return record

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Conversation:
        """Inverse of `to_record` (the curated.jsonl the trainer reads)."""
        meta = {k: v for k, v in record.items() if k not in ("messages", "source_index")}
        messages = [Message(m["role"], m["content"]) for m in record["messages"]]
        return cls(messages, int(record["source_index"]), meta, raw=record)

    def turns(self, role: Role) -> list[str]:
        """Contents of every turn with this role, in order."""
        return [m.content for m in self.messages if m.role == role]


@dataclass(slots=True)
class RejectedRecord:
    """A record that could not be used, with the reasons and the original."""

    source_index: int
    reasons: list[str]
    raw: Any
    detail: str = ""
    """Human-readable explanation naming the field or position at fault."""


class DatasetReadError(ValueError):
    """The whole file is unreadable; the message names the file and the first bad record."""


# --------------------------------------------------------------------------
# Records -> Conversation
# --------------------------------------------------------------------------

# Speaker names seen in the wild, mapped to our three roles. Everything else
# (tool, function, observation ...) is rejected rather than guessed.
_ROLE_ALIASES: dict[str, Role] = {
    "system": "system",
    "user": "user",
    "human": "user",
    "prompter": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "chatgpt": "assistant",
    "bard": "assistant",
    "bing": "assistant",
    "model": "assistant",
    "bot": "assistant",
}


class _Reject(Exception):
    """Internal: raised while converting one record; becomes a RejectedRecord."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def detect_record_format(record: Any) -> RecordFormat | None:
    """Which schema a record follows, judged by its keys; None if none fits."""
    if not isinstance(record, dict):
        return None
    if "messages" in record:
        return "messages"
    if "conversations" in record:
        return "sharegpt"
    if "instruction" in record:
        return "alpaca"
    return None


def _text(record: dict[str, Any], key: str, where: str, *, required: bool) -> str:
    if key not in record or record[key] is None:
        if required:
            raise _Reject(MISSING_FIELD, f"{where}: field '{key}' is missing")
        return ""
    value = record[key]
    if not isinstance(value, str):
        raise _Reject(WRONG_TYPE, f"{where}: field '{key}' is {type(value).__name__}, expected a string")
    return value


def _role(name: Any, where: str) -> Role:
    if not isinstance(name, str):
        raise _Reject(WRONG_TYPE, f"{where}: role is {type(name).__name__}, expected a string")
    role = _ROLE_ALIASES.get(name.strip().lower())
    if role is None:
        raise _Reject(UNKNOWN_ROLE, f"{where}: unknown role {name!r}")
    return role


def _content(value: Any, where: str) -> str:
    """A turn's text; OpenAI content-part lists are accepted when all parts are text."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        texts = []
        for i, part in enumerate(value):
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            else:
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise _Reject(NON_TEXT_CONTENT, f"{where}: content part {i} is {kind!r}, only text is supported")
        return "\n".join(texts)
    if value is None:
        raise _Reject(MISSING_FIELD, f"{where}: content is missing")
    raise _Reject(WRONG_TYPE, f"{where}: content is {type(value).__name__}, expected a string")


def _system_prefix(record: dict[str, Any]) -> list[Message]:
    system = _text(record, "system", "record", required=False)
    return [Message("system", system)] if system else []


def _alpaca_messages(record: dict[str, Any]) -> list[Message]:
    instruction = _text(record, "instruction", "record", required=True)
    extra_input = _text(record, "input", "record", required=False)
    answer_key = "output" if record.get("output") is not None or "response" not in record else "response"
    output = _text(record, answer_key, "record", required=True)
    messages = _system_prefix(record)
    history = record.get("history")
    if history is not None:
        if not isinstance(history, list):
            raise _Reject(
                WRONG_TYPE,
                f"record: field 'history' is {type(history).__name__}, expected a list of [user, assistant] pairs",
            )
        for i, pair in enumerate(history):
            if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(t, str) for t in pair)):
                raise _Reject(WRONG_TYPE, f"record: history[{i}] is not a [user, assistant] pair of strings")
            messages += [Message("user", pair[0]), Message("assistant", pair[1])]
    # The input is context for the instruction; joined the way the Alpaca
    # prompt template separates them.
    prompt = f"{instruction}\n\n{extra_input}" if extra_input.strip() else instruction
    messages += [Message("user", prompt), Message("assistant", output)]
    return messages


def _sharegpt_messages(record: dict[str, Any]) -> list[Message]:
    turns = record["conversations"]
    if not isinstance(turns, list):
        raise _Reject(WRONG_TYPE, f"record: field 'conversations' is {type(turns).__name__}, expected a list")
    messages = _system_prefix(record)
    for i, turn in enumerate(turns):
        where = f"conversations[{i}]"
        if not isinstance(turn, dict):
            raise _Reject(WRONG_TYPE, f"{where} is {type(turn).__name__}, expected an object")
        speaker_key = "from" if "from" in turn else "role"
        text_key = "value" if "value" in turn else "content"
        if speaker_key not in turn:
            raise _Reject(MISSING_FIELD, f"{where}: field 'from' is missing")
        if text_key not in turn:
            raise _Reject(MISSING_FIELD, f"{where}: field 'value' is missing")
        messages.append(Message(_role(turn[speaker_key], where), _content(turn[text_key], where)))
    return messages


def _openai_messages(record: dict[str, Any]) -> list[Message]:
    turns = record["messages"]
    if not isinstance(turns, list):
        raise _Reject(WRONG_TYPE, f"record: field 'messages' is {type(turns).__name__}, expected a list")
    messages = []
    for i, turn in enumerate(turns):
        where = f"messages[{i}]"
        if not isinstance(turn, dict):
            raise _Reject(WRONG_TYPE, f"{where} is {type(turn).__name__}, expected an object")
        if "role" not in turn:
            raise _Reject(MISSING_FIELD, f"{where}: field 'role' is missing")
        messages.append(Message(_role(turn["role"], where), _content(turn.get("content"), where)))
    return messages


_CONVERTERS = {"alpaca": _alpaca_messages, "sharegpt": _sharegpt_messages, "messages": _openai_messages}
_REQUIRED_KEY = {"alpaca": "instruction", "sharegpt": "conversations", "messages": "messages"}


def record_to_conversation(record: Any, source_index: int, format: str = "auto") -> Conversation | RejectedRecord:
    """Convert one parsed record; a record that does not fit becomes a RejectedRecord."""
    if not isinstance(record, dict):
        return RejectedRecord(
            source_index, [NOT_AN_OBJECT], record, f"record is {type(record).__name__}, expected a JSON object"
        )
    fmt = detect_record_format(record) if format == "auto" else format
    if fmt is None:
        keys = ", ".join(sorted(map(str, record))[:8]) or "none"
        return RejectedRecord(
            source_index,
            [UNKNOWN_SCHEMA],
            record,
            f"record has none of 'instruction', 'conversations', 'messages' (keys: {keys})",
        )
    if fmt not in _CONVERTERS:
        raise ValueError(f"unknown dataset format {format!r}; expected one of {', '.join(FORMATS)}")
    if _REQUIRED_KEY[fmt] not in record:
        return RejectedRecord(
            source_index, [MISSING_FIELD], record, f"record: field '{_REQUIRED_KEY[fmt]}' is missing ({fmt} format)"
        )
    try:
        messages = _CONVERTERS[fmt](record)
    except _Reject as err:
        return RejectedRecord(source_index, [err.reason], record, err.detail)
    meta: dict[str, Any] = {"source_format": fmt}
    if isinstance(record.get("id"), (str, int)):
        meta["id"] = record["id"]
    return Conversation(messages, source_index, meta, raw=record)


# --------------------------------------------------------------------------
# Files -> records
# --------------------------------------------------------------------------

_WS = re.compile(r"[ \t\r\n]*")
# Lines end at LF, CRLF or CR only: str.splitlines() also splits at U+2028,
# U+0085 and others that JSON strings may hold raw (our own ensure_ascii=False
# writers emit them), which cut one record in two.
_LINE_END = re.compile(r"\r\n?|\n")


def _decode(path: Path, data: bytes) -> str:
    # The encoding is told by a BOM or by where the NUL bytes of the first
    # ASCII characters fall (RFC 4627; what json.loads(bytes) does itself):
    # Windows tools write UTF-16.
    encoding = json.detect_encoding(data)
    if encoding.startswith("utf-8"):
        # surrogateescape keeps invalid UTF-8 bytes as lone surrogates instead
        # of failing the whole file: the validation step then rejects exactly
        # the records that contain them.
        return data.removeprefix(b"\xef\xbb\xbf").decode("utf-8", errors="surrogateescape")
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as err:
        raise DatasetReadError(
            f"{path}: the first bytes say {encoding}, but bytes {err.start}-{err.end} are not valid {encoding}"
        ) from None


def _json_array_records(path: Path, text: str) -> list[Any]:
    """Parse a JSON array; on failure name the element that breaks it."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        # Broken, or one element too deep or too odd for the parser: walk the
        # elements one by one to name the broken one or reject only the odd one.
        return _json_array_elements(path, text)
    if not isinstance(data, list):
        raise DatasetReadError(f"{path}: expected a JSON array of records, got {type(data).__name__}")
    if any(isinstance(record, (dict, list)) and _nesting_exceeds(record) for record in data):
        return _json_array_elements(path, text)  # keeps the too-deep records' text for rejected.jsonl
    return data


def _json_array_elements(path: Path, text: str) -> list[Any]:
    """The elements of a JSON array one at a time; a syntax error names the element and fails the file."""
    decoder = json.JSONDecoder()
    records: list[Any] = []
    pos = _WS.match(text, 0).end() + 1  # past '['
    line, counted_to = 1, 0
    while True:
        pos = _WS.match(text, pos).end()
        if pos < len(text) and text[pos] == "]" and not records:
            break
        line, counted_to = line + text.count("\n", counted_to, pos), pos  # counted on: a rescan per record is quadratic
        where = f"record {len(records)} (line {line})"
        try:
            _, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as err:
            raise DatasetReadError(
                f"{path}: record {len(records)} (line {err.lineno}, column {err.colno}) is not valid JSON: {err.msg}"
            ) from None
        except (ValueError, RecursionError):
            end = _value_end(text, pos)  # parses as JSON syntax, but not as a Python value
        records.append(parse_record(text[pos:end], where))
        pos = _WS.match(text, end).end()
        if pos < len(text) and text[pos] == ",":
            pos += 1
            continue
        if pos < len(text) and text[pos] == "]":
            break
        line = text.count("\n", 0, pos) + 1
        raise DatasetReadError(f"{path}: after record {len(records) - 1} (line {line}) expected ',' or ']'")
    if text[pos + 1 :].strip(" \t\r\n"):
        raise DatasetReadError(f"{path}: not valid JSON after the closing ']'")
    return records


_JSON_SYNTAX = re.compile(r'["\[\]{},]')
_STRING_END = re.compile(r'[^"\\]*(?:\\.[^"\\]*)*"', re.S)


def _value_end(text: str, pos: int) -> int:
    """Where the JSON value starting at `pos` ends, found by counting brackets (no recursion)."""
    depth = 0
    while True:
        found = _JSON_SYNTAX.search(text, pos)
        if found is None:
            return len(text)
        pos = found.start()
        char = text[pos]
        if char == '"':
            closing = _STRING_END.match(text, pos + 1)
            pos = closing.end() if closing else len(text)
            continue
        if char in "[{":
            depth += 1
        elif depth == 0:  # ',' or a closing bracket of the enclosing array
            return pos
        elif char in "]}":
            depth -= 1
            if depth == 0:
                return pos + 1
        pos += 1


@dataclass(slots=True)
class BadLine:
    """A record that could not be parsed (or is too deep to use), kept as its text."""

    text: str
    detail: str
    reason: str = INVALID_JSON


def _nesting_exceeds(value: Any, limit: int = MAX_NESTING) -> bool:
    """Whether objects/arrays nest more than `limit` levels deep; iterative, so it cannot hit the recursion limit."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list, tuple)))
    return False


def parse_record(text: str, where: str) -> Any:
    """One record's JSON text -> the value, or a BadLine saying why not (never raises); `where` ("line 7")
    starts the BadLine's detail. `read_dataset` and the streaming reader (`curation.streaming`) both parse with it."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        return BadLine(text, f"{where}, column {err.colno}: {err.msg}")
    except RecursionError:
        return BadLine(text, f"{where}: nested deeper than the JSON parser can follow", TOO_DEEP)
    except ValueError as err:  # e.g. an integer of more than 4,300 digits (CPython's int limit)
        return BadLine(text, f"{where}: {err}")
    if isinstance(value, (dict, list)) and _nesting_exceeds(value):
        return BadLine(text, f"{where}: nested more than {MAX_NESTING} levels deep", TOO_DEEP)
    return value


def _jsonl_records(path: Path, text: str) -> list[Any]:
    """One record per non-blank line; a line that does not parse is kept as a BadLine."""
    records: list[Any] = []
    parsed_any = False
    first_bad = None
    for line_no, line in enumerate(_LINE_END.split(text), start=1):
        if not line.strip():
            continue
        record = parse_record(line, f"line {line_no}")
        records.append(record)
        if isinstance(record, BadLine):
            first_bad = first_bad or (len(records) - 1, record.detail)
        else:
            parsed_any = True
    if records and not parsed_any:
        index, detail = first_bad  # type: ignore[misc]
        raise DatasetReadError(f"{path}: not JSON Lines, no line is valid JSON; first bad record {index} ({detail})")
    return records


def _parquet_records(path: Path) -> Iterator[Any]:
    try:
        import pyarrow.parquet as pq
    except ImportError as err:  # pragma: no cover - the trainer extra has pyarrow
        raise DatasetReadError(f"{path}: reading Parquet needs pyarrow: pip install 'trustdoc-sft[trainer]'") from err
    try:
        parquet = pq.ParquetFile(path)
        batches = list(parquet.iter_batches())
    except Exception as err:  # pyarrow raises several unrelated types for a broken file
        raise DatasetReadError(f"{path}: not a readable Parquet file: {err}") from err
    rows = (row for batch in batches for row in batch.to_pylist())
    for index, row in enumerate(rows):
        if _nesting_exceeds(row):
            yield BadLine("<not reproduced: too deep>", f"row {index}: nested more than {MAX_NESTING} levels", TOO_DEEP)
        else:
            yield row


def _file_records(path: Path) -> Iterable[Any]:
    try:
        kind = path.stat().st_mode
        # A FIFO would block the read forever and /dev/zero would never end.
        if not stat.S_ISREG(kind):
            raise DatasetReadError(f"{path}: not a regular file ({_file_kind(kind)})")
        data = path.read_bytes()
    except OSError as err:
        raise DatasetReadError(f"{path}: cannot read: {err.strerror or err}") from err
    if data[:4] == b"PAR1":
        return _parquet_records(path)
    if path.suffix.lower() == ".parquet":
        raise DatasetReadError(f"{path}: not a Parquet file (no PAR1 header)")
    text = _decode(path, data)
    start = _WS.match(text, 0).end()
    if start == len(text):
        return []
    # A .jsonl file is JSON Lines whatever its first line holds: sniffing
    # took a first record that is an array for a JSON array file, and one
    # that is not an object for a file that is not JSON at all.
    json_lines = path.suffix.lower() in (".jsonl", ".ndjson")
    if text[start] == "[" and not json_lines:
        return _json_array_records(path, text)
    if text[start] != "{" and not json_lines:
        raise DatasetReadError(
            f"{path}: record 0 (line 1) is not JSON: expected a JSON array, JSON Lines or Parquet, found {text[start : start + 20]!r}"
        )
    # A single pretty-printed object is one record, not a broken JSONL file.
    if "\n" in text[start:].strip():
        whole = parse_record(text, "line 1")
        if isinstance(whole, dict):
            return [whole]
        if isinstance(whole, BadLine) and whole.reason == TOO_DEEP and not text[_value_end(text, start) :].strip():
            return [whole]  # one object, too deep to use: one rejected record
    return _jsonl_records(path, text)


def _file_kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a named pipe"), (stat.S_ISCHR, "a device")):
        if test(mode):
            return name
    return "not a plain file"


def read_dataset(path: str | Path, format: str = "auto") -> Iterator[Conversation | RejectedRecord]:
    """Every record of a JSON / JSONL / Parquet file, in order, as Conversation or RejectedRecord.

    `format` is `auto` (detected per record from its keys), `alpaca`,
    `sharegpt` or `messages`. Raises DatasetReadError (naming the file and the
    first bad record) only when the file as a whole cannot be read; that check
    happens before the first record is yielded.
    """
    if format not in FORMATS:
        raise ValueError(f"unknown dataset format {format!r}; expected one of {', '.join(FORMATS)}")
    path = Path(path)
    records = _file_records(path)
    if not isinstance(records, list):
        records = list(records)  # Parquet: surface read errors before yielding anything
    return _convert_all(records, format)


def _convert_all(records: list[Any], format: str) -> Iterator[Conversation | RejectedRecord]:
    for index, record in enumerate(records):
        if isinstance(record, BadLine):
            yield RejectedRecord(index, [record.reason], record.text, record.detail)
        else:
            yield record_to_conversation(record, index, format)
