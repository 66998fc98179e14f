"""Where a model or dataset named in a run config actually is.

The operator renders a volume path, or `hf://REPO@REVISION[/FILE]` for a
Hugging Face source (the token arrives as HF_TOKEN from a Secret reference).
Hub sources are downloaded into HF_HOME (the pod's scratch volume).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .runconfig import ConfigError

HF_SCHEME = "hf://"


@dataclass(frozen=True)
class HubSource:
    repo: str
    revision: str
    file: str | None

    @classmethod
    def parse(cls, uri: str) -> HubSource:
        body = uri.removeprefix(HF_SCHEME)
        repo, sep, rest = body.partition("@")
        if not sep or not repo or not rest:
            raise ConfigError(f"{uri!r}: expected hf://REPO@REVISION[/FILE]")
        revision, _, file = rest.partition("/")
        return cls(repo, revision, file or None)


def resolve(location: str, repo_type: Literal["model", "dataset"], field: str) -> Path:
    """A local path for `location`, downloading hub sources; errors name `field`."""
    if not location.startswith(HF_SCHEME):
        path = Path(location)
        if not path.exists():
            raise ConfigError(f"{field}: {location} does not exist")
        return path
    source = HubSource.parse(location)
    from huggingface_hub import hf_hub_download, snapshot_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        if source.file:
            return Path(hf_hub_download(source.repo, source.file, revision=source.revision, repo_type=repo_type))
        return Path(snapshot_download(source.repo, revision=source.revision, repo_type=repo_type))
    except LocalEntryNotFoundError:
        raise  # hub unreachable and nothing cached: worth a retry, not a config error
    except (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError, GatedRepoError) as err:
        # Will never work as configured: fail the Job now. Network errors
        # propagate instead, so the Job's retries get another chance.
        raise ConfigError(f"{field}: cannot download {location}: {type(err).__name__}: {err}") from err
