"""Compact records: what a streaming engine keeps of each record between phases, as columns.

A record's `meta` (task label, a dict of ~10 scores, what set steps add) is
held as its *shape* (keys, nesting, bools and None: one table entry shared
by every record with the same shape) and its numbers in one float64 column,
a string by its position in a table of the strings (each held once):
~100 bytes a record instead of ~1 KB of dicts. The
features a later set step reads are one column each (a MinHash signature is
a row of a uint32 matrix, an exact key a row of a uint8 one). Every value
comes back as it went in (ints as ints, floats bit for bit, keys in order),
so the outputs written from compact records are the in-memory ones.

`CompactRecords` is a `Sequence[Conversation]`: a set step reads it as the
list of records it always gets, each record built when it is read. A top-level
meta key a set step sets on such a record (`dup_cluster`, `selection`) is
written through to the columns (`RowMeta`).
"""

from __future__ import annotations

from array import array
from collections.abc import Hashable, Iterator, MutableSequence, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, overload

import numpy as np

from ..formats import Conversation, Message
from .runner import RESPONSE_WORDS, Rejection, response_words

Shape = Hashable
"""A meta value's shape: "f" and "i" for a number (a slot of the number column), "s" for a string (its slot
holds the string's position in the table's strings: a cluster name is held once, not a shape per cluster),
("c", value) for a bool, None or an int too large for a float, ("d", ((key, shape), ...)) for a dict,
("l", (shape, ...)) for a list."""

_EXACT_INT = 1 << 53
_COMPACT_ROWS = 1 << 12
"""Rows moved or gathered at a time (`FeatureColumn.take_in_place`: a 2 MB slice of MinHash signatures)."""


def shape_of(value: Any, numbers: MutableSequence[float], strings: dict[str, int]) -> Shape | None:
    """The shape of a JSON-like value, its numbers appended to `numbers` (a string: its position in `strings`,
    added there if new); None for a value it cannot hold."""
    kind = type(value)
    if kind is dict:
        items = []
        for key, child in value.items():
            shape = shape_of(child, numbers, strings) if type(key) is str else None
            if shape is None:
                return None
            items.append((key, shape))
        return ("d", tuple(items))
    if kind is list:
        shapes = [shape_of(child, numbers, strings) for child in value]
        return None if any(s is None for s in shapes) else ("l", tuple(shapes))
    if kind is str:
        numbers.append(float(strings.setdefault(value, len(strings))))
        return "s"
    if kind is bool or value is None:
        return ("c", value)
    if kind is int:
        if abs(value) >= _EXACT_INT:
            return ("c", value)
        numbers.append(float(value))
        return "i"
    if isinstance(value, float):  # numpy's float64 too: json writes it as the float it is
        numbers.append(float(value))
        return "f"
    return None


def build(shape: Shape, numbers: Iterator[float], strings: list[str]) -> Any:
    """The value a shape and its numbers stand for (a fresh object each time)."""
    if shape == "f":
        return next(numbers)
    if shape == "i":
        return int(next(numbers))
    if shape == "s":
        return strings[int(next(numbers))]
    assert isinstance(shape, tuple)
    tag, body = shape
    if tag == "d":
        return {key: build(child, numbers, strings) for key, child in body}
    if tag == "l":
        return [build(child, numbers, strings) for child in body]
    return body


def gather_into(out: np.ndarray, at: np.ndarray, source: np.ndarray, starts: np.ndarray, counts: np.ndarray) -> None:
    """out[at[k] : at[k] + counts[k]] = source[starts[k] : starts[k] + counts[k]] for every k, a block of rows at a
    time (the index arrays of a whole set would cost more than the numbers)."""
    for first in range(0, len(starts), _COMPACT_ROWS):
        block = slice(first, first + _COMPACT_ROWS)
        block_counts = counts[block]
        within = np.arange(block_counts.sum()) - np.repeat(np.cumsum(block_counts) - block_counts, block_counts)
        out[np.repeat(at[block], block_counts) + within] = source[np.repeat(starts[block], block_counts) + within]


def string_slots(shape: Shape) -> list[int]:
    """Which of a shape's slots (in order) hold strings."""
    found: list[int] = []
    slots = 0

    def walk(node: Shape) -> None:
        nonlocal slots
        if node in ("f", "i", "s"):
            if node == "s":
                found.append(slots)
            slots += 1
            return
        assert isinstance(node, tuple)
        tag, body = node
        if tag == "d":
            for _, child in body:
                walk(child)
        elif tag == "l":
            for child in body:
                walk(child)

    walk(shape)
    return found


@dataclass
class FeatureColumn:
    """One feature of every record: `array` rows of one matrix, `bytes` rows of a uint8 matrix, else `object`."""

    kind: str
    data: np.ndarray
    present: np.ndarray | None = None
    """Which rows have the feature (bool); None when all do."""

    @staticmethod
    def of(values: list[Any]) -> FeatureColumn:
        present = np.array([v is not None for v in values], dtype=bool)
        held = [v for v in values if v is not None]
        if held and present.all():
            first = held[0]
            if isinstance(first, np.ndarray) and all(
                isinstance(v, np.ndarray) and v.shape == first.shape and v.dtype == first.dtype for v in held
            ):
                return FeatureColumn("array", np.stack(held))
            if isinstance(first, bytes) and all(isinstance(v, bytes) and len(v) == len(first) for v in held):
                return FeatureColumn("bytes", np.frombuffer(b"".join(held), dtype=np.uint8).reshape(len(held), -1))
        data = np.empty(len(values), dtype=object)
        for row, value in enumerate(values):  # one by one: numpy would make a list of equal lists a 2-D array
            data[row] = value
        return FeatureColumn("object", data, None if present.all() else present)

    def value(self, row: int) -> Any:
        if self.present is not None and not self.present[row]:
            return None
        if self.kind == "bytes":
            return self.data[row].tobytes()
        if self.kind == "array":
            return self.data[row].copy()  # a copy: a record kept by a step must not hold the whole column
        return self.data[row]

    def take(self, rows: np.ndarray) -> FeatureColumn:
        return FeatureColumn(self.kind, self.data[rows], None if self.present is None else self.present[rows])

    def take_in_place(self, rows: np.ndarray) -> FeatureColumn:
        """`take` of ascending rows that moves them forward inside this matrix, a slice at a time: row k's
        source rows[k] >= k, so a slice never overwrites a row a later slice reads. This column is spent."""
        if self.kind == "object" or self.present is not None or not self.data.flags.writeable:
            return self.take(rows)
        for at in range(0, len(rows), _COMPACT_ROWS):
            part = rows[at : at + _COMPACT_ROWS]
            self.data[at : at + len(part)] = self.data[part]
        return FeatureColumn(self.kind, self.data[: len(rows)])

    @staticmethod
    def concat(parts: list[FeatureColumn]) -> FeatureColumn:
        """The parts' rows one after the other; each part is released once copied (the list is emptied)."""
        held = [p for p in parts if len(p.data)] or parts[:1]  # an empty part says nothing of the kind
        parts.clear()
        kinds = {p.kind for p in held}
        if len(kinds) == 1 and len({p.data.shape[1:] for p in held}) == 1 and kinds != {"object"}:
            first = held[0].data
            joined = np.empty((sum(len(p.data) for p in held), *first.shape[1:]), dtype=first.dtype)
            at = 0
            while held:
                data = held.pop(0).data
                joined[at : at + len(data)] = data
                at += len(data)
            return FeatureColumn(kinds.pop(), joined)
        return FeatureColumn.of([p.value(row) for p in held for row in range(len(p.data))])


class RowMeta(dict[str, Any]):
    """A compact record's meta as a set step sees it: a top-level key it sets is written through to the columns."""

    def __init__(self, meta: dict[str, Any], changes: dict[int, dict[str, Any]], row: int) -> None:
        super().__init__(meta)
        self._changes, self._row = changes, row

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        self._changes.setdefault(self._row, {})[key] = value

    def setdefault(self, key: str, default: Any = None) -> Any:
        if key not in self:
            self[key] = default
        return self[key]

    def update(self, *args: Any, **kwargs: Any) -> None:
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def _refused(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("a set step may add or replace a compact record's meta keys, not remove them")

    __delitem__ = pop = popitem = clear = _refused

    def __reduce__(self) -> tuple[Any, ...]:
        return (dict, (dict(self),))  # saved (a step's control records) as the plain dict it is


Row = TypeVar("Row")


class _Rows(Sequence[Row]):
    """A sequence whose items are built from columns when read; indexes and slices behave as a list's."""

    source_index: np.ndarray

    def __len__(self) -> int:
        return len(self.source_index)

    @overload
    def __getitem__(self, row: int) -> Row: ...
    @overload
    def __getitem__(self, row: slice) -> Sequence[Row]: ...
    def __getitem__(self, row: int | slice) -> Row | Sequence[Row]:
        if isinstance(row, slice):
            return [self.build(k) for k in range(*row.indices(len(self)))]
        if row < 0:
            row += len(self)
        if not 0 <= row < len(self):
            raise IndexError(row)
        return self.build(row)

    def build(self, row: int) -> Row:
        """The item at `row` (0 <= row < len)."""
        raise NotImplementedError


@dataclass
class CompactRecords(_Rows[Conversation]):
    """Records by row, in source_index order: meta as shapes and numbers, the response's word count, the kept
    features as columns, and the messages only when a later step reads text."""

    source_index: np.ndarray
    """source_index (int64, ascending)."""
    shape: np.ndarray
    """Each row's meta shape: a position in `shapes` (int32), or -1 for a meta held whole in `odd`."""
    start: np.ndarray
    """Where each row's numbers start in `numbers` (int64)."""
    numbers: np.ndarray
    shapes: list[Shape]
    strings: list[str]
    """The strings of the rows' meta, each once (a slot "s" holds a position here)."""
    words: np.ndarray
    """The response's word count (int32): the report's length histograms."""
    features: dict[str, FeatureColumn] = field(default_factory=dict)
    texts: list[list[Message]] | None = None
    odd: dict[int, dict[str, Any]] = field(default_factory=dict)
    """The meta of rows whose values the columns cannot hold (numpy scalars other than float64...), by row."""
    changes: dict[int, dict[str, Any]] = field(default_factory=dict)
    """Top-level meta keys set steps set, by row (applied over the columns)."""

    @staticmethod
    def of(convs: Sequence[Conversation], features: frozenset[str] = frozenset(), text: bool = False) -> CompactRecords:
        shapes: list[Shape] = []
        ids: dict[Shape, int] = {}
        numbers = array("d")  # 8 bytes a number (a list of Python floats: 32)
        strings: dict[str, int] = {}
        shape = np.empty(len(convs), dtype=np.int32)
        start = np.empty(len(convs), dtype=np.int64)
        odd: dict[int, dict[str, Any]] = {}
        for row, conv in enumerate(convs):
            start[row] = len(numbers)
            found = shape_of(conv.meta, numbers, strings)
            if found is None:
                del numbers[start[row] :]
                odd[row] = conv.meta
                shape[row] = -1
                continue
            shape[row] = ids.setdefault(found, len(shapes))
            if shape[row] == len(shapes):
                shapes.append(found)
        return CompactRecords(
            np.fromiter((c.source_index for c in convs), dtype=np.int64, count=len(convs)),
            shape,
            start,
            np.frombuffer(numbers, dtype=np.float64),
            shapes,
            list(strings),
            np.fromiter((response_words(c) for c in convs), dtype=np.int32, count=len(convs)),
            {key: FeatureColumn.of([c.features.get(key) for c in convs]) for key in sorted(features)},
            [c.messages for c in convs] if text else None,
            odd,
        )

    @staticmethod
    def empty() -> CompactRecords:
        return CompactRecords.of([])

    def build(self, row: int) -> Conversation:
        return Conversation(
            self.texts[row] if self.texts is not None else [],
            int(self.source_index[row]),
            RowMeta(self.meta(row), self.changes, row),
            None,
            self.features_of(row),
        )

    def __iter__(self) -> Iterator[Conversation]:
        return (self.build(row) for row in range(len(self)))

    def meta(self, row: int) -> dict[str, Any]:
        """The row's meta, a fresh dict (what the record's meta was, with what set steps set since)."""
        if row in self.odd:
            meta = dict(self.odd[row])
        else:
            end = self.start[row + 1] if row + 1 < len(self) else len(self.numbers)
            values = iter(self.numbers[self.start[row] : end].tolist())
            meta = build(self.shapes[self.shape[row]], values, self.strings)
        meta.update(self.changes.get(row, {}))
        return meta

    def features_of(self, row: int) -> dict[str, Any]:
        found = {key: column.value(row) for key, column in self.features.items()}
        kept = {key: value for key, value in found.items() if value is not None}
        kept[RESPONSE_WORDS] = int(self.words[row])
        return kept

    def feature_column(self, key: str) -> np.ndarray | None:
        """Every row's feature as one matrix, without a copy (bytes as rows of uint8); None unless every row has it
        as an array or as bytes of one length."""
        column = self.features.get(key)
        return column.data if column is not None and column.kind != "object" and column.present is None else None

    def find(self, source_index: int) -> int | None:
        """The row of a source_index, or None."""
        row = int(np.searchsorted(self.source_index, source_index))
        return row if row < len(self) and self.source_index[row] == source_index else None

    def between(self, low: int, high: int) -> CompactRecords:
        """The rows with low <= source_index < high."""
        first, last = np.searchsorted(self.source_index, [low, high])
        return self.take(np.arange(first, last))

    def take(
        self, rows: np.ndarray, features: frozenset[str] | None = None, text: bool = True, *, in_place: bool = False
    ) -> CompactRecords:
        """These rows (in this order), with the features named (all when None) and their messages if `text`;
        set steps' changes folded in. `in_place` (rows ascending): the feature matrices are compacted where they
        are instead of copied (the survivors of a set phase keep the signatures without a second copy of them),
        so this table must not be read afterwards."""
        kept = self.features if features is None else {k: v for k, v in self.features.items() if k in features}
        ends = np.append(self.start, len(self.numbers)).astype(np.int64)[1:]
        counts, starts, shape = (ends - self.start)[rows], self.start[rows].copy(), self.shape[rows].copy()
        shapes, strings, odd = self.shapes, self.strings, {}
        touched = np.array([*self.changes, *self.odd], dtype=np.int64)
        redo = np.flatnonzero(np.isin(rows, touched)).tolist() if len(touched) else []
        extra = array("d")  # 8 bytes a number: a dedup phase changes every clustered row
        if redo:  # rows a set step changed: encoded again, their numbers read from `extra`
            shapes = list(self.shapes)
            ids = {s: k for k, s in enumerate(shapes)}
            string_ids = {text: k for k, text in enumerate(self.strings)}
            for k in redo:
                meta, found_numbers = self.meta(int(rows[k])), list[float]()
                found = shape_of(meta, found_numbers, string_ids)
                if found is None:
                    odd[k], shape[k], counts[k] = meta, -1, 0
                    continue
                shape[k] = ids.setdefault(found, len(shapes))
                if shape[k] == len(shapes):
                    shapes.append(found)
                starts[k], counts[k] = len(extra), len(found_numbers)
                extra.extend(found_numbers)
            strings = list(string_ids)
        # The kept rows' numbers written once into their new column (no joined copy of this table's and `extra`).
        at = (np.cumsum(counts) - counts).astype(np.int64)
        numbers = np.empty(int(counts.sum()), dtype=np.float64)
        changed = np.zeros(len(rows), dtype=bool)
        changed[redo] = True
        gather_into(numbers, at[~changed], self.numbers, starts[~changed], counts[~changed])
        gather_into(numbers, at[changed], np.frombuffer(extra, dtype=np.float64), starts[changed], counts[changed])
        return CompactRecords(
            self.source_index[rows],
            shape,
            at,
            numbers,
            shapes,
            strings,
            self.words[rows],
            {key: column.take_in_place(rows) if in_place else column.take(rows) for key, column in kept.items()},
            [self.texts[row] for row in rows.tolist()] if self.texts is not None and text else None,
            odd,
        )

    def renumbered_strings(self, positions: list[int]) -> np.ndarray:
        """The number column with each string slot pointing at `positions[old position]` (another table's)."""
        if positions == list(range(len(positions))):
            return self.numbers
        numbers = self.numbers.copy()
        new = np.array(positions, dtype=np.float64)
        for shape_id, shape in enumerate(self.shapes):
            slots = string_slots(shape)
            rows = np.nonzero(self.shape == shape_id)[0]
            if slots and len(rows):
                at = (self.start[rows][:, None] + np.array(slots)[None, :]).ravel()
                numbers[at] = new[numbers[at].astype(np.int64)]
        return numbers

    @staticmethod
    def concat(parts: list[CompactRecords]) -> CompactRecords:
        """The parts' rows one after the other (their shape tables merged). Consumes the parts: each feature
        column of a part is dropped once copied, so joining the MinHash signatures does not hold them twice."""
        parts = [p if not p.changes else p.take(np.arange(len(p))) for p in parts]
        if not parts:
            return CompactRecords.empty()
        shapes: list[Shape] = []
        ids: dict[Shape, int] = {}
        string_ids: dict[str, int] = {}
        remapped, starts, numbers, odd = [], [], [], {}
        offset, rows = 0, 0
        for part in parts:
            mapping = np.array([ids.setdefault(s, len(ids)) for s in part.shapes] + [-1], dtype=np.int32)
            shapes += [s for s in part.shapes if ids[s] >= len(shapes)]
            remapped.append(mapping[part.shape])  # -1 (odd) maps to the trailing -1
            starts.append(part.start + offset)
            numbers.append(part.renumbered_strings([string_ids.setdefault(t, len(string_ids)) for t in part.strings]))
            odd.update({row + rows: meta for row, meta in part.odd.items()})
            offset += len(part.numbers)
            rows += len(part)
        keys = sorted(set.intersection(*(set(p.features) for p in parts)))
        held = [p.texts for p in parts if p.texts is not None]
        texts = [m for part_texts in held for m in part_texts] if len(held) == len(parts) else None
        return CompactRecords(
            np.concatenate([p.source_index for p in parts]),
            np.concatenate(remapped),
            np.concatenate(starts),
            np.concatenate(numbers),
            shapes,
            list(string_ids),
            np.concatenate([p.words for p in parts]),
            {key: FeatureColumn.concat([p.features.pop(key) for p in parts]) for key in keys},
            texts,
            odd,
        )


@dataclass
class Rejections(_Rows[Rejection]):
    """Rejected records without their originals (those are in the part files already): source_index and
    reasons as columns, each distinct list of reasons held once."""

    source_index: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    reasons: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int32))
    """Each row's position in `reason_lists`."""
    reason_lists: list[tuple[str, ...]] = field(default_factory=list)
    details: dict[int, str] = field(default_factory=dict)
    """The detail of rows that have one (records that could not be parsed), by row."""

    def add(self, rejected: Sequence[Rejection]) -> None:
        for k, r in enumerate(rejected):
            if r.detail:
                self.details[len(self.source_index) + k] = r.detail
        self.add_rows(
            np.fromiter((r.source_index for r in rejected), np.int64, count=len(rejected)),
            [tuple(r.reasons) for r in rejected],
        )

    def add_rows(self, source_index: np.ndarray, reasons: Sequence[tuple[str, ...]]) -> None:
        """Rows without a detail, from their columns (a set phase's stopped records, never built one by one)."""
        ids = {listed: k for k, listed in enumerate(self.reason_lists)}
        codes = np.empty(len(reasons), dtype=np.int32)
        for k, listed in enumerate(reasons):
            codes[k] = ids.setdefault(listed, len(ids))
            if codes[k] == len(self.reason_lists):
                self.reason_lists.append(listed)
        self.source_index = np.concatenate([self.source_index, source_index.astype(np.int64)])
        self.reasons = np.concatenate([self.reasons, codes])

    def in_order(self) -> Rejections:
        """The same rows sorted by source_index."""
        order = np.argsort(self.source_index, kind="stable")
        at = {int(row): k for k, row in enumerate(order.tolist()) if int(row) in self.details}
        return Rejections(
            self.source_index[order],
            self.reasons[order],
            self.reason_lists,
            {at[r]: d for r, d in self.details.items()},
        )

    def build(self, row: int) -> Rejection:
        reasons = list(self.reason_lists[self.reasons[row]])
        return Rejection(int(self.source_index[row]), reasons, None, self.details.get(row, ""))

    def __iter__(self) -> Iterator[Rejection]:
        return (self.build(row) for row in range(len(self)))
