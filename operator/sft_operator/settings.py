"""Operator configuration: one dataclass, read from `SFT_OPERATOR_*` variables.

The Helm chart's values use the same names (camelCase) and render them into
the Deployment's environment. Values are validated at start; a bad one stops
the operator with a message naming the variable.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

PREFIX = "SFT_OPERATOR_"


@dataclass(frozen=True)
class OperatorSettings:
    trainer_image: str = "ghcr.io/trustdoc/sft-trainer:0.1.0"
    """Image of the curation and training pods when a CR sets no `image`."""
    image_pull_policy: str = "IfNotPresent"
    """Pull policy of those pods."""
    progress_port: int = 9090
    """Port on which pods serve /progress and /metrics."""
    progress_poll_seconds: float = 10.0
    """How often the operator reads a running pod's /progress."""
    metrics_port: int = 8080
    """Port of the operator's own /metrics."""
    namespaces: tuple[str, ...] = field(default_factory=tuple)
    """Namespaces to watch (comma-separated); empty: the whole cluster."""
    peering_name: str = "trustdoc-sft"
    """kopf peering object name: replicas sharing it never act twice."""
    peering_priority: int = 0
    """This replica's peering priority; the highest live one acts, the others stand by. 0: a random one, so replicas differ (equal priorities would pause each other)."""
    dataset_wait_seconds: float = 10.0
    """How often an SFTJob waiting for its DatasetCuration checks it again."""
    progress_timeout_seconds: float = 3.0
    """Timeout of one /progress request to a pod."""
    volumes_root: str = "/mnt/volumes"
    """Where PersistentVolumeClaims are mounted in pods (one folder per claim)."""
    workers: int = 32
    """Handlers run at once (kopf's thread pool), and the API connections kept for them. Handlers mostly wait on the API server, so a burst of new objects is reconciled this many at a time."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> OperatorSettings:
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for item in dataclasses.fields(cls):
            name = PREFIX + item.name.upper()
            if name not in env:
                continue
            raw = env[name]
            try:
                values[item.name] = _parse(raw, item.type)
            except ValueError as err:
                raise ValueError(f"{name}={raw!r}: {err}") from err
        settings = cls(**values)  # type: ignore[arg-type]
        settings.validate()
        return settings

    def validate(self) -> None:
        for name in ("progress_port", "metrics_port"):
            port = getattr(self, name)
            if not 1 <= port <= 65535:
                raise ValueError(f"{PREFIX}{name.upper()}: {port} is not a port number")
        for name in ("progress_poll_seconds", "dataset_wait_seconds", "progress_timeout_seconds"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{PREFIX}{name.upper()} must be positive")
        if self.workers < 1:
            raise ValueError(f"{PREFIX}WORKERS must be at least 1")
        if self.peering_priority < 0:
            raise ValueError(f"{PREFIX}PEERING_PRIORITY must not be negative")
        if not self.trainer_image:
            raise ValueError(f"{PREFIX}TRAINER_IMAGE must not be empty")


def _parse(raw: str, kind: object) -> object:
    if kind in ("int", int):
        return int(raw)
    if kind in ("float", float):
        return float(raw)
    if kind in ("tuple[str, ...]",):
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    return raw
