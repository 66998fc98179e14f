"""Run-time path safety: every path in a run config stays inside the volume it names.

The API server refuses `..` in spec paths, but what is on disk can still send
a path elsewhere: a symbolic link planted in a dataset volume, or `..` in a
run config written by hand. Followed blindly, a curation pod would read
another claim's files or /proc/self/environ (and copy them into
rejected.jsonl), and a trainer would write its outputs into someone else's
volume.

The allowed root of a path is its volume. The operator mounts every claim at
`<volumes root>/<claim>` (MountLayout; `/mnt/volumes` unless the environment
variable SFT_VOLUMES_ROOT says otherwise). A configured path under the volumes
root must still lie inside `<volumes root>/<claim>`, the claim it names, once
`..` is resolved and every symbolic link followed. A path outside the volumes
root (a run on your own machine, a hub download in HF_HOME) has no volume to
escape from and is not confined.

The output folder gets one more check, wherever it is: nothing in it may be a
symbolic link that leads out of it, because the run would write through it.
"""

from __future__ import annotations

import os
from pathlib import Path

from .runconfig import ConfigError

VOLUMES_ROOT_ENV = "SFT_VOLUMES_ROOT"
DEFAULT_VOLUMES_ROOT = "/mnt/volumes"


def volumes_root() -> Path:
    return Path(os.path.abspath(os.environ.get(VOLUMES_ROOT_ENV) or DEFAULT_VOLUMES_ROOT))


def _inside(path: str, folder: str) -> bool:
    return os.path.commonpath([path, folder]) == folder


def named_volume(location: str) -> Path | None:
    """The volume `<volumes root>/<claim>` that `location` names; None when it is not under the volumes root.

    The claim is read from the path as written ('..' kept, so that
    `<root>/data/../models` names `data` and then climbs out of it), or,
    for a path written from elsewhere, from the path with '..' resolved.
    """
    root = volumes_root()
    written = Path(os.getcwd(), location)
    for path in (written, Path(os.path.normpath(written))):
        if path.parts[: len(root.parts)] == root.parts:
            rest = path.parts[len(root.parts) :]
            return root / rest[0] if rest else root
    return None


def confine(location: str, field: str) -> None:
    """Raise ConfigError (naming `field`) when `location` leaves the volume it names through '..' or a symlink."""
    volume = named_volume(location)
    if volume is None:
        return
    lexical = os.path.normpath(os.path.join(os.getcwd(), location))
    if volume.name == "..":  # `<root>/../x` names no claim at all
        raise ConfigError(f"{field}: {location} climbs out of the volumes root {volume.parent} with '..'")
    if not _inside(lexical, str(volume)):
        raise ConfigError(f"{field}: {location} climbs out of its volume {volume} with '..'")
    real, real_volume = os.path.realpath(location), os.path.realpath(volume)
    if not _inside(real, real_volume):
        raise ConfigError(
            f"{field}: {location} leads to {real} through a symbolic link, outside its volume {volume}; "
            "a path must stay in the volume it names"
        )


def refuse_links_out_of(folder: str, field: str) -> None:
    """Raise ConfigError when something in `folder` is a symbolic link leading out of it (the run would write through it)."""
    if not os.path.isdir(folder):
        return
    real_folder = os.path.realpath(folder)
    for parent, dirs, files in os.walk(folder):  # does not descend into linked folders: each is checked as an entry
        for name in dirs + files:
            entry = os.path.join(parent, name)
            if os.path.islink(entry) and not _inside(os.path.realpath(entry), real_folder):
                raise ConfigError(
                    f"{field}: {entry} is a symbolic link to {os.path.realpath(entry)}, outside the output folder; "
                    "the run would write through it. Remove the link"
                )


def check_run_paths(inputs: dict[str, str | None], output_field: str, output: str) -> None:
    """Every configured path stays in its volume, and the output folder holds no link out of itself."""
    for field, location in inputs.items():
        if location:
            confine(location, field)
    confine(output, output_field)
    refuse_links_out_of(output, output_field)
