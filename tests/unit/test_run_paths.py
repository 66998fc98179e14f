"""Run-time path safety (sft_trainer.paths): a configured path stays in the volume it names.

Real folders and symbolic links stand for a pod's volumes under SFT_VOLUMES_ROOT.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sft_trainer.paths import VOLUMES_ROOT_ENV, check_run_paths, confine, refuse_links_out_of
from sft_trainer.runconfig import ConfigError


@pytest.fixture
def volumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """volumes/data (with train.jsonl), volumes/models (with weights.bin), and a folder outside all volumes."""
    root = tmp_path / "volumes"
    for folder in (root / "data" / "sub", root / "models", tmp_path / "outside"):
        folder.mkdir(parents=True)
    (root / "data" / "train.jsonl").write_text("{}\n")
    (root / "models" / "weights.bin").write_text("w")
    (tmp_path / "outside" / "secret.txt").write_text("s")
    monkeypatch.setenv(VOLUMES_ROOT_ENV, str(root))
    return root


def test_paths_that_stay_in_their_volume_pass(volumes: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (volumes / "data" / "current.jsonl").symlink_to("train.jsonl")  # a link within the volume
    for location in ("data/train.jsonl", "data/sub/../train.jsonl", "data/current.jsonl", "data/new-output"):
        confine(str(volumes / location), "dataset")
    monkeypatch.chdir(volumes / "data")
    confine("sub/../train.jsonl", "dataset")  # relative to a working folder inside the volume


def test_dot_dot_out_of_the_volume_is_refused_naming_the_field(volumes: Path) -> None:
    with pytest.raises(ConfigError, match=r"^dataset: .* climbs out of its volume .*/volumes/data with '\.\.'"):
        confine(f"{volumes}/data/../models/weights.bin", "dataset")
    with pytest.raises(ConfigError, match=r"^input: .* climbs out of the volumes root"):
        confine(f"{volumes}/../outside/secret.txt", "input")


def test_links_out_of_the_volume_are_refused(volumes: Path) -> None:
    (volumes / "data" / "models.jsonl").symlink_to(volumes / "models" / "weights.bin")
    (volumes / "data" / "elsewhere").symlink_to(volumes.parent / "outside")
    with pytest.raises(
        ConfigError, match=r"^dataset: .*models\.jsonl leads to .*/models/weights\.bin through a symbolic link"
    ):
        confine(str(volumes / "data" / "models.jsonl"), "dataset")
    with pytest.raises(ConfigError, match="outside its volume"):
        confine(str(volumes / "data" / "elsewhere" / "secret.txt"), "outputDir")


def test_paths_outside_the_volumes_root_are_not_confined(volumes: Path) -> None:
    """A run on your own machine: nothing to escape from, whatever links the path takes."""
    outside = volumes.parent / "outside"
    (outside / "link.txt").symlink_to(volumes / "models" / "weights.bin")
    confine(str(outside / "link.txt"), "dataset")


def test_a_path_spelled_from_elsewhere_into_a_volume_is_confined_to_it(volumes: Path) -> None:
    (volumes / "data" / "models.jsonl").symlink_to(volumes / "models" / "weights.bin")
    confine(str(volumes.parent / "outside" / ".." / "volumes" / "data" / "train.jsonl"), "dataset")
    with pytest.raises(ConfigError, match="through a symbolic link"):
        confine(str(volumes.parent / "outside" / ".." / "volumes" / "data" / "models.jsonl"), "dataset")


def test_a_link_planted_in_the_output_folder_is_refused(volumes: Path) -> None:
    out = volumes / "data" / "out"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "latest").symlink_to("../checkpoints")  # stays inside: fine
    refuse_links_out_of(str(out), "outputDir")
    (out / "checkpoints" / "report.json").symlink_to(volumes.parent / "outside" / "secret.txt")
    with pytest.raises(
        ConfigError, match=r"^outputDir: .*report\.json is a symbolic link to .*secret\.txt, outside the output folder"
    ):
        check_run_paths({"dataset": str(volumes / "data" / "train.jsonl")}, "outputDir", str(out))


def test_unset_paths_are_skipped(volumes: Path) -> None:
    check_run_paths(
        {"tokenizer": None, "dataset": str(volumes / "data" / "train.jsonl")}, "outputDir", str(volumes / "data" / "o")
    )
