"""Reading Alpaca / ShareGPT / messages from JSON, JSONL and Parquet, and every way a record can be malformed."""

from __future__ import annotations

import json
from pathlib import Path

import malformed_corpus
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sft_trainer.formats import Conversation, DatasetReadError, Message, RejectedRecord, read_dataset


def test_real_files_of_every_format_parse_completely(data_dir: Path) -> None:
    for name, records in [
        ("lima_llamafactory.json", 1029),
        ("fastchat_dummy_conversation_sharegpt.json", 500),
        ("gpteacher_codegen_instruct.json", 4535),
    ]:
        items = list(read_dataset(data_dir / name))
        assert len(items) == records
        assert all(isinstance(i, Conversation) for i in items)
        assert [i.source_index for i in items] == list(range(records))


def test_alpaca_history_becomes_earlier_turns(data_dir: Path) -> None:
    raw = json.loads((data_dir / "lima_llamafactory.json").read_text())
    index = next(i for i, r in enumerate(raw) if r.get("history"))
    conv = list(read_dataset(data_dir / "lima_llamafactory.json"))[index]
    assert len(conv.messages) == 2 * len(raw[index]["history"]) + 2
    assert conv.messages[0] == Message("user", raw[index]["history"][0][0])
    assert conv.messages[-1] == Message("assistant", raw[index]["output"])


def test_response_variant_and_input_join(data_dir: Path) -> None:
    raw = json.loads((data_dir / "gpteacher_codegen_instruct.json").read_text())[0]
    conv = next(iter(read_dataset(data_dir / "gpteacher_codegen_instruct.json")))
    assert conv.messages[0].content == f"{raw['instruction']}\n\n{raw['input']}"
    assert conv.messages[1].content == raw["response"]


def test_sharegpt_spellings_and_system(tmp_path: Path) -> None:
    record = {
        "system": "Be terse.",
        "conversations": [{"from": "user", "value": "Hi"}, {"from": "assistant", "value": "Hello"}],
    }
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(record) + "\n")
    (conv,) = list(read_dataset(path, "sharegpt"))
    assert [m.role for m in conv.messages] == ["system", "user", "assistant"]


def test_to_record_round_trips() -> None:
    conv = Conversation([Message("user", "Q"), Message("assistant", "A")], 7, {"task": "open_qa"})
    assert conv.to_record() == {
        "messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}],
        "source_index": 7,
        "task": "open_qa",
    }
    assert Conversation.from_record(conv.to_record()).messages == conv.messages


def test_parquet_messages(tmp_path: Path) -> None:
    rows = [
        {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}
        for i in range(3)
    ]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    items = list(read_dataset(tmp_path / "d.parquet"))
    assert [i.messages[1].content for i in items] == ["a0", "a1", "a2"]


def test_every_malformed_record_is_accounted_for_with_its_reason(tmp_path: Path) -> None:
    from sft_trainer.config import CurationConfig
    from sft_trainer.curation.pipeline import curate

    expected = malformed_corpus.write(tmp_path / "bad.jsonl")
    assert len(expected) >= 20
    result = curate(read_dataset(tmp_path / "bad.jsonl"), CurationConfig())
    first_reason = {r.source_index: r.reasons[0] for r in result.rejected}
    assert result.input_count == len(expected)
    for index, (kind, reason) in enumerate(expected):
        assert first_reason.get(index) == reason, f"{kind}: got {first_reason.get(index)}"


def test_format_rejections_name_the_field(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(
        json.dumps({"instruction": "x", "output": 4}) + "\n" + json.dumps({"instruction": "y", "output": "z"}) + "\n"
    )
    rejected = next(iter(read_dataset(path)))
    assert isinstance(rejected, RejectedRecord)
    assert "'output'" in rejected.detail and rejected.raw == {"instruction": "x", "output": 4}


def test_broken_json_array_names_file_and_record(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text('[{"instruction": "a", "output": "b"},\n {"instruction": "c" "output": "d"}]')
    with pytest.raises(DatasetReadError, match=r"d\.json: record 1 \(line 2"):
        list(read_dataset(path))


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"instruction,output\na,b\n", "not JSON"),
        (b"not json at all\nnor this\n", "not JSON"),
        (b'{"a": \n{"b"\n', "no line is valid JSON"),
    ],
)
def test_unreadable_files_raise_one_clear_error(tmp_path: Path, content: bytes, match: str) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(content)
    with pytest.raises(DatasetReadError, match=match):
        list(read_dataset(path))


def test_missing_file_and_fake_parquet(tmp_path: Path) -> None:
    with pytest.raises(DatasetReadError, match="cannot read"):
        list(read_dataset(tmp_path / "absent.json"))
    (tmp_path / "x.parquet").write_text("[]")
    with pytest.raises(DatasetReadError, match="not a Parquet file"):
        list(read_dataset(tmp_path / "x.parquet"))
