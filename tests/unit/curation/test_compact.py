"""Compact records (the streaming engine's state between phases): every value comes back as it went in."""

from __future__ import annotations

import io
import json
import math
import pickle
from typing import Any

import numpy as np
import pytest

from sft_trainer.curation.base import feature_matrix
from sft_trainer.curation.compact import CompactRecords, Rejections, RowMeta
from sft_trainer.curation.dedup import EXACT_KEY, MINHASH
from sft_trainer.curation.resume import StateUnpickler
from sft_trainer.curation.runner import RESPONSE_WORDS, Rejection
from sft_trainer.formats import Conversation, Message

METAS: list[dict[str, Any]] = [
    {"task": "qa", "scores": {"quality": 0.8125, "ifd": None, "tokens": 17, "gptism_density": 0.0}},
    {"task": "code", "scores": {"quality": -0.0, "relevance": float("nan"), "echo": float("inf"), "big": 2**60}},
    {"id": "rec-7", "flags": [True, False, None, 3, 2.5], "nested": {"a": {"b": [1, {"c": "d"}]}}},
    {"scores": {"quality": np.float64(0.1 + 0.2)}, "task": "qa"},
    {"odd": np.float32(0.5), "task": "qa"},  # a numpy float32: not a JSON number the columns hold as such
    {},
]


def records(metas: list[dict[str, Any]] = METAS, start: int = 0) -> list[Conversation]:
    convs = []
    for k, meta in enumerate(metas):
        features = {
            MINHASH: np.arange(k, k + 8, dtype=np.uint32),
            EXACT_KEY: bytes([k, 0, 0, k]),
            "token_ids": [[k] * k, [1, 2]],
            RESPONSE_WORDS: 10 * k,
        }
        messages = [Message("user", f"question {k}"), Message("assistant", f"answer {k}")]
        convs.append(Conversation(messages, start + k, meta, None, features))
    return convs


def written(meta: dict[str, Any]) -> str:
    """The meta as an output line writes it (json, repr of floats): what must not change."""
    return json.dumps(meta, default=str)


def test_meta_and_features_come_back_as_they_went_in() -> None:
    convs = records()
    compact = CompactRecords.of(convs, frozenset({MINHASH, EXACT_KEY, "token_ids"}), text=True)
    assert len(compact) == len(convs) and list(compact.source_index) == [c.source_index for c in convs]
    assert list(compact.odd) == [4], "only the float32 meta is held whole"
    for row, conv in enumerate(convs):
        meta = compact.meta(row)
        assert written(meta) == written(conv.meta) and list(meta) == list(conv.meta)
        if "scores" in conv.meta:
            for key, value in conv.meta["scores"].items():
                assert type(meta["scores"][key]) is (float if isinstance(value, float) else type(value)), key
        got = compact[row]
        assert got.messages == conv.messages and got.source_index == conv.source_index
        assert np.array_equal(got.features[MINHASH], conv.features[MINHASH])
        assert got.features[EXACT_KEY] == conv.features[EXACT_KEY]
        assert got.features["token_ids"] == conv.features["token_ids"]
        assert got.features[RESPONSE_WORDS] == conv.features[RESPONSE_WORDS]
    assert math.copysign(1.0, compact.meta(1)["scores"]["quality"]) == -1.0
    assert compact.features[MINHASH].kind == "array" and compact.features[EXACT_KEY].kind == "bytes"
    assert feature_matrix(compact, MINHASH) is compact.features[MINHASH].data, "the column, not a copy"


def test_a_set_steps_meta_keys_are_written_through_and_kept_by_take() -> None:
    compact = CompactRecords.of(records(), frozenset({MINHASH}))
    conv = compact[0]
    assert isinstance(conv.meta, RowMeta)
    conv.meta["dup_cluster"] = "near-3"
    compact[3].meta.setdefault("duplicate_of", 0)
    assert compact.meta(0)["dup_cluster"] == "near-3" and compact[3].meta["duplicate_of"] == 0
    with pytest.raises(TypeError, match="not remove"):
        del compact[0].meta["task"]
    taken = compact.take(np.array([3, 0, 5]), frozenset())
    assert [written(taken.meta(r)) for r in range(3)] == [written(compact.meta(r)) for r in (3, 0, 5)]
    assert taken.features == {} and taken.texts is None
    saved = pickle.loads(pickle.dumps(conv))
    assert type(saved.meta) is dict and saved.meta["dup_cluster"] == "near-3"


def test_cluster_names_do_not_grow_the_shape_table() -> None:
    """A set step names every cluster ("near-<keeper>"): a string slot each, one shape for all of them."""
    compact = CompactRecords.of(records([{"task": "qa", "scores": {"quality": 0.5}} for _ in range(50)]))
    for row in range(0, 50, 2):
        compact[row].meta["dup_cluster"] = f"near-{row}"
    taken = compact.take(np.arange(50))
    assert len(taken.shapes) == 2 and len(taken.strings) == 26
    assert [taken.meta(r).get("dup_cluster") for r in range(4)] == ["near-0", None, "near-2", None]


def test_take_in_place_compacts_the_matrices_where_they_are() -> None:
    convs = records(METAS * 3)
    compact = CompactRecords.of(convs, frozenset({MINHASH, EXACT_KEY, "token_ids"}))
    signatures = compact.features[MINHASH].data
    rows = np.array([1, 2, 5, 9, 17])
    expected = compact.take(rows)
    taken = compact.take(rows, in_place=True)
    assert np.shares_memory(taken.features[MINHASH].data, signatures), "no second copy of the signatures"
    for row, source in enumerate(rows.tolist()):
        assert np.array_equal(taken[row].features[MINHASH], convs[source].features[MINHASH])
        assert taken[row].features[EXACT_KEY] == convs[source].features[EXACT_KEY]
        assert taken[row].features["token_ids"] == convs[source].features["token_ids"]
        assert written(taken.meta(row)) == written(expected.meta(row))


def test_concat_merges_shape_tables_and_between_finds_rows() -> None:
    first = CompactRecords.of(records(METAS[:3]), frozenset({MINHASH}))
    second = CompactRecords.of(records(METAS[::-1], start=10), frozenset({MINHASH}))
    empty = CompactRecords.of([], frozenset({MINHASH}))
    joined = CompactRecords.concat([first, empty, second])
    expected = METAS[:3] + METAS[::-1]
    assert [written(joined.meta(r)) for r in range(len(joined))] == [written(m) for m in expected]
    assert joined.features[MINHASH].data.shape == (len(expected), 8)
    assert joined.find(11) == 4 and joined.find(7) is None
    assert list(joined.between(10, 12).source_index) == [10, 11]
    assert [written(m) for m in map(joined.between(10, 12).meta, range(2))] == [written(m) for m in METAS[::-1][:2]]


def test_a_saved_state_of_compact_records_loads_through_the_restricted_unpickler() -> None:
    compact = CompactRecords.of(records(METAS[:4]), frozenset({MINHASH, EXACT_KEY, "token_ids"}), text=True)
    rejected = Rejections()
    rejected.add([Rejection(9, ["dedup.near_duplicate"], None), Rejection(2, ["a.b", "c.d"], None, "line 3: bad")])
    rejected.add([Rejection(5, ["dedup.near_duplicate"], None)])
    loaded = StateUnpickler(io.BytesIO(pickle.dumps((compact, rejected)))).load()
    again, log = loaded
    assert [written(again.meta(r)) for r in range(4)] == [written(m) for m in METAS[:4]]
    ordered = log.in_order()
    assert [(r.source_index, r.reasons, r.detail) for r in ordered] == [
        (2, ["a.b", "c.d"], "line 3: bad"),
        (5, ["dedup.near_duplicate"], ""),
        (9, ["dedup.near_duplicate"], ""),
    ]
    assert len(log.reason_lists) == 2, "each distinct list of reasons is held once"
