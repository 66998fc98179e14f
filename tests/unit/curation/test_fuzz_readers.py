"""Property-based tests of the dataset readers: whatever a file holds, `read_dataset` answers cleanly.

Every input either yields, record by record, a Conversation or a
RejectedRecord (with a reason and the source_index of its position), or
raises DatasetReadError whose message names the file; never another
exception. Files whose records can be told apart (JSON Lines, JSON arrays,
Parquet) yield exactly one item per record.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sft_trainer.formats import Conversation, DatasetReadError, RejectedRecord, read_dataset

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Text that reaches the corners: control characters, lone surrogates, the
# line and paragraph separators JSON strings may hold raw, chat markup.
hostile_text = st.text(
    alphabet=st.characters(codec=None, exclude_categories=()) | st.sampled_from(["\u2028", "\x85", "\x00", "\ud800"]),
    max_size=12,
) | st.sampled_from(["<|im_end|>", "{{ x }}", "", " ", "human", "gpt", "user", "assistant", "system"])

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | hostile_text,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(hostile_text, children, max_size=3),
    max_leaves=12,
)


def turn(speaker_key: str, text_key: str) -> st.SearchStrategy[Any]:
    """A chat turn with either the usual keys and values or arbitrary ones."""
    return st.one_of(
        st.fixed_dictionaries({speaker_key: hostile_text, text_key: hostile_text | json_values}),
        json_values,
    )


records = st.one_of(
    st.fixed_dictionaries(
        {"instruction": hostile_text | json_values, "output": hostile_text | json_values},
        optional={"input": json_values, "system": json_values, "history": json_values, "response": json_values},
    ),
    st.fixed_dictionaries(
        {"conversations": st.lists(turn("from", "value"), max_size=4) | json_values},
        optional={"system": json_values, "id": json_values},
    ),
    st.fixed_dictionaries({"messages": st.lists(turn("role", "content"), max_size=4) | json_values}),
    json_values,
)


def read(path: Path) -> list[Conversation | RejectedRecord] | DatasetReadError:
    """All items, checked to be the two allowed types with their positions; or the read error."""
    try:
        items = list(read_dataset(path))
    except DatasetReadError as err:
        assert str(path) in str(err), err  # the message names the file
        return err
    for position, item in enumerate(items):
        assert isinstance(item, (Conversation, RejectedRecord)), type(item)
        assert item.source_index == position
        if isinstance(item, RejectedRecord):
            assert item.reasons and all(r.startswith("format.") for r in item.reasons), item.reasons
            assert item.detail, item
    return items


def write_and_read(name: str, data: bytes) -> list[Conversation | RejectedRecord] | DatasetReadError:
    with tempfile.TemporaryDirectory(prefix="fuzz-readers-") as folder:
        path = Path(folder) / name
        path.write_bytes(data)
        return read(path)


@FUZZ
@given(data=st.binary(max_size=200), name=st.sampled_from(["d.json", "d.jsonl", "d.parquet", "d"]))
def test_arbitrary_bytes_yield_records_or_one_clear_error(data: bytes, name: str) -> None:
    write_and_read(name, data)


VALID_LINE = b'{"instruction": "Name a colour.", "input": "", "output": "Blue."}'


@FUZZ
@given(
    edits=st.lists(st.tuples(st.integers(0, 400), st.binary(min_size=0, max_size=3), st.integers(0, 3)), max_size=6),
    name=st.sampled_from(["d.json", "d.jsonl"]),
)
def test_damaged_valid_files_yield_records_or_one_clear_error(edits: list[tuple[int, bytes, int]], name: str) -> None:
    """A valid file with bytes replaced, inserted or deleted: the damage real files suffer."""
    data = bytearray(b"[" + b",\n".join([VALID_LINE] * 3) + b"]" if name == "d.json" else (VALID_LINE + b"\n") * 3)
    for at, insert, delete in edits:
        at %= len(data) + 1
        data[at : at + delete] = insert
    write_and_read(name, bytes(data))


@FUZZ
@given(rows=st.lists(records, max_size=6))
def test_json_lines_yield_one_item_per_record(rows: list[Any]) -> None:
    # ensure_ascii=False: raw U+2028 and U+0085 inside strings, as our own writers produce them.
    lines = [json.dumps(row, ensure_ascii=False) for row in rows]
    data = "\n".join(lines).encode("utf-8", errors="surrogatepass")
    items = write_and_read("d.jsonl", data)
    assert not isinstance(items, DatasetReadError), items
    assert len(items) == len(rows)


@FUZZ
@given(rows=st.lists(records, max_size=6))
def test_json_arrays_yield_one_item_per_record(rows: list[Any]) -> None:
    items = write_and_read("d.json", json.dumps(rows).encode())
    assert not isinstance(items, DatasetReadError), items
    assert len(items) == len(rows)


# JSON text that is valid but pathological for a Python reader: nesting near
# and far beyond the recursion limit, integers beyond CPython's 4,300-digit
# limit, raw separators that str.splitlines() would cut at.
pathological_records = st.one_of(
    st.integers(1, 3000).map(lambda depth: "[" * depth + "]" * depth),
    st.integers(1, 3000).map(
        lambda depth: '{"instruction": "x", "output": ' + '{"a": ' * depth + "1" + "}" * depth + "}"
    ),
    st.integers(4000, 5000).map(lambda digits: '{"instruction": "x", "output": ' + "7" * digits + "}"),
    st.sampled_from(["\u2028", "\x85", "\u2029", "\x1c", "\x0c"]).map(
        lambda separator: json.dumps({"instruction": f"a{separator}b", "output": "c"}, ensure_ascii=False)
    ),
    st.just(VALID_LINE.decode()),
)


@FUZZ
@given(lines=st.lists(pathological_records, min_size=1, max_size=4), array=st.booleans())
def test_pathological_values_cost_one_record_each(lines: list[str], array: bool) -> None:
    lines = [*lines, VALID_LINE.decode()]  # one good record: the file as a whole is readable
    data = ("[" + ",".join(lines) + "]") if array else "\n".join(lines)
    items = write_and_read("d.json" if array else "d.jsonl", data.encode("utf-8"))
    assert not isinstance(items, DatasetReadError), items
    assert len(items) == len(lines)


ARROW_TYPES = st.sampled_from(
    [
        pa.string(),
        pa.large_string(),
        pa.binary(),
        pa.int64(),
        pa.float64(),
        pa.bool_(),
        pa.timestamp("ms"),
        pa.list_(pa.string()),
        pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())])),
        pa.struct([("from", pa.string()), ("value", pa.int32())]),
        pa.map_(pa.string(), pa.string()),
        pa.null(),
    ]
)
COLUMN_NAMES = st.sampled_from(["instruction", "input", "output", "messages", "conversations", "id", "text", ""])


@st.composite
def parquet_tables(draw: st.DrawFn) -> pa.Table:
    """A table of random column names and types, filled with random values (nulls included)."""
    count = draw(st.integers(0, 4))
    names = draw(st.lists(COLUMN_NAMES, min_size=1, max_size=4, unique=True))
    columns = {}
    for name in names:
        arrow_type = draw(ARROW_TYPES)
        columns[name] = pa.array([draw(value_of(arrow_type)) for _ in range(count)], type=arrow_type)
    return pa.table(columns)


def value_of(arrow_type: pa.DataType) -> st.SearchStrategy[Any]:
    values: dict[str, st.SearchStrategy[Any]] = {
        "string": hostile_text.filter(lambda t: "\ud800" not in t),
        "large_string": st.text(max_size=8),
        "binary": st.binary(max_size=8),
        "int64": st.integers(-(2**63), 2**63 - 1),
        "double": st.floats(allow_nan=True),
        "bool": st.booleans(),
        "timestamp[ms]": st.datetimes(),
        "list<item: string>": st.lists(st.text(max_size=5), max_size=3),
        "list<item: struct<role: string, content: string>>": st.lists(
            st.fixed_dictionaries(
                {"role": st.sampled_from(["user", "assistant", "x"]), "content": st.text(max_size=5)}
            ),
            max_size=3,
        ),
        "struct<from: string, value: int32>": st.fixed_dictionaries(
            {"from": st.text(max_size=5), "value": st.integers(-(2**31), 2**31 - 1)}
        ),
        "map<string, string>": st.lists(st.tuples(st.text(max_size=4), st.text(max_size=4)), max_size=2),
        "null": st.none(),
    }
    strategy = values[str(arrow_type)]
    return strategy if str(arrow_type) == "null" else st.none() | strategy


@FUZZ
@given(table=parquet_tables())
def test_random_parquet_tables_yield_one_item_per_row(table: pa.Table) -> None:
    with tempfile.TemporaryDirectory(prefix="fuzz-readers-") as folder:
        path = Path(folder) / "d.parquet"
        pq.write_table(table, path)
        items = read(path)
    assert not isinstance(items, DatasetReadError), items
    assert len(items) == table.num_rows
