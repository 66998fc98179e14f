"""The Ray backend on a real local Ray cluster (2 CPUs, loopback): the same answer as one pod."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.data import SHARED_DATA
from support.planted import planted_records, write_jsonl

ray = pytest.importorskip("ray")

from sft_trainer.config.curation import CurationConfig, CurationRunConfig  # noqa: E402
from sft_trainer.curation.entrypoint import verify_accounting  # noqa: E402
from sft_trainer.curation.pipeline import curate  # noqa: E402
from sft_trainer.curation.ray_engine import RayEngine  # noqa: E402
from sft_trainer.curation.shards import InputShards  # noqa: E402
from sft_trainer.curation.streaming import curate_in_shards  # noqa: E402
from sft_trainer.formats import read_dataset  # noqa: E402

SETTINGS = {
    # MiniLM and the scorer LM's borderline pass cost minutes on 2 cores; every other default judge runs.
    "relevance": {"maxRecordsOnCpu": 0},
    "scorer": {"borderlineOnCpu": {"maxRecords": 0}},
    "dedup": {"semantic": True},
    "engine": {"type": "ray", "workers": 2, "cpusPerWorker": 1},
}


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    yield
    ray.shutdown()


def indexes(path: Path) -> set[int]:
    return {json.loads(line)["source_index"] for line in path.read_text(encoding="utf-8").splitlines()}


def test_ray_gives_the_one_pod_answer(local_ray: None, tmp_path: Path) -> None:
    alpaca: list[dict[str, Any]] = json.loads((SHARED_DATA / "alpaca_data.json").read_text(encoding="utf-8"))
    path = write_jsonl(tmp_path / "pool.jsonl", planted_records(alpaca, 240))
    out = tmp_path / "out"
    cfg = CurationRunConfig(input=str(path), output_dir=str(out), curation=CurationConfig.model_validate(SETTINGS))
    one_pod = curate(read_dataset(path), cfg.curation)
    reasons = one_pod.drops_by_reason()
    assert reasons["dedup.exact_duplicate"] and reasons["dedup.near_duplicate"], reasons

    result, engine = curate_in_shards(cfg, InputShards(str(path), "auto", shard_records=100), engine_class=RayEngine)
    verify_accounting(out, result.input_count)
    assert indexes(out / "curated.jsonl") == {c.source_index for c in one_pod.curated}
    assert indexes(out / "rejected.jsonl") == {r.source_index for r in one_pod.rejected}
    assert indexes(out / "review.jsonl") == {c.source_index for c, _ in one_pod.review}
    assert result.drops_by_reason() == reasons
    described = engine.describe()
    assert described["type"] == "ray" and described["workers"] == 2
    assert set(described["phaseSeconds"]) >= {"00-pass", "01-dedup", "02-dedup"}
