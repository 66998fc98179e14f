"""Where things are, as the pod sees them: claims, the run config, scratch space (`MountLayout`).

In a cluster every claim is mounted under /mnt/volumes/<claim> (the
operator's volumesRoot setting); `sftctl run` passes a layout that points
each claim at a folder on this machine. Every path a run config names comes
from here, so the two agree by construction.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .api import DatasetSource, ModelSource, PvcLocation

RUN_CONFIG_FILE = "run.yaml"


@dataclass(frozen=True)
class MountLayout:
    """Where claims, the run config and scratch space are, as the pod sees them."""

    volumes_root: str = "/mnt/volumes"
    config_dir: str = "/mnt/config"
    scratch_dir: str = "/tmp"
    claim_dirs: dict[str, str] = field(default_factory=dict)
    """Explicit folder per claim (local executor); others go under volumes_root."""

    def claim_dir(self, claim: str) -> str:
        return self.claim_dirs.get(claim, f"{self.volumes_root}/{claim}")

    def path(self, location: PvcLocation) -> str:
        base = self.claim_dir(location.claim_name)
        return base if location.path in ("", ".") else f"{base}/{location.path}"

    @property
    def run_config_path(self) -> str:
        return f"{self.config_dir}/{RUN_CONFIG_FILE}"


def source_path(source: ModelSource | DatasetSource | PvcLocation, layout: MountLayout) -> str:
    """Where the pod finds a model or dataset: a mounted path, or an `hf://` URI it downloads."""
    if isinstance(source, PvcLocation):
        return layout.path(source)
    if source.pvc is not None:
        return layout.path(source.pvc)
    if source.hugging_face is not None:
        repo = source.hugging_face
        uri = f"hf://{repo.repo}@{repo.revision}"
        return f"{uri}/{repo.file}" if repo.file else uri
    raise ValueError("source has neither pvc nor huggingFace")


def claims_of(*locations: PvcLocation | None) -> list[str]:
    """The claim names of these locations, each once, sorted."""
    return sorted({loc.claim_name for loc in locations if loc is not None})
