"""Hostile inputs for curation and training: every kind of malformed record, broken file and path trick.

`kinds()` is the one list. There are three levels:

* record kinds are lines of one JSON Lines file: the malformed corpus of
  curation/malformed_corpus.py (each with the reason curation rejects it for),
  and hostile text that is legitimate content (template syntax of other
  models, Jinja, raw line separators), kept as plain text;
* file kinds are a whole dataset file each (truncated, another encoding,
  Parquet with the wrong schema, a named pipe, a 100 MB record ...);
* path kinds lay out a volume in which the dataset or output path tries to
  leave it (`..`, symbolic links to another volume or to /proc, a link loop,
  a link planted in the output folder).

Each file and path kind is written by `lay_out(kind, layout, pipeline)` into a
`Layout` (folders that stand for the pod's volumes) and says what a run must
end with: `refused` is a text the exit-42 message must contain; otherwise the
run reads what it can, and every record must be accounted for.
"""

from __future__ import annotations

import gzip
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

sys.path.insert(0, str(Path(__file__).parent / "curation"))

import malformed_corpus  # noqa: E402

Level = Literal["record", "file", "path"]
Pipeline = Literal["curate", "train"]

# Distinct, well-formed records that pass curation: every file kind carries
# some, so training has something to train on and accounting sees good and
# bad records side by side.
GOOD_RECORDS = [
    {"instruction": f"What is {a} plus {b}?", "input": "", "output": f"{a} plus {b} is {a + b}."}
    for a, b in [(2, 3), (7, 5), (11, 4), (9, 9), (13, 8), (21, 6), (15, 15), (30, 12)]
]

# Hostile but legitimate content: chat syntax of *other* models and template
# languages is text users ask about. Kept by curation; tokenized as plain text
# by the trainer (tests assert that no special-token id comes out of it).
KEPT_HOSTILE_RECORDS = [
    (
        "HTML <s> and </s> in the prompt",
        {
            "instruction": "What does <s>old price</s> do in HTML?",
            "input": "",
            "output": "It shows old price struck through: <s> opens the strikethrough and </s> closes it.",
        },
    ),
    (
        "Jinja {{ }} and {% %} in the prompt",
        {
            "instruction": "Explain this Jinja snippet: {% for item in items %}{{ item | upper }}{% endfor %}",
            "input": "",
            "output": "It loops over items and prints each one in capitals, because {{ item | upper }} applies the upper filter.",
        },
    ),
    (
        "raw U+2028 line separator in a string",
        {
            "instruction": "Join these two lines into one sentence.",
            "input": "The sun rose.\u2028The birds sang.",
            "output": "The sun rose and the birds sang.",
        },
    ),
]


# Record kinds whose text is chat-template syntax: what must never turn into control tokens.
TEMPLATE_INJECTIONS = (
    "ChatML markup in the prompt",
    "Llama 3 markup in the prompt",
    "[INST] markup in the prompt",
    "HTML <s> and </s> in the prompt",
    "Jinja {{ }} and {% %} in the prompt",
)


@dataclass(frozen=True)
class Layout:
    """Folders standing for a pod's volumes (`volumes/<claim>`) and the places around them."""

    root: Path

    @property
    def volumes(self) -> Path:
        return self.root / "volumes"

    @property
    def data(self) -> Path:
        return self.volumes / "data"

    @property
    def models(self) -> Path:
        """Another claim: what a path trick in the data volume must not reach."""
        return self.volumes / "models"

    @property
    def out(self) -> Path:
        return self.volumes / "out"

    @property
    def outside(self) -> Path:
        """Not a volume at all: the container's own filesystem."""
        return self.root / "outside"

    def create(self) -> None:
        for folder in (self.data, self.models, self.out, self.outside):
            folder.mkdir(parents=True, exist_ok=True)
        # Valid records, so that only the path rule can stop a run from reading them.
        write_jsonl(self.models / "secret.jsonl", GOOD_RECORDS[:2])
        write_jsonl(self.outside / "secret.jsonl", GOOD_RECORDS[:2])
        (self.outside / "victim.txt").write_text("must never be overwritten\n")


@dataclass(frozen=True)
class Case:
    """Where one kind's run reads and writes."""

    dataset: str
    output: str
    records: int
    """Records in the dataset (accounting expects source_index 0..records-1)."""
    trainable: bool = True
    """Some record can be trained on (else training ends with exit 42, 'no trainable record')."""


@dataclass(frozen=True)
class Kind:
    name: str
    level: Level
    lay_out: Callable[[Layout, Pipeline, Path], Case] | None = None
    """Writes the kind's files; gets the layout, the pipeline and this run's default output folder."""
    refused: str | None = None
    """Text the exit-42 message must contain; None: the run reads what it can."""
    reason: str | None = None
    """Record kinds: the reason curation rejects the record for (None: kept)."""
    tags: tuple[str, ...] = field(default=())


def write_jsonl(path: Path, records: list[dict]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return len(records)


def _good_jsonl_bytes() -> bytes:
    return "".join(json.dumps(r) + "\n" for r in GOOD_RECORDS).encode()


# ---------------------------------------------------------------- record kinds


def record_lines() -> list[tuple[str, bytes, str | None]]:
    """(kind, line, curation reason or None) for every record kind, in file order."""
    lines: list[tuple[str, bytes, str | None]] = [
        (kind, line, reason) for kind, line, reason in malformed_corpus.cases()
    ]
    lines += [(kind, json.dumps(record, ensure_ascii=False).encode(), None) for kind, record in KEPT_HOSTILE_RECORDS]
    return lines


def record_of(kind: str) -> dict:
    """The record of a record kind, parsed."""
    return json.loads(next(line for name, line, _ in record_lines() if name == kind))


def write_record_corpus(path: Path) -> list[tuple[str, int, str | None]]:
    """The good records, then one line per record kind; returns (kind, source_index, curation reason)."""
    lines = [json.dumps(r).encode() for r in GOOD_RECORDS]
    placed = []
    for kind, line, reason in record_lines():
        placed.append((kind, len(lines), reason))
        lines.append(line)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\n".join(lines) + b"\n")
    return placed


# ------------------------------------------------------------------ file kinds


def _file(name: str, content: Callable[[], bytes], records: int, trainable: bool = True):
    """A file kind whose dataset is one file in the data volume (written once, shared by both pipelines)."""

    def lay_out(layout: Layout, pipeline: Pipeline, output: Path) -> Case:
        path = layout.data / "files" / name
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content())
        return Case(str(path), str(output), records, trainable)

    return lay_out


def _json_array_cut_mid_record() -> bytes:
    data = json.dumps(GOOD_RECORDS, indent=2).encode()
    return data[: int(len(data) * 0.6)]


def _jsonl_cut_mid_record() -> bytes:
    data = _good_jsonl_bytes()
    return data[: len(data) - 20]  # the last record loses its end (and the newline)


def _latin1_jsonl() -> bytes:
    accented = [
        {"instruction": "Translate 'coffee' to French.", "input": "", "output": "Café."},
        {"instruction": "Spell 'naive' the French way.", "input": "", "output": "Naïve."},
    ]
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in GOOD_RECORDS + accented).encode("latin-1")


def _utf16_cut_at_odd_byte() -> bytes:
    return json.dumps(GOOD_RECORDS).encode("utf-16")[:-1]


def _nested_array_element() -> bytes:
    deep = "[" * 100_000 + "]" * 100_000
    return ("[" + ",\n".join([*(json.dumps(r) for r in GOOD_RECORDS), deep]) + "]").encode()


def _parquet(columns: dict) -> Callable[[], bytes]:
    def content() -> bytes:
        import io

        import pyarrow as pa
        import pyarrow.parquet as pq

        buffer = io.BytesIO()
        pq.write_table(pa.table(columns), buffer)
        return buffer.getvalue()

    return content


def _parquet_wrong_types() -> bytes:
    import datetime

    import pyarrow as pa

    return _parquet(
        {
            "instruction": pa.array([1, 2, 3]),
            "output": pa.array([b"\xff\xfe", b"\x00", b"ok"]),
            "written": pa.array([datetime.datetime(2024, 1, 1)] * 3),
        }
    )()


def _parquet_corrupted() -> bytes:
    good = _parquet({"instruction": ["Hi"], "output": ["Hello"]})()
    return good[:4] + bytes(range(256)) * 4 + good[-8:]


def _parquet_cut_in_half() -> bytes:
    good = _parquet(
        {"instruction": [r["instruction"] for r in GOOD_RECORDS], "output": [r["output"] for r in GOOD_RECORDS]}
    )()
    return good[: len(good) // 2]


def _hundred_mb_record() -> bytes:
    # Written in pieces: the test must not need 100 MB twice to build it.
    head = b'{"instruction": "Write the longest essay you can.", "input": "", "output": "'
    return _good_jsonl_bytes() + head + b"word " * 20_000_000 + b'"}\n'


def _directory(layout: Layout, pipeline: Pipeline, output: Path) -> Case:
    folder = layout.data / "files" / "a-directory.jsonl"
    folder.mkdir(parents=True, exist_ok=True)
    return Case(str(folder), str(output), 0)


def _named_pipe(layout: Layout, pipeline: Pipeline, output: Path) -> Case:
    # Opening a FIFO for reading blocks until a writer comes: no writer ever will.
    fifo = layout.data / "files" / "named-pipe.jsonl"
    fifo.parent.mkdir(parents=True, exist_ok=True)
    if not fifo.exists():
        os.mkfifo(fifo)
    return Case(str(fifo), str(output), 0)


G = len(GOOD_RECORDS)

FILE_KINDS = [
    Kind("JSON array cut mid-record", "file", _file("cut.json", _json_array_cut_mid_record, 0), "is not valid JSON"),
    Kind("JSON Lines cut mid-record", "file", _file("cut.jsonl", _jsonl_cut_mid_record, G)),
    Kind("UTF-16 LE with BOM", "file", _file("utf16.json", lambda: json.dumps(GOOD_RECORDS).encode("utf-16"), G)),
    Kind(
        "UTF-16 BE without BOM",
        "file",
        _file("utf16be.jsonl", lambda: _good_jsonl_bytes().decode().encode("utf-16-be"), G),
    ),
    Kind("UTF-32 with BOM", "file", _file("utf32.json", lambda: json.dumps(GOOD_RECORDS).encode("utf-32"), G)),
    Kind("UTF-8 with BOM", "file", _file("bom.jsonl", lambda: b"\xef\xbb\xbf" + _good_jsonl_bytes(), G)),
    Kind("whole file in Latin-1", "file", _file("latin1.jsonl", _latin1_jsonl, G + 2)),
    Kind("UTF-16 cut at an odd byte", "file", _file("utf16-cut.json", _utf16_cut_at_odd_byte, 0), "not valid utf-16"),
    Kind(
        "NUL-filled tail (crash while writing)",
        "file",
        _file("nul-tail.jsonl", lambda: _good_jsonl_bytes() + b"\x00" * 4096, G + 1),
    ),
    Kind("JSON array with an element nested 100,000 levels", "file", _file("deep.json", _nested_array_element, G + 1)),
    Kind(
        "Parquet with the wrong schema",
        "file",
        _file(
            "wrong-schema.parquet",
            _parquet({"question": ["Why?", "How?"], "answer": ["Because.", "So."]}),
            2,
            trainable=False,
        ),
    ),
    Kind(
        "Parquet with wrong column types",
        "file",
        _file("wrong-types.parquet", _parquet_wrong_types, 3, trainable=False),
    ),
    Kind(
        "Parquet with a corrupted body",
        "file",
        _file("corrupt.parquet", _parquet_corrupted, 0),
        "not a readable Parquet file",
    ),
    Kind("Parquet cut in half", "file", _file("half.parquet", _parquet_cut_in_half, 0), "not a readable Parquet file"),
    Kind(
        "gzip-compressed JSON Lines",
        "file",
        _file("gz.jsonl", lambda: gzip.compress(_good_jsonl_bytes()), 0),
        "no line is valid JSON",
    ),
    Kind("CSV named .json", "file", _file("csv.json", lambda: b"instruction,output\nSay hi,hi\n", 0), "not JSON"),
    Kind("empty file", "file", _file("empty.jsonl", lambda: b"", 0, trainable=False)),
    Kind("a directory as the dataset", "file", _directory, "not a regular file (a directory)"),
    Kind("a named pipe as the dataset", "file", _named_pipe, "not a regular file (a named pipe)"),
    Kind("a 100 MB single record", "file", _file("100mb.jsonl", _hundred_mb_record, G + 1), tags=("big",)),
]


# ------------------------------------------------------------------ path kinds


def _dataset_path(path_of: Callable[[Layout], str]):
    """A path kind whose dataset path (as configured) is `path_of(layout)`."""

    def lay_out(layout: Layout, pipeline: Pipeline, output: Path) -> Case:
        return Case(path_of(layout), str(output), 0)

    return lay_out


def _link(link: Path, target: str | Path) -> Path:
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.is_symlink():
        link.symlink_to(target)
    return link


def _link_loop(layout: Layout) -> str:
    folder = layout.data / "loop"
    _link(folder / "a", "b")
    _link(folder / "b", "a")
    return str(folder / "a" / "train.jsonl")


def _output_linked_to_another_volume(layout: Layout, pipeline: Pipeline, output: Path) -> Case:
    write_jsonl(layout.data / "plain" / "train.jsonl", GOOD_RECORDS)
    link = _link(layout.out / f"linked-{pipeline}", layout.models)
    return Case(str(layout.data / "plain" / "train.jsonl"), str(link), 0)


def _link_planted_in_output(layout: Layout, pipeline: Pipeline, output: Path) -> Case:
    write_jsonl(layout.data / "plain" / "train.jsonl", GOOD_RECORDS)
    # The file this run writes first: curation's rejected.jsonl, training's rejected_samples.jsonl.
    name = "rejected.jsonl" if pipeline == "curate" else "rejected_samples.jsonl"
    _link(output / name, layout.outside / "victim.txt")
    return Case(str(layout.data / "plain" / "train.jsonl"), str(output), 0)


PATH_KINDS = [
    Kind(
        "'..' in the dataset path, into another volume",
        "path",
        _dataset_path(lambda layout: f"{layout.data}/../models/secret.jsonl"),
        "climbs out of its volume",
    ),
    Kind(
        "'..' in the dataset path, out of all volumes",
        "path",
        _dataset_path(lambda layout: f"{layout.data}/../../outside/secret.jsonl"),
        "climbs out of its volume",
    ),
    Kind(
        "dataset file is a symlink into another volume",
        "path",
        _dataset_path(
            lambda layout: str(_link(layout.data / "links" / "models.jsonl", layout.models / "secret.jsonl"))
        ),
        "through a symbolic link",
    ),
    Kind(
        "dataset file is a symlink to /proc/self/environ",
        "path",
        _dataset_path(lambda layout: str(_link(layout.data / "links" / "environ.jsonl", "/proc/self/environ"))),
        "through a symbolic link",
    ),
    Kind(
        "a folder on the dataset path links out of the volume",
        "path",
        _dataset_path(lambda layout: str(_link(layout.data / "elsewhere", layout.outside) / "secret.jsonl")),
        "through a symbolic link",
    ),
    Kind("symlink loop on the dataset path", "path", _dataset_path(_link_loop), "Too many levels of symbolic links"),
    Kind("output folder links into another volume", "path", _output_linked_to_another_volume, "outputDir: "),
    Kind("output folder holds a planted link to a file outside", "path", _link_planted_in_output, "outputDir: "),
]


def kinds() -> list[Kind]:
    """Every kind, record kinds first (in corpus order), then file and path kinds."""
    records = [Kind(kind, "record", reason=reason) for kind, _, reason in record_lines()]
    return records + FILE_KINDS + PATH_KINDS
