"""The Ray backend: the one-pod phases (`streaming.py`) run as Ray Data stages on a Ray cluster.

- A pass is a `map_batches` over the input's shards on an actor pool of
  `engine.workers` actors (`engine.cpusPerWorker` CPUs and
  `engine.gpusPerWorker` GPUs each): every actor builds the step list once
  (the model judges load once per actor, on its GPU when it has one), reads
  its shards from the shared input file, runs the same `run_pass_on_shard` as
  one pod and writes the part files to the shared output folder. Ray retries
  a failed worker's shards.
- Exact and near dedup group on the cluster: exact keys, and MinHash band
  buckets, by a Ray Data `groupby`; each bucket pairs its members with its
  smallest row (the one-pod LSH's leader), near pairs are confirmed by their
  signatures in `map_batches`, and the connected components are taken on the
  driver from the pairs (`dedup.clusters_of_pairs`): the same clusters, so
  the same survivors, as one pod.
- Balance, selection and the other set steps run on the gathered compact
  records on the driver, the output pass and the merge as one pod does, with
  the same accounting check.

The driver connects to the cluster named by `RAY_ADDRESS` (a KubeRay RayJob
sets it for its submitter), or starts a local one (loopback) when it is unset.
"""

from __future__ import annotations

import math
import os
import pickle
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from ..config.curation import CurationRunConfig, EngineSettings
from .compact import CompactRecords
from .dedup import ExactDedup, NearDedup, clusters_of_pairs, lsh_bands
from .phases import Keep, Phase, ShardOutcome, keep_after, plan_phases, run_pass_on_shard
from .runner import Progress, Runner
from .shards import InputShards
from .streaming import StreamingEngine

# Rows of a bucket beyond this many are paired with the leader in slices (bounds one group's batch).
_MAX_GROUP_ROWS = 1 << 16


def connect(settings: EngineSettings) -> str:
    """Join the cluster of `RAY_ADDRESS`, or start a local one sized for the workers; returns which."""
    import ray

    if ray.is_initialized():
        return "existing"
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=False)
        return address
    ray.init(
        # The workers' CPUs, and one for the group-by stages that run beside them.
        num_cpus=math.ceil(settings.workers * settings.cpus_per_worker) + 1,
        num_gpus=settings.workers * settings.gpus_per_worker,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
    )
    return "local"


class PassWorker:
    """A Ray Data actor: the step list built once, then one shard of the input per row."""

    def __init__(self, cfg: dict[str, Any], phase: int, shards: InputShards, out: str) -> None:
        from .pipeline import build_steps

        run_cfg = CurationRunConfig.model_validate(cfg)
        tokenizer = None
        if run_cfg.tokenizer:
            from .tokens import TokenizerView

            tokenizer = TokenizerView.load(run_cfg.tokenizer)
        self.steps, labels, _ = build_steps(run_cfg.curation, tokenizer, records=shards.count)
        phases = plan_phases(self.steps)
        self.phase = phases[phase]
        self.keep = keep_after(phases, phase, self.steps)
        self.shards = shards
        self.out = out
        self.runner = Runner(
            self.phase.steps, labels=labels, workers=max(1, int(run_cfg.curation.engine.cpus_per_worker))
        )

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from pathlib import Path

        outcomes = []
        for shard, alive in zip(batch["shard"], batch["alive"], strict=True):
            state = pickle.loads(alive) if len(alive) else None
            items = self.shards.read(int(shard))
            outcome = run_pass_on_shard(
                self.runner, self.phase, self.keep, self.steps, items, int(shard), state, Path(self.out)
            )
            self.runner.examples.clear()
            outcomes.append(pickle.dumps(outcome, protocol=pickle.HIGHEST_PROTOCOL))
        return {"shard": batch["shard"], "outcome": np.array(outcomes, dtype=object)}


class RayEngine(StreamingEngine):
    """The streaming engine with each pass's shards on a Ray actor pool and dedup grouped on the cluster."""

    engine = "ray"

    def __init__(
        self,
        cfg: CurationRunConfig,
        steps: list[Any],
        labels: dict[int, str],
        shards: InputShards,
        *,
        workers: int = 1,
        on_progress: Progress | None = None,
    ) -> None:
        self.settings = cfg.curation.engine
        super().__init__(cfg, steps, labels, shards, workers=self.settings.workers, on_progress=on_progress)
        self.cluster = connect(self.settings)
        for step in steps:
            if isinstance(step, ExactDedup):
                step.find_groups = ray_equal_key_groups
            if isinstance(step, NearDedup):
                step.find_clusters = ray_near_duplicate_clusters

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "cluster": self.cluster,
            "cpusPerWorker": self.settings.cpus_per_worker,
            "gpusPerWorker": self.settings.gpus_per_worker,
        }

    def run_pass(
        self, phase: Phase, keep: Keep, alive_of: Callable[[int], CompactRecords | None]
    ) -> Iterator[ShardOutcome]:
        import ray

        rows = [
            {"shard": k, "alive": b"" if alive is None else pickle.dumps(alive, protocol=pickle.HIGHEST_PROTOCOL)}
            for k in range(self.shards.shards)
            for alive in [alive_of(k)]
        ]
        dataset = ray.data.from_items(rows, override_num_blocks=max(1, len(rows))).map_batches(
            PassWorker,
            fn_constructor_kwargs={
                "cfg": self.cfg.model_dump(mode="json"),
                "phase": phase.index,
                "shards": self.shards,
                "out": str(self.out),
            },
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=self.settings.workers),
            num_cpus=self.settings.cpus_per_worker,
            num_gpus=self.settings.gpus_per_worker or None,
        )
        done = 0
        for row in dataset.iter_rows():
            outcome: ShardOutcome = pickle.loads(row["outcome"])
            done += outcome.parsed
            self.progress(self._label(phase), done, self.shards.count)
            yield outcome

    def absorb(self, phase: Phase, outcome: ShardOutcome) -> None:
        """The workers' steps counted: add their counts to the driver's steps (the report reads these)."""
        for step, counted in zip(phase.steps, outcome.counters, strict=True):
            step.seen += counted.seen
            step.drops.update(counted.drops)
            step.seconds += counted.seconds
            step.notes += [note for note in counted.notes if note not in step.notes]


# -- dedup grouped on the cluster ---------------------------------------------------------


def _leader_pairs(group: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every member of a bucket paired with the bucket's smallest row (the one-pod LSH's leader)."""
    positions = np.asarray(group["position"], dtype=np.int64)
    if len(positions) < 2:
        return {"position": np.zeros(0, dtype=np.int64), "leader": np.zeros(0, dtype=np.int64)}
    leader = positions.min()
    others = positions[positions != leader]
    return {"position": others, "leader": np.full(len(others), leader, dtype=np.int64)}


def _partitions(rows: int) -> int:
    """Shuffle partitions of about 200,000 rows each (Ray's default of 200 costs minutes on a small set)."""
    return max(2, rows // 200_000)


def _pairs(dataset: Any) -> list[tuple[int, int]]:
    pairs: list[tuple[int, int]] = []
    for batch in dataset.iter_batches(batch_format="numpy", batch_size=_MAX_GROUP_ROWS):
        pairs += zip(batch["position"].tolist(), batch["leader"].tolist(), strict=True)
    return pairs


def ray_equal_key_groups(keys: np.ndarray) -> list[list[int]]:
    """`dedup.equal_key_groups` by a Ray Data group-by on the key (rows of a uint8 matrix): the same groups."""
    import ray

    if len(keys) < 2:
        return []
    dataset = ray.data.from_items([{"position": i, "key": key.tobytes().hex()} for i, key in enumerate(keys)])
    grouped = dataset.groupby("key", num_partitions=_partitions(len(keys)))
    pairs = _pairs(grouped.map_groups(_leader_pairs, batch_format="numpy"))
    return clusters_of_pairs(len(keys), pairs)


def _band_keys(batch: dict[str, np.ndarray], signatures: list[Any], rows: int, bands: int) -> dict[str, np.ndarray]:
    """(band, bucket, position) rows of a batch of positions: the bucket is the band's slice of the signature."""
    import ray

    shared: np.ndarray = ray.get(signatures[0])
    positions = np.asarray(batch["id"], dtype=np.int64)
    bucket_of = [
        np.array([row.tobytes().hex() for row in shared[positions, band * rows : (band + 1) * rows]], dtype=object)
        for band in range(bands)
    ]
    return {
        "band": np.repeat(np.arange(bands, dtype=np.int32), len(positions)),
        "bucket": np.concatenate(bucket_of),
        "position": np.tile(positions, bands),
    }


def _confirmed(batch: dict[str, np.ndarray], signatures: list[Any], threshold: float) -> dict[str, np.ndarray]:
    """The candidate pairs whose signatures agree on at least `threshold` of the permutations."""
    import ray

    shared: np.ndarray = ray.get(signatures[0])
    position = np.asarray(batch["position"], dtype=np.int64)
    leader = np.asarray(batch["leader"], dtype=np.int64)
    keep = (shared[position] == shared[leader]).mean(axis=1) >= threshold
    return {"position": position[keep], "leader": leader[keep]}


def ray_near_duplicate_clusters(signatures: np.ndarray, threshold: float) -> list[list[int]]:
    """`dedup.near_duplicate_clusters` as a distributed MinHash-LSH: band buckets by a Ray Data group-by,
    candidate pairs with each bucket's smallest row, confirmed by the signatures; components on the driver."""
    import ray

    n, permutations = signatures.shape
    bands, rows = lsh_bands(threshold, permutations)
    shared = [ray.put(np.ascontiguousarray(signatures))]  # in a list: Ray hands the reference, not the array
    # Tasks, not actors: an actor would hold its CPU for the whole dataset and starve the stages before it.
    buckets = ray.data.range(n).map_batches(
        _band_keys, fn_kwargs={"signatures": shared, "rows": rows, "bands": bands}, batch_size=4096
    )
    grouped = buckets.groupby(["band", "bucket"], num_partitions=_partitions(n * bands))
    candidates = grouped.map_groups(_leader_pairs, batch_format="numpy")
    confirmed = candidates.map_batches(
        _confirmed, fn_kwargs={"signatures": shared, "threshold": threshold}, batch_size=_MAX_GROUP_ROWS
    )
    return clusters_of_pairs(n, _pairs(confirmed))
