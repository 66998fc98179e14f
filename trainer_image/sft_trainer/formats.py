"""Alpaca / ShareGPT / OpenAI `messages` records -> one `Conversation` type.

`read_dataset` reads JSON (an array), JSON Lines or Parquet and yields, for
every record in file order, either a `Conversation` or a `RejectedRecord`
that says why the record could not be understood. Nothing is dropped: the
`source_index` of each yielded item is the record's position in the file, so
the callers can prove that every input record ended up somewhere.

Only a file that cannot be read at all (missing, not JSON/JSONL/Parquet, a
JSON array broken in the middle, no line of a JSONL file parses) raises
`DatasetReadError`, whose message names the file and the first bad record.

This module judges structure only (types, required fields, known roles).
Whether the content is any good (empty turns, role order, placeholders,
invalid UTF-8 ...) is the curation pipeline's validation step, so that those
drops are counted with the other quality reasons.
"""

from __future__ import annotations

import json
import re
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


def _decode(data: bytes) -> str:
    # surrogateescape keeps invalid UTF-8 bytes as lone surrogates instead of
    # failing the whole file: the validation step then rejects exactly the
    # records that contain them.
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    return data.decode("utf-8", errors="surrogateescape")


def _json_array_records(path: Path, text: str) -> list[Any]:
    """Parse a JSON array; on failure name the element that breaks it."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        _raise_for_first_bad_element(path, text)
        raise  # unreachable: the scan above always raises
    if not isinstance(data, list):
        raise DatasetReadError(f"{path}: expected a JSON array of records, got {type(data).__name__}")
    return data


def _raise_for_first_bad_element(path: Path, text: str) -> None:
    decoder = json.JSONDecoder()
    pos = _WS.match(text, 0).end() + 1  # past '['
    index = 0
    while True:
        pos = _WS.match(text, pos).end()
        if pos < len(text) and text[pos] == "]" and index == 0:
            break
        try:
            _, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as err:
            raise DatasetReadError(
                f"{path}: record {index} (line {err.lineno}, column {err.colno}) is not valid JSON: {err.msg}"
            ) from None
        pos = _WS.match(text, pos).end()
        if pos < len(text) and text[pos] == ",":
            pos += 1
            index += 1
            continue
        if pos < len(text) and text[pos] == "]":
            break
        line = text.count("\n", 0, pos) + 1
        raise DatasetReadError(f"{path}: after record {index} (line {line}) expected ',' or ']'")
    raise DatasetReadError(f"{path}: not valid JSON after the closing ']'")


@dataclass(slots=True)
class _BadLine:
    text: str
    detail: str


def _jsonl_records(path: Path, text: str) -> list[Any]:
    """One record per non-blank line; a line that does not parse is kept as a _BadLine."""
    records: list[Any] = []
    parsed_any = False
    first_bad = None
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
            parsed_any = True
        except json.JSONDecodeError as err:
            detail = f"line {line_no}, column {err.colno}: {err.msg}"
            records.append(_BadLine(line, detail))
            first_bad = first_bad or (len(records) - 1, detail)
    if records and not parsed_any:
        index, detail = first_bad  # type: ignore[misc]
        raise DatasetReadError(f"{path}: no line is valid JSON; first bad record {index} ({detail})")
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
    for batch in batches:
        yield from batch.to_pylist()


def _file_records(path: Path) -> Iterable[Any]:
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DatasetReadError(f"{path}: cannot read: {err.strerror or err}") from err
    if data[:4] == b"PAR1":
        return _parquet_records(path)
    if path.suffix.lower() == ".parquet":
        raise DatasetReadError(f"{path}: not a Parquet file (no PAR1 header)")
    text = _decode(data)
    start = _WS.match(text, 0).end()
    if start == len(text):
        return []
    if text[start] == "[":
        return _json_array_records(path, text)
    if text[start] != "{":
        raise DatasetReadError(
            f"{path}: record 0 (line 1) is not JSON: expected a JSON array, JSON Lines or Parquet, found {text[start : start + 20]!r}"
        )
    # A single pretty-printed object is one record, not a broken JSONL file.
    if "\n" in text[start:].strip():
        try:
            whole = json.loads(text)
        except json.JSONDecodeError:
            whole = None
        if isinstance(whole, dict):
            return [whole]
    return _jsonl_records(path, text)


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
        if isinstance(record, _BadLine):
            yield RejectedRecord(index, [INVALID_JSON], record.text, record.detail)
        else:
            yield record_to_conversation(record, index, format)
