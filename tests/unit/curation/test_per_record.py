"""The per-record steps on several processes decide exactly what one process decides."""

from __future__ import annotations

import os
from pathlib import Path

from sft_trainer.config import CurationConfig
from sft_trainer.cpus import cgroup_cpu_quota, usable_cpus
from sft_trainer.curation.fluency import FluencyScores
from sft_trainer.curation.pipeline import curate
from sft_trainer.curation.runner import MIN_RECORDS_PER_WORKER, Segment, Stage, in_chunks
from sft_trainer.formats import Conversation, Message, read_dataset


def outcome(data_dir: Path, workers: int) -> tuple:
    items = list(read_dataset(data_dir / "alpaca_data.json"))[: 2 * MIN_RECORDS_PER_WORKER + 777]
    # The models that run in the parent (MiniLM relevance, the scorer LM's borderline pass) cost minutes on
    # 2 cores: left out, every other judge runs.
    settings = {"relevance": {"maxRecordsOnCpu": 0}, "scorer": {"borderlineOnCpu": {"maxRecords": 0}}}
    result = curate(items, CurationConfig.model_validate(settings), workers=workers)
    return (
        [(c.source_index, c.meta) for c in result.curated],
        [(r.source_index, r.reasons, r.extra) for r in result.rejected],
        [(c.source_index, reasons) for c, reasons in result.review],
        [(step.name, step.seen, dict(step.drops)) for step in result.steps],
        result.funnel,
    )


def test_two_workers_give_the_same_result_as_one(data_dir: Path) -> None:
    one, two = outcome(data_dir, 1), outcome(data_dir, 2)
    assert one[0] and one[1], "the sample must keep some records and reject some"
    assert two == one


def test_chunks_run_in_worker_processes_and_come_back_in_input_order() -> None:
    convs = [
        Conversation([Message("user", "q"), Message("assistant", "a")], i) for i in range(2 * MIN_RECORDS_PER_WORKER)
    ]
    results, forked = in_chunks(lambda chunk: (os.getpid(), [c.source_index for c in chunk]), convs, 2, lambda d: None)
    assert forked and all(pid != os.getpid() for pid, _ in results)
    assert [i for _, ids in results for i in ids] == list(range(len(convs)))
    one_process, forked_once = in_chunks(lambda chunk: len(chunk), convs[:MIN_RECORDS_PER_WORKER], 2, lambda d: None)
    assert not forked_once and sum(one_process) == MIN_RECORDS_PER_WORKER


def test_a_forkable_annotator_writes_in_workers_what_it_writes_in_one_process(data_dir: Path) -> None:
    def annotated(workers: int) -> tuple[list[dict], int]:
        convs = [c for c in read_dataset(data_dir / "alpaca_data.json") if isinstance(c, Conversation)]
        convs = convs[: 2 * MIN_RECORDS_PER_WORKER + 11]
        step = FluencyScores()
        Segment([Stage([step], "fluency")]).run(convs, workers, lambda done: None)
        return [c.meta for c in convs], step.seen

    assert FluencyScores.forkable
    two, one = annotated(2), annotated(1)
    assert two == one and one[1] == 2 * MIN_RECORDS_PER_WORKER + 11
    assert all("fluency" in meta["scores"] for meta in one[0])


def test_usable_cpus_is_at_least_one_and_at_most_the_affinity() -> None:
    assert 1 <= usable_cpus() <= len(os.sched_getaffinity(0))


def cgroup(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_usable_cpus_follows_the_cgroup_quota_v2_then_v1(tmp_path: Path) -> None:
    """A pod limited to 1.5 CPUs on a bigger node gets 1; no limit (v2 `max`, v1 -1) leaves the affinity."""
    affinity = len(os.sched_getaffinity(0))
    v2 = cgroup(tmp_path / "v2", {"cpu.max": "150000 100000\n"})
    assert cgroup_cpu_quota(v2) == 1.5 and usable_cpus(v2) == 1
    assert usable_cpus(cgroup(tmp_path / "v2max", {"cpu.max": "max 100000\n"})) == affinity
    v1 = cgroup(
        tmp_path / "v1", {"cpu,cpuacct/cpu.cfs_quota_us": "50000\n", "cpu,cpuacct/cpu.cfs_period_us": "100000\n"}
    )
    assert cgroup_cpu_quota(v1) == 0.5 and usable_cpus(v1) == 1  # never below one
    unlimited = cgroup(tmp_path / "v1none", {"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"})
    assert cgroup_cpu_quota(unlimited) is None and usable_cpus(unlimited) == affinity
    assert cgroup_cpu_quota(tmp_path / "nothing") is None
    many = cgroup(tmp_path / "many", {"cpu.max": f"{(affinity + 8) * 100000} 100000"})
    assert usable_cpus(many) == affinity  # a quota above the affinity does not add CPUs
